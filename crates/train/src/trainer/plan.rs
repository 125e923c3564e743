//! The plan of a run: what its config says to build, checked before anything is
//! trained (the device and precision it runs with, its length in steps, which
//! evaluations it can make).

use tch::Device;

use clip_model::HeadKind;

use crate::config::{Metric, RunConfig};
use crate::error::{Result, TrainError};
use crate::parallel::Strategy;
use crate::precision::Precision;

/// Settles where and how the run computes: libtorch's threads, the device (a
/// rank's own GPU in a data-parallel run), the precision on that device
/// (`train.precision_on_cpu` replaces `train.precision` on a CPU, and the config
/// says so from then on), TF32; warns about settings that do not apply.
pub(super) fn runtime(cfg: &mut RunConfig, parallel: &dyn Strategy) -> Result<Device> {
    if cfg.train.gradient_checkpointing {
        // Returns freed activations to the OS so checkpointing's saving shows;
        // mmap-backed buffers cost page faults, so only when it pays.
        clip_model::release_freed_activations();
    }
    if cfg.run.threads > 0 {
        tch::set_num_threads(cfg.run.threads as i32);
    }
    let device = parallel.device(cfg.run.device.device()?);
    let precision = cfg.train.precision_on(device);
    if precision != cfg.train.precision {
        tracing::warn!(
            "train.precision = \"{}\" falls back to train.precision_on_cpu = \"{precision}\" on the CPU",
            cfg.train.precision
        );
        cfg.train.precision = precision;
    }
    if device.is_cuda() {
        clip_model::set_tf32_matmul(cfg.train.tf32)?;
    } else if cfg.train.tf32 {
        tracing::warn!("train.tf32 only concerns CUDA matmuls: ignored on the CPU");
    }
    if device == Device::Cpu && cfg.train.precision == Precision::Fp16 {
        tracing::warn!(
            "train.precision = \"fp16\" on the CPU: libtorch's CPU fp16 is slow and overflows \
             easily (steps are then skipped by the loss scaler); bf16 is the CPU's half \
             precision (set train.precision_on_cpu = \"bf16\" or \"fp32\")"
        );
    }
    Ok(device)
}

/// The run's length in optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Steps {
    pub per_epoch: u64,
    pub total: u64,
    /// Epochs the steps span (the last one may be partial with `train.max_steps`).
    pub epochs: u64,
}

impl Steps {
    /// The steps of a run whose epoch has `batches` micro-batches (this rank's)
    /// on `world` ranks, over `train_images` training images.
    pub(super) fn plan(
        cfg: &RunConfig,
        batches: usize,
        world: usize,
        train_images: usize,
    ) -> Result<Self> {
        if batches == 0 {
            return Err(TrainError::config(
                "data.loader.batch_size",
                format!(
                    "times the {world} rank(s) is larger than the {train_images} training images with drop_last = true"
                ),
            ));
        }
        let per_epoch = (batches as u64).div_ceil(cfg.train.grad_accum as u64);
        let total = match cfg.train.max_steps {
            Some(n) => n,
            None => cfg.train.epochs.checked_mul(per_epoch).ok_or_else(|| {
                TrainError::config(
                    "train.epochs",
                    format!(
                        "{} epochs of {per_epoch} steps overflow the step counter",
                        cfg.train.epochs
                    ),
                )
            })?,
        };
        if total == 0 {
            return Err(TrainError::config(
                if cfg.train.max_steps.is_some() {
                    "train.max_steps"
                } else {
                    "train.epochs"
                },
                "the run would take 0 steps",
            ));
        }
        Ok(Self {
            per_epoch,
            total,
            epochs: total.div_ceil(per_epoch),
        })
    }
}

/// Whether the run measures image <-> text retrieval (on `data.retrieval`, or on
/// validation data with captions), checked against what needs or excludes it:
/// the head must keep the text tower, and `"mean_recall"` as a checkpoint or
/// early-stopping metric needs it.
pub(super) fn retrieval(
    cfg: &RunConfig,
    has_retrieval_set: bool,
    val_has_captions: bool,
    head: HeadKind,
) -> Result<bool> {
    let retrieval = has_retrieval_set || val_has_captions;
    if retrieval && !head.keeps_text_tower() {
        return Err(TrainError::config(
            if has_retrieval_set {
                "data.retrieval"
            } else {
                "data.val"
            },
            format!(
                "has captions: image <-> text retrieval needs the text tower, which \
                 model.head.kind = \"{}\" leaves out (use \"cosine\", or data without captions)",
                head.name()
            ),
        ));
    }
    for (key, metric) in [
        ("train.checkpoints.metric", cfg.train.checkpoints.metric),
        (
            "train.early_stopping.metric",
            cfg.train
                .early_stopping
                .map_or(Metric::Accuracy, |e| e.metric),
        ),
    ] {
        if metric == Metric::MeanRecall && !retrieval {
            return Err(TrainError::config(
                key,
                "\"mean_recall\" is image <-> text retrieval: it needs data.retrieval, or \
                 data.val with captions (e.g. a CSV with caption_column)",
            ));
        }
    }
    Ok(retrieval)
}
