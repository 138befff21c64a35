//! One error type for the library. Every fallible public function returns
//! [`Result`]; the CLI prints the message and exits non-zero. Messages name the
//! problem and, where there is one, the file or prompt at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The checkpoint file could not be parsed (corrupt zip, bad safetensors
    /// header, forbidden pickle content, ...).
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },

    /// The checkpoint parsed but is not a SegVol state dict for the config.
    #[error("this is not a SegVol checkpoint: {0}")]
    NotSegVol(String),

    #[error("config: {0}")]
    Config(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("NIfTI {path}: {msg}")]
    Nifti { path: PathBuf, msg: String },

    /// A DICOM input that cannot be read as one CT volume; the message
    /// names the file (or folder) and the problem.
    #[error("DICOM {path}: {msg}")]
    Dicom { path: PathBuf, msg: String },

    /// A prompt that cannot be honoured (outside the volume, empty box, bad
    /// label, ...). The message names the prompt.
    #[error("prompt {prompt}: {msg}")]
    Prompt { prompt: String, msg: String },

    /// Shapes that do not fit an operation: a bug in the caller or a
    /// checkpoint of the wrong geometry.
    #[error("shape: {0}")]
    Shape(String),

    #[error("CUDA: {0}")]
    Cuda(String),

    #[error("out of memory budget: {0}")]
    Memory(String),

    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn nifti(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Nifti {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn prompt(prompt: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Prompt {
            prompt: prompt.into(),
            msg: msg.into(),
        }
    }
    pub fn shape(msg: impl Into<String>) -> Self {
        Error::Shape(msg.into())
    }
}

/// `ensure!(cond, Error::...)`: return the error when the condition fails.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $err:expr) => {
        if !$cond {
            return Err($err);
        }
    };
}
