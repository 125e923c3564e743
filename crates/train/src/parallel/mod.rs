//! Data parallelism as a strategy behind one type: the loop asks a
//! [`Strategy`] for its rank, its share of the work and the collectives it needs,
//! and never asks which strategy it is. Two exist: one process
//! ([`SingleProcess`]) and DDP over c10d ([`DataParallel`], in [`ddp`]).
//!
//! Adding one (ZeRO-1, say): a file here implementing [`Strategy`] (sharding the
//! optimizer state in `finish_gradients` and the step), its choice in [`join`],
//! and its files in the checkpoint layout (`run/checkpoint.rs`).

pub(crate) mod ddp;

use tch::{Device, Tensor, nn};

use clip_optim::AdamW;

use crate::config::{RunConfig, RunSection};
use crate::error::{Result, TrainError};

pub use ddp::DataParallel;

/// How the processes of a run share its work. Semantics (as PyTorch's DDP with
/// a DistributedSampler that pads nothing): `data.loader.batch_size` is per rank,
/// the global batch is `batch_size x world x train.grad_accum`, each rank's loss
/// is weighted by its share of the global batch, so the averaged gradients and
/// the reported loss equal one process's.
pub trait Strategy {
    /// This process's rank (0 for one process).
    fn rank(&self) -> usize;
    /// The number of processes.
    fn world(&self) -> usize;
    /// Whether this process writes the run's files (rank 0).
    fn is_main(&self) -> bool {
        self.rank() == 0
    }
    /// The device of this process for a run on `device` (a rank's own GPU).
    fn device(&self, device: Device) -> Device;
    /// Waits for every process.
    fn barrier(&self) -> Result<()>;
    /// Sums `values` over the processes, in place.
    fn sum(&self, values: &mut [f64]) -> Result<()>;
    /// Every process's `local` rows, in rank order, with the gradient of this
    /// process's rows as the global-batch loss needs it (see [`ddp`]).
    fn gather_with_grad(&self, local: &Tensor) -> Result<Tensor>;
    /// Every variable of `vs` from rank 0, as DDP does at construction.
    fn broadcast_variables(&self, vs: &nn::VarStore) -> Result<()>;
    /// At the start of an optimizer step over `opt`'s trainable parameters.
    fn begin_step(&mut self, opt: &AdamW);
    /// Just before a micro-batch's backward of `loss` (the step's `last` one
    /// synchronises the gradients).
    fn before_backward(&self, loss: &Tensor, last: bool) -> Result<()>;
    /// After the step's backward passes: the gradients are then the average
    /// over the processes.
    fn finish_gradients(&mut self) -> Result<()>;
    /// This process's error, with what the others reported.
    fn explain(&self, e: TrainError) -> TrainError;
    /// Checks, before anything trains, that every process runs the same config
    /// (`cfg` as given, before a rank picks its device) on the same data (`data`,
    /// its fingerprint): ranks launched otherwise would deadlock or abort in a
    /// collective. Every rank stops with an error; those that differ name the
    /// keys that differ from rank 0's.
    fn agree(&self, _cfg: &RunConfig, _data: &str) -> Result<()> {
        Ok(())
    }
}

/// One process: every collective is the identity.
#[derive(Debug, Default)]
pub struct SingleProcess;

impl Strategy for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world(&self) -> usize {
        1
    }

    fn device(&self, device: Device) -> Device {
        device
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }

    fn sum(&self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }

    fn gather_with_grad(&self, local: &Tensor) -> Result<Tensor> {
        Ok(local.shallow_clone())
    }

    fn broadcast_variables(&self, _vs: &nn::VarStore) -> Result<()> {
        Ok(())
    }

    fn begin_step(&mut self, _opt: &AdamW) {}

    fn before_backward(&self, _loss: &Tensor, _last: bool) -> Result<()> {
        Ok(())
    }

    fn finish_gradients(&mut self) -> Result<()> {
        Ok(())
    }

    fn explain(&self, e: TrainError) -> TrainError {
        e
    }
}

/// The strategy of a run whose config is `run` on `device`: DDP when a launcher
/// (torchrun, srun) started this process as one of several, else one process.
pub fn join(run: &RunSection, device: Device) -> Result<Box<dyn Strategy>> {
    Ok(match DataParallel::join(run, device)? {
        Some(dp) => Box::new(dp),
        None => Box::new(SingleProcess),
    })
}
