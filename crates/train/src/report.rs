//! What a run reports: each step and evaluation (the lines of metrics.jsonl),
//! `summary.json` and `train-cli bench`'s JSON.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::evaluation::EvalReport;
use crate::precision::Precision;

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub epoch: u64,
    /// Optimizer steps done, this one included.
    pub step: u64,
    /// Mean training loss over the step's micro-batches.
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    /// The largest group LR used by this step (the head's under LLRD).
    pub lr: f64,
    /// Global gradient norm before clipping (not finite on a skipped step).
    #[serde(deserialize_with = "nan_if_null")]
    pub grad_norm: f64,
    /// The GradScaler's scale (fp16 only).
    pub loss_scale: Option<f64>,
    pub images_per_s: f64,
    /// The step was skipped by the GradScaler (inf/NaN gradients).
    pub skipped: bool,
    /// Distinct unreadable training images replaced so far (`on_corrupt = "skip"`).
    #[serde(default)]
    pub corrupt_images: usize,
}

/// `null`, what JSON holds for a NaN or infinite value, reads back as NaN (so the
/// lines of skipped fp16 steps are not lost when metrics.jsonl is read).
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// One evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub epoch: u64,
    pub step: u64,
    /// Mean training loss since the previous evaluation.
    pub train_loss: Option<f64>,
    pub val: EvalReport,
    /// The same evaluation with the EMA weights.
    pub ema: Option<EvalReport>,
}

/// A line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetricsLine {
    Step(StepMetrics),
    Eval(EvalRecord),
}

impl MetricsLine {
    pub(crate) fn step(&self) -> u64 {
        match self {
            MetricsLine::Step(m) => m.step,
            MetricsLine::Eval(r) => r.step,
        }
    }
}

/// Reads `metrics.jsonl` (lines that do not parse are skipped).
pub fn read_metrics(path: &Path) -> Result<Vec<MetricsLine>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrainError::io("cannot read", path)(e)),
    };
    Ok(BufReader::new(file)
        .lines()
        .map_while(std::result::Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}

/// The best checkpoint of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub metric: String,
    pub value: f64,
    pub step: u64,
    pub checkpoint: PathBuf,
}

/// What a run produced (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    pub run_dir: PathBuf,
    pub epochs_completed: u64,
    pub global_step: u64,
    pub best: Option<Best>,
    pub last_eval: Option<EvalRecord>,
    pub wall_s: f64,
    pub peak_memory_mib: f64,
    pub total_parameters: i64,
    pub trainable_parameters: i64,
    pub trainable_share: f64,
    pub interrupted: bool,
    pub stopped_early: bool,
    pub latest_checkpoint: Option<PathBuf>,
    /// Data-parallel ranks (1 for one process).
    #[serde(default = "one")]
    pub world_size: usize,
    /// Images per optimizer step: `batch_size x world_size x grad_accum`.
    #[serde(default)]
    pub global_batch_size: usize,
    /// Distinct unreadable images replaced (`on_corrupt = "skip"`) in the training
    /// and validation data (this process's view: rank 0's in a data-parallel run).
    #[serde(default)]
    pub corrupt_train_images: usize,
    #[serde(default)]
    pub corrupt_val_images: usize,
}

fn one() -> usize {
    1
}

/// What `train-cli bench` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub steps: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub precision: Precision,
    pub train_images_per_s: f64,
    pub loader_images_per_s: f64,
    pub median_step_s: f64,
    pub peak_memory_mib: f64,
    pub trainable_parameters: i64,
    /// Data-parallel ranks (1 for one process); `train_images_per_s` and the
    /// loader figure are this rank's.
    pub world_size: usize,
    /// Images/s of all ranks together (their images over their mean time).
    pub global_train_images_per_s: f64,
}

/// Peak resident memory of this process (VmHWM), MiB; 0 where unknown.
pub fn peak_memory_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
