//! Loss scaling for fp16, behaving as `torch.amp.GradScaler`, on libtorch's
//! `_amp_foreach_non_finite_check_and_unscale_` and `_amp_update_scale_`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::OptimError;
use crate::adamw::AdamW;
use crate::error::problems_to_result;
use crate::kernels::amp_unscale;

/// GradScaler settings (PyTorch's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScalerConfig {
    pub init_scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: i64,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

impl ScalerConfig {
    /// Every bad value, each naming its key under `prefix` (`optim.scaler` in a
    /// run config).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let mut bad = |k: &str, r: String| problems.push(format!("`{prefix}.{k}` {r}"));
        if !(self.init_scale > 0.0 && self.init_scale.is_finite()) {
            bad(
                "init_scale",
                format!("must be positive, got {}", self.init_scale),
            );
        }
        if self.growth_factor <= 1.0 {
            bad(
                "growth_factor",
                format!("must be > 1, got {}", self.growth_factor),
            );
        }
        if !(0.0..1.0).contains(&self.backoff_factor) || self.backoff_factor == 0.0 {
            bad(
                "backoff_factor",
                format!("must be in (0, 1), got {}", self.backoff_factor),
            );
        }
        if self.growth_interval < 1 {
            bad(
                "growth_interval",
                format!("must be >= 1, got {}", self.growth_interval),
            );
        }
        problems
    }

    /// Every bad value at once (keys under `optim.scaler`).
    pub fn validate(&self) -> Result<(), OptimError> {
        problems_to_result("optim.scaler", self.problems("optim.scaler"))
    }
}

/// Dynamic loss scaler: scale the loss, unscale gradients (before clipping), skip
/// the step when any gradient is inf/NaN, then update the scale.
#[derive(Debug)]
pub struct GradScaler {
    config: ScalerConfig,
    scale: Tensor,
    growth_tracker: Tensor,
    found_inf: Option<Tensor>,
}

impl GradScaler {
    pub fn new(config: ScalerConfig, device: Device) -> Result<Self, OptimError> {
        config.validate()?;
        Ok(Self {
            scale: Tensor::full([1], config.init_scale, (Kind::Float, device)),
            growth_tracker: Tensor::zeros([1], (Kind::Int, device)),
            found_inf: None,
            config,
        })
    }

    /// The current scale.
    pub fn scale_value(&self) -> f64 {
        self.scale.double_value(&[0])
    }

    /// `loss * scale`: back-propagate this instead of the loss.
    pub fn scale(&self, loss: &Tensor) -> Tensor {
        loss * self.scale.to_kind(loss.kind())
    }

    /// Divides the optimizer's gradients by the scale and records whether any is
    /// inf/NaN; call before clipping. Once per step.
    pub fn unscale(&mut self, opt: &AdamW) -> Result<(), OptimError> {
        if self.found_inf.is_some() {
            return Err(OptimError::config(
                "scaler",
                "unscale() called twice before update()",
            ));
        }
        let inv_scale = self
            .scale
            .to_kind(Kind::Double)
            .reciprocal()
            .to_kind(Kind::Float);
        let found_inf = Tensor::zeros([1], (Kind::Float, self.scale.device()));
        let grads = opt.grads();
        if !grads.is_empty() {
            tch::no_grad(|| amp_unscale(&grads, &found_inf, &inv_scale))?;
        }
        self.found_inf = Some(found_inf);
        Ok(())
    }

    /// Unscales if not done yet, then steps the optimizer unless a gradient was
    /// inf/NaN. Returns whether the step was taken.
    pub fn step(&mut self, opt: &mut AdamW) -> Result<bool, OptimError> {
        if self.found_inf.is_none() {
            self.unscale(opt)?;
        }
        let skip = self
            .found_inf
            .as_ref()
            .is_some_and(|f| f.double_value(&[0]) > 0.0);
        if !skip {
            opt.step()?;
        }
        Ok(!skip)
    }

    /// Backs off after a skipped step, grows after `growth_interval` finite ones.
    pub fn update(&mut self) -> Result<(), OptimError> {
        let found_inf = self
            .found_inf
            .take()
            .unwrap_or_else(|| Tensor::zeros([1], (Kind::Float, self.scale.device())));
        let c = &self.config;
        let _ = self.scale.f_internal_amp_update_scale_(
            &self.growth_tracker,
            &found_inf,
            c.growth_factor,
            c.backoff_factor,
            c.growth_interval,
        )?;
        Ok(())
    }

    /// Saves scale and growth tracker (safetensors, atomic).
    pub fn save(&self, path: &Path) -> Result<(), OptimError> {
        let tensors = [
            ("scale".to_string(), self.scale.shallow_clone()),
            (
                "growth_tracker".to_string(),
                self.growth_tracker.shallow_clone(),
            ),
        ];
        clip_model::write_safetensors(path, &tensors, BTreeMap::new())?;
        Ok(())
    }

    pub fn load(&mut self, path: &Path) -> Result<(), OptimError> {
        let mut saved: HashMap<String, Tensor> =
            clip_model::read_safetensors(path)?.into_iter().collect();
        let mut take = |k: &str| {
            saved
                .remove(k)
                .filter(|t| t.size() == [1])
                .ok_or_else(|| OptimError::State {
                    path: path.to_path_buf(),
                    reason: format!("no `{k}` of shape [1]"),
                })
        };
        let device = self.scale.device();
        self.scale = take("scale")?.to_kind(Kind::Float).to_device(device);
        self.growth_tracker = take("growth_tracker")?.to_kind(Kind::Int).to_device(device);
        self.found_inf = None;
        Ok(())
    }
}
