//! Building a trainer, fresh or resumed: the plan of its config
//! ([`super::plan`]), then the parts, then what a checkpoint gives back
//! ([`super::restore`]).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tch::nn;

use clip_data::Loader;
use clip_optim::AdamW;

use super::{Steps, Trainer, plan, restore};
use crate::assembly::{
    build_model, eval_loader, load_datasets, load_eval_sets, load_retrieval, param_groups,
    pipelines, run_classes, run_tokenizer,
};
use crate::config::RunConfig;
use crate::corrupt::CorruptImages;
use crate::ema::Ema;
use crate::error::Result;
use crate::mixed_precision::MixedPrecision;
use crate::parallel::{self, SingleProcess, Strategy};
use crate::run::checkpoint::{Checkpoint, DataFingerprint, TrainState};
use crate::run::folder::RunFolder;

impl Trainer {
    /// A fresh run: claims the run folder (refusing one that holds a run unless
    /// `run.overwrite`), builds everything, and only then clears an old run and
    /// writes `config.resolved.toml`. Under torchrun or srun, joins the
    /// data-parallel group first; rank 0 alone touches the folder.
    pub fn new(cfg: RunConfig) -> Result<Self> {
        let parallel = parallel::join(&cfg.run, cfg.run.device.device()?)?;
        let folder = match parallel.is_main() {
            true => RunFolder::claim(&cfg).and_then(|f| {
                parallel.barrier()?;
                Ok(f)
            }),
            false => parallel.barrier().map(|()| RunFolder::at(cfg.run.dir())),
        };
        match folder {
            Ok(f) => Self::build(cfg, f, None, parallel),
            Err(e) => Err(parallel.explain(e)),
        }
    }

    /// Continues the run in `run_dir` from its newest checkpoint, with its resolved
    /// config and `overrides` applied on top; refused when its data changed.
    pub fn resume(run_dir: &Path, overrides: &[String]) -> Result<Self> {
        Self::resume_with(run_dir, overrides, false)
    }

    /// [`Trainer::resume`], continuing on changed data (images added, removed or
    /// relabelled since the checkpoint) with a warning when `allow_data_change`.
    pub fn resume_with(
        run_dir: &Path,
        overrides: &[String],
        allow_data_change: bool,
    ) -> Result<Self> {
        let (mut folder, cfg) = RunFolder::open(run_dir, overrides)?;
        let parallel = parallel::join(&cfg.run, cfg.run.device.device()?)?;
        if parallel.is_main() {
            // Rank 0 (or the only process) trains in the folder: nobody else may.
            folder.lock().map_err(|e| parallel.explain(e))?;
        }
        let ckpt = crate::run::checkpoint::latest_checkpoint(run_dir)?;
        let resume = (Checkpoint::at(&ckpt), allow_data_change);
        Self::build(cfg, folder, Some(resume), parallel)
    }

    /// `resume`: the checkpoint to continue from, and whether its data may have
    /// changed.
    fn build(
        cfg: RunConfig,
        folder: RunFolder,
        resume: Option<(Checkpoint, bool)>,
        parallel: Box<dyn Strategy>,
    ) -> Result<Self> {
        let given = cfg.clone();
        let fresh = resume.is_none();
        let started = Self::assemble(cfg, folder, resume, &*parallel).and_then(|t| {
            if parallel.is_main() {
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
                t.parallel = parallel;
                Ok(t)
            }
            Err(e) => Err(parallel.explain(e)),
        }
    }

    fn assemble(
        mut cfg: RunConfig,
        folder: RunFolder,
        resume: Option<(Checkpoint, bool)>,
        parallel: &dyn Strategy,
    ) -> Result<Self> {
        // The config as every rank was given it, before a rank picks its device.
        let as_given = cfg.clone();
        let device = plan::runtime(&mut cfg, parallel)?;
        let (rank, world) = (parallel.rank(), parallel.world());
        tch::manual_seed(cfg.run.seed as i64);
        let (train_ds, val_ds) = load_datasets(&cfg)?;
        let fingerprint = DataFingerprint::of(&cfg, &train_ds, &val_ds);
        parallel.agree(&as_given, &fingerprint.to_string())?;
        let classes = run_classes(&train_ds, &val_ds);
        let eval_sets = load_eval_sets(&cfg, &classes)?;
        let vs = nn::VarStore::new(device);
        let model = match &resume {
            Some((ckpt, _)) => restore::model(ckpt, &vs, &cfg, &classes)?,
            None => build_model(&cfg, &vs, classes)?,
        };
        // Every rank starts from rank 0's weights, as DDP's construction does.
        parallel.broadcast_variables(&vs)?;
        let image_size = model.clip.config().vision_config.image_size as usize;
        let (train_pipe, eval_pipe) = pipelines(&cfg, image_size)?;
        let train = Loader::new(train_ds, train_pipe, cfg.data.loader.clone(), cfg.run.seed)?
            .sharded(rank, world)?;
        let retrieval = match load_retrieval(&cfg)? {
            Some(ds) => Some(eval_loader(&cfg, ds, eval_pipe.clone())?.sharded(rank, world)?),
            None => None,
        };
        let eval_sets = eval_sets
            .into_iter()
            .map(|(name, ds)| {
                Ok((
                    name,
                    eval_loader(&cfg, ds, eval_pipe.clone())?.sharded(rank, world)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let val = eval_loader(&cfg, val_ds, eval_pipe)?.sharded(rank, world)?;

        let (groups, trained_towers) = param_groups(&cfg, &model)?;
        if resume.is_none() && parallel.is_main() {
            let mut advice = plan::advice(&cfg, train.dataset().len(), &groups);
            if let tch::Device::Cuda(i) = device {
                advice.extend(plan::gpu_memory_advice(
                    &cfg,
                    || clip_model::cuda_total_memory(i),
                    |ckpt| {
                        crate::memory_estimate::for_run(
                            &cfg,
                            &model,
                            &groups,
                            &trained_towers,
                            ckpt,
                        )
                    },
                ));
            }
            for a in advice {
                tracing::warn!("{a}");
            }
        }
        let mut opt = AdamW::new(groups, cfg.optim.adamw())?;
        let mut amp = MixedPrecision::new(cfg.train.precision, device, &cfg.optim.scaler)?;
        let steps = Steps::plan(
            &cfg,
            train.batches_per_epoch(),
            world,
            train.dataset().len(),
        )?;
        let schedule = steps.schedule(&cfg, &train)?;
        let ema = cfg
            .train
            .ema
            .map(|e| Ema::new(e.decay, &model, &trained_towers));
        let state = match &resume {
            Some((ckpt, allow_data_change)) => restore::progress(
                ckpt,
                &cfg,
                world,
                (&mut opt, &mut amp, ema.as_ref()),
                &folder.checkpoints(),
                steps.total,
                train.batches_per_epoch(),
                (fingerprint, *allow_data_change),
            )?,
            None => TrainState {
                config_hash: cfg.hash(),
                world_size: world,
                data: Some(fingerprint),
                ..TrainState::default()
            },
        };
        let measures_retrieval = plan::retrieval(
            &cfg,
            retrieval.is_some(),
            val.dataset().has_captions(),
            model.kind(),
        )?;
        let tokenizer = match cfg.train.objective.needs_tokenizer() || measures_retrieval {
            true => Some(Arc::new(run_tokenizer(&cfg, &model)?)),
            false => None,
        };
        let objective =
            crate::objective::build(&cfg, &model, train.dataset(), tokenizer.clone(), device)?;
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
            steps,
            stop: Arc::new(AtomicBool::new(false)),
            resumed_from: resume.map(|(c, _)| c.dir().to_path_buf()),
            // `build` puts the run's strategy in once everything is built.
            parallel: Box::new(SingleProcess),
            objective,
            corrupt,
            tokenizer: tokenizer.filter(|_| measures_retrieval),
            retrieval,
            eval_sets,
        };
        me.apply_unfreeze(me.state.epoch);
        Ok(me)
    }
}
