//! # clip-train
//!
//! The fine-tuning loop: mixed precision through libtorch autocast, gradient
//! accumulation, gradient checkpointing, evaluation, early stopping, checkpoints
//! and exact resume, with observers (progress bars, metrics files, plots) that
//! only watch events.
//!
//! Layering: `train-cli -> clip-train -> {clip-optim, clip-data, clip-model}`.
//!
//! ```
//! use clip_train::Precision;
//! let p: Precision = "bf16".parse().unwrap();
//! assert_eq!(p, Precision::Bf16);
//! assert_eq!(p.autocast_kind(), Some(tch::Kind::BFloat16));
//! ```

mod error;
mod precision;

pub use error::TrainError;
pub use precision::Precision;
