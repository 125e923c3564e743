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

/// The `summary.json` of `run_dir`, when it is there and parses.
pub(crate) fn read_summary(run_dir: &Path) -> Option<FitReport> {
    let text = std::fs::read_to_string(run_dir.join("summary.json")).ok()?;
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

/// Which memory a peak figure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryKind {
    /// The process's peak resident memory (VmHWM): CPU runs.
    #[default]
    HostRss,
    /// libtorch's CUDA caching allocator, peak allocated bytes (what
    /// `torch.cuda.max_memory_allocated` reports): CUDA runs.
    CudaAllocated,
}

impl MemoryKind {
    /// How reports name it.
    pub fn label(self) -> &'static str {
        match self {
            MemoryKind::HostRss => "host RSS",
            MemoryKind::CudaAllocated => "GPU allocated",
        }
    }
}

/// A phase's peak memory on `device`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakMemory {
    pub kind: MemoryKind,
    pub peak_mib: f64,
    pub peak_reserved_mib: Option<f64>,
}

const MIB: f64 = 1024.0 * 1024.0;

/// Starts a phase on `device`: CUDA's peaks restart from the current figures; on
/// the CPU the process's VmHWM is reset (`/proc/self/clear_refs`; where that is not
/// allowed, the figure stays the process's peak).
pub fn reset_peak_memory(device: tch::Device) {
    match device {
        tch::Device::Cuda(n) => {
            if let Err(e) = clip_model::reset_cuda_peak(n) {
                tracing::warn!("{e}");
            }
        }
        _ => {
            let _ = std::fs::write("/proc/self/clear_refs", "5");
        }
    }
}

/// The peak memory of the phase on `device` (see [`reset_peak_memory`]).
pub fn peak_memory(device: tch::Device) -> PeakMemory {
    if let tch::Device::Cuda(n) = device {
        match clip_model::cuda_memory(n) {
            Ok(m) => {
                return PeakMemory {
                    kind: MemoryKind::CudaAllocated,
                    peak_mib: m.peak_allocated as f64 / MIB,
                    peak_reserved_mib: Some(m.peak_reserved as f64 / MIB),
                };
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    PeakMemory {
        kind: MemoryKind::HostRss,
        peak_mib: peak_memory_mib(),
        peak_reserved_mib: None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_memory_is_the_resident_peak_of_the_phase() {
        reset_peak_memory(tch::Device::Cpu);
        let base = peak_memory(tch::Device::Cpu);
        assert_eq!(base.kind, MemoryKind::HostRss);
        assert!(
            base.peak_mib > 1.0 && base.peak_reserved_mib.is_none(),
            "{base:?}"
        );
        // 256 MiB touched and freed: the peak holds it ...
        let big = vec![1u8; 256 << 20];
        assert_eq!(
            big.iter().step_by(4096).map(|&b| b as usize).sum::<usize>(),
            65536
        );
        drop(big);
        let spiked = peak_memory(tch::Device::Cpu).peak_mib;
        assert!(spiked > base.peak_mib + 200.0, "{spiked} vs {base:?}");
        // ... until the next phase starts (where the kernel allows the reset).
        reset_peak_memory(tch::Device::Cpu);
        let after = peak_memory(tch::Device::Cpu).peak_mib;
        if std::fs::write("/proc/self/clear_refs", "5").is_ok() {
            assert!(after < spiked - 200.0, "{after} vs {spiked}");
        }
    }
}
