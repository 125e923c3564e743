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
    eval_every: Option<u64>,
    epoch: u64,
    step: u64,
    started: std::time::Instant,
    /// Time spent evaluating since the start, the evaluations, and when the
    /// current one began.
    eval_time: Duration,
    evals: u32,
    eval_started: Option<std::time::Instant>,
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
            eval_every: None,
            epoch: 0,
            step: 0,
            started: std::time::Instant::now(),
            eval_time: Duration::ZERO,
            evals: 0,
            eval_started: None,
        }
    }

    /// Evaluations still to come after `step`: at each epoch's end, the run's
    /// end and every `eval_every` steps.
    fn evals_after(&self, step: u64) -> u64 {
        let spe = self.steps_per_epoch.max(1);
        (step + 1..=self.total_steps)
            .filter(|s| {
                s % spe == 0
                    || *s == self.total_steps
                    || self.eval_every.is_some_and(|k| k > 0 && s % k == 0)
            })
            .count() as u64
    }

    /// Time since the run (or resume) started, and the rest of the run: its steps
    /// at the pace of the steps done since, and its evaluations at the mean
    /// duration of those done (before the first, none are counted).
    fn elapsed_and_eta(&self, step: u64) -> (Duration, Option<Duration>) {
        let elapsed = self.started.elapsed();
        let training = elapsed.saturating_sub(self.eval_time);
        let done = step.saturating_sub(self.start_step);
        let eta = (done > 0).then(|| {
            let steps =
                training.mul_f64(self.total_steps.saturating_sub(step) as f64 / done as f64);
            let evals = match self.evals {
                0 => Duration::ZERO,
                n => (self.eval_time / n).mul_f64(self.evals_after(step) as f64),
            };
            steps + evals
        });
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
                self.eval_every = s.eval_every_steps;
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
            Event::EvalStart => {
                self.eval_started = Some(std::time::Instant::now());
                match &self.bar {
                    Some(b) => b.set_message("evaluating..."),
                    None => eprintln!("evaluating after step {}...", self.step),
                }
            }
            Event::Eval(r) => {
                if let Some(t) = self.eval_started.take() {
                    self.eval_time += t.elapsed();
                    self.evals += 1;
                }
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
    for (name, set) in &r.val.eval_sets {
        s.push_str(&format!(" | {name} acc {:.2}%", set.accuracy * 100.0));
    }
    if let Some(e) = &r.ema {
        s.push_str(&format!(" | ema acc {:.2}%", e.accuracy * 100.0));
    }
    s
}

/// Progress of a pass over a known number of images (`eval`, `zero-shot`,
/// `predict`): a bar on a terminal; in a file, a plain line every
/// [`BatchProgress::EVERY`] batches and at the end; nothing when off.
pub struct BatchProgress {
    label: String,
    bar: Option<ProgressBar>,
    on: bool,
    total: usize,
    done: usize,
    batches: usize,
    started: std::time::Instant,
}

impl BatchProgress {
    /// Batches between two lines in a file.
    pub const EVERY: usize = 20;

    /// Progress of `label` over `total` images, shown when `on` (bars when
    /// stderr is a terminal).
    pub fn new(label: impl Into<String>, total: usize, on: bool) -> Self {
        use std::io::IsTerminal;
        let label = label.into();
        let bar = (on && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} images {per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(label.clone());
            bar
        });
        Self {
            label,
            bar,
            on,
            total,
            done: 0,
            batches: 0,
            started: std::time::Instant::now(),
        }
    }

    /// The line a file gets after `done` images.
    fn line(&self) -> String {
        let elapsed = self.started.elapsed();
        let rate = self.done as f64 / elapsed.as_secs_f64().max(1e-9);
        let eta = (self.done > 0).then(|| {
            Duration::from_secs_f64(self.total.saturating_sub(self.done) as f64 / rate.max(1e-9))
        });
        format!(
            "{}: {}/{} images ({:.0}%), {rate:.0} img/s, elapsed {} eta {}",
            self.label,
            self.done,
            self.total,
            100.0 * self.done as f64 / self.total.max(1) as f64,
            clock(elapsed),
            eta.map_or("-".to_string(), clock)
        )
    }

    /// `images` more are done.
    pub fn advance(&mut self, images: usize) {
        self.done += images;
        self.batches += 1;
        match &self.bar {
            Some(b) => b.set_position(self.done as u64),
            None if self.on && self.batches.is_multiple_of(Self::EVERY) => {
                eprintln!("{}", self.line())
            }
            None => {}
        }
    }

    /// The pass is over: the bar is cleared (no stale line), a file gets the last line.
    pub fn finish(self) {
        match &self.bar {
            Some(b) => b.finish_and_clear(),
            None if self.on && !self.batches.is_multiple_of(Self::EVERY) => {
                eprintln!("{}", self.line())
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// The run's ETA counts the evaluations still to come at the mean duration
    /// of those done, besides the steps at their own pace.
    #[test]
    fn the_eta_includes_the_evaluations_to_come() {
        let mut p = Progress::new(false);
        p.steps_per_epoch = 10;
        p.total_steps = 30;
        assert_eq!(p.evals_after(5), 3);
        assert_eq!(p.evals_after(10), 2);
        p.eval_every = Some(4);
        // 12, 16, 20 (an epoch end too), 24, 28, 30.
        assert_eq!(p.evals_after(10), 6);
        p.eval_every = None;
        // 10 s so far, 4 of them in two evaluations: 6 s for 10 steps, so 12 s
        // for the 20 steps left, and 2 evaluations of 2 s (not 20 s, as steps
        // at the pace of the whole elapsed time would say).
        p.started = Instant::now() - Duration::from_secs(10);
        p.eval_time = Duration::from_secs(4);
        p.evals = 2;
        let (_, eta) = p.elapsed_and_eta(10);
        let eta = eta.unwrap_or_default().as_secs_f64();
        assert!((eta - 16.0).abs() < 0.5, "{eta}");
    }
}
