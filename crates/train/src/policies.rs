//! Policies return decisions; the loop carries them out.

use serde::{Deserialize, Serialize};

use clip_model::{Module, ParamTable, Tower};

use crate::config::{CheckpointConfig, EarlyStoppingConfig, Metric, TrainSection, Unfreeze};

/// Whether `a` beats `b` by more than `min_delta` under `metric`.
fn improves(metric: Metric, a: f64, b: f64, min_delta: f64) -> bool {
    if metric.maximize() {
        a > b + min_delta
    } else {
        a < b - min_delta
    }
}

/// What early stopping says after an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Continue,
    Stop,
}

/// Early stopping's state (saved in checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EarlyStopping {
    pub best: Option<f64>,
    pub bad_evals: u32,
}

impl EarlyStopping {
    pub fn observe(&mut self, cfg: &EarlyStoppingConfig, value: f64) -> Decision {
        match self.best {
            Some(b) if !improves(cfg.metric.kind, value, b, cfg.min_delta) => {
                self.bad_evals += 1;
                if self.bad_evals >= cfg.patience {
                    return Decision::Stop;
                }
            }
            _ => {
                self.best = Some(value);
                self.bad_evals = 0;
            }
        }
        Decision::Continue
    }
}

/// A checkpoint on disk, as the retention policy sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointEntry {
    pub name: String,
    pub step: u64,
    /// The selection metric of the evaluation at that step, if there was one.
    pub metric: Option<f64>,
}

/// The names to delete so that the newest `keep_last` and the best `keep_best`
/// (by `metric`) remain.
pub fn retention(cfg: &CheckpointConfig, entries: &[CheckpointEntry]) -> Vec<String> {
    let mut by_step: Vec<&CheckpointEntry> = entries.iter().collect();
    by_step.sort_by_key(|e| std::cmp::Reverse(e.step));
    let mut keep: Vec<&str> = by_step
        .iter()
        .take(cfg.keep_last)
        .map(|e| e.name.as_str())
        .collect();
    let mut scored: Vec<&CheckpointEntry> = entries.iter().filter(|e| e.metric.is_some()).collect();
    scored.sort_by(|a, b| {
        let (x, y) = (a.metric.unwrap_or(0.0), b.metric.unwrap_or(0.0));
        let o = if cfg.metric.maximize() {
            y.total_cmp(&x)
        } else {
            x.total_cmp(&y)
        };
        // Ties go to the earlier checkpoint.
        o.then(a.step.cmp(&b.step))
    });
    keep.extend(scored.iter().take(cfg.keep_best).map(|e| e.name.as_str()));
    entries
        .iter()
        .filter(|e| !keep.contains(&e.name.as_str()))
        .map(|e| e.name.clone())
        .collect()
}

/// The best entry by `metric`, if any was scored.
pub fn best_entry(metric: Metric, entries: &[CheckpointEntry]) -> Option<&CheckpointEntry> {
    entries
        .iter()
        .filter(|e| e.metric.is_some())
        .fold(None, |best, e| match best {
            Some(b)
                if !improves(
                    metric,
                    e.metric.unwrap_or(0.0),
                    b.metric.unwrap_or(0.0),
                    0.0,
                ) =>
            {
                Some(b)
            }
            _ => Some(e),
        })
}

/// Number of top vision blocks open at `epoch` of `epochs` (the tutorial's
/// `int(epoch / epochs * L)`, at least `min_blocks`).
pub fn open_blocks(epoch: u64, epochs: u64, layers: u32, min_blocks: u32) -> u32 {
    let frac = (epoch as f64 / epochs.max(1) as f64 * f64::from(layers)).floor() as u32;
    frac.max(min_blocks).min(layers)
}

/// Sets `requires_grad` for epoch `epoch` as `unfreeze` says. Towers outside
/// `trained` stay frozen; the head always trains; a model with LoRA adapters
/// trains the adapters and the head only. Returns the trainable count.
pub fn apply_unfreeze(
    table: &ParamTable,
    unfreeze: Unfreeze,
    trained: &[Tower],
    epoch: u64,
    epochs: u64,
    vision_layers: u32,
) -> i64 {
    table.set_trainable(false, |_| true);
    table.set_trainable(true, |t| t.tower == Tower::Head);
    if table.count(|t| t.module == Module::Adapter) > 0 {
        // LoRA: the adapters and the head, whatever the schedule.
        table.set_trainable(true, |t| t.module == Module::Adapter);
        return table.trainable_count();
    }
    match unfreeze {
        Unfreeze::All => {
            table.set_trainable(true, |t| trained.contains(&t.tower));
        }
        Unfreeze::HeadOnly => {}
        Unfreeze::LpFt { probe_epochs } => {
            if epoch >= probe_epochs {
                table.set_trainable(true, |t| trained.contains(&t.tower));
            }
        }
        Unfreeze::Progressive {
            min_blocks,
            open_post_layers,
        } => {
            let open = open_blocks(epoch, epochs, vision_layers, min_blocks);
            // Blocks are at depths 1..=L; the post-norm and projection at L + 1.
            let first = vision_layers + 1 - open;
            let last = vision_layers + u32::from(open_post_layers);
            if open > 0 && trained.contains(&Tower::Vision) {
                table.set_trainable(true, |t| {
                    t.tower == Tower::Vision && (first..=last).contains(&t.depth)
                });
            }
        }
    }
    table.trainable_count()
}

/// Where a step leaves the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Another step of this epoch.
    Step,
    /// The epoch is over: start the next one.
    Epoch,
    /// The run has done its steps.
    Finish,
    /// The stop flag was set (Ctrl-C): the run ends, resumable.
    Interrupt,
}

/// What the loop does after an optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterStep {
    pub evaluate: bool,
    pub checkpoint: bool,
    pub next: Next,
}

/// After optimizer step `step` (1-based): evaluate at epoch ends, at the run's end
/// and every `train.eval_every_steps`; checkpoint then, every
/// `train.checkpoints.every_steps`, and when stopping.
pub fn after_step(
    step: u64,
    epoch_done: bool,
    run_done: bool,
    stop_requested: bool,
    train: &TrainSection,
) -> AfterStep {
    let every = |k: Option<u64>| k.is_some_and(|k| step.is_multiple_of(k));
    let boundary = epoch_done || run_done;
    let evaluate = boundary || every(train.eval_every_steps);
    AfterStep {
        evaluate,
        checkpoint: boundary
            || stop_requested
            || every(train.checkpoints.every_steps)
            || (evaluate && train.checkpoints.at_every_evaluation),
        next: if stop_requested {
            Next::Interrupt
        } else if run_done {
            Next::Finish
        } else if epoch_done {
            Next::Epoch
        } else {
            Next::Step
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetricChoice;

    fn entry(name: &str, step: u64, metric: Option<f64>) -> CheckpointEntry {
        CheckpointEntry {
            name: name.into(),
            step,
            metric,
        }
    }

    #[test]
    fn early_stopping_waits_for_patience_and_resets_on_improvement() {
        let cfg = EarlyStoppingConfig {
            metric: MetricChoice::val(Metric::Accuracy),
            patience: 2,
            min_delta: 0.01,
        };
        let mut es = EarlyStopping::default();
        assert_eq!(es.observe(&cfg, 0.5), Decision::Continue);
        assert_eq!(es.observe(&cfg, 0.505), Decision::Continue); // within min_delta: bad
        assert_eq!(es.observe(&cfg, 0.6), Decision::Continue); // improvement resets
        assert_eq!(es.observe(&cfg, 0.6), Decision::Continue);
        assert_eq!(es.observe(&cfg, 0.59), Decision::Stop);
        let loss = EarlyStoppingConfig {
            metric: MetricChoice::val(Metric::Loss),
            patience: 1,
            min_delta: 0.0,
        };
        let mut es = EarlyStopping::default();
        es.observe(&loss, 1.0);
        assert_eq!(es.observe(&loss, 0.9), Decision::Continue);
        assert_eq!(es.observe(&loss, 0.95), Decision::Stop);
    }

    #[test]
    fn retention_keeps_last_n_and_best_k() {
        let cfg = CheckpointConfig {
            keep_last: 2,
            keep_best: 1,
            metric: MetricChoice::val(Metric::Accuracy),
            every_steps: None,
            at_every_evaluation: true,
        };
        let e = [
            entry("a", 10, Some(0.5)),
            entry("b", 20, Some(0.9)),
            entry("c", 30, Some(0.7)),
            entry("d", 40, None),
            entry("e", 50, Some(0.6)),
        ];
        assert_eq!(retention(&cfg, &e), vec!["a".to_string(), "c".to_string()]);
        assert_eq!(
            best_entry(Metric::Accuracy, &e).map(|b| b.name.as_str()),
            Some("b")
        );
        assert_eq!(
            best_entry(Metric::Loss, &e).map(|b| b.name.as_str()),
            Some("a")
        );
        let min = CheckpointConfig {
            metric: MetricChoice::val(Metric::Loss),
            keep_best: 2,
            ..cfg
        };
        // Lowest loss: a (0.5) and e (0.6); newest: e and d.
        assert_eq!(retention(&min, &e), vec!["b".to_string(), "c".to_string()]);
    }

    #[test]
    fn progressive_unfreezing_follows_the_tutorial() {
        // 12 blocks over 4 epochs: 0, 3, 6, 9 open.
        let open: Vec<u32> = (0..4).map(|e| open_blocks(e, 4, 12, 0)).collect();
        assert_eq!(open, vec![0, 3, 6, 9]);
        assert_eq!(open_blocks(0, 4, 12, 2), 2);
        assert_eq!(open_blocks(9, 4, 12, 0), 12);
    }

    #[test]
    fn after_step_evaluates_checkpoints_and_ends_where_the_config_says() {
        let mut t = TrainSection::default();
        let plan = |step, epoch_done, run_done, stop, t: &TrainSection| {
            after_step(step, epoch_done, run_done, stop, t)
        };
        let mid = plan(3, false, false, false, &t);
        assert_eq!(
            (mid.evaluate, mid.checkpoint, mid.next),
            (false, false, Next::Step)
        );
        let end_of_epoch = plan(4, true, false, false, &t);
        assert_eq!(
            (
                end_of_epoch.evaluate,
                end_of_epoch.checkpoint,
                end_of_epoch.next
            ),
            (true, true, Next::Epoch)
        );
        let last = plan(8, true, true, false, &t);
        assert_eq!(last.next, Next::Finish);
        let stopped = plan(3, false, false, true, &t);
        assert_eq!(
            (stopped.evaluate, stopped.checkpoint, stopped.next),
            (false, true, Next::Interrupt)
        );
        t.eval_every_steps = Some(3);
        t.checkpoints.every_steps = Some(2);
        let every = plan(6, false, false, false, &t);
        assert_eq!((every.evaluate, every.checkpoint), (true, true));
        // A mid-epoch evaluation writes a checkpoint (so its result can be the
        // selected one), unless told not to.
        let odd = plan(3, false, false, false, &t);
        assert_eq!((odd.evaluate, odd.checkpoint), (true, true));
        t.checkpoints.at_every_evaluation = false;
        let odd = plan(3, false, false, false, &t);
        assert_eq!((odd.evaluate, odd.checkpoint), (true, false));
    }
}
