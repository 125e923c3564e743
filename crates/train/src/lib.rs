//! # clip-train
//!
//! The fine-tuning loop: mixed precision through libtorch autocast, gradient
//! accumulation, gradient checkpointing, progressive unfreezing, EMA, evaluation,
//! early stopping, checkpoints and exact resume, with observers (progress bars,
//! metrics files, plots, TensorBoard event files) that only watch events.
//!
//! Layering: `train-cli -> clip-train -> {clip-optim, clip-data, clip-model, clip-dist}`.
//!
//! ```
//! use clip_train::{Precision, RunConfig};
//! let cfg = RunConfig::from_toml(
//!     r#"
//!     [model.architecture]
//!     preset = "tiny"
//!     [data]
//!     train = { kind = "image_folder", path = "data/train" }
//!     [train]
//!     precision = "bf16"
//!     "#,
//!     "example.toml",
//!     &["optim.lr=3e-5".into()],
//! )
//! .unwrap();
//! assert_eq!(cfg.train.precision, Precision::Bf16);
//! assert_eq!(cfg.optim.lr, 3e-5);
//! ```

mod artifacts;
mod assembly;
mod compare;
mod config;
mod corrupt;
mod data_parallel;
mod ema;
mod error;
mod evaluation;
mod loss;
mod mixed_precision;
mod observe;
mod plots;
mod policies;
mod precision;
mod report;
mod run_folder;
mod tensorboard;
mod trainer;
mod wise_ft;

pub use artifacts::{
    Placement, classifier_dir, eval_pipeline_for, evaluate_test, export, load_classifier,
    load_classifier_from, model_report, model_tokenizer, preprocessor_json, source_from_path,
    test_set,
};
pub use assembly::{
    Inspection, build_model, classifier_from_pretrained, eval_loader, image_size_of,
    inspect_config, load_datasets, ordered_loader, param_groups, pipelines, zero_shot_classifier,
};
pub use compare::{
    CompareReport, CompareRow, TrainJob, compare, markdown, method_overrides, zero_shot_model,
};
pub use config::{
    Architecture, CheckpointConfig, CompareMethod, CompareSection, DataSection, DeviceChoice,
    DistBackend, EarlyStoppingConfig, EmaConfig, GradSync, Metric, ModelSection, ReportTo,
    RunConfig, RunSection, TrainSection, Unfreeze,
};
pub use data_parallel::DataParallel;
pub use error::{Result, TrainError};
pub use evaluation::{
    Embeddings, EvalCounts, EvalReport, Prediction, RankMetrics, Retrieval, Scored, evaluate,
    predict_images, predictions,
};
pub use loss::{Targets, contrastive_loss, cross_entropy};
pub use mixed_precision::{MixedPrecision, StepDecision};
pub use observe::{Event, Log, MetricsFiles, Observer, Plots, Progress, StartInfo};
pub use plots::write_all as write_plots;
pub use policies::{
    AfterStep, CheckpointEntry, Decision, EarlyStopping, Next, after_step, apply_unfreeze,
    best_entry, open_blocks, retention,
};
pub use precision::Precision;
pub use report::{
    BenchReport, Best, EvalRecord, FitReport, MemoryKind, MetricsLine, PeakMemory, StepMetrics,
    peak_memory, peak_memory_mib, read_metrics, reset_peak_memory,
};
pub use run_folder::{TrainState, latest_checkpoint};
pub use tensorboard::{TensorBoard, tensorboard_dir};
pub use trainer::Trainer;
pub use wise_ft::{WisePoint, WiseReport, wise_ft, zero_shot_like};
