//! What a run and a benchmark report: `summary.json` and `train-cli bench`'s JSON.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::observe::EvalRecord;
use crate::precision::Precision;

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
