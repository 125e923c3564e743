//! One optimizer step: its micro-batches' forward and backward (the objective's
//! loss, mixed precision, the data-parallel strategy's synchronisation), then
//! unscale, clip, step or skip.

use clip_data::DeviceBatches;
use tch::Tensor;

use super::Trainer;
use crate::error::{Result, TrainError};
use crate::mixed_precision::StepDecision;
use crate::objective::MicroBatch;

/// What one optimizer step did.
pub(super) struct StepOutcome {
    /// Mean loss over the micro-batches.
    pub loss: f64,
    pub images: usize,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// False when the GradScaler skipped the step.
    pub stepped: bool,
}

impl Trainer {
    /// Forward and backward over the next `n` micro-batches of `iter`, each loss
    /// weighted `1 / n` (PyTorch's `loss / accumulation_steps`, over the micro-batches
    /// this step has); returns the mean loss and the number of images. In a
    /// data-parallel run, this rank's share as the objective weighs it (the
    /// gradient average over the ranks is then the single-process gradient), and
    /// the loss and image count to sum over ranks. The losses are read once the
    /// step's work is queued (one wait for the device per step), and each next
    /// batch is uploaded while the device works.
    fn accumulate(
        &mut self,
        iter: &mut DeviceBatches,
        n: usize,
        epoch: u64,
    ) -> Result<(f64, usize)> {
        let accum = self.cfg.train.grad_accum as u64;
        let seed = self.cfg.run.seed as i64;
        let (rank, world) = (self.parallel.rank(), self.parallel.world());
        self.parallel.begin_step(&self.opt);
        let mut losses = Vec::with_capacity(n);
        let mut images = 0usize;
        for micro in 0..n {
            let b = iter.next().ok_or_else(|| {
                TrainError::config("data", "the loader ended before the epoch did")
            })??;
            self.corrupt.0.record(&b.batch.replaced)?;
            let s = seed
                .wrapping_mul(1_000_003)
                .wrapping_add((self.state.global_step * accum + micro as u64) as i64)
                .wrapping_add((rank as i64) << 40);
            let (weight, share) = self.objective.weights(&b.batch, n, world);
            let last = micro + 1 == n;
            tch::manual_seed(s);
            let m = MicroBatch {
                batch: &b,
                data: self.train.dataset(),
                parallel: &*self.parallel,
            };
            let (objective, model, parallel) = (&self.objective, &self.model, &self.parallel);
            let l = self.amp.backward(
                weight,
                |tape| objective.loss(model, &m, tape),
                |loss| parallel.before_backward(loss, last),
            )?;
            // The next batch (of this step or the next) goes up while this one runs.
            iter.prefetch();
            losses.push((share, l));
            images += b.batch.counted();
        }
        self.parallel.finish_gradients()?;
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
        Ok(self.step_loss_and_gradients(epoch, first_batch)?.1)
    }

    /// [`Trainer::step_gradients`] with the loss the step reports (the mean of
    /// its micro-batches' unweighted losses).
    pub fn step_loss_and_gradients(
        &mut self,
        epoch: u64,
        first_batch: usize,
    ) -> Result<(f64, Vec<(String, Tensor)>)> {
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
        let (loss, _) = self.accumulate(&mut iter, n, epoch)?;
        let grads = self
            .opt
            .groups()
            .iter()
            .flat_map(|g| &g.params)
            .filter(|(_, t)| t.grad().defined())
            .map(|(name, t)| (name.clone(), t.grad().detach().copy()))
            .collect();
        self.opt.zero_grad()?;
        Ok((loss, grads))
    }

    /// One optimizer step over `n` micro-batches drawn from `iter`.
    pub(super) fn train_step(
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
        if stepped {
            if let Some(e) = &self.ema {
                e.update();
            }
            self.objective.after_step(&self.model);
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
                self.folder.checkpoints().path(&c.name).display()
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
    pub(super) fn agree(&self, loss: f64, images: usize, stop: bool) -> Result<(f64, usize, bool)> {
        let mut v = [loss, images as f64, f64::from(u8::from(stop))];
        self.parallel.sum(&mut v)?;
        Ok((v[0], v[1] as usize, v[2] > 0.0))
    }
}
