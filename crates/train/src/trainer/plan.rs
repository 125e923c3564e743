//! The plan of a run: what its config says to build, checked before anything is
//! trained (the device and precision it runs with, its length in steps, which
//! evaluations it can make).

use tch::Device;

use clip_model::HeadKind;

use crate::config::{Advice, Metric, RunConfig, Unfreeze};
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

impl Steps {
    /// The learning-rate schedule over the run's steps; a warmup that does not
    /// fit says how the run's length came about (a batch larger than the data
    /// makes a run of few steps, which reads as a warmup problem otherwise).
    pub(super) fn schedule(
        &self,
        cfg: &RunConfig,
        train: &clip_data::Loader,
    ) -> Result<clip_optim::LrSchedule> {
        let train_images = train.dataset().len();
        let global_batch = train.global_batch_size() * cfg.train.grad_accum;
        cfg.optim.schedule.build(self.total).map_err(|e| {
            TrainError::Usage(format!(
                "{e}; the run has {} step(s): {train_images} training images in global batches \
                     of {global_batch} (batch_size x ranks x grad_accum) make {} step(s) per \
                     epoch, for {} epoch(s){}",
                self.total,
                self.per_epoch,
                self.epochs,
                if global_batch > train_images {
                    " — the batch is larger than the data"
                } else {
                    ""
                }
            ))
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
    let early = cfg.train.early_stopping.as_ref().map(|e| &e.metric);
    for (key, metric) in [
        (
            "train.checkpoints.metric",
            Some(&cfg.train.checkpoints.metric),
        ),
        ("train.early_stopping.metric", early),
    ] {
        let Some(metric) = metric else { continue };
        match &metric.set {
            Some(set) if !cfg.data.eval_sets.contains_key(set) => {
                let names: Vec<&str> = cfg.data.eval_sets.keys().map(String::as_str).collect();
                return Err(TrainError::config(
                    key,
                    format!(
                        "{:?} names the evaluation set {set:?}, which data.eval_sets does \
                         not have ({})",
                        metric.name(),
                        if names.is_empty() {
                            "it has none".to_string()
                        } else {
                            format!("it has {}", names.join(", "))
                        }
                    ),
                ));
            }
            Some(_) if metric.kind == Metric::MeanRecall => {
                return Err(TrainError::config(
                    key,
                    format!(
                        "{:?}: evaluation sets measure classification only; \"mean_recall\" \
                         is measured on data.retrieval or data.val with captions",
                        metric.name()
                    ),
                ));
            }
            None if metric.kind == Metric::MeanRecall && !retrieval => {
                return Err(TrainError::config(
                    key,
                    "\"mean_recall\" is image <-> text retrieval: it needs data.retrieval, or \
                     data.val with captions (e.g. a CSV with caption_column)",
                ));
            }
            _ => {}
        }
    }
    Ok(retrieval)
}

/// What a run would do, worked out without training or writing anything
/// (`train-cli --dry-run`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DryRun {
    pub run_dir: std::path::PathBuf,
    pub train_images: usize,
    pub val_images: usize,
    pub test_images: Option<usize>,
    pub classes: usize,
    pub world_size: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    /// Images per optimizer step.
    pub global_batch: usize,
    pub steps_per_epoch: u64,
    pub epochs: u64,
    pub total_steps: u64,
    pub warmup_steps: u64,
    /// What a training step would keep in device memory per rank (estimate).
    pub memory: crate::memory_estimate::MemoryEstimate,
    pub precision: crate::precision::Precision,
    pub gradient_checkpointing: bool,
    #[serde(skip)]
    pub inspection: crate::assembly::Inspection,
}

/// The [`DryRun`] of a training command: the config file `config` (a fresh run)
/// or the run folder `resume` (its resolved config), with `overrides`, on the
/// data-parallel world the launcher (torchrun, srun) sets, else one process.
pub fn dry_run(
    config: Option<&std::path::Path>,
    resume: Option<&std::path::Path>,
    overrides: &[String],
) -> Result<DryRun> {
    let cfg = match (config, resume) {
        (Some(c), None) => RunConfig::load(c, overrides)?,
        (None, Some(dir)) => crate::run::folder::RunFolder::open(dir, overrides)?.1,
        _ => {
            return Err(TrainError::Usage(
                "--dry-run takes --config FILE or --resume RUN_DIR".into(),
            ));
        }
    };
    let world = clip_dist::DistEnv::detect()?.map_or(1, |e| e.world);
    plan_run(&cfg, world)
}

/// The [`DryRun`] of `cfg` on `world` data-parallel ranks: the data after splits
/// and limits, the run's length, its global batch and warmup, and the model's
/// parameter groups with their learning rates. Reads the data and builds the
/// model on the CPU; writes nothing.
fn plan_run(cfg: &RunConfig, world: usize) -> Result<DryRun> {
    let (inspection, train_ds, val_ds, size) = crate::assembly::inspect_with_data(cfg)?;
    let classes = crate::assembly::run_classes(&train_ds, &val_ds);
    let test_images = match &cfg.data.test {
        Some(src) => Some(crate::run::test_set::test_set(src, &classes)?.len()),
        None => None,
    };
    let (train_images, val_images) = (train_ds.len(), val_ds.len());
    let (train_pipe, _) = crate::assembly::pipelines(cfg, size)?;
    let world = world.max(1);
    let loader =
        clip_data::Loader::new(train_ds, train_pipe, cfg.data.loader.clone(), cfg.run.seed)?
            .sharded(0, world)?;
    let steps = Steps::plan(cfg, loader.batches_per_epoch(), world, train_images)?;
    let schedule = steps.schedule(cfg, &loader)?;
    Ok(DryRun {
        run_dir: cfg.run.dir(),
        train_images,
        val_images,
        test_images,
        classes: classes.len(),
        world_size: world,
        batch_size: cfg.data.loader.batch_size,
        grad_accum: cfg.train.grad_accum,
        global_batch: loader.global_batch_size() * cfg.train.grad_accum,
        steps_per_epoch: steps.per_epoch,
        epochs: steps.epochs,
        total_steps: steps.total,
        warmup_steps: schedule.warmup_steps(),
        memory: inspection.memory,
        precision: cfg.train.precision,
        gradient_checkpointing: cfg.train.gradient_checkpointing,
        inspection,
    })
}

impl std::fmt::Display for DryRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "run folder: {} (nothing written to it)",
            self.run_dir.display()
        )?;
        write!(
            f,
            "data: {} training and {} validation images",
            self.train_images, self.val_images
        )?;
        if let Some(t) = self.test_images {
            write!(f, ", {t} test images")?;
        }
        writeln!(f, ", {} classes", self.classes)?;
        writeln!(
            f,
            "global batch: {} images per optimizer step (batch_size {} x {} rank(s) x grad_accum {})",
            self.global_batch, self.batch_size, self.world_size, self.grad_accum
        )?;
        writeln!(
            f,
            "length: {} optimizer steps per epoch, {} epoch(s), {} steps in all; warmup {} steps",
            self.steps_per_epoch, self.epochs, self.total_steps, self.warmup_steps
        )?;
        let gib = crate::memory_estimate::gib;
        writeln!(
            f,
            "memory per rank (estimate, {}, gradient checkpointing {}): {:.2} GiB = weights and \
             optimizer states {:.2} + activations of a batch of {} {:.2}, plus the CUDA context \
             (~0.5-1 GiB) on a GPU",
            self.precision,
            if self.gradient_checkpointing {
                "on"
            } else {
                "off"
            },
            gib(self.memory.total()),
            gib(self.memory.states),
            self.batch_size,
            gib(self.memory.activations)
        )?;
        writeln!(f, "{}", self.inspection.parameters)?;
        write!(f, "{}", self.inspection.groups)
    }
}

/// How a warning of the tutorial's guidance says it can be silenced.
fn silence(a: Advice) -> String {
    format!("(silence: `run.silence_advice = [\"{}\"]`)", a.name())
}

/// The tutorial's guidance for this run, as warnings that say what to do and how
/// to silence them: full fine-tuning on few images (LoRA or LP-FT instead), a
/// learning rate too high for a pretrained vision tower.
pub(super) fn advice(
    cfg: &RunConfig,
    train_images: usize,
    groups: &[clip_optim::ParamGroup],
) -> Vec<String> {
    use clip_model::Tower;
    let vision_trained = groups.iter().any(|g| g.tower == Tower::Vision);
    // Both concern a pretrained CLIP (a model trained from random weights has no
    // features to lose).
    let full = cfg.model.pretrained.is_some()
        && cfg.model.lora.is_none()
        && vision_trained
        && matches!(
            cfg.train.unfreeze,
            Unfreeze::All | Unfreeze::Progressive { .. }
        );
    let mut out = Vec::new();
    let silenced = |a: Advice| cfg.run.silence_advice.contains(&a);
    if full && train_images < Advice::SMALL_DATA && !silenced(Advice::SmallData) {
        out.push(format!(
            "full fine-tuning on {train_images} training images (under ~{}) tends to overfit and forget \
             CLIP's features: LoRA (`model.lora = {{ r = 8 }}`) or LP-FT (`train.unfreeze = {{ kind = \"lp_ft\" }}`) \
             usually does better on little data {}",
            Advice::SMALL_DATA,
            silence(Advice::SmallData)
        ));
    }
    let top_vision_lr = groups
        .iter()
        .filter(|g| g.tower == Tower::Vision)
        .map(|g| g.base_lr)
        .fold(0.0, f64::max);
    if cfg.model.pretrained.is_some()
        && cfg.model.lora.is_none()
        && top_vision_lr > Advice::HIGH_LR
        && !silenced(Advice::HighLr)
    {
        out.push(format!(
            "the pretrained vision tower trains at a learning rate up to {top_vision_lr:e} (above ~{:e}), \
             which tends to destroy its features rather than adapt them: the tutorial uses 1e-5 with \
             layer-wise decay (`optim.lr`; the head can keep a higher `head_lr`) {}",
            Advice::HIGH_LR,
            silence(Advice::HighLr)
        ));
    }
    out
}

/// The memory advice for a run on a GPU of `device_total()` bytes, unless it
/// checkpoints gradients or silences it: `estimate(checkpointing)` is the run's
/// memory estimate with or without gradient checkpointing.
pub(super) fn gpu_memory_advice(
    cfg: &RunConfig,
    device_total: impl FnOnce() -> Option<u64>,
    estimate: impl Fn(bool) -> crate::memory_estimate::MemoryEstimate,
) -> Option<String> {
    if cfg.train.gradient_checkpointing || cfg.run.silence_advice.contains(&Advice::GpuMemory) {
        return None;
    }
    let total = device_total()?;
    let advice = crate::memory_estimate::gpu_advice(
        estimate(false),
        estimate(true),
        total,
        cfg.data.loader.batch_size,
    )?;
    Some(format!("{advice} {}", silence(Advice::GpuMemory)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn vision_group(lr: f64) -> clip_optim::ParamGroup {
        clip_optim::ParamGroup {
            name: "vision.d12.decay".into(),
            tower: clip_model::Tower::Vision,
            depth_min: 12,
            depth_max: 12,
            base_lr: lr,
            weight_decay: 0.01,
            params: Vec::new(),
        }
    }

    /// The GPU memory advice says how to silence it, and is not given without a
    /// device figure, to a run that checkpoints gradients, or once silenced.
    #[test]
    fn gpu_memory_advice_names_its_silence_and_skips_checkpointed_or_silenced_runs() {
        use crate::memory_estimate::MemoryEstimate;
        let vit = clip_model::ClipConfig::preset("vit-b-32").unwrap();
        let estimate = |ckpt| {
            MemoryEstimate::of(
                &vit,
                151_277_313,
                87_854_346,
                &[clip_model::Tower::Vision],
                1024,
                crate::precision::Precision::Bf16,
                ckpt,
            )
        };
        let mut cfg = RunConfig::default();
        let a = gpu_memory_advice(&cfg, || Some(16 << 30), estimate).unwrap();
        assert!(
            a.contains("train.gradient_checkpointing = true")
                && a.ends_with("(silence: `run.silence_advice = [\"gpu_memory\"]`)"),
            "{a}"
        );
        assert_eq!(gpu_memory_advice(&cfg, || None, estimate), None);
        cfg.train.gradient_checkpointing = true;
        assert_eq!(gpu_memory_advice(&cfg, || Some(16 << 30), estimate), None);
        cfg.train.gradient_checkpointing = false;
        cfg.run.silence_advice = vec![Advice::GpuMemory];
        assert_eq!(gpu_memory_advice(&cfg, || Some(16 << 30), estimate), None);
    }

    /// The seed's guidance: full fine-tuning on few images and a high LR on a
    /// pretrained vision tower are warned about, saying what to do and how to
    /// silence it; LoRA, a frozen vision tower or enough data are not.
    #[test]
    fn advice_warns_about_small_data_and_high_lrs_and_can_be_silenced() {
        let mut cfg = RunConfig::default();
        cfg.model.pretrained = Some("openai/clip-vit-base-patch32".into());
        let groups = [vision_group(3e-4)];
        let a = advice(&cfg, 500, &groups);
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(
            a[0].contains("500 training images") && a[0].contains("lp_ft"),
            "{}",
            a[0]
        );
        assert!(
            a[0].contains("run.silence_advice = [\"small_data\"]"),
            "{}",
            a[0]
        );
        assert!(
            a[1].contains("3e-4") && a[1].contains("\"high_lr\""),
            "{}",
            a[1]
        );
        assert!(advice(&cfg, 5000, &[vision_group(1e-5)]).is_empty());
        // Only the head trains: neither applies.
        assert!(advice(&cfg, 500, &[]).is_empty());
        cfg.run.silence_advice = vec![Advice::SmallData, Advice::HighLr];
        assert!(advice(&cfg, 500, &groups).is_empty());
        cfg.run.silence_advice.clear();
        cfg.model.lora = Some(Default::default());
        assert!(advice(&cfg, 500, &groups).is_empty());
        // A model from random weights has no features to lose.
        cfg.model.lora = None;
        cfg.model.pretrained = None;
        assert!(advice(&cfg, 500, &groups).is_empty());
    }
}
