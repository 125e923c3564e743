//! Building a trainer: a fresh run or a resumed one, from the config's parts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tch::{Device, nn};

use clip_data::Loader;
use clip_model::{ClipClassifier, HeadKind};
use clip_optim::AdamW;

use super::{Captions, Trainer};
use crate::assembly::{
    build_model, eval_loader, load_datasets, load_retrieval, param_groups, pipelines, run_classes,
    run_tokenizer,
};
use crate::config::{Metric, Objective, RunConfig};
use crate::corrupt::CorruptImages;
use crate::data_parallel::{DataParallel, is_main};
use crate::ema::Ema;
use crate::error::{Result, TrainError};
use crate::mixed_precision::MixedPrecision;
use crate::precision::Precision;
use crate::run_folder::{RunFolder, TrainState};

/// `e`, with what the other ranks reported in a data-parallel run.
fn explained(dp: Option<&DataParallel>, e: TrainError) -> TrainError {
    match dp {
        Some(d) => d.explain(e),
        None => e,
    }
}

impl Trainer {
    /// A fresh run: claims the run folder (refusing one that holds a run unless
    /// `run.overwrite`), builds everything, and only then clears an old run and
    /// writes `config.resolved.toml`. Under torchrun or srun, joins the
    /// data-parallel group first; rank 0 alone touches the folder.
    pub fn new(cfg: RunConfig) -> Result<Self> {
        let dp = DataParallel::join(&cfg.run, cfg.run.device.device()?)?;
        let folder = match &dp {
            Some(d) if d.rank() > 0 => d.barrier().map(|()| RunFolder::at(cfg.run.dir())),
            _ => RunFolder::claim(&cfg).and_then(|f| {
                if let Some(d) = &dp {
                    d.barrier()?;
                }
                Ok(f)
            }),
        };
        match folder {
            Ok(f) => Self::build(cfg, f, None, dp),
            Err(e) => Err(explained(dp.as_ref(), e)),
        }
    }

    /// Continues the run in `run_dir` from its newest checkpoint, with its resolved
    /// config and `overrides` applied on top.
    pub fn resume(run_dir: &Path, overrides: &[String]) -> Result<Self> {
        let (mut folder, cfg) = RunFolder::open(run_dir, overrides)?;
        let dp = DataParallel::join(&cfg.run, cfg.run.device.device()?)?;
        if is_main(dp.as_ref()) {
            // Rank 0 (or the only process) trains in the folder: nobody else may.
            folder.lock().map_err(|e| explained(dp.as_ref(), e))?;
        }
        let ckpt = folder.latest_checkpoint()?;
        Self::build(cfg, folder, Some(ckpt), dp)
    }

    fn build(
        cfg: RunConfig,
        folder: RunFolder,
        resume: Option<PathBuf>,
        dp: Option<DataParallel>,
    ) -> Result<Self> {
        let given = cfg.clone();
        let fresh = resume.is_none();
        let started = Self::assemble(cfg, folder, resume, dp.as_ref()).and_then(|t| {
            if is_main(dp.as_ref()) {
                // Everything is built: only now may an old run go (fresh runs); a
                // resume's overrides become the run's config (the next resume
                // keeps them).
                if fresh {
                    t.folder.start(&given)?;
                } else {
                    t.folder.save_config(&given)?;
                }
            }
            Ok(t)
        });
        match started {
            Ok(mut t) => {
                t.dp = dp;
                Ok(t)
            }
            Err(e) => Err(explained(dp.as_ref(), e)),
        }
    }

    fn assemble(
        mut cfg: RunConfig,
        folder: RunFolder,
        resume: Option<PathBuf>,
        dp: Option<&DataParallel>,
    ) -> Result<Self> {
        if cfg.train.gradient_checkpointing {
            // Returns freed activations to the OS so checkpointing's saving shows;
            // mmap-backed buffers cost page faults, so only when it pays.
            clip_model::release_freed_activations();
        }
        if cfg.run.threads > 0 {
            tch::set_num_threads(cfg.run.threads as i32);
        }
        let device = cfg.run.device.device()?;
        let device = dp.map_or(device, |d| d.device(device));
        let (rank, world) = dp.map_or((0, 1), |d| (d.rank(), d.world()));
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
        tch::manual_seed(cfg.run.seed as i64);
        let (train_ds, val_ds) = load_datasets(&cfg)?;
        let classes = run_classes(&train_ds, &val_ds);
        let vs = nn::VarStore::new(device);
        let model = match &resume {
            Some(ckpt) => {
                let mut m = ClipClassifier::load(&vs.root(), &ckpt.join("model"))?;
                if m.class_names() != classes.as_slice() {
                    return Err(TrainError::Resume {
                        path: ckpt.clone(),
                        reason: format!(
                            "its classes {:?} differ from the data's {:?}",
                            m.class_names(),
                            classes
                        ),
                    });
                }
                m.clip.set_regularization(cfg.model.regularization)?;
                m.clip
                    .set_gradient_checkpointing(cfg.train.gradient_checkpointing);
                m
            }
            None => build_model(&cfg, &vs, classes)?,
        };
        if let Some(d) = dp {
            // Every rank starts from rank 0's weights, as DDP's construction does.
            d.broadcast_variables(&vs)?;
        }
        let image_size = model.clip.config().vision_config.image_size as usize;
        let (train_pipe, eval_pipe) = pipelines(&cfg, image_size)?;
        let train = Loader::new(train_ds, train_pipe, cfg.data.loader.clone(), cfg.run.seed)?
            .sharded(rank, world)?;
        let retrieval_loader = match load_retrieval(&cfg)? {
            Some(ds) => Some(eval_loader(&cfg, ds, eval_pipe.clone())?.sharded(rank, world)?),
            None => None,
        };
        let val = eval_loader(&cfg, val_ds, eval_pipe)?.sharded(rank, world)?;

        let (groups, trained_towers) = param_groups(&cfg, &model)?;
        let mut opt = AdamW::new(groups, cfg.optim.adamw())?;
        let mut amp = MixedPrecision::new(cfg.train.precision, device, &cfg.optim.scaler)?;

        let batches = train.batches_per_epoch() as u64;
        if batches == 0 {
            return Err(TrainError::config(
                "data.loader.batch_size",
                format!(
                    "times the {world} rank(s) is larger than the {} training images with drop_last = true",
                    train.dataset().len()
                ),
            ));
        }
        let accum = cfg.train.grad_accum as u64;
        let steps_per_epoch = batches.div_ceil(accum);
        let total_steps = match cfg.train.max_steps {
            Some(n) => n,
            None => cfg
                .train
                .epochs
                .checked_mul(steps_per_epoch)
                .ok_or_else(|| {
                    TrainError::config(
                        "train.epochs",
                        format!(
                            "{} epochs of {steps_per_epoch} steps overflow the step counter",
                            cfg.train.epochs
                        ),
                    )
                })?,
        };
        if total_steps == 0 {
            return Err(TrainError::config(
                if cfg.train.max_steps.is_some() {
                    "train.max_steps"
                } else {
                    "train.epochs"
                },
                "the run would take 0 steps",
            ));
        }
        let epochs = total_steps.div_ceil(steps_per_epoch);
        let schedule = cfg.optim.schedule.build(total_steps)?;
        let ema = cfg
            .train
            .ema
            .map(|e| Ema::new(e.decay, &model, &trained_towers));

        let mut state = TrainState {
            config_hash: cfg.hash(),
            world_size: world,
            ..TrainState::default()
        };
        if let Some(ckpt) = &resume {
            let saved = RunFolder::read_state(ckpt)?;
            let differences = match RunFolder::checkpoint_config(ckpt) {
                Some(earlier) => cfg.differences(&earlier),
                // A checkpoint written before checkpoints kept their config.
                None if saved.config_hash != state.config_hash => {
                    vec!["(this checkpoint does not say which keys)".to_string()]
                }
                None => Vec::new(),
            };
            if !differences.is_empty() {
                tracing::warn!(
                    "the config differs from the one {} was written with; continuing with the new one: {}",
                    ckpt.display(),
                    differences.join("; ")
                );
            }
            opt.load(&ckpt.join("optimizer.safetensors"))?;
            amp.load(&ckpt.join("scaler.safetensors"))?;
            if let Some(e) = &ema {
                e.load(&ckpt.join("ema.safetensors"))?;
            }
            let saved_world = saved.world_size;
            state = TrainState {
                config_hash: state.config_hash,
                world_size: world,
                ..saved
            };
            if saved_world != world {
                // The global batch changes: continue the epoch after the samples
                // already seen (a whole number of new global batches), not exactly.
                let b = cfg.data.loader.batch_size;
                let seen = state.batch_in_epoch * b * saved_world;
                state.batch_in_epoch = seen / (b * world);
                tracing::warn!(
                    "resuming on {world} rank(s) a run that {saved_world} rank(s) wrote: the global batch \
                     changes from {} to {} images (batch_size {b} x ranks x grad_accum {accum}) and the \
                     run has {total_steps} steps in all; the epoch continues at global batch {} \
                     ({} of its samples seen before), which is a continuation, not an exact resume",
                    b * saved_world * accum as usize,
                    b * world * accum as usize,
                    state.batch_in_epoch,
                    seen
                );
            }
            state.checkpoints.retain(|c| folder.has_checkpoint(&c.name));
        }
        // Image-caption pairs (data.retrieval, else validation data with
        // captions): image <-> text retrieval too.
        let retrieval = retrieval_loader.is_some() || val.dataset().has_captions();
        if retrieval && model.kind() == HeadKind::Hf {
            return Err(TrainError::config(
                match retrieval_loader {
                    Some(_) => "data.retrieval",
                    None => "data.val",
                },
                "has captions: image <-> text retrieval needs the text tower, which \
                 model.head.kind = \"hf\" leaves out (use \"cosine\", or data without captions)",
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
        let contrastive = cfg.train.objective == Objective::Contrastive;
        let tokenizer = match contrastive || retrieval {
            true => Some(run_tokenizer(&cfg, &model)?),
            false => None,
        };
        let captions = match (&tokenizer, contrastive) {
            (Some(tok), true) => {
                if cfg.optim.frozen_towers.contains(&clip_model::Tower::Text) {
                    tracing::warn!(
                        "train.objective = \"contrastive\" with the text tower in optim.frozen_towers: \
                         only the image side trains (FLYP trains both: optim.frozen_towers = [])"
                    );
                }
                Some(match train.dataset().has_captions() {
                    true => Captions::Data,
                    false => Captions::templates(
                        tok,
                        &cfg.model.head.templates,
                        model.class_names(),
                        device,
                    )?,
                })
            }
            _ => None,
        };
        let share = cfg.data.loader.max_corrupt_share;
        let corrupt = (
            CorruptImages::new("data.train", train.dataset(), share),
            CorruptImages::new("data.val", val.dataset(), share),
        );
        let me = Self {
            cfg,
            folder,
            device,
            _vs: vs,
            model,
            opt,
            amp,
            schedule,
            train,
            val,
            ema,
            state,
            trained_towers,
            steps_per_epoch,
            total_steps,
            epochs,
            stop: Arc::new(AtomicBool::new(false)),
            resumed_from: resume,
            dp: None,
            corrupt,
            captions,
            tokenizer,
            retrieval: retrieval_loader,
            heads_at: None,
        };
        me.apply_unfreeze(me.state.epoch);
        Ok(me)
    }
}
