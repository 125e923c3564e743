//! Learning-rate schedules as pure functions of the optimizer step.
//!
//! The factors equal transformers' `get_cosine_schedule_with_warmup`,
//! `get_cosine_with_min_lr_schedule_with_warmup`, `get_linear_schedule_with_warmup`
//! and `get_constant_schedule_with_warmup`: multiply the group's base LR by
//! [`LrSchedule::factor_at`]. The trainer advances them per optimizer step, not per
//! micro-batch.

use serde::{Deserialize, Serialize};

use crate::OptimError;
use crate::error::problems_to_result;

/// Linear warmup length, in optimizer steps or as a fraction of the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Warmup {
    /// `warmup = 500`.
    Steps(u64),
    /// `warmup = 0.1`: `ceil(0.1 * total)` steps, as transformers' `Trainer` turns
    /// `warmup_ratio` into steps.
    Fraction(f64),
    /// `warmup = { fraction = 0.1, round = "down" }`: the fraction with the
    /// rounding named; `"down"` is the tutorial's `int(0.1 * num_training_steps)`.
    Rounded { fraction: f64, round: Rounding },
}

/// How a warmup fraction becomes whole steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// `ceil` (transformers' `Trainer.get_warmup_steps`).
    Up,
    /// `int()`, truncation (the tutorial's snippet).
    Down,
}

impl Warmup {
    /// The fraction of the run, for a warmup given as one.
    fn fraction(self) -> Option<f64> {
        match self {
            Warmup::Steps(_) => None,
            Warmup::Fraction(f) | Warmup::Rounded { fraction: f, .. } => Some(f),
        }
    }

    /// Whole warmup steps of a run of `total` steps.
    fn steps(self, total: u64) -> u64 {
        let of = |f: f64, round: Rounding| {
            let steps = f * total as f64;
            match round {
                Rounding::Up => steps.ceil() as u64,
                Rounding::Down => steps.floor() as u64,
            }
        };
        match self {
            Warmup::Steps(n) => n,
            Warmup::Fraction(f) => of(f, Rounding::Up),
            Warmup::Rounded { fraction, round } => of(fraction, round),
        }
    }
}

impl Default for Warmup {
    fn default() -> Self {
        Warmup::Fraction(0.1)
    }
}

/// The schedule as written in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// Warmup, then half a cosine from 1 down to `min_lr_ratio`.
    Cosine {
        #[serde(default)]
        warmup: Warmup,
        #[serde(default)]
        min_lr_ratio: f64,
    },
    /// Warmup, then linear decay to zero.
    Linear {
        #[serde(default)]
        warmup: Warmup,
    },
    /// Warmup, then constant.
    Constant {
        #[serde(default = "no_warmup")]
        warmup: Warmup,
    },
}

fn no_warmup() -> Warmup {
    Warmup::Steps(0)
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::Cosine {
            warmup: Warmup::default(),
            min_lr_ratio: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Cosine { min_lr_ratio: f64 },
    Linear,
    Constant,
}

/// A schedule resolved for a run of `total_steps` optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    shape: Shape,
    warmup_steps: u64,
    total_steps: u64,
}

impl Schedule {
    fn warmup(&self) -> Warmup {
        match *self {
            Schedule::Cosine { warmup, .. }
            | Schedule::Linear { warmup }
            | Schedule::Constant { warmup } => warmup,
        }
    }

    /// The values that are wrong whatever the run's length, each naming its key
    /// under `prefix` (`optim.schedule` in a run config).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(f) = self.warmup().fraction().filter(|f| !(0.0..1.0).contains(f)) {
            problems.push(format!(
                "`{prefix}.warmup`: a fraction must be in [0, 1), got {f}"
            ));
        }
        if let Schedule::Cosine { min_lr_ratio, .. } = *self
            && !(0.0..=1.0).contains(&min_lr_ratio)
        {
            problems.push(format!(
                "`{prefix}.min_lr_ratio` must be in [0, 1], got {min_lr_ratio}"
            ));
        }
        problems
    }

    /// Resolves the schedule for a run of `total_steps` optimizer steps; reports a
    /// warmup that is not shorter than the run or a ratio out of range.
    pub fn build(&self, total_steps: u64) -> Result<LrSchedule, OptimError> {
        problems_to_result("optim.schedule", self.problems("optim.schedule"))?;
        let warmup_steps = self.warmup().steps(total_steps);
        if total_steps > 0 && warmup_steps >= total_steps {
            return Err(OptimError::config(
                "optim.schedule.warmup",
                format!(
                    "{warmup_steps} warmup steps is not shorter than the run's {total_steps} steps"
                ),
            ));
        }
        let shape = match *self {
            Schedule::Cosine { min_lr_ratio, .. } => Shape::Cosine { min_lr_ratio },
            Schedule::Linear { .. } => Shape::Linear,
            Schedule::Constant { .. } => Shape::Constant,
        };
        Ok(LrSchedule {
            shape,
            warmup_steps,
            total_steps,
        })
    }
}

impl LrSchedule {
    pub fn warmup_steps(&self) -> u64 {
        self.warmup_steps
    }

    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }

    /// The multiplier of the base LR for the update made at `step` (0-based), as
    /// transformers' `LambdaLR` lambdas compute it.
    pub fn factor_at(&self, step: u64) -> f64 {
        let (step, warmup, total) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        if step < warmup {
            return step / warmup.max(1.0);
        }
        match self.shape {
            Shape::Constant => 1.0,
            Shape::Linear => ((total - step) / (total - warmup).max(1.0)).max(0.0),
            Shape::Cosine { min_lr_ratio } => {
                let progress = (step - warmup) / (total - warmup).max(1.0);
                let cosine = (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0);
                cosine * (1.0 - min_lr_ratio) + min_lr_ratio
            }
        }
    }

    /// `base_lr * factor_at(step)`.
    pub fn lr_at(&self, base_lr: f64, step: u64) -> f64 {
        base_lr * self.factor_at(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(warmup: Warmup, min_lr_ratio: f64, total: u64) -> LrSchedule {
        Schedule::Cosine {
            warmup,
            min_lr_ratio,
        }
        .build(total)
        .unwrap()
    }

    #[test]
    fn cosine_ramps_up_peaks_and_decays_to_the_floor() {
        let s = cosine(Warmup::Fraction(0.1), 0.0, 100);
        assert_eq!(s.warmup_steps(), 10);
        assert_eq!(s.factor_at(0), 0.0);
        assert_eq!(s.factor_at(5), 0.5);
        assert_eq!(s.factor_at(10), 1.0);
        assert!((s.factor_at(55) - 0.5).abs() < 1e-12);
        assert!(s.factor_at(100).abs() < 1e-12);
        let floor = cosine(Warmup::Steps(10), 0.1, 100);
        assert!((floor.factor_at(100) - 0.1).abs() < 1e-12);
        assert!((floor.factor_at(55) - 0.55).abs() < 1e-12);
    }

    #[test]
    fn linear_and_constant_follow_transformers() {
        let lin = Schedule::Linear {
            warmup: Warmup::Steps(4),
        }
        .build(20)
        .unwrap();
        assert_eq!(lin.factor_at(2), 0.5);
        assert_eq!(lin.factor_at(12), 0.5);
        assert_eq!(lin.factor_at(25), 0.0);
        let constant = Schedule::Constant {
            warmup: Warmup::Steps(0),
        }
        .build(20)
        .unwrap();
        assert_eq!(constant.factor_at(0), 1.0);
        assert_eq!(constant.lr_at(1e-5, 19), 1e-5);
    }

    #[test]
    fn parses_from_toml_and_rejects_unknown_keys() {
        let s: Schedule =
            toml::from_str("kind = \"cosine\"\nwarmup = 0.1\nmin_lr_ratio = 0.05").unwrap();
        assert_eq!(
            s,
            Schedule::Cosine {
                warmup: Warmup::Fraction(0.1),
                min_lr_ratio: 0.05
            }
        );
        let s: Schedule = toml::from_str("kind = \"linear\"\nwarmup = 30").unwrap();
        assert_eq!(
            s,
            Schedule::Linear {
                warmup: Warmup::Steps(30)
            }
        );
        let err = toml::from_str::<Schedule>("kind = \"cosine\"\nwarmpu = 3").unwrap_err();
        assert!(err.to_string().contains("warmpu"), "{err}");
    }

    #[test]
    fn warmup_fraction_rounds_up_unless_told_down() {
        // 0.1 * 37 = 3.7: transformers' Trainer takes 4, the tutorial's int() 3.
        assert_eq!(cosine(Warmup::Fraction(0.1), 0.0, 37).warmup_steps(), 4);
        let s: Schedule =
            toml::from_str("kind = \"cosine\"\nwarmup = { fraction = 0.1, round = \"down\" }")
                .unwrap();
        assert_eq!(s.build(37).unwrap().warmup_steps(), 3);
        assert_eq!(s.build(40).unwrap().warmup_steps(), 4);
        let up: Schedule =
            toml::from_str("kind = \"cosine\"\nwarmup = { fraction = 0.1, round = \"up\" }")
                .unwrap();
        assert_eq!(up.build(37).unwrap().warmup_steps(), 4);
        let err = Schedule::Cosine {
            warmup: Warmup::Rounded {
                fraction: 1.0,
                round: Rounding::Down,
            },
            min_lr_ratio: 0.0,
        }
        .build(50)
        .unwrap_err();
        assert!(err.to_string().contains("optim.schedule.warmup"), "{err}");
    }

    #[test]
    fn warmup_not_shorter_than_the_run_is_an_error() {
        let err = Schedule::Linear {
            warmup: Warmup::Steps(50),
        }
        .build(50)
        .unwrap_err();
        assert!(err.to_string().contains("optim.schedule.warmup"), "{err}");
        let err = Schedule::Cosine {
            warmup: Warmup::Fraction(1.5),
            min_lr_ratio: 0.0,
        }
        .build(50)
        .unwrap_err();
        assert!(err.to_string().contains("[0, 1)"), "{err}");
    }
}
