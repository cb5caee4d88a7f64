//! Dataset errors: each names the file and says what was expected, or how to obtain a missing
//! data set.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DataError {
    /// (`cause` is part of the message, not a `source`, which would repeat it.)
    #[error("cannot read '{path}': {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("'{path}': {message}")]
    Format { path: PathBuf, message: String },
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

pub(crate) fn format_err(path: &std::path::Path, message: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}
