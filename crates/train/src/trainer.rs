//! The training loop: accumulation, mixed precision, clipping, unfreezing, EMA,
//! evaluation, early stopping, checkpoints and exact resume.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tch::{Device, Tensor, nn};

use clip_data::{Batch, Loader};
use clip_model::{ClipClassifier, Tower, write_atomic, write_safetensors};
use clip_optim::{AdamW, GroupReport, LrSchedule};

use crate::assembly::{build_model, eval_loader, load_datasets, param_groups, pipelines};
use crate::config::{Metric, RunConfig};
use crate::ema::Ema;
use crate::error::{Result, TrainError};
use crate::evaluation::{EvalReport, evaluate};
use crate::loss::{Targets, cross_entropy};
use crate::mixed_precision::{MixedPrecision, StepDecision};
use crate::observe::{EvalRecord, Event, Observer, StartInfo, StepMetrics};
use crate::policies::{CheckpointEntry, Decision, apply_unfreeze, best_entry, retention};
use crate::precision::Precision;
use crate::report::{BenchReport, Best, FitReport, peak_memory_mib};
use crate::run_folder::{STATE_FILE, TrainState, checkpoints_dir, latest_checkpoint, write_json};

/// What one optimizer step did.
struct StepOutcome {
    /// Mean loss over the micro-batches.
    loss: f64,
    images: usize,
    /// Global gradient norm before clipping.
    grad_norm: f64,
    /// False when the GradScaler skipped the step.
    stepped: bool,
}

/// A training run.
pub struct Trainer {
    cfg: RunConfig,
    run_dir: PathBuf,
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
    steps_per_epoch: u64,
    total_steps: u64,
    epochs: u64,
    stop: Arc<AtomicBool>,
    resumed_from: Option<PathBuf>,
}

impl Trainer {
    /// A fresh run: creates the run folder (refusing one that holds a run unless
    /// `run.overwrite`), writes `config.resolved.toml` and builds everything.
    pub fn new(cfg: RunConfig) -> Result<Self> {
        let run_dir = cfg.run.dir();
        if latest_checkpoint(&run_dir).is_ok() {
            if !cfg.run.overwrite {
                return Err(TrainError::config(
                    "run.name",
                    format!(
                        "the run folder {} already holds a run: continue it with `--resume {}`, pick another `run.name`, or set `run.overwrite = true`",
                        run_dir.display(),
                        run_dir.display()
                    ),
                ));
            }
            std::fs::remove_dir_all(&run_dir).map_err(TrainError::io("cannot clear", &run_dir))?;
        }
        std::fs::create_dir_all(checkpoints_dir(&run_dir))
            .map_err(TrainError::io("cannot create the run folder", &run_dir))?;
        write_atomic(
            &run_dir.join("config.resolved.toml"),
            cfg.to_toml().as_bytes(),
        )?;
        Self::build(cfg, run_dir, None)
    }

    /// Continues the run in `run_dir` from its newest checkpoint, with its resolved
    /// config and `overrides` applied on top.
    pub fn resume(run_dir: &Path, overrides: &[String]) -> Result<Self> {
        let cfg_path = run_dir.join("config.resolved.toml");
        if !cfg_path.is_file() {
            return Err(TrainError::Resume {
                path: run_dir.to_path_buf(),
                reason: "no config.resolved.toml: give the folder a run was written to (output_dir/name)".into(),
            });
        }
        let mut cfg = RunConfig::load(&cfg_path, overrides)?;
        // The run lives where it is, whatever output_dir said.
        if let (Some(parent), Some(name)) = (run_dir.parent(), run_dir.file_name()) {
            cfg.run.output_dir = parent.to_path_buf();
            cfg.run.name = name.to_string_lossy().into();
        }
        let ckpt = latest_checkpoint(run_dir)?;
        Self::build(cfg, run_dir.to_path_buf(), Some(ckpt))
    }

    fn build(mut cfg: RunConfig, run_dir: PathBuf, resume: Option<PathBuf>) -> Result<Self> {
        if cfg.train.gradient_checkpointing {
            // Returns freed activations to the OS so checkpointing's saving shows;
            // mmap-backed buffers cost page faults, so only when it pays.
            clip_model::release_freed_activations();
        }
        if cfg.run.threads > 0 {
            tch::set_num_threads(cfg.run.threads as i32);
        }
        let device = cfg.run.device.device()?;
        if let Some(p) = cfg.train.precision_on_cpu.filter(|_| device == Device::Cpu) {
            if p != cfg.train.precision {
                let name = |p: Precision| format!("{p:?}").to_lowercase();
                tracing::warn!(
                    "train.precision = \"{}\" falls back to train.precision_on_cpu = \"{}\" on the CPU",
                    name(cfg.train.precision),
                    name(p)
                );
            }
            cfg.train.precision = p;
        }
        tch::manual_seed(cfg.run.seed as i64);
        let (train_ds, val_ds) = load_datasets(&cfg)?;
        let classes = train_ds.classes().to_vec();
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
        let image_size = model.clip.config().vision_config.image_size as usize;
        let (train_pipe, eval_pipe) = pipelines(&cfg, image_size)?;
        let train = Loader::new(train_ds, train_pipe, cfg.data.loader.clone(), cfg.run.seed)?;
        let val = eval_loader(&cfg, val_ds, eval_pipe)?;

        let (groups, trained_towers) = param_groups(&cfg, &model)?;
        let mut opt = AdamW::new(groups, cfg.optim.adamw())?;
        let mut amp = MixedPrecision::new(cfg.train.precision, device, &cfg.optim.scaler)?;

        let batches = train.batches_per_epoch() as u64;
        if batches == 0 {
            return Err(TrainError::config(
                "data.loader.batch_size",
                format!(
                    "is larger than the {} training images with drop_last = true",
                    train.dataset().len()
                ),
            ));
        }
        let accum = cfg.train.grad_accum as u64;
        let steps_per_epoch = batches.div_ceil(accum);
        let total_steps = cfg
            .train
            .max_steps
            .unwrap_or(cfg.train.epochs * steps_per_epoch);
        let epochs = total_steps.div_ceil(steps_per_epoch);
        let schedule = cfg.optim.schedule.build(total_steps)?;
        let ema = cfg
            .train
            .ema
            .map(|e| Ema::new(e.decay, &model, &trained_towers));

        let mut state = TrainState {
            config_hash: cfg.hash(),
            ..TrainState::default()
        };
        if let Some(ckpt) = &resume {
            let text = std::fs::read_to_string(ckpt.join(STATE_FILE))
                .map_err(TrainError::io("cannot read", &ckpt.join(STATE_FILE)))?;
            let saved: TrainState =
                serde_json::from_str(&text).map_err(|e| TrainError::Resume {
                    path: ckpt.clone(),
                    reason: format!("{STATE_FILE} is unreadable: {e}"),
                })?;
            if saved.config_hash != state.config_hash {
                tracing::warn!(
                    "the config differs from the one the checkpoint was written with (overrides?); continuing with the new one"
                );
            }
            opt.load(&ckpt.join("optimizer.safetensors"))?;
            amp.load(&ckpt.join("scaler.safetensors"))?;
            if let Some(e) = &ema {
                e.load(&ckpt.join("ema.safetensors"))?;
            }
            state = TrainState {
                config_hash: state.config_hash,
                ..saved
            };
            state
                .checkpoints
                .retain(|c| checkpoints_dir(&run_dir).join(&c.name).is_dir());
        }
        let me = Self {
            cfg,
            run_dir,
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
        };
        me.apply_unfreeze(me.state.epoch);
        Ok(me)
    }

    /// A flag that, once set (e.g. by a SIGINT handler), makes the run finish the
    /// current step, write a checkpoint and return.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
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
        self.total_steps
    }

    /// The parameter-group table with the current trainable flags.
    pub fn group_report(&self) -> GroupReport {
        GroupReport::new(self.opt.groups(), self.opt.lrs())
    }

    fn vision_layers(&self) -> u32 {
        self.model.clip.config().vision_config.num_hidden_layers as u32
    }

    fn apply_unfreeze(&self, epoch: u64) -> i64 {
        apply_unfreeze(
            self.model.params(),
            self.cfg.train.unfreeze,
            &self.trained_towers,
            epoch,
            self.epochs,
            self.vision_layers(),
        )
    }

    fn loss(&self, logits: &Tensor, batch: &Batch, y: &Tensor) -> Result<Tensor> {
        let ls = self.cfg.train.label_smoothing;
        match &batch.targets {
            Some(t) => {
                let k = logits.size()[1];
                let t = Tensor::from_slice(t).view([-1, k]).to_device(self.device);
                cross_entropy(logits, Targets::Soft(&t), ls)
            }
            None => cross_entropy(logits, Targets::Classes(y), ls),
        }
    }

    /// One micro-batch forward and backward; returns the unscaled loss.
    fn micro_step(&self, batch: &Batch, weight: f64, seed: i64) -> Result<f64> {
        let (x, y) = batch.to_tensors(self.device);
        tch::manual_seed(seed);
        self.amp.backward(weight, |tape| {
            let logits = self.model.forward(&x, true, Some(tape))?;
            self.loss(&logits, batch, &y)
        })
    }

    fn evaluate(&self) -> Result<(EvalReport, Option<EvalReport>)> {
        let prec = self.amp.precision();
        let val = evaluate(&self.model, &self.val, prec, self.device, |_, _| Ok(()))?;
        let ema = match &self.ema {
            Some(e) => {
                e.swap();
                let r = evaluate(&self.model, &self.val, prec, self.device, |_, _| Ok(()));
                e.swap();
                Some(r?)
            }
            None => None,
        };
        Ok((val, ema))
    }

    /// Writes a checkpoint atomically (temp folder + rename) and applies retention.
    fn save_checkpoint(&mut self, metric: Option<f64>) -> Result<PathBuf> {
        let dir = checkpoints_dir(&self.run_dir);
        let name = format!("step-{:08}", self.state.global_step);
        let tmp = dir.join(format!(".tmp-{name}"));
        let final_dir = dir.join(&name);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(TrainError::io("cannot clear", &tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(TrainError::io("cannot create", &tmp))?;
        // The saved state lists this checkpoint too.
        let mut state = self.state.clone();
        state.checkpoints.retain(|c| c.name != name);
        state.checkpoints.push(CheckpointEntry {
            name: name.clone(),
            step: self.state.global_step,
            metric,
        });
        let written = (|| -> Result<()> {
            self.model.save_pretrained(&tmp.join("model"))?;
            self.opt.save(&tmp.join("optimizer.safetensors"))?;
            self.amp.save(&tmp.join("scaler.safetensors"))?;
            if let Some(e) = &self.ema {
                write_safetensors(
                    &tmp.join("ema.safetensors"),
                    &e.tensors(),
                    Default::default(),
                )?;
            }
            write_json(&tmp.join(STATE_FILE), &state)?;
            Ok(())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir)
                .map_err(TrainError::io("cannot replace", &final_dir))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(TrainError::io("cannot finish", &final_dir))?;
        self.state.checkpoints = state.checkpoints;
        for old in retention(&self.cfg.train.checkpoints, &self.state.checkpoints) {
            let p = dir.join(&old);
            if let Err(e) = std::fs::remove_dir_all(&p) {
                tracing::warn!("cannot delete old checkpoint {}: {e}", p.display());
            }
            self.state.checkpoints.retain(|c| c.name != old);
        }
        Ok(final_dir)
    }

    /// Writes a checkpoint and tells the observers.
    fn checkpoint(
        &mut self,
        observers: &mut [Box<dyn Observer>],
        metric: Option<f64>,
    ) -> Result<()> {
        let p = self.save_checkpoint(metric)?;
        Self::emit(observers, Event::Checkpoint(&p))
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
        let (val, ema) = self.evaluate()?;
        let record = EvalRecord {
            epoch: self
                .state
                .epoch
                .saturating_sub(u64::from(self.state.batch_in_epoch == 0)),
            step: self.state.global_step,
            train_loss,
            val,
            ema,
        };
        Self::emit(observers, Event::Eval(&record))?;
        let metric = record.val.metric(self.cfg.train.checkpoints.metric);
        let decision = match &self.cfg.train.early_stopping {
            Some(es) => self
                .state
                .early_stopping
                .observe(es, record.val.metric(es.metric)),
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

    /// Forward and backward over the next `n` micro-batches of `iter`, each loss
    /// weighted `1 / n` (PyTorch's `loss / accumulation_steps`, over the micro-batches
    /// this step has); returns the mean loss and the number of images.
    fn accumulate(
        &mut self,
        iter: &mut clip_data::EpochIter,
        n: usize,
        epoch: u64,
    ) -> Result<(f64, usize)> {
        let accum = self.cfg.train.grad_accum as u64;
        let seed = self.cfg.run.seed as i64;
        let (mut step_loss, mut images) = (0.0, 0usize);
        for micro in 0..n {
            let batch = iter.next().ok_or_else(|| {
                TrainError::config("data", "the loader ended before the epoch did")
            })??;
            let s = seed
                .wrapping_mul(1_000_003)
                .wrapping_add((self.state.global_step * accum + micro as u64) as i64);
            let l = self.micro_step(&batch, 1.0 / n as f64, s)?;
            if !l.is_finite() && !self.amp.scales_loss() {
                self.opt.zero_grad()?;
                return Err(TrainError::NonFinite {
                    step: self.state.global_step + 1,
                    epoch: epoch + 1,
                    loss: l,
                });
            }
            step_loss += l / n as f64;
            images += batch.len();
        }
        Ok((step_loss, images))
    }

    /// The gradients the loop accumulates for the optimizer step that starts at
    /// batch `first_batch` of `epoch` (up to `train.grad_accum` micro-batches, each
    /// loss weighted `1 / n`): what unscaling, clipping and AdamW then act on (under
    /// fp16 still multiplied by the loss scale), by parameter name. Nothing is
    /// stepped and the gradients are cleared afterwards.
    pub fn step_gradients(
        &mut self,
        epoch: u64,
        first_batch: usize,
    ) -> Result<Vec<(String, Tensor)>> {
        let batches = self.train.batches_per_epoch();
        let n = self
            .cfg
            .train
            .grad_accum
            .min(batches.saturating_sub(first_batch));
        if n == 0 {
            return Err(TrainError::config(
                "data",
                format!("epoch {epoch} has {batches} batches, none from {first_batch}"),
            ));
        }
        self.opt.zero_grad()?;
        let mut iter = self.train.epoch(epoch, first_batch);
        self.accumulate(&mut iter, n, epoch)?;
        let grads = self
            .opt
            .groups()
            .iter()
            .flat_map(|g| &g.params)
            .filter(|(_, t)| t.grad().defined())
            .map(|(name, t)| (name.clone(), t.grad().detach().copy()))
            .collect();
        self.opt.zero_grad()?;
        Ok(grads)
    }

    /// One optimizer step over `n` micro-batches drawn from `iter`.
    fn train_step(
        &mut self,
        iter: &mut clip_data::EpochIter,
        n: usize,
        epoch: u64,
    ) -> Result<StepOutcome> {
        let (step_loss, images) = self.accumulate(iter, n, epoch)?;
        let factor = self.schedule.factor_at(self.state.global_step);
        self.opt.set_lr_factor(factor);
        let max_norm = if self.cfg.optim.max_grad_norm > 0.0 {
            self.cfg.optim.max_grad_norm
        } else {
            f64::INFINITY
        };
        let decision = self.amp.step(&mut self.opt, max_norm)?;
        let grad_norm = decision.grad_norm();
        let stepped = match decision {
            StepDecision::Stepped { .. } => true,
            StepDecision::Skipped { .. } => false,
            StepDecision::NonFinite { grad_norm } => {
                return Err(TrainError::NonFinite {
                    step: self.state.global_step + 1,
                    epoch: epoch + 1,
                    loss: grad_norm,
                });
            }
        };
        if stepped && let Some(e) = &self.ema {
            e.update();
        }
        Ok(StepOutcome {
            loss: step_loss,
            images,
            grad_norm,
            stepped,
        })
    }

    /// Steady-state training speed: `warmup` untimed steps, then `steps` timed
    /// ones (no evaluation, no checkpoints), and the loader alone over as many
    /// batches. Leaves the run folder untouched.
    pub fn bench(&mut self, warmup: usize, steps: usize) -> Result<BenchReport> {
        self.apply_unfreeze(self.epochs.saturating_sub(1));
        let accum = self.cfg.train.grad_accum;
        let batches = self.train.batches_per_epoch();
        let mut times = Vec::with_capacity(steps);
        let mut images = 0usize;
        let mut epoch = 0u64;
        let mut iter = self.train.epoch(epoch, 0);
        let mut pos = 0usize;
        for i in 0..warmup + steps {
            if pos + accum > batches {
                epoch += 1;
                iter = self.train.epoch(epoch, 0);
                pos = 0;
            }
            let t0 = Instant::now();
            let outcome = self.train_step(&mut iter, accum, epoch)?;
            pos += accum;
            if i >= warmup {
                times.push(t0.elapsed().as_secs_f64());
                images += outcome.images;
            }
        }
        drop(iter);
        let train_time: f64 = times.iter().sum();
        let t0 = Instant::now();
        let mut loader_images = 0usize;
        let mut e = 0;
        while loader_images < images.max(1) {
            for b in self.train.epoch(1000 + e, 0) {
                loader_images += b?.len();
                if loader_images >= images.max(1) {
                    break;
                }
            }
            e += 1;
        }
        let loader_time = t0.elapsed().as_secs_f64();
        times.sort_by(f64::total_cmp);
        Ok(BenchReport {
            steps,
            batch_size: self.cfg.data.loader.batch_size,
            grad_accum: accum,
            precision: self.amp.precision(),
            train_images_per_s: images as f64 / train_time.max(1e-9),
            loader_images_per_s: loader_images as f64 / loader_time.max(1e-9),
            median_step_s: times.get(times.len() / 2).copied().unwrap_or(0.0),
            peak_memory_mib: peak_memory_mib(),
            trainable_parameters: self.model.params().trainable_count(),
        })
    }

    /// Runs the training to its end (or early stop, or the stop flag).
    pub fn fit(&mut self, observers: &mut [Box<dyn Observer>]) -> Result<FitReport> {
        let started = Instant::now();
        let wall_before = self.state.wall_s;
        let info = StartInfo {
            run_dir: self.run_dir.clone(),
            epochs: self.epochs,
            steps_per_epoch: self.steps_per_epoch,
            total_steps: self.total_steps,
            start_step: self.state.global_step,
            train_images: self.train.dataset().len(),
            val_images: self.val.dataset().len(),
            groups: self.group_report().to_string(),
        };
        Self::emit(observers, Event::Start(&info))?;
        let batches = self.train.batches_per_epoch();
        let accum = self.cfg.train.grad_accum;
        let (mut interrupted, mut loss_sum, mut loss_n) = (false, 0.0, 0u64);
        'run: while self.state.global_step < self.total_steps && !self.state.stopped_early {
            let epoch = self.state.epoch;
            let trainable = self.apply_unfreeze(epoch);
            Self::emit(observers, Event::EpochStart { epoch, trainable })?;
            let mut iter = self.train.epoch(epoch, self.state.batch_in_epoch);
            while self.state.batch_in_epoch < batches {
                let t0 = Instant::now();
                let n = accum.min(batches - self.state.batch_in_epoch);
                let StepOutcome {
                    loss: step_loss,
                    images,
                    grad_norm,
                    stepped,
                } = self.train_step(&mut iter, n, epoch)?;
                self.state.global_step += 1;
                self.state.batch_in_epoch += n;
                if step_loss.is_finite() {
                    loss_sum += step_loss;
                    loss_n += 1;
                }
                let m = StepMetrics {
                    epoch,
                    step: self.state.global_step,
                    loss: step_loss,
                    lr: self.opt.lrs().iter().copied().fold(0.0, f64::max),
                    grad_norm,
                    loss_scale: self.amp.loss_scale(),
                    images_per_s: images as f64 / t0.elapsed().as_secs_f64().max(1e-9),
                    skipped: !stepped,
                };
                Self::emit(observers, Event::Step(&m))?;
                let step = self.state.global_step;
                let epoch_done = self.state.batch_in_epoch >= batches;
                let run_done = step >= self.total_steps;
                if epoch_done {
                    self.state.epoch += 1;
                    self.state.batch_in_epoch = 0;
                }
                let eval_now = epoch_done
                    || run_done
                    || self
                        .cfg
                        .train
                        .eval_every_steps
                        .is_some_and(|k| step.is_multiple_of(k));
                let stop = self.stop.load(Ordering::SeqCst);
                let save_now = epoch_done
                    || run_done
                    || stop
                    || self
                        .cfg
                        .train
                        .checkpoints
                        .every_steps
                        .is_some_and(|k| step.is_multiple_of(k));
                self.state.wall_s = wall_before + started.elapsed().as_secs_f64();
                if eval_now {
                    let train_loss = (loss_n > 0).then(|| loss_sum / loss_n as f64);
                    (loss_sum, loss_n) = (0.0, 0);
                    if self.eval_and_save(observers, train_loss, save_now)? == Decision::Stop {
                        break 'run;
                    }
                } else if save_now {
                    self.checkpoint(observers, None)?;
                }
                if stop {
                    interrupted = true;
                    break 'run;
                }
                if run_done {
                    break 'run;
                }
                if epoch_done {
                    break;
                }
            }
        }
        self.state.wall_s = wall_before + started.elapsed().as_secs_f64();
        let report = self.report(interrupted);
        write_json(&self.run_dir.join("summary.json"), &report)?;
        Self::emit(observers, Event::Finish(&report))?;
        Ok(report)
    }

    fn report(&self, interrupted: bool) -> FitReport {
        let metric: Metric = self.cfg.train.checkpoints.metric;
        let dir = checkpoints_dir(&self.run_dir);
        let best = best_entry(metric, &self.state.checkpoints).map(|e| Best {
            metric: metric.name().into(),
            value: e.metric.unwrap_or(f64::NAN),
            step: e.step,
            checkpoint: dir.join(&e.name),
        });
        let latest = self
            .state
            .checkpoints
            .iter()
            .max_by_key(|c| c.step)
            .map(|c| dir.join(&c.name));
        let params = self.model.params();
        let trainable = params.trainable_count();
        let total = params.count(|_| true);
        FitReport {
            run_dir: self.run_dir.clone(),
            epochs_completed: self.state.epoch,
            global_step: self.state.global_step,
            best,
            last_eval: self.state.last_eval.clone(),
            wall_s: self.state.wall_s,
            peak_memory_mib: peak_memory_mib(),
            total_parameters: total,
            trainable_parameters: trainable,
            trainable_share: trainable as f64 / total.max(1) as f64,
            interrupted,
            stopped_early: self.state.stopped_early,
            latest_checkpoint: latest,
        }
    }
}
