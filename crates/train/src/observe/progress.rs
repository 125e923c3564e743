//! Progress on stderr: bars on a terminal, plain lines in a file.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::{Event, Observer};
use crate::error::Result;
use crate::report::{EvalRecord, StepMetrics};

/// Progress on stderr: on a terminal, a bar per epoch with the step's figures and
/// the whole run's ETA (and "evaluating" while it evaluates); otherwise (a file,
/// nohup, Slurm, CI) one plain line every `train.log_every_steps` steps, without
/// terminal codes: epoch, step of the run, loss, lr, images/s, elapsed, ETA.
pub struct Progress {
    terminal: bool,
    bar: Option<ProgressBar>,
    steps_per_epoch: u64,
    epochs: u64,
    total_steps: u64,
    start_step: u64,
    log_every: u64,
    epoch: u64,
    step: u64,
    started: std::time::Instant,
}

impl Default for Progress {
    fn default() -> Self {
        use std::io::IsTerminal;
        Self::new(std::io::stderr().is_terminal())
    }
}

/// `1:02:03` or `2:03`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

impl Progress {
    /// Bars (`terminal`) or plain lines.
    pub fn new(terminal: bool) -> Self {
        Self {
            terminal,
            bar: None,
            steps_per_epoch: 0,
            epochs: 0,
            total_steps: 0,
            start_step: 0,
            log_every: 1,
            epoch: 0,
            step: 0,
            started: std::time::Instant::now(),
        }
    }

    /// Time since the run (or resume) started, and the rest of the run at the pace
    /// of the steps done since.
    fn elapsed_and_eta(&self, step: u64) -> (Duration, Option<Duration>) {
        let elapsed = self.started.elapsed();
        let done = step.saturating_sub(self.start_step);
        let eta = (done > 0)
            .then(|| elapsed.mul_f64(self.total_steps.saturating_sub(step) as f64 / done as f64));
        (elapsed, eta)
    }

    fn step_figures(m: &StepMetrics) -> String {
        let memory = m
            .gpu_peak_mib
            .map(|g| format!(" gpu {:.1} GiB", g / 1024.0))
            .unwrap_or_default();
        let skipped = if m.skipped { " (skipped)" } else { "" };
        format!(
            "loss {:.4} lr {:.2e} {:.0} img/s{memory}{skipped}",
            m.loss, m.lr, m.images_per_s
        )
    }
}

impl Observer for Progress {
    fn event(&mut self, event: &Event) -> Result<()> {
        match event {
            Event::Start(s) => {
                self.steps_per_epoch = s.steps_per_epoch;
                self.epochs = s.epochs;
                self.total_steps = s.total_steps;
                self.start_step = s.start_step;
                self.log_every = s.log_every_steps.max(1);
                self.step = s.start_step;
                self.started = std::time::Instant::now();
            }
            Event::EpochStart { epoch, .. } => {
                self.epoch = *epoch;
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                if !self.terminal {
                    return Ok(());
                }
                let bar = ProgressBar::new(self.steps_per_epoch);
                bar.set_style(
                    ProgressStyle::with_template(
                        "epoch {prefix} [{bar:30}] {pos}/{len} steps {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("{}/{}", epoch + 1, self.epochs));
                bar.enable_steady_tick(Duration::from_millis(500));
                self.bar = Some(bar);
            }
            Event::Step(m) => {
                self.step = m.step;
                let (elapsed, eta) = self.elapsed_and_eta(m.step);
                let eta = eta.map_or("-".to_string(), clock);
                match &self.bar {
                    Some(b) => {
                        b.set_position((m.step - 1) % self.steps_per_epoch.max(1) + 1);
                        b.set_message(format!("{} | run ETA {eta}", Self::step_figures(m)));
                    }
                    None if m.step % self.log_every == 0
                        || m.step == self.start_step + 1
                        || m.step == self.total_steps =>
                    {
                        eprintln!(
                            "epoch {}/{} step {}/{} {} elapsed {} eta {eta}",
                            self.epoch + 1,
                            self.epochs,
                            m.step,
                            self.total_steps,
                            Self::step_figures(m),
                            clock(elapsed),
                        );
                    }
                    None => {}
                }
            }
            Event::EvalStart => match &self.bar {
                Some(b) => b.set_message("evaluating..."),
                None => eprintln!("evaluating after step {}...", self.step),
            },
            Event::Eval(r) => {
                let line = eval_line(r);
                match &self.bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
            }
            Event::Finish(_) => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
            }
            Event::Checkpoint(p) => {
                let line = format!("checkpoint: {}", p.display());
                match &self.bar {
                    Some(b) => b.println(line),
                    None => eprintln!("{line}"),
                }
            }
        }
        Ok(())
    }
}

fn eval_line(r: &EvalRecord) -> String {
    let mut s = format!(
        "epoch {} step {}: val loss {:.4} acc {:.2}% top5 {:.2}% macro F1 {:.2}%",
        r.epoch,
        r.step,
        r.val.loss,
        r.val.accuracy * 100.0,
        r.val.top5 * 100.0,
        r.val.macro_f1 * 100.0
    );
    if let Some(t) = &r.val.retrieval {
        s.push_str(&format!(
            " | image->text R@1/5/10 {:.1}/{:.1}/{:.1}% text->image {:.1}/{:.1}/{:.1}%",
            t.image_to_text.r1 * 100.0,
            t.image_to_text.r5 * 100.0,
            t.image_to_text.r10 * 100.0,
            t.text_to_image.r1 * 100.0,
            t.text_to_image.r5 * 100.0,
            t.text_to_image.r10 * 100.0
        ));
    }
    if let Some(e) = &r.ema {
        s.push_str(&format!(" | ema acc {:.2}%", e.accuracy * 100.0));
    }
    s
}
