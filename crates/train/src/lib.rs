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

mod assembly;
mod captions;
mod config;
mod corrupt;
mod device;
mod ema;
mod error;
mod eval;
mod experiments;
mod memory_estimate;
mod mixed_precision;
mod objective;
mod observe;
mod parallel;
mod policies;
mod precision;
mod predict;
mod report;
mod run;
mod trainer;

pub use assembly::{
    Inspection, augmentation_size, build_model, classifier_from_pretrained, eval_loader,
    image_size_of, inspect_config, load_datasets, ordered_loader, param_groups, pipelines,
    zero_shot_classifier,
};
pub use config::keys as config_keys;
pub use config::{
    Architecture, CheckpointConfig, CompareMethod, CompareSection, DataSection, DeviceChoice,
    DistBackend, EarlyStoppingConfig, EmaConfig, GradSync, Metric, MetricChoice, ModelSection,
    ReportTo, RunConfig, RunSection, TrainSection, Unfreeze, find_config,
};
pub use device::{
    MemoryKind, PeakMemory, Placement, peak_memory, peak_memory_mib, reset_peak_memory,
};
pub use error::{Result, TrainError};
pub use eval::{
    Embeddings, EvalCounts, EvalReport, RankMetrics, Retrieval, data_for, evaluate, evaluate_data,
};
pub use experiments::compare::{
    CompareReport, CompareRow, TrainJob, compare, markdown, method_overrides, zero_shot_model,
};
pub use experiments::soup::{Ingredient, SoupData, SoupFigures, SoupReport, Soups, soup};
pub use experiments::sweep::{GridAxis, SweepPoint, SweepReport, sweep, sweep_markdown};
pub use experiments::wise_ft::{
    WisePoint, WiseReport, WiseSources, save_wise_ft, wise_ft, zero_shot_like,
};
pub use mixed_precision::{MixedPrecision, StepDecision};
pub use objective::{Targets, contrastive_loss, cross_entropy};
pub use observe::plots::{Marks as PlotMarks, write_all as write_plots, write_preview};
pub use observe::{
    BatchProgress, Console, Event, Log, MetricsFiles, Observer, Plots, Progress, RunObservers,
    StartInfo, TensorBoard, run_observers, tensorboard_dir,
};
pub use parallel::{DataParallel, SingleProcess, Strategy};
pub use policies::{
    AfterStep, CheckpointEntry, Decision, EarlyStopping, Next, after_step, apply_unfreeze,
    best_entry, open_blocks, retention,
};
pub use precision::Precision;
pub use predict::{ImagePrediction, Prediction, Scored, predict_images, predictions};
pub use report::{
    BenchReport, Best, EvalRecord, FitReport, MetricsLine, StepMetrics, read_metrics,
};
pub use run::checkpoint::{TrainState, latest_checkpoint};
pub use run::export::{Provenance, export, preprocessor_json, write_export};
pub use run::locate::{
    classifier_dir, eval_pipeline_for, eval_tokenizer, exif_orientation_for, load_classifier,
    load_classifier_from, load_for_eval, model_report, model_tokenizer,
};
pub use run::output::OutputDir;
pub use run::test_set::{evaluate_test, test_set};
pub use trainer::{BenchSetup, DryRun, Launched, Trainer, dry_run};
