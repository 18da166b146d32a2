use std::path::PathBuf;

/// Errors of the models crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error(transparent)]
    Core(#[from] circuitry_core::Error),
    /// A safetensors file is malformed.
    #[error("safetensors file {path}: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor is missing from a weights file.
    #[error("tensor {name:?} missing from {path}; it has: {available}")]
    MissingTensor {
        /// Tensor name looked for.
        name: String,
        /// The file.
        path: PathBuf,
        /// The names it does have, comma separated.
        available: String,
    },
    /// A tensor has the wrong shape or dtype.
    #[error("tensor {name:?} in {path}: expected {expected}, got {got}")]
    BadTensor {
        /// Tensor name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Expected shape/dtype.
        expected: String,
        /// Actual shape/dtype.
        got: String,
    },
    /// A model configuration that does not describe this model.
    #[error("model config {path}: {message}")]
    BadModelConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A training or data-generation parameter out of range.
    #[error("invalid parameter {name} = {value}: {message}")]
    BadParameter {
        /// Parameter name as the user spells it.
        name: &'static str,
        /// The value given.
        value: String,
        /// The valid range / fix.
        message: String,
    },
}

/// Result alias of the models crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
