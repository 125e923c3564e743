//! # clip-optim
//!
//! Parameter groups read from `clip-model`'s typed tags, AdamW with savable state,
//! layer-wise LR decay, warmup + cosine schedules, gradient clipping and fp16 loss
//! scaling, each matching its PyTorch / transformers reference step for step.
//!
//! Layering: depends on `clip-model` for the parameter vocabulary only; used by
//! `clip-train`.
//!
//! ```
//! use clip_optim::{Schedule, Warmup};
//! let s = Schedule::Cosine { warmup: Warmup::Fraction(0.1), min_lr_ratio: 0.0 };
//! let lr = s.build(1000).unwrap();
//! assert_eq!(lr.factor_at(0), 0.0);
//! assert_eq!(lr.factor_at(100), 1.0);
//! ```

mod error;
mod schedule;

pub use error::OptimError;
pub use schedule::{LrSchedule, Schedule, Warmup};
