//! Events of a run and the observers that watch them: progress bars, tracing
//! logs, metrics files and plots. Observers never change the run.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{Result, TrainError};
use crate::report::{EvalRecord, FitReport, MetricsLine, StepMetrics, read_metrics};

/// What the start of a run looks like.
#[derive(Debug, Clone)]
pub struct StartInfo {
    pub run_dir: PathBuf,
    pub epochs: u64,
    pub steps_per_epoch: u64,
    pub total_steps: u64,
    pub start_step: u64,
    pub train_images: usize,
    pub val_images: usize,
    pub groups: String,
    /// Steps between logged step lines (`train.log_every_steps`).
    pub log_every_steps: u64,
}

/// Events of a run, in order.
#[derive(Debug)]
pub enum Event<'a> {
    Start(&'a StartInfo),
    EpochStart {
        epoch: u64,
        trainable: i64,
    },
    Step(&'a StepMetrics),
    /// An evaluation begins (its results follow as `Eval`).
    EvalStart,
    Eval(&'a EvalRecord),
    Checkpoint(&'a Path),
    Finish(&'a FitReport),
}

/// Watches a run.
pub trait Observer {
    fn event(&mut self, event: &Event) -> Result<()>;
}

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
            Event::Checkpoint(_) => {}
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

/// `metrics.jsonl` (every step line and eval) and `metrics.csv` (one row per
/// step line or eval), flushed at every line. On resume, lines after the
/// checkpoint's step are dropped.
pub struct MetricsFiles {
    jsonl: (PathBuf, BufWriter<File>),
    csv: (PathBuf, BufWriter<File>),
    log_every: u64,
}

const CSV_HEADER: &str = "kind,epoch,step,loss,lr,grad_norm,loss_scale,images_per_s,val_loss,val_accuracy,val_top5,ema_accuracy";

fn csv_row(line: &MetricsLine) -> String {
    let o = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_default();
    match line {
        MetricsLine::Step(m) => format!(
            "step,{},{},{},{},{},{},{},,,,",
            m.epoch,
            m.step,
            m.loss,
            m.lr,
            m.grad_norm,
            o(m.loss_scale),
            m.images_per_s
        ),
        MetricsLine::Eval(r) => format!(
            "eval,{},{},{},,,,,{},{},{},{}",
            r.epoch,
            r.step,
            o(r.train_loss),
            r.val.loss,
            r.val.accuracy,
            r.val.top5,
            o(r.ema.as_ref().map(|e| e.accuracy))
        ),
    }
}

/// Writes `text` and a newline to `file`, and flushes it.
fn append((path, file): &mut (PathBuf, BufWriter<File>), text: &str) -> Result<()> {
    writeln!(file, "{text}")
        .and_then(|()| file.flush())
        .map_err(TrainError::io("cannot write", path))
}

/// The length of the first `lines` lines of `text`.
fn lines_len(text: &[u8], lines: usize) -> u64 {
    text.split_inclusive(|&b| b == b'\n')
        .take(lines)
        .map(|l| l.len() as u64)
        .sum()
}

/// `path` cut to its first `len` bytes and opened for appending.
fn cut_at(path: &Path, len: u64) -> Result<(PathBuf, BufWriter<File>)> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(TrainError::io("cannot write", path))?;
    f.set_len(len)
        .and_then(|()| f.seek(std::io::SeekFrom::End(0)).map(|_| ()))
        .map_err(TrainError::io("cannot write", path))?;
    Ok((path.to_path_buf(), BufWriter::new(f)))
}

/// The bytes of `path`; none when it does not exist.
fn read_or_empty(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(TrainError::io("cannot read", path)(e)),
    }
}

impl MetricsFiles {
    /// Opens the files in `run_dir`, keeping the lines up to `keep_until` (the
    /// resumed checkpoint's step) or none for a fresh run. Kept lines stay byte for
    /// byte (the files are cut after them and appended to, never re-serialised).
    pub fn open(run_dir: &Path, keep_until: Option<u64>, log_every: u64) -> Result<Self> {
        let jp = run_dir.join("metrics.jsonl");
        let cp = run_dir.join("metrics.csv");
        let create = |p: PathBuf| -> Result<(PathBuf, BufWriter<File>)> {
            let f = File::create(&p).map_err(TrainError::io("cannot write", &p))?;
            Ok((p, BufWriter::new(f)))
        };
        let log_every = log_every.max(1);
        let Some(step) = keep_until else {
            let mut me = Self {
                jsonl: create(jp)?,
                csv: create(cp)?,
                log_every,
            };
            append(&mut me.csv, CSV_HEADER)?;
            return Ok(me);
        };
        // The leading lines written up to the checkpoint (lines are in step order).
        let text = read_or_empty(&jp)?;
        let kept: Vec<MetricsLine> = text
            .split(|&b| b == b'\n')
            .map_while(|l| serde_json::from_slice::<MetricsLine>(l).ok())
            .take_while(|l| l.step() <= step)
            .collect();
        let jsonl = cut_at(&jp, lines_len(&text, kept.len()))?;
        let csv = read_or_empty(&cp)?;
        if csv.split_inclusive(|&b| b == b'\n').count() > kept.len() {
            return Ok(Self {
                jsonl,
                csv: cut_at(&cp, lines_len(&csv, 1 + kept.len()))?,
                log_every,
            });
        }
        // The CSV is gone or short: rebuilt from the kept lines.
        let mut me = Self {
            jsonl,
            csv: create(cp)?,
            log_every,
        };
        append(&mut me.csv, CSV_HEADER)?;
        for l in &kept {
            append(&mut me.csv, &csv_row(l))?;
        }
        Ok(me)
    }

    fn write(&mut self, line: &MetricsLine) -> Result<()> {
        append(
            &mut self.jsonl,
            &serde_json::to_string(line).unwrap_or_default(),
        )?;
        append(&mut self.csv, &csv_row(line))
    }
}

impl Observer for MetricsFiles {
    fn event(&mut self, event: &Event) -> Result<()> {
        match event {
            Event::Step(m) if m.step % self.log_every == 0 || m.step == 1 => {
                self.write(&MetricsLine::Step((*m).clone()))
            }
            Event::Eval(r) => self.write(&MetricsLine::Eval((*r).clone())),
            _ => Ok(()),
        }
    }
}

/// Redraws the PNG plots after each evaluation and at the end.
pub struct Plots {
    run_dir: PathBuf,
    warned: bool,
}

impl Plots {
    pub fn new(run_dir: &Path) -> Self {
        Self {
            run_dir: run_dir.to_path_buf(),
            warned: false,
        }
    }
}

impl Observer for Plots {
    fn event(&mut self, event: &Event) -> Result<()> {
        if matches!(event, Event::Eval(_) | Event::Finish(_)) {
            let lines = read_metrics(&self.run_dir.join("metrics.jsonl"))?;
            if let Err(e) = crate::plots::write_all(&self.run_dir, &lines)
                && !self.warned
            {
                tracing::warn!("plots not drawn: {e}");
                self.warned = true;
            }
        }
        Ok(())
    }
}
