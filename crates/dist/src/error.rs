//! Errors of the distributed layer: each names the rank, the operation and, when a
//! peer failed, which one.

pub type Result<T, E = DistError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A launcher variable is missing or malformed.
    #[error("distributed environment: {var}: {reason}")]
    Env { var: String, reason: String },
    /// The process group could not be formed (store unreachable, timeout, no NCCL).
    #[error(
        "rank {rank} of {world} could not join the process group ({backend} via the store at {addr}): {message}"
    )]
    Init {
        rank: usize,
        world: usize,
        backend: String,
        addr: String,
        message: String,
    },
    /// A collective failed or timed out (a peer died, hung or failed).
    #[error("rank {rank} of {world}: {op} failed: {message}")]
    Collective {
        rank: usize,
        world: usize,
        op: &'static str,
        message: String,
    },
    /// A tensor handed to a collective is unusable (wrong device, kind...).
    #[error("{0}")]
    Torch(#[from] tch::TchError),
}
