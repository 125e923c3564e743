use std::path::PathBuf;

/// Errors of the training crate.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A command used the wrong way (options that exclude each other, a missing
    /// one); the message says how to use it.
    #[error("{0}")]
    Usage(String),
    /// A configuration value that cannot work, naming its key.
    #[error("invalid value for `{key}`: {reason}")]
    Config { key: String, reason: String },
    /// Several configuration problems, reported together.
    #[error("{path}: {} problem(s) in the config:\n  - {}", problems.len(), problems.join("\n  - "))]
    Invalid { path: String, problems: Vec<String> },
    /// A config file that is not valid TOML for the run's sections.
    #[error("{path}: {reason}")]
    Parse { path: String, reason: String },
    /// A file or folder that cannot be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The model gives NaN or infinite logits (its weights hold NaN or inf).
    #[error(
        "the model's outputs are not finite (NaN or inf) in the batch of {image}: its weights hold NaN or inf"
    )]
    NonFiniteOutput { image: String },
    /// A `--model` that is neither an export, a checkpoint nor a run folder.
    #[error(
        "{} is not a model: expected an exported folder (config.json), a checkpoint (model/config.json) or a run folder (checkpoints/)",
        path.display()
    )]
    NotAModel { path: PathBuf },
    /// A checkpoint or run folder that cannot be resumed from.
    #[error("cannot resume from {path}: {reason}")]
    Resume { path: PathBuf, reason: String },

    /// An MLflow tracking server refused a request or cannot be reached.
    #[error("MLflow tracking server {server}: {what}: {reason}")]
    Tracker {
        server: String,
        what: String,
        reason: String,
    },
    /// Another process trains in (or resumes) this run folder.
    #[error(
        "the run folder {} is in use by process {holder} (a training or resume still running): wait for it to end or stop it",
        dir.display()
    )]
    InUse { dir: PathBuf, holder: String },
    /// The loss became NaN or infinite.
    #[error(
        "the loss is not finite ({loss}) at step {step} (epoch {epoch}); {kept}. Lower the learning rate, enable clipping or use fp32"
    )]
    NonFinite {
        step: u64,
        epoch: u64,
        loss: f64,
        /// What is left to resume from: the newest checkpoint, or that there is none.
        kept: String,
    },
    #[error(transparent)]
    Model(#[from] clip_model::ModelError),
    #[error(transparent)]
    Data(#[from] clip_data::DataError),
    #[error(transparent)]
    Optim(#[from] clip_optim::OptimError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Dist(#[from] clip_dist::DistError),
    /// This rank failed in a data-parallel run; `peers` says what the other ranks
    /// reported (their own errors, or which did not answer).
    #[error("rank {rank} of {world}: {source}\n  peers: {peers}")]
    Rank {
        rank: usize,
        world: usize,
        #[source]
        source: Box<TrainError>,
        peers: String,
    },
}

impl TrainError {
    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        TrainError::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| TrainError::Io {
            action,
            path,
            source,
        }
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
