//! The one error type of the native core. Bindings turn it into Python exceptions in lib.rs.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read, or its bytes are not a decodable image.
    #[error("cannot decode {path}: {reason}")]
    Decode { path: PathBuf, reason: String },
    /// Bytes are not a decodable image (no path known yet; see `Error::with_path`).
    #[error("{0}")]
    Image(String),
    /// An argument is outside what the function accepts.
    #[error("{0}")]
    Invalid(String),
    /// The pipeline was closed while work was pending.
    #[error("loader is closed")]
    Closed,
}

impl Error {
    /// Attach the file a decode error came from, so the message names it.
    pub fn with_path(self, path: &std::path::Path) -> Error {
        match self {
            Error::Image(reason) => Error::Decode {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
