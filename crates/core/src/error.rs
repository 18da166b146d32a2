use std::path::PathBuf;

/// Errors of the core crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", "renaming", ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A hook name that is not a known TransformerLens hook.
    #[error("unknown hook name {name:?}: {reason}; expected a TransformerLens name such as \"blocks.0.hook_resid_pre\", \"blocks.3.hook_attn_out\", \"blocks.3.hook_mlp_out\", \"ln_final.hook_normalized\" or \"toy.hook_hidden\"")]
    BadHookName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A JSON document could not be read or written.
    #[error("JSON in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A check made before a stage's work failed (memory estimate, output folder):
    /// what, why and the fix.
    #[error("{0}")]
    Preflight(String),
    /// A model config that cannot describe a working model.
    #[error("invalid model config: {0}")]
    BadConfig(String),
}

/// Result alias of the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
