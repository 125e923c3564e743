//! One object for a training step's numerics: the forward under autocast, the
//! backward through the gradient-checkpoint tape (the loss scaled under fp16), and
//! the optimizer step (unscale, clip, skip on inf/NaN, update the scale), as
//! `torch.amp.autocast` + `GradScaler` + `clip_grad_norm_` do together.

use std::path::Path;

use tch::{Device, Tensor};

use clip_model::GradTape;
use clip_optim::{AdamW, GradScaler, ScalerConfig, clip_grad_norm};

use crate::error::Result;
use crate::precision::Precision;

/// What the optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepDecision {
    /// Gradients finite: clipped and applied.
    Stepped { grad_norm: f64 },
    /// fp16: inf/NaN gradients, the scaler skipped the update and backed off.
    Skipped { grad_norm: f64 },
    /// No loss scaling and a non-finite gradient: nothing applied (the caller
    /// decides; the trainer stops the run).
    NonFinite { grad_norm: f64 },
}

impl StepDecision {
    pub fn grad_norm(self) -> f64 {
        match self {
            StepDecision::Stepped { grad_norm }
            | StepDecision::Skipped { grad_norm }
            | StepDecision::NonFinite { grad_norm } => grad_norm,
        }
    }
}

/// Device, precision and (fp16 only) the gradient scaler of a run.
#[derive(Debug)]
pub struct MixedPrecision {
    device: Device,
    precision: Precision,
    scaler: Option<GradScaler>,
}

impl MixedPrecision {
    pub fn new(precision: Precision, device: Device, scaler: &ScalerConfig) -> Result<Self> {
        let scaler = precision
            .needs_loss_scaling()
            .then(|| GradScaler::new(scaler.clone(), device))
            .transpose()?;
        Ok(Self {
            device,
            precision,
            scaler,
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Whether losses are scaled (fp16): non-finite steps are then skipped, not
    /// errors.
    pub fn scales_loss(&self) -> bool {
        self.scaler.is_some()
    }

    /// The current loss scale (fp16 only).
    pub fn loss_scale(&self) -> Option<f64> {
        self.scaler.as_ref().map(GradScaler::scale_value)
    }

    /// Runs `f` under autocast to this precision.
    pub fn autocast<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        self.precision.autocast(self.device, f)
    }

    /// One micro-batch: `forward` (under autocast, recording checkpointed blocks on
    /// the tape) returns the loss; its gradient, weighted by `weight` and scaled
    /// under fp16, is accumulated into the parameters. `before_backward` sees the
    /// tensor the backward starts from just before it runs (a data-parallel
    /// strategy prepares its gradient synchronisation there). Returns the
    /// unweighted loss, detached and not read (reading it waits for the device:
    /// the caller does that once the step's work is queued; a non-finite loss
    /// without loss scaling then stops the run before the optimizer steps).
    pub fn backward<'m>(
        &self,
        weight: f64,
        forward: impl FnOnce(&mut GradTape<'m>) -> Result<Tensor>,
        before_backward: impl FnOnce(&Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        self.autocast(|| -> Result<Tensor> {
            let mut tape = GradTape::new();
            let loss = forward(&mut tape)?;
            let value = loss.detach();
            let weighted = loss * weight;
            let to_back = match &self.scaler {
                Some(s) => s.scale(&weighted),
                None => weighted,
            };
            before_backward(&to_back)?;
            tape.backward(&to_back)?;
            Ok(value)
        })?
    }

    /// The optimizer step on the accumulated gradients: unscale (fp16), clip to
    /// `max_norm` (`f64::INFINITY`: no clipping), then step unless a gradient is
    /// inf/NaN, and update the scale. Gradients are cleared afterwards.
    pub fn step(&mut self, opt: &mut AdamW, max_norm: f64) -> Result<StepDecision> {
        if let Some(s) = self.scaler.as_mut() {
            s.unscale(opt)?;
        }
        let grad_norm = clip_grad_norm(&opt.grads(), max_norm)?;
        let decision = match self.scaler.as_mut() {
            Some(s) => {
                let stepped = s.step(opt)?;
                s.update()?;
                if stepped {
                    StepDecision::Stepped { grad_norm }
                } else {
                    StepDecision::Skipped { grad_norm }
                }
            }
            None if !grad_norm.is_finite() => StepDecision::NonFinite { grad_norm },
            None => {
                opt.step()?;
                StepDecision::Stepped { grad_norm }
            }
        };
        opt.zero_grad()?;
        Ok(decision)
    }

    /// Writes the scaler's state (nothing without one).
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(s) = &self.scaler {
            s.save(path)?;
        }
        Ok(())
    }

    /// Restores the scaler's state (nothing without one).
    pub fn load(&mut self, path: &Path) -> Result<()> {
        if let Some(s) = self.scaler.as_mut() {
            s.load(path)?;
        }
        Ok(())
    }
}
