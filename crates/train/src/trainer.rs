//! The training loop: accumulation, mixed precision, clipping, unfreezing, EMA,
//! evaluation, early stopping, checkpoints and exact resume.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tch::{Device, Tensor, nn};

use clip_data::{Batch, Dataset, DeviceBatch, DeviceBatches, Loader, SampleRng};
use clip_model::{ClipClassifier, ClipTokenizer, Pass, Tower, write_safetensors};
use clip_optim::{AdamW, GroupReport, LrSchedule};

use crate::config::{Metric, RunConfig};
use crate::corrupt::CorruptImages;
use crate::data_parallel::{DataParallel, is_main};
use crate::ema::Ema;
use crate::error::{Result, TrainError};
use crate::evaluation::{Embeddings, EvalCounts, EvalReport, caption_ids};
use crate::loss::{Targets, contrastive_loss, cross_entropy};
use crate::mixed_precision::{MixedPrecision, StepDecision};
use crate::observe::{Event, Observer, StartInfo};
use crate::policies::{
    CheckpointEntry, Decision, Next, after_step, apply_unfreeze, best_entry, retention,
};
use crate::report::{Best, EvalRecord, FitReport, StepMetrics, peak_memory, reset_peak_memory};
use crate::run_folder::{CHECKPOINT_CONFIG_FILE, RunFolder, TrainState, write_json};

mod bench;
mod build;

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

/// The contrastive objective's captions (`train.objective = "contrastive"`).
enum Captions {
    /// FLYP: every class name in every template, tokenized once
    /// (`[classes * templates, context]`, row `class * templates + template`); a
    /// sample's template is drawn from its own stream of `(seed, epoch, index)`.
    Templates { count: usize, ids: Tensor },
    /// Image-caption data: each image's own caption.
    Data,
}

/// The random stream of a sample's caption template (apart from its
/// augmentation's `(seed, epoch, index)` stream).
const CAPTION_STREAM: u64 = 1 << 62;

impl Captions {
    fn templates(
        tokenizer: &ClipTokenizer,
        templates: &[String],
        classes: &[String],
        device: Device,
    ) -> Result<Self> {
        let prompts: Vec<String> = classes
            .iter()
            .flat_map(|c| templates.iter().map(move |t| t.replace("{}", c)))
            .collect();
        let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
        Ok(Self::Templates {
            count: templates.len(),
            ids: tokenizer.encode(&refs)?.to_device(device),
        })
    }

    /// The token ids of the batch's captions (`data`: the training data).
    fn of(
        &self,
        batch: &Batch,
        seed: u64,
        data: &Dataset,
        tokenizer: &ClipTokenizer,
        device: Device,
    ) -> Result<Tensor> {
        match self {
            Self::Templates { count, ids } => {
                let t = *count as i64;
                let rows: Vec<i64> = batch
                    .labels
                    .iter()
                    .zip(&batch.indices)
                    .map(|(&label, &i)| {
                        let mut rng = SampleRng::new(seed, batch.epoch, CAPTION_STREAM | i as u64);
                        label * t + rng.int_range(0, t - 1)
                    })
                    .collect();
                let rows = Tensor::from_slice(&rows).to_device(ids.device());
                Ok(ids.index_select(0, &rows))
            }
            Self::Data => caption_ids(data, &batch.indices, tokenizer, device),
        }
    }
}

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
    steps_per_epoch: u64,
    total_steps: u64,
    epochs: u64,
    stop: Arc<AtomicBool>,
    resumed_from: Option<PathBuf>,
    /// Set in a data-parallel run (torchrun, srun).
    dp: Option<DataParallel>,
    /// Unreadable images found in the training and validation data.
    corrupt: (CorruptImages, CorruptImages),
    /// The contrastive objective's captions.
    captions: Option<Captions>,
    /// The text tower's tokenizer, in contrastive runs and for retrieval.
    tokenizer: Option<ClipTokenizer>,
    /// `data.retrieval`: the image-caption pairs retrieval is measured on (else
    /// the validation data's captions, if any).
    retrieval: Option<Loader>,
    /// The step whose weights the contrastive heads were last made from (an
    /// evaluation and the checkpoint after it share them).
    heads_at: Option<u64>,
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
        self.total_steps
    }

    /// Rank and world size of a data-parallel run (`(0, 1)` for one process).
    pub fn rank_and_world(&self) -> (usize, usize) {
        self.dp.as_ref().map_or((0, 1), |d| (d.rank(), d.world()))
    }

    /// Whether this process writes the run's files (rank 0, or the only process).
    pub fn is_main(&self) -> bool {
        is_main(self.dp.as_ref())
    }

    /// The trainable parameters, in the optimizer's order.
    fn trainable(&self) -> Vec<(String, Tensor)> {
        self.opt
            .groups()
            .iter()
            .flat_map(|g| &g.params)
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect()
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

    /// Queues one micro-batch's forward and backward; returns its (unweighted) loss
    /// on the device, not yet read. On the step's last micro-batch of a
    /// data-parallel run the backward also averages the gradients over the ranks
    /// (DDP's Reducer), earlier ones accumulate locally (`no_sync`).
    fn micro_step(&self, b: &DeviceBatch, weight: f64, seed: i64, last: bool) -> Result<Tensor> {
        let (batch, x, y) = (&b.batch, &b.images, &b.labels);
        tch::manual_seed(seed);
        let sync = self
            .dp
            .as_ref()
            .filter(|_| last)
            .and_then(DataParallel::reducer);
        self.amp
            .backward(weight, sync, |tape| match &self.captions {
                None => {
                    let logits = self.model.forward(x, Pass::train().tape(tape))?;
                    self.loss(&logits, batch, y)
                }
                Some(c) => {
                    let tok = self.tokenizer.as_ref().ok_or_else(|| {
                        TrainError::config("model.tokenizer", "a contrastive run needs one")
                    })?;
                    let data = self.train.dataset();
                    let ids = c.of(batch, self.cfg.run.seed, data, tok, self.device)?;
                    let clip = &self.model.clip;
                    let out = clip.forward(x, &ids, Pass::train().tape(tape))?;
                    let (image, text) = match &self.dp {
                        // The other ranks' embeddings are this rank's negatives too;
                        // a stand-in image (no share of the batch) is no pair (its
                        // zero rows still give every parameter its zero gradient).
                        Some(d) => {
                            let rows = if batch.placeholder {
                                0
                            } else {
                                batch.len() as i64
                            };
                            // Both embeddings in one gather, side by side.
                            let dim = out.image_embeds.size()[1];
                            let all = d.gather_with_grad(&Tensor::cat(
                                &[
                                    out.image_embeds.narrow(0, 0, rows),
                                    out.text_embeds.narrow(0, 0, rows),
                                ],
                                1,
                            ))?;
                            (
                                all.narrow(1, 0, dim).contiguous(),
                                all.narrow(1, dim, all.size()[1] - dim).contiguous(),
                            )
                        }
                        None => (out.image_embeds, out.text_embeds),
                    };
                    contrastive_loss(
                        &image,
                        &text,
                        &clip.logit_scale,
                        self.cfg.train.label_smoothing,
                    )
                }
            })
    }

    /// Contrastive runs: the head becomes the zero-shot classifier of the text
    /// tower as it is now, for the trained weights and for their EMA (before every
    /// evaluation and checkpoint); the logit scale is the trained weights'.
    fn refresh_heads(&mut self) -> Result<()> {
        let (Some(_), Some(tok)) = (&self.captions, &self.tokenizer) else {
            return Ok(());
        };
        if self.heads_at == Some(self.state.global_step) {
            return Ok(());
        }
        let templates = &self.cfg.model.head.templates;
        if let Some(e) = &self.ema {
            // The EMA's head from the EMA's text tower.
            e.swap();
            let made = self.model.init_zero_shot(tok, templates);
            e.swap();
            made?;
        }
        self.model.init_zero_shot(tok, templates)?;
        self.heads_at = Some(self.state.global_step);
        Ok(())
    }

    /// Contrastive runs: the logit multiplier of the weights in the model now
    /// (the trained ones or, swapped in, the EMA's).
    fn sync_scale(&mut self) {
        if self.captions.is_some() {
            let scale = self.model.clip.logit_scale_value().exp();
            self.model.set_scale(scale);
        }
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
            self.tokenizer.as_ref().filter(|_| self.retrieval.is_none()),
            |_, _| Ok(()),
        )?;
        self.corrupt.1.record(&counts.replaced)?;
        if let Some(dp) = &self.dp {
            counts.sum_over(|v| dp.sum(v))?;
        }
        let mut report = counts.report(self.model.class_names())?;
        if let (Some(pairs), Some(tok)) = (&self.retrieval, &self.tokenizer) {
            let mut e = Embeddings::collect(&self.model, pairs, prec, self.device, tok)?;
            if let Some(dp) = &self.dp {
                e.sum_over(|v| dp.sum(v))?;
            }
            report.retrieval = Some(e.retrieval()?);
        }
        Ok(report)
    }

    fn evaluate(&mut self) -> Result<(EvalReport, Option<EvalReport>)> {
        self.refresh_heads()?;
        let val = self.evaluate_model()?;
        let ema = match self.ema.take() {
            Some(e) => {
                e.swap();
                self.sync_scale();
                let r = self.evaluate_model();
                e.swap();
                self.sync_scale();
                self.ema = Some(e);
                Some(r?)
            }
            None => None,
        };
        Ok((val, ema))
    }

    /// Writes a checkpoint atomically (temp folder + rename) and applies retention.
    fn save_checkpoint(&mut self, metric: Option<f64>) -> Result<PathBuf> {
        self.refresh_heads()?;
        let name = format!("step-{:08}", self.state.global_step);
        // The saved state lists this checkpoint too.
        let mut state = self.state.clone();
        state.checkpoints.retain(|c| c.name != name);
        state.checkpoints.push(CheckpointEntry {
            name: name.clone(),
            step: self.state.global_step,
            metric,
        });
        // Rank 0 writes; the other ranks keep the same bookkeeping and wait for it.
        let main = self.is_main();
        let dir = if main {
            self.folder.write_checkpoint(&name, &state, |tmp| {
                self.model.save_pretrained(&tmp.join("model"))?;
                let config = tmp.join(CHECKPOINT_CONFIG_FILE);
                std::fs::write(&config, self.cfg.to_toml())
                    .map_err(TrainError::io("cannot write", &config))?;
                self.opt.save(&tmp.join("optimizer.safetensors"))?;
                self.amp.save(&tmp.join("scaler.safetensors"))?;
                if let Some(e) = &self.ema {
                    write_safetensors(
                        &tmp.join("ema.safetensors"),
                        &e.tensors(),
                        Default::default(),
                    )?;
                }
                Ok(())
            })?
        } else {
            self.folder.checkpoint(&name)
        };
        self.state.checkpoints = state.checkpoints;
        for old in retention(&self.cfg.train.checkpoints, &self.state.checkpoints) {
            if main {
                self.folder.remove_checkpoint(&old);
            }
            self.state.checkpoints.retain(|c| c.name != old);
        }
        if let Some(dp) = &self.dp {
            dp.barrier()?;
        }
        Ok(dir)
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
    /// this step has); returns the mean loss and the number of images. In a
    /// data-parallel run, this rank's share: its loss weighted by its part of the
    /// global micro-batch (the gradient average over the ranks is then the
    /// single-process gradient), and the loss and image count to sum over ranks.
    /// The losses are read once the step's work is queued (one wait for the
    /// device per step), and each next batch is uploaded while the device works.
    fn accumulate(
        &mut self,
        iter: &mut DeviceBatches,
        n: usize,
        epoch: u64,
    ) -> Result<(f64, usize)> {
        let accum = self.cfg.train.grad_accum as u64;
        let seed = self.cfg.run.seed as i64;
        let (rank, world) = self.rank_and_world();
        // The trainable set does not change within a step (unfreezing happens
        // between epochs): the sync of the last micro-batch and the one after the
        // backward use the same list.
        let trainable = match self.dp {
            Some(_) => self.trainable(),
            None => Vec::new(),
        };
        let mut losses = Vec::with_capacity(n);
        let mut images = 0usize;
        for micro in 0..n {
            let b = iter.next().ok_or_else(|| {
                TrainError::config("data", "the loader ended before the epoch did")
            })??;
            let batch = &b.batch;
            self.corrupt.0.record(&batch.replaced)?;
            let s = seed
                .wrapping_mul(1_000_003)
                .wrapping_add((self.state.global_step * accum + micro as u64) as i64)
                .wrapping_add((rank as i64) << 40);
            // Integer products keep the single-process weights bit for bit (1 / n).
            let counted = batch.counted();
            let (weight, share) = match self.captions {
                // Every rank computes the loss of the whole global batch (gathered
                // embeddings): weighted as one process, reported once.
                Some(_) => (1.0 / n as f64, 1.0 / world as f64),
                None => (
                    (world * counted) as f64 / (batch.global_len * n) as f64,
                    counted as f64 / batch.global_len.max(1) as f64,
                ),
            };
            let last = micro + 1 == n;
            if last && let Some(dp) = self.dp.as_mut() {
                dp.begin_sync(&trainable);
            }
            let l = self.micro_step(&b, weight, s, last)?;
            // The next batch (of this step or the next) goes up while this one runs.
            iter.prefetch();
            losses.push((share, l));
            images += counted;
        }
        if let Some(dp) = self.dp.as_mut() {
            dp.finish_gradients(&trainable)?;
        }
        let mut step_loss = 0.0;
        for (share, l) in losses {
            let l = l.double_value(&[]);
            if !l.is_finite() && !self.amp.scales_loss() {
                self.opt.zero_grad()?;
                return Err(self.non_finite(epoch, l));
            }
            step_loss += share * l / n as f64;
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
        let mut iter = DeviceBatches::new(self.train.epoch(epoch, first_batch), self.device);
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
        iter: &mut DeviceBatches,
        n: usize,
        epoch: u64,
    ) -> Result<StepOutcome> {
        let (step_loss, images) = self.accumulate(iter, n, epoch)?;
        let factor = self.schedule.factor_at(self.state.global_step);
        self.opt.set_lr_factor(factor);
        let decision = self.amp.step(&mut self.opt, self.cfg.optim.clip_norm())?;
        let grad_norm = decision.grad_norm();
        let stepped = match decision {
            StepDecision::Stepped { .. } => true,
            StepDecision::Skipped { .. } => {
                // fp16's smallest subnormal: below it no loss scale can make the
                // gradients finite, every further step would be skipped.
                let floor = 2f64.powi(-24);
                if let Some(scale) = self.amp.loss_scale().filter(|&s| s < floor) {
                    let mut e = self.non_finite(epoch, grad_norm);
                    if let TrainError::NonFinite { kept, .. } = &mut e {
                        *kept = format!(
                            "the fp16 loss scale collapsed to {scale:e} (every step skipped); {kept}"
                        );
                    }
                    return Err(e);
                }
                false
            }
            StepDecision::NonFinite { grad_norm } => {
                return Err(self.non_finite(epoch, grad_norm));
            }
        };
        if stepped && let Some(e) = &self.ema {
            e.update();
        }
        if stepped && self.captions.is_some() {
            // CLIP's temperature stays at most 100 (open_clip clamps it so).
            tch::no_grad(|| {
                let _ = self
                    .model
                    .clip
                    .logit_scale
                    .shallow_clone()
                    .clamp_(0.0, 100f64.ln());
            });
        }
        Ok(StepOutcome {
            loss: step_loss,
            images,
            grad_norm,
            stepped,
        })
    }

    /// The error for a non-finite loss (or gradient norm) in the step after the
    /// current one, naming what is left to resume from.
    fn non_finite(&self, epoch: u64, loss: f64) -> TrainError {
        let kept = match self.state.checkpoints.iter().max_by_key(|c| c.step) {
            Some(c) => format!(
                "the last good checkpoint, {}, is kept",
                self.folder.checkpoint(&c.name).display()
            ),
            None => "no checkpoint was written before it".into(),
        };
        TrainError::NonFinite {
            step: self.state.global_step + 1,
            epoch: epoch + 1,
            loss,
            kept,
        }
    }

    /// This step's loss, images and stop request summed over the ranks (a stop
    /// asked on any rank stops all at the same step).
    fn agree(&self, loss: f64, images: usize, stop: bool) -> Result<(f64, usize, bool)> {
        let Some(dp) = &self.dp else {
            return Ok((loss, images, stop));
        };
        let mut v = [loss, images as f64, f64::from(u8::from(stop))];
        dp.sum(&mut v)?;
        Ok((v[0], v[1] as usize, v[2] > 0.0))
    }

    /// Runs the training to its end (or early stop, or the stop flag). In a
    /// data-parallel run an error names this rank and what the others reported.
    pub fn fit(&mut self, observers: &mut [Box<dyn Observer>]) -> Result<FitReport> {
        let r = self.fit_inner(observers);
        match (&self.dp, r) {
            (Some(dp), Err(e)) => Err(dp.explain(e)),
            (_, r) => r,
        }
    }

    fn fit_inner(&mut self, observers: &mut [Box<dyn Observer>]) -> Result<FitReport> {
        reset_peak_memory(self.device);
        let started = Instant::now();
        let wall_before = self.state.wall_s;
        let info = StartInfo {
            run_dir: self.folder.dir().to_path_buf(),
            epochs: self.epochs,
            steps_per_epoch: self.steps_per_epoch,
            total_steps: self.total_steps,
            start_step: self.state.global_step,
            train_images: self.train.dataset().len(),
            val_images: self.val.dataset().len(),
            groups: self.group_report().to_string(),
            log_every_steps: self.cfg.train.log_every_steps,
        };
        Self::emit(observers, Event::Start(&info))?;
        let batches = self.train.batches_per_epoch();
        let accum = self.cfg.train.grad_accum;
        let (mut interrupted, mut loss_sum, mut loss_n) = (false, 0.0, 0u64);
        'run: while self.state.global_step < self.total_steps && !self.state.stopped_early {
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
                    loss_sum += step_loss;
                    loss_n += 1;
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
                    self.state.global_step >= self.total_steps,
                    // One process: also a stop asked while the step was reported.
                    // Data-parallel: the ranks' agreed flag (a later request is
                    // agreed at the next step).
                    match self.dp {
                        Some(_) => agreed_stop,
                        None => self.stop.load(Ordering::SeqCst),
                    },
                    &self.cfg.train,
                );
                self.state.wall_s = wall_before + started.elapsed().as_secs_f64();
                if plan.evaluate {
                    let train_loss = (loss_n > 0).then(|| loss_sum / loss_n as f64);
                    (loss_sum, loss_n) = (0.0, 0);
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
            write_json(&self.folder.dir().join("summary.json"), &report)?;
        }
        Self::emit(observers, Event::Finish(&report))?;
        Ok(report)
    }

    fn report(&self, interrupted: bool) -> FitReport {
        let metric: Metric = self.cfg.train.checkpoints.metric;
        let best = best_entry(metric, &self.state.checkpoints).map(|e| Best {
            metric: metric.name().into(),
            value: e.metric.unwrap_or(f64::NAN),
            step: e.step,
            checkpoint: self.folder.checkpoint(&e.name),
        });
        let latest = self
            .state
            .checkpoints
            .iter()
            .max_by_key(|c| c.step)
            .map(|c| self.folder.checkpoint(&c.name));
        let params = self.model.params();
        let trainable = params.trainable_count();
        let total = params.count(|_| true);
        let memory = peak_memory(self.device);
        FitReport {
            run_dir: self.folder.dir().to_path_buf(),
            epochs_completed: self.state.epoch,
            global_step: self.state.global_step,
            best,
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
            world_size: self.rank_and_world().1,
            corrupt_train_images: self.corrupt.0.count(),
            corrupt_val_images: self.corrupt.1.count(),
            global_batch_size: self.train.global_batch_size() * self.cfg.train.grad_accum,
        }
    }
}
