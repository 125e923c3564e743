use std::path::PathBuf;

/// Everything that can go wrong turning files into batches.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A buffer does not have the length its declared shape needs.
    #[error("buffer of {len} values does not hold a {channels}x{height}x{width} image")]
    Shape {
        len: usize,
        channels: usize,
        height: usize,
        width: usize,
    },
    /// A configuration value that cannot work, naming its key.
    #[error("invalid value for `{key}`: {reason}")]
    Config { key: String, reason: String },
    /// An image file that could not be read or decoded.
    #[error("cannot decode image {path}: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    /// An image that could not be written.
    #[error("cannot write image {path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    /// A file that could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DataError {
    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        DataError::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
