use std::path::PathBuf;

/// Everything that can go wrong building, loading or saving a CLIP model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A configuration value that cannot work, naming its key.
    #[error("invalid model config: `{key}` {reason}")]
    Config { key: String, reason: String },
    /// A file that could not be read or written.
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `config.json` that is not valid JSON for a CLIP config.
    #[error("cannot parse {path}: {source}")]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors file that is truncated, corrupt or holds an unsupported dtype.
    #[error("checkpoint {path} is unreadable: {reason} (re-download or re-export it)")]
    Checkpoint { path: PathBuf, reason: String },
    /// Checkpoint tensors that do not match the model, all listed at once.
    #[error("checkpoint {path} does not match the model:{details}")]
    Mismatch { path: PathBuf, details: String },
    /// A model id or folder that cannot be resolved to files.
    #[error("cannot find model `{model}`: {reason}")]
    NotFound { model: String, reason: String },
    /// A tokenizer file that cannot be loaded or used.
    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    /// A libtorch call that failed (shape or dtype problems at a boundary).
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl ModelError {
    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// `Ok` without problems, else one error for `section` listing them all.
    pub(crate) fn from_problems(section: &str, problems: Vec<String>) -> Result<(), Self> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Self::config(section, problems.join("; ")))
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        ModelError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
