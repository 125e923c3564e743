//! The `[optim]` section of a run config: AdamW, parameter groups, schedule,
//! clipping and loss scaling in one place, validated here with every problem
//! reported at once.

use serde::{Deserialize, Serialize};

use clip_model::Tower;

use crate::adamw::AdamWConfig;
use crate::groups::{GroupConfig, LrPolicy, NoDecay};
use crate::scaler::ScalerConfig;
use crate::schedule::Schedule;

/// `[optim]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub lr: f64,
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub amsgrad: bool,
    pub no_decay: NoDecay,
    pub lr_policy: LrPolicy,
    pub frozen_towers: Vec<Tower>,
    pub schedule: Schedule,
    /// Clip the global gradient norm to this value (`0` disables).
    pub max_grad_norm: f64,
    /// GradScaler settings (used with `train.precision = "fp16"`).
    pub scaler: ScalerConfig,
}

impl Default for OptimConfig {
    fn default() -> Self {
        let g = GroupConfig::default();
        let a = AdamWConfig::default();
        Self {
            lr: g.lr,
            weight_decay: g.weight_decay,
            betas: a.betas,
            eps: a.eps,
            amsgrad: a.amsgrad,
            no_decay: g.no_decay,
            lr_policy: g.lr_policy,
            frozen_towers: g.frozen_towers,
            schedule: Schedule::default(),
            max_grad_norm: 1.0,
            scaler: ScalerConfig::default(),
        }
    }
}

impl OptimConfig {
    /// The parameter-group settings.
    pub fn groups(&self) -> GroupConfig {
        GroupConfig {
            lr: self.lr,
            weight_decay: self.weight_decay,
            no_decay: self.no_decay,
            lr_policy: self.lr_policy.clone(),
            frozen_towers: self.frozen_towers.clone(),
        }
    }

    /// The optimizer's hyper-parameters.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            betas: self.betas,
            eps: self.eps,
            amsgrad: self.amsgrad,
        }
    }

    /// The clipping threshold (`f64::INFINITY` when clipping is off).
    pub fn clip_norm(&self) -> f64 {
        if self.max_grad_norm > 0.0 {
            self.max_grad_norm
        } else {
            f64::INFINITY
        }
    }

    /// Every bad value of the section, each naming its key under `prefix`
    /// (`optim` in a run config).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut p = self.groups().problems(prefix);
        p.extend(self.adamw().problems(prefix));
        p.extend(self.schedule.problems(&format!("{prefix}.schedule")));
        p.extend(self.scaler.problems(&format!("{prefix}.scaler")));
        if !(self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite()) {
            p.push(format!(
                "`{prefix}.max_grad_norm` must be >= 0 (0 disables clipping), got {}",
                self.max_grad_norm
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Warmup;

    /// Every problem of the section at once, each under the caller's prefix.
    #[test]
    fn every_problem_is_reported_under_the_prefix() {
        let cfg = OptimConfig {
            lr: -1.0,
            betas: [1.5, 0.999],
            eps: 0.0,
            lr_policy: LrPolicy::Llrd {
                decay: 2.0,
                head_lr: Some(-1.0),
            },
            schedule: Schedule::Cosine {
                warmup: Warmup::Fraction(1.5),
                min_lr_ratio: 2.0,
            },
            max_grad_norm: -1.0,
            scaler: ScalerConfig {
                growth_interval: 0,
                ..ScalerConfig::default()
            },
            ..OptimConfig::default()
        };
        let p = cfg.problems("opt");
        for key in [
            "`opt.lr`",
            "`opt.lr_policy.decay`",
            "`opt.lr_policy.head_lr`",
            "`opt.betas[0]`",
            "`opt.eps`",
            "`opt.schedule.warmup`",
            "`opt.schedule.min_lr_ratio`",
            "`opt.scaler.growth_interval`",
            "`opt.max_grad_norm`",
        ] {
            assert!(
                p.iter().any(|m| m.starts_with(key)),
                "{key} missing from {p:?}"
            );
        }
        assert_eq!(p.len(), 9, "{p:?}");
        assert!(OptimConfig::default().problems("optim").is_empty());
    }
}
