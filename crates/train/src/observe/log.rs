//! `tracing` lines for the events of a run: in JSON mode every event (steps
//! every `train.log_every_steps`), one object per line; otherwise at debug level
//! (the progress lines show them).

use super::{Event, Observer};
use crate::error::Result;

/// `tracing` lines for each event.
pub struct Log {
    /// Events at info level, steps included (`--log-format json`).
    structured: bool,
    log_every: u64,
}

impl Log {
    pub fn new(structured: bool, log_every: u64) -> Self {
        Self {
            structured,
            log_every: log_every.max(1),
        }
    }
}

/// An event at info level when `$on`, else at debug level.
macro_rules! event {
    ($on:expr, $($rest:tt)*) => {
        if $on {
            tracing::info!($($rest)*)
        } else {
            tracing::debug!($($rest)*)
        }
    };
}

impl Observer for Log {
    fn event(&mut self, event: &Event) -> Result<()> {
        let on = self.structured;
        match event {
            Event::Start(s) => event!(
                on,
                run_dir = %s.run_dir.display(),
                train_images = s.train_images,
                val_images = s.val_images,
                epochs = s.epochs,
                steps_per_epoch = s.steps_per_epoch,
                total_steps = s.total_steps,
                start_step = s.start_step,
                "training"
            ),
            Event::EpochStart { epoch, trainable } => {
                event!(on, epoch = epoch + 1, trainable, "epoch start")
            }
            Event::Step(m) => event!(
                on && m.step % self.log_every == 0,
                epoch = m.epoch,
                step = m.step,
                loss = m.loss,
                lr = m.lr,
                grad_norm = m.grad_norm,
                loss_scale = m.loss_scale,
                images_per_s = m.images_per_s,
                skipped = m.skipped,
                gpu_peak_mib = m.gpu_peak_mib,
                "step"
            ),
            Event::EvalStart => event!(on, "evaluating"),
            Event::Eval(r) => event!(
                on,
                epoch = r.epoch,
                step = r.step,
                train_loss = r.train_loss,
                val_loss = r.val.loss,
                accuracy = r.val.accuracy,
                top5 = r.val.top5,
                macro_f1 = r.val.macro_f1,
                images = r.val.images,
                ema_accuracy = r.ema.as_ref().map(|e| e.accuracy),
                mean_recall = r.val.retrieval.as_ref().map(|t| t.mean_recall),
                "eval"
            ),
            Event::Checkpoint(p) => event!(on, path = %p.display(), "checkpoint"),
            Event::Finish(f) => event!(
                on,
                steps = f.global_step,
                wall_s = f.wall_s,
                best_step = f.best.as_ref().map(|b| b.step),
                best = f.best.as_ref().map(|b| b.value),
                selected_accuracy = f.best_eval.as_ref().map(|e| e.val.accuracy),
                interrupted = f.interrupted,
                "finished"
            ),
        }
        Ok(())
    }
}
