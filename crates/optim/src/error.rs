/// Errors of the optimizer crate.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    /// A configuration value that cannot work, naming its key.
    #[error("invalid value for `{key}`: {reason}")]
    Config { key: String, reason: String },
}
