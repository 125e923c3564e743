//! # clip-optim
//!
//! Parameter groups read from `clip-model`'s typed tags (layer-wise LR decay in the
//! standard and the tutorial's form, discriminative bands, no-decay classes, frozen
//! towers), AdamW with savable state on libtorch's fused kernel, warmup + cosine
//! schedules, gradient clipping and fp16 loss scaling, each matching its PyTorch /
//! transformers reference step for step.
//!
//! Layering: depends on `clip-model` for the parameter vocabulary only; used by
//! `clip-train`.
//!
//! ```
//! use clip_model::{ClipConfig, ClipModel};
//! use clip_optim::{AdamW, AdamWConfig, GroupConfig, Schedule, Warmup};
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let model = ClipModel::new(&vs.root(), &ClipConfig::tiny()).unwrap();
//! let groups = GroupConfig::default().build(model.params(), |_| 2).unwrap();
//! let mut opt = AdamW::new(groups, AdamWConfig::default()).unwrap();
//! let schedule = Schedule::Cosine { warmup: Warmup::Fraction(0.1), min_lr_ratio: 0.0 }.build(1000).unwrap();
//! opt.set_lr_factor(schedule.factor_at(50));
//! assert!(opt.lrs().iter().all(|lr| *lr < 1e-5));
//! ```

mod adamw;
mod clipping;
mod config;
mod error;
mod groups;
mod kernels;
mod scaler;
mod schedule;

pub use adamw::{AdamW, AdamWConfig};
pub use clipping::clip_grad_norm;
pub use config::OptimConfig;
pub use error::OptimError;
pub use groups::{GroupConfig, GroupReport, GroupRow, LrPolicy, NoDecay, ParamGroup, TensorRow};
pub use scaler::{GradScaler, ScalerConfig};
pub use schedule::{LrSchedule, Rounding, Schedule, Warmup};
