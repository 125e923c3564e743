//! What a run reports: each step and evaluation (the lines of metrics.jsonl),
//! `summary.json` and `train-cli bench`'s JSON.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use clip_model::write_atomic;

use crate::device::MemoryKind;
use crate::error::{Result, TrainError};
use crate::eval::EvalReport;
use crate::precision::Precision;

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// 1-based, as the console prints it.
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
    /// CUDA runs: the caching allocator's peak allocated MiB since the run (or
    /// resume) started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_peak_mib: Option<f64>,
}

/// `null`, what JSON holds for a NaN or infinite value, reads back as NaN (so the
/// lines of skipped fp16 steps are not lost when metrics.jsonl is read).
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// One evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// 1-based: the epoch the evaluation ends (or falls in).
    pub epoch: u64,
    pub step: u64,
    /// Mean training loss since the previous evaluation.
    pub train_loss: Option<f64>,
    pub val: EvalReport,
    /// The same evaluation with the EMA weights.
    pub ema: Option<EvalReport>,
}

/// A line of `metrics.jsonl`.
// Lines are read and written one at a time: boxing the larger variant buys nothing.
#[allow(clippy::large_enum_variant)]
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

/// A finished (or interrupted) run's [`FitReport`], in its folder.
pub(crate) const SUMMARY_FILE: &str = "summary.json";

/// The `summary.json` of `run_dir`, when it is there and parses.
pub(crate) fn read_summary(run_dir: &Path) -> Option<FitReport> {
    let text = std::fs::read_to_string(run_dir.join(SUMMARY_FILE)).ok()?;
    serde_json::from_str(&text).ok()
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
    /// The evaluation of the best (selected) checkpoint: the figures of the model
    /// that `export`, `eval` and the test set use.
    #[serde(default)]
    pub best_eval: Option<EvalRecord>,
    /// The latest evaluation (of the last weights, which need not be the best).
    pub last_eval: Option<EvalRecord>,
    pub wall_s: f64,
    /// The peak of `memory_kind` over the training (this process's).
    pub peak_memory_mib: f64,
    #[serde(default)]
    pub memory_kind: MemoryKind,
    /// CUDA only: the caching allocator's peak reserved MiB (what the GPU holds).
    #[serde(default)]
    pub peak_reserved_mib: Option<f64>,
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

impl FitReport {
    /// The evaluation that stands for the run: the selected checkpoint's, else
    /// the latest; with whether it is the selected one.
    pub fn headline_eval(&self) -> Option<(&EvalRecord, bool)> {
        match (&self.best_eval, &self.last_eval) {
            (Some(b), _) => Some((b, true)),
            (None, Some(l)) => Some((l, false)),
            (None, None) => None,
        }
    }
}

/// What `train-cli bench` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub steps: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub precision: Precision,
    /// Images per second of the timed steps, waiting for the loader included.
    pub train_images_per_s: f64,
    /// The same steps without the time they waited for batches: what the model
    /// and optimizer alone sustain. Above `loader_images_per_s`, the loader is the
    /// bottleneck.
    pub step_images_per_s: f64,
    /// The share of the timed steps spent waiting for batches.
    pub loader_wait_share: f64,
    /// The loader alone over as many images (all its threads, no training).
    pub loader_images_per_s: f64,
    pub median_step_s: f64,
    /// The peak of `memory_kind` over the timed steps.
    pub peak_memory_mib: f64,
    pub memory_kind: MemoryKind,
    /// CUDA only: the caching allocator's peak reserved MiB.
    pub peak_reserved_mib: Option<f64>,
    pub trainable_parameters: i64,
    /// Data-parallel ranks (1 for one process); `train_images_per_s` and the
    /// loader figure are this rank's.
    pub world_size: usize,
    /// Images/s of all ranks together (their images over their mean time).
    pub global_train_images_per_s: f64,
}

/// Writes `value` as indented JSON, atomically (`summary.json`, `test.json`,
/// `trainer_state.json`, reports).
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let value = serde_json::to_value(value).map_err(|e| TrainError::Io {
        action: "cannot serialise",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let mut text = String::new();
    compact_pretty(&value, 0, &mut text);
    text.push('\n');
    write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// JSON indented as `to_string_pretty` does, except that an array of numbers,
/// strings, booleans or nulls stays on one line (a confusion matrix is one line
/// per class, not one per count).
fn compact_pretty(v: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value;
    let pad = |n: usize| "  ".repeat(n);
    match v {
        Value::Array(items) if items.iter().all(|x| !x.is_array() && !x.is_object()) => {
            out.push_str(&Value::Array(items.clone()).to_string());
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (i, x) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                compact_pretty(x, indent + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push_str("{\n");
            for (i, (k, x)) in map.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                compact_pretty(x, indent + 1, out);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            out.push_str(&pad(indent));
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `summary.json` and friends: field order kept, arrays of scalars on one line,
    /// and the same value when read back.
    #[test]
    fn json_files_are_indented_with_scalar_arrays_on_one_line() {
        let v = serde_json::json!({
            "z_first": 1,
            "confusion": [[1, 2], [3, 4]],
            "names": ["a", "b"],
            "nested": {"empty": [], "obj": {}, "x": null},
        });
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        write_json(&p, &v).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "{\n  \"z_first\": 1,\n  \"confusion\": [\n    [1,2],\n    [3,4]\n  ],\n  \"names\": [\"a\",\"b\"],\n  \"nested\": {\n    \"empty\": [],\n    \"obj\": {},\n    \"x\": null\n  }\n}\n"
        );
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }
}
