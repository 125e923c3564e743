//! `tracing` lines for each event of a run.

use super::{Event, Observer};
use crate::error::Result;

/// `tracing` lines for each event (step lines at debug level).
#[derive(Default)]
pub struct Log;

impl Observer for Log {
    fn event(&mut self, event: &Event) -> Result<()> {
        match event {
            Event::Start(s) => tracing::info!(
                run_dir = %s.run_dir.display(),
                train_images = s.train_images,
                val_images = s.val_images,
                epochs = s.epochs,
                total_steps = s.total_steps,
                start_step = s.start_step,
                "training"
            ),
            Event::EpochStart { epoch, trainable } => {
                tracing::info!(epoch = epoch + 1, trainable, "epoch start")
            }
            Event::Step(m) => tracing::debug!(
                step = m.step,
                loss = m.loss,
                lr = m.lr,
                grad_norm = m.grad_norm,
                images_per_s = m.images_per_s,
                "step"
            ),
            Event::Eval(r) => tracing::info!(
                step = r.step,
                val_loss = r.val.loss,
                accuracy = r.val.accuracy,
                top5 = r.val.top5,
                ema_accuracy = r.ema.as_ref().map(|e| e.accuracy),
                mean_recall = r.val.retrieval.as_ref().map(|t| t.mean_recall),
                "eval"
            ),
            Event::Checkpoint(p) => tracing::info!(path = %p.display(), "checkpoint"),
            Event::EvalStart => {}
            Event::Finish(f) => tracing::info!(
                steps = f.global_step,
                wall_s = f.wall_s,
                best = f.best.as_ref().map(|b| b.value),
                "finished"
            ),
        }
        Ok(())
    }
}
