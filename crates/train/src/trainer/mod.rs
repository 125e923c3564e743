//! The training loop: accumulation, mixed precision, clipping, unfreezing, EMA,
//! evaluation, early stopping, checkpoints and exact resume. The loop carries out
//! what its seams decide: the objective ([`crate::objective`]) computes each
//! micro-batch's loss, the data-parallel strategy ([`crate::parallel`]) shares
//! the work, the checkpoint module ([`crate::run::checkpoint`]) writes and
//! restores, the policies ([`crate::policies`]) decide when to evaluate, save and
//! stop, and observers ([`crate::observe`]) watch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tch::{Device, nn};

use clip_data::{DeviceBatches, Loader};
use clip_model::{ClipClassifier, ClipTokenizer, Tower};
use clip_optim::{AdamW, GroupReport, LrSchedule};

use crate::config::RunConfig;
use crate::corrupt::CorruptImages;
use crate::device::{peak_memory, reset_peak_memory};
use crate::ema::Ema;
use crate::error::Result;
use crate::eval::{Embeddings, EvalCounts, EvalReport};
use crate::mixed_precision::MixedPrecision;
use crate::objective::Objective;
use crate::observe::{Event, Observer, StartInfo};
use crate::parallel::Strategy;
use crate::policies::{
    CheckpointEntry, Decision, Next, after_step, apply_unfreeze, best_entry, retention,
};
use crate::report::{Best, EvalRecord, FitReport, SUMMARY_FILE, StepMetrics, write_json};
use crate::run::checkpoint::{Checkpoint, Contents, TrainState, measured};
use crate::run::folder::RunFolder;

mod bench;
mod build;
mod launch;
mod plan;
mod restore;
mod step;

pub use bench::BenchSetup;
pub use launch::Launched;
use plan::Steps;
pub use plan::{DryRun, dry_run};
use step::StepOutcome;

/// A training run.
pub struct Trainer {
    cfg: RunConfig,
    folder: RunFolder,
    device: Device,
    _vs: nn::VarStore,
    model: ClipClassifier,
    opt: AdamW,
    amp: MixedPrecision,
    schedule: LrSchedule,
    train: Loader,
    val: Loader,
    ema: Option<Ema>,
    state: TrainState,
    trained_towers: Vec<Tower>,
    steps: Steps,
    stop: Arc<AtomicBool>,
    resumed_from: Option<PathBuf>,
    /// One process, or this rank's part in a data-parallel run (torchrun, srun).
    parallel: Box<dyn Strategy>,
    /// What the steps minimise (`train.objective`).
    objective: Box<dyn Objective>,
    /// Unreadable images found in the training and validation data.
    corrupt: (CorruptImages, CorruptImages),
    /// The text tower's tokenizer, for retrieval on image-caption data.
    tokenizer: Option<Arc<ClipTokenizer>>,
    /// `data.retrieval`: the image-caption pairs retrieval is measured on (else
    /// the validation data's captions, if any).
    retrieval: Option<Loader>,
    /// `data.eval_sets`, by name.
    eval_sets: Vec<(String, Loader)>,
}

impl Trainer {
    /// A flag that, once set (e.g. by a SIGINT handler), makes the run finish the
    /// current step, write a checkpoint and return.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn run_dir(&self) -> &Path {
        self.folder.dir()
    }

    pub fn config(&self) -> &RunConfig {
        &self.cfg
    }

    pub fn model(&self) -> &ClipClassifier {
        &self.model
    }

    pub fn state(&self) -> &TrainState {
        &self.state
    }

    pub fn resumed_from(&self) -> Option<&Path> {
        self.resumed_from.as_deref()
    }

    pub fn total_steps(&self) -> u64 {
        self.steps.total
    }

    /// Rank and world size of a data-parallel run (`(0, 1)` for one process).
    pub fn rank_and_world(&self) -> (usize, usize) {
        (self.parallel.rank(), self.parallel.world())
    }

    /// Whether this process writes the run's files (rank 0, or the only process).
    pub fn is_main(&self) -> bool {
        self.parallel.is_main()
    }

    /// The parameter-group table with the current trainable flags.
    pub fn group_report(&self) -> GroupReport {
        GroupReport::new(self.opt.groups(), self.opt.lrs())
    }

    /// The run's test set (`data.test`) evaluated once with the checkpoint its
    /// validation selected, written to `<run>/test.json`; `None` without one.
    pub fn test(&self) -> Result<Option<EvalReport>> {
        crate::run::test_set::evaluate_test(self.folder.dir(), &self.cfg)
    }

    fn apply_unfreeze(&self, epoch: u64) -> i64 {
        apply_unfreeze(
            self.model.params(),
            self.cfg.train.unfreeze,
            &self.trained_towers,
            epoch,
            self.steps.epochs,
            self.model.clip.config().vision_config.num_hidden_layers as u32,
        )
    }

    /// The model on the validation set (sharded over the ranks in a data-parallel
    /// run, the counts summed: every image counted once).
    fn evaluate_model(&mut self) -> Result<EvalReport> {
        let prec = self.amp.precision();
        let mut counts = EvalCounts::collect(
            &self.model,
            &self.val,
            prec,
            self.device,
            self.tokenizer
                .as_deref()
                .filter(|_| self.retrieval.is_none()),
            |_, _| Ok(()),
        )?;
        self.corrupt.1.record(&counts.replaced)?;
        counts.sum_over(|v| self.parallel.sum(v))?;
        let mut report = counts.report(self.model.class_names())?;
        if let (Some(pairs), Some(tok)) = (&self.retrieval, &self.tokenizer) {
            let mut e = Embeddings::collect(&self.model, pairs, prec, self.device, tok)?;
            e.sum_over(|v| self.parallel.sum(v))?;
            report.retrieval = Some(e.retrieval()?);
        }
        for (name, loader) in &self.eval_sets {
            let mut counts =
                EvalCounts::collect(&self.model, loader, prec, self.device, None, |_, _| Ok(()))?;
            counts.sum_over(|v| self.parallel.sum(v))?;
            report
                .eval_sets
                .insert(name.clone(), counts.report(self.model.class_names())?);
        }
        Ok(report)
    }

    /// The model's and the EMA's evaluations, their heads brought up to date first.
    fn evaluate(&mut self) -> Result<(EvalReport, Option<EvalReport>)> {
        let step = self.state.global_step;
        self.objective
            .prepare_heads(&mut self.model, self.ema.as_ref(), step)?;
        let val = self.evaluate_model()?;
        let ema = match self.ema.take() {
            Some(e) => {
                e.swap();
                self.objective.weights_swapped(&mut self.model);
                let r = self.evaluate_model();
                e.swap();
                self.objective.weights_swapped(&mut self.model);
                self.ema = Some(e);
                Some(r?)
            }
            None => None,
        };
        Ok((val, ema))
    }

    /// Writes a checkpoint (the checkpoint module makes it atomic), applies
    /// retention and tells the observers.
    fn checkpoint(
        &mut self,
        observers: &mut [Box<dyn Observer>],
        metric: Option<f64>,
    ) -> Result<()> {
        let step = self.state.global_step;
        self.objective
            .prepare_heads(&mut self.model, self.ema.as_ref(), step)?;
        let name = format!("step-{step:08}");
        // The saved state lists this checkpoint too.
        let mut state = self.state.clone();
        state.checkpoints.retain(|c| c.name != name);
        state.checkpoints.push(CheckpointEntry {
            name: name.clone(),
            step,
            metric,
        });
        // Rank 0 writes; the other ranks keep the same bookkeeping and wait for it.
        let main = self.is_main();
        let checkpoints = self.folder.checkpoints();
        let dir = if main {
            self.folder.check_present()?;
            let written = checkpoints.write(
                &name,
                &Contents {
                    model: &self.model,
                    config: &self.cfg,
                    optimizer: &self.opt,
                    precision: &self.amp,
                    ema: self.ema.as_ref(),
                    state: &state,
                },
            );
            // A folder deleted or moved while the checkpoint was written: say that,
            // not which of its files could not be written.
            if written.is_err() {
                self.folder.check_present()?;
            }
            written?
        } else {
            checkpoints.path(&name)
        };
        self.state.checkpoints = state.checkpoints;
        for old in retention(&self.cfg.train.checkpoints, &self.state.checkpoints) {
            if main {
                checkpoints.remove(&old);
            }
            self.state.checkpoints.retain(|c| c.name != old);
        }
        self.parallel.barrier()?;
        Self::emit(observers, Event::Checkpoint(&dir))
    }

    fn emit(observers: &mut [Box<dyn Observer>], e: Event) -> Result<()> {
        for o in observers.iter_mut() {
            o.event(&e)?;
        }
        Ok(())
    }

    /// Evaluates, records, and (at epoch ends or when asked) checkpoints; returns
    /// early stopping's decision.
    fn eval_and_save(
        &mut self,
        observers: &mut [Box<dyn Observer>],
        train_loss: Option<f64>,
        save: bool,
    ) -> Result<Decision> {
        Self::emit(observers, Event::EvalStart)?;
        let (val, ema) = self.evaluate()?;
        let record = EvalRecord {
            epoch: self
                .state
                .epoch
                .saturating_sub(u64::from(self.state.batch_in_epoch == 0))
                + 1,
            step: self.state.global_step,
            train_loss,
            val,
            ema,
        };
        Self::emit(observers, Event::Eval(&record))?;
        let metric = record.val.metric(&self.cfg.train.checkpoints.metric);
        let decision = match &self.cfg.train.early_stopping {
            Some(es) => self
                .state
                .early_stopping
                .observe(es, record.val.metric(&es.metric)),
            None => Decision::Continue,
        };
        if decision == Decision::Stop {
            self.state.stopped_early = true;
        }
        self.state.last_eval = Some(record);
        if save {
            self.checkpoint(observers, Some(metric))?;
        }
        Ok(decision)
    }

    /// Runs the training to its end (or early stop, or the stop flag). In a
    /// data-parallel run an error names this rank and what the others reported.
    pub fn fit(&mut self, observers: &mut [Box<dyn Observer>]) -> Result<FitReport> {
        self.fit_inner(observers)
            .map_err(|e| self.parallel.explain(e))
    }

    fn fit_inner(&mut self, observers: &mut [Box<dyn Observer>]) -> Result<FitReport> {
        reset_peak_memory(self.device);
        let started = Instant::now();
        let wall_before = self.state.wall_s;
        let info = StartInfo {
            run_dir: self.folder.dir().to_path_buf(),
            epochs: self.steps.epochs,
            steps_per_epoch: self.steps.per_epoch,
            total_steps: self.steps.total,
            start_step: self.state.global_step,
            train_images: self.train.dataset().len(),
            val_images: self.val.dataset().len(),
            groups: self.group_report().to_string(),
            log_every_steps: self.cfg.train.log_every_steps,
            eval_every_steps: self.cfg.train.eval_every_steps,
        };
        Self::emit(observers, Event::Start(&info))?;
        let batches = self.train.batches_per_epoch();
        let accum = self.cfg.train.grad_accum;
        let mut interrupted = false;
        'run: while self.state.global_step < self.steps.total && !self.state.stopped_early {
            let epoch = self.state.epoch;
            let trainable = self.apply_unfreeze(epoch);
            Self::emit(observers, Event::EpochStart { epoch, trainable })?;
            let mut iter = DeviceBatches::new(
                self.train.epoch(epoch, self.state.batch_in_epoch),
                self.device,
            );
            while self.state.batch_in_epoch < batches {
                let t0 = Instant::now();
                let n = accum.min(batches - self.state.batch_in_epoch);
                let StepOutcome {
                    loss: step_loss,
                    images,
                    grad_norm,
                    stepped,
                } = self.train_step(&mut iter, n, epoch)?;
                let (step_loss, images, agreed_stop) =
                    self.agree(step_loss, images, self.stop.load(Ordering::SeqCst))?;
                self.state.global_step += 1;
                self.state.batch_in_epoch += n;
                if step_loss.is_finite() {
                    self.state.loss_since_eval.0 += step_loss;
                    self.state.loss_since_eval.1 += 1;
                }
                let m = StepMetrics {
                    epoch: epoch + 1,
                    step: self.state.global_step,
                    loss: step_loss,
                    lr: self.opt.lrs().iter().copied().fold(0.0, f64::max),
                    grad_norm,
                    loss_scale: self.amp.loss_scale(),
                    images_per_s: images as f64 / t0.elapsed().as_secs_f64().max(1e-9),
                    skipped: !stepped,
                    corrupt_images: self.corrupt.0.count(),
                    gpu_peak_mib: match self.device {
                        Device::Cuda(_) => Some(peak_memory(self.device).peak_mib),
                        _ => None,
                    },
                };
                Self::emit(observers, Event::Step(&m))?;
                let epoch_done = self.state.batch_in_epoch >= batches;
                if epoch_done {
                    self.state.epoch += 1;
                    self.state.batch_in_epoch = 0;
                }
                let plan = after_step(
                    self.state.global_step,
                    epoch_done,
                    self.state.global_step >= self.steps.total,
                    // Several processes: the ranks' agreed flag (a later request
                    // is agreed at the next step). One process: also a stop asked
                    // while the step was reported.
                    agreed_stop || (self.parallel.world() == 1 && self.stop.load(Ordering::SeqCst)),
                    &self.cfg.train,
                );
                self.state.wall_s = wall_before + started.elapsed().as_secs_f64();
                if plan.evaluate {
                    let (loss_sum, loss_n) = std::mem::take(&mut self.state.loss_since_eval);
                    let train_loss = (loss_n > 0).then(|| loss_sum / loss_n as f64);
                    if self.eval_and_save(observers, train_loss, plan.checkpoint)? == Decision::Stop
                    {
                        break 'run;
                    }
                } else if plan.checkpoint {
                    self.checkpoint(observers, None)?;
                }
                match plan.next {
                    Next::Step => {}
                    Next::Epoch => break,
                    Next::Finish => break 'run,
                    Next::Interrupt => {
                        interrupted = true;
                        break 'run;
                    }
                }
            }
        }
        self.state.wall_s = wall_before + started.elapsed().as_secs_f64();
        let report = self.report(interrupted);
        if self.is_main() {
            self.folder.check_present()?;
            write_json(&self.folder.dir().join(SUMMARY_FILE), &report)?;
        }
        Self::emit(observers, Event::Finish(&report))?;
        Ok(report)
    }

    fn report(&self, interrupted: bool) -> FitReport {
        let metric = &self.cfg.train.checkpoints.metric;
        let best = best_entry(metric.kind, &self.state.checkpoints).map(|e| Best {
            metric: metric.name(),
            value: e.metric.unwrap_or(f64::NAN),
            step: e.step,
            checkpoint: self.folder.checkpoints().path(&e.name),
        });
        // The best checkpoint's own evaluation, as its saved progress holds it.
        let best_eval = best
            .as_ref()
            .and_then(|b| measured(&Checkpoint::at(&b.checkpoint).model_dir()))
            .and_then(|m| m.eval);
        let latest = self
            .state
            .checkpoints
            .iter()
            .max_by_key(|c| c.step)
            .map(|c| self.folder.checkpoints().path(&c.name));
        let params = self.model.params();
        let trainable = params.trainable_count();
        let total = params.count(|_| true);
        let memory = peak_memory(self.device);
        FitReport {
            run_dir: self.folder.dir().to_path_buf(),
            epochs_completed: self.state.epoch,
            global_step: self.state.global_step,
            best,
            best_eval,
            last_eval: self.state.last_eval.clone(),
            wall_s: self.state.wall_s,
            peak_memory_mib: memory.peak_mib,
            memory_kind: memory.kind,
            peak_reserved_mib: memory.peak_reserved_mib,
            total_parameters: total,
            trainable_parameters: trainable,
            trainable_share: trainable as f64 / total.max(1) as f64,
            interrupted,
            stopped_early: self.state.stopped_early,
            latest_checkpoint: latest,
            world_size: self.parallel.world(),
            corrupt_train_images: self.corrupt.0.count(),
            corrupt_val_images: self.corrupt.1.count(),
            global_batch_size: self.train.global_batch_size() * self.cfg.train.grad_accum,
        }
    }
}
