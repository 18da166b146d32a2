//! The error type of the circuit crate.
use std::path::PathBuf;

/// Errors of the circuit crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing an artifact failed.
    #[error(transparent)]
    Core(#[from] circuitry_core::Error),
    /// Loading the model failed.
    #[error(transparent)]
    Model(#[from] circuitry_models::Error),
    /// Loading or running the SAE failed.
    #[error(transparent)]
    Sae(#[from] circuitry_sae::Error),
    /// Reading the activation store failed.
    #[error(transparent)]
    Store(#[from] circuitry_store::Error),
    /// A circuit graph that breaks one of the schema's rules.
    #[error("invalid circuit graph: {reason}")]
    InvalidGraph {
        /// What is wrong, naming the node or edge.
        reason: String,
    },
    /// A number that JSON cannot hold (NaN or infinite).
    #[error("non-finite value {value} in {field}; the inputs contain NaN or infinity, check the model, SAE and activations")]
    NonFinite {
        /// Where the value sits (node or edge and field).
        field: String,
        /// The value.
        value: f64,
    },
    /// A `circuit.json` written by a newer or older schema.
    #[error("{path}: circuit.json schema_version {found}, this tool reads version {expected}; rebuild the circuit with this version of circuitry-circuit")]
    SchemaVersion {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        found: u32,
        /// The version this crate reads and writes.
        expected: u32,
    },
    /// Two inputs that do not fit together (widths, hooks, fingerprints).
    #[error("{what}: {detail}")]
    Mismatch {
        /// Which inputs disagree.
        what: String,
        /// How they disagree and how to fix it.
        detail: String,
    },
    /// A stage option outside its valid range.
    #[error("invalid option {option}: {reason}")]
    BadOption {
        /// The option's name as on the command line.
        option: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// An SAE's `feature_stats.parquet` that cannot be read as the viewer expects.
    #[error("{path}: {reason}")]
    FeatureStats {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A required input file or hook is absent.
    #[error("{what} missing: {detail}")]
    Missing {
        /// What is missing.
        what: String,
        /// Where it was looked for and how to fix it.
        detail: String,
    },
}

/// Result alias of the circuit crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn graph(reason: impl Into<String>) -> Self {
        Error::InvalidGraph {
            reason: reason.into(),
        }
    }
}
