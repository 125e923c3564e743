/// Errors of the training crate.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value that cannot work, naming its key.
    #[error("invalid value for `{key}`: {reason}")]
    Config { key: String, reason: String },
}
