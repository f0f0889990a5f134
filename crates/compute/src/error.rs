//! The compute crate's one error type. Codes that EC2 clients know map from
//! these in the API layer (`InsufficientInstanceCapacity`, `IncorrectInstanceState`, ...).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error("insufficient capacity: {requested} requested, {available} available on this host")]
    InsufficientInstanceCapacity {
        requested: String,
        available: String,
    },
    #[error("instance limit reached: this host keeps at most {max} instances")]
    InstanceLimitExceeded { max: usize },
    #[error("unknown instance type {0:?}")]
    InvalidInstanceType(String),
    #[error("instance {0} not found")]
    InstanceNotFound(String),
    #[error("image {0} not found")]
    ImageNotFound(String),
    #[error("invalid image: {0}")]
    InvalidImage(String),
    #[error("the image cache is full: this host caches at most {max} images")]
    CacheFull { max: usize },
    #[error("instance {id} is {state}; {action} needs it {needs}")]
    IncorrectInstanceState {
        id: String,
        state: String,
        action: &'static str,
        needs: &'static str,
    },
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    #[error("{tool} failed: {message}")]
    Tool { tool: String, message: String },
    #[error("hypervisor: {0}")]
    Hypervisor(String),
    #[error("qmp: {0}")]
    Qmp(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt state file {path}: {message}")]
    CorruptState { path: PathBuf, message: String },
}

impl ComputeError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

pub type Result<T> = std::result::Result<T, ComputeError>;
