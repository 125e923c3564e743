use std::path::PathBuf;

/// Errors of the optimizer crate.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// A configuration value that cannot work, naming its key.
    #[error("invalid value for `{key}`: {reason}")]
    Config { key: String, reason: String },
    /// A libtorch multi-tensor kernel failed.
    #[error("libtorch kernel {kernel} failed: {message}")]
    Kernel { kernel: String, message: String },
    /// Saved optimizer or scaler state that does not fit the current parameters.
    #[error("optimizer state {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error(transparent)]
    Model(#[from] clip_model::ModelError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl OptimError {
    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        OptimError::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// `Ok` without problems, else one error for `section` listing them all.
pub(crate) fn problems_to_result(section: &str, problems: Vec<String>) -> Result<(), OptimError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(OptimError::config(section, problems.join("; ")))
    }
}
