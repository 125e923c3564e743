//! `metrics.jsonl` and `metrics.csv` of a run.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};

use super::{Event, Observer};
use crate::error::{Result, TrainError};
use crate::report::MetricsLine;

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
