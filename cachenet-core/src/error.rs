use std::path::PathBuf;

/// Errors of the core crate. Every variant names the file or setting involved.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: invalid manifest: {message}", path.display())]
    Manifest { path: PathBuf, message: String },
    #[error("{}: sha256 mismatch: manifest says {expected}, file has {actual}", path.display())]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{}: size mismatch: manifest says {expected} bytes, file has {actual}", path.display())]
    Size {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{name}: cannot load ONNX model: {message}")]
    Model { name: String, message: String },
    #[error("{name}: {message}")]
    Shape { name: String, message: String },
    #[error("inference failed in {name}: {message}")]
    Inference { name: String, message: String },
    #[error("bad input: {0}")]
    Input(String),
}

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

impl CoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io {
            path: path.into(),
            source,
        }
    }
}
