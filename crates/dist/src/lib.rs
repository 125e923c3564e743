//! Data-parallel training on PyTorch's own distributed engine, c10d: the process
//! group from torchrun's (or Slurm's) environment over Gloo (CPU) or NCCL (CUDA),
//! broadcast / all-reduce / barrier, and DDP's bucketed, backward-overlapped
//! gradient `Reducer`. C++ errors become [`DistError`]s that name the rank and, when
//! a peer failed, which one ([`ProcessGroup::diagnose`]).

mod env;
mod error;
mod group;

pub use env::{DEFAULT_PORT, DistEnv, Launcher};
pub use error::{DistError, Result};
pub use group::{Backend, ProcessGroup, Reducer};
