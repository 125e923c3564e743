//! Where a run or command computes: the device a config or flag resolves to
//! (a CUDA device that is not there is an error, never a silent fallback), a
//! placement (device and precision) for commands that run a model, and the peak
//! memory figures of a phase (the CUDA caching allocator's, else the process's
//! resident memory).

use serde::{Deserialize, Serialize};

use crate::config::{DeviceChoice, RunConfig};
use crate::error::{Result, TrainError};
use crate::precision::Precision;

impl DeviceChoice {
    /// The libtorch device (`key` names the setting in errors): a CUDA device that
    /// is not there is an error, never a silent fallback to the CPU.
    pub fn resolve(self, key: &str) -> Result<tch::Device> {
        match self {
            DeviceChoice::Cpu => Ok(tch::Device::Cpu),
            DeviceChoice::Auto if clip_model::cuda_device_count() > 0 => Ok(tch::Device::Cuda(0)),
            DeviceChoice::Auto => Ok(tch::Device::Cpu),
            DeviceChoice::Cuda(n) => {
                let count = clip_model::cuda_device_count();
                if n < count {
                    return Ok(tch::Device::Cuda(n));
                }
                // Without a driver, libtorch's CUDA library is not loaded just to
                // explain the error.
                let why = match clip_model::nvidia_driver_present().then(clip_model::load_cuda) {
                    None => {
                        " (no NVIDIA driver on this machine: libcuda.so.1 is not there): use \"auto\" or \"cpu\"".into()
                    }
                    Some(Err(e)) => format!(" ({e})"),
                    Some(Ok(())) if count == 0 => {
                        " (no GPU on this machine, or a driver libtorch cannot use): use \"auto\" or \"cpu\"".into()
                    }
                    Some(Ok(())) => String::new(),
                };
                Err(TrainError::config(
                    key,
                    format!(
                        "\"{self}\" was asked for but libtorch sees {count} CUDA device(s){why}"
                    ),
                ))
            }
        }
    }

    /// [`DeviceChoice::resolve`] for `run.device`.
    pub fn device(self) -> Result<tch::Device> {
        self.resolve("run.device")
    }
}

/// Where and in which precision a command runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub device: tch::Device,
    pub precision: Precision,
}

impl Placement {
    /// A run's `run.device` and `train.precision` (`train.precision_on_cpu` on the
    /// CPU).
    pub fn of_run(cfg: &RunConfig) -> Result<Self> {
        let device = cfg.run.device.device()?;
        Ok(Self {
            device,
            precision: cfg.train.precision_on(device),
        })
    }

    /// `cpu, fp32`, `cuda:1, bf16`.
    pub fn describe(&self) -> String {
        let device = match self.device {
            tch::Device::Cuda(n) => format!("cuda:{n}"),
            other => format!("{other:?}").to_lowercase(),
        };
        format!("{device}, {}", self.precision)
    }
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
