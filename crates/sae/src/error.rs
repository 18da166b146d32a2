use std::path::PathBuf;

/// Errors of the SAE crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system or core-crate operation failed (reading, writing, renaming).
    #[error(transparent)]
    Core(#[from] circuitry_core::Error),
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `cfg.json` that cannot describe an SAE we can run.
    #[error("{path}: field {field:?}: {reason}")]
    BadCfg {
        /// The `cfg.json` file.
        path: PathBuf,
        /// The offending field.
        field: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A safetensors file that is malformed or lacks a tensor we need.
    #[error("{path}: {reason}")]
    BadWeights {
        /// The safetensors file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor with the wrong shape.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    Shape {
        /// Which tensor or input.
        what: String,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// An SAE or training configuration value outside its valid range.
    #[error("invalid {field} = {value}: {reason}")]
    BadConfig {
        /// The option, by the name users write (`d_sae`, `k`, `lr`, ...).
        field: &'static str,
        /// The value given.
        value: String,
        /// The rule it breaks and how to fix it.
        reason: String,
    },
    /// Activations containing NaN or infinity.
    #[error("activations are not finite: {value} at row {row}, column {col}; the activation dump is corrupt or the model diverged — re-run the dump stage")]
    NonFinite {
        /// Row of the first non-finite value.
        row: usize,
        /// Column of the first non-finite value.
        col: usize,
        /// The value found.
        value: f32,
    },
    /// A NaN or infinity in the activation store.
    #[error("{store}: hook {hook}, row {row}, column {col} holds {value}; the activation dump is corrupt or the model diverged — re-run the dump stage")]
    NonFiniteRow {
        /// The hook whose column holds it.
        hook: circuitry_core::HookPoint,
        /// The store row (0-based over all shards).
        row: u64,
        /// Column within the hook's row.
        col: usize,
        /// The value found.
        value: f32,
        /// The store directory.
        store: PathBuf,
    },
    /// The SAE's input width does not match the store's hook width.
    #[error("the SAE's d_in = {d_in} does not match the width {width} of {hook} in the store {store}; drop --d-in (it is read from the store) or pick the hook it was meant for")]
    WidthMismatch {
        /// The hook.
        hook: circuitry_core::HookPoint,
        /// The width asked for.
        d_in: usize,
        /// The store's width for the hook.
        width: usize,
        /// The store directory.
        store: PathBuf,
    },
    /// An SAE folder of the training stage without `training.json` (its last file).
    #[error("SAE folder {dir} is incomplete: it has no training.json, the file the training stage writes last (its run stopped before the end, e.g. on a full disk); re-run the SAE stage (`circuitry run MANIFEST --force STAGE`) or delete the folder and train it again")]
    IncompleteSae {
        /// The SAE folder.
        dir: PathBuf,
    },
    /// A checkpoint that cannot be used.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// Writing a file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No activation rows to train or evaluate on.
    #[error("no activation rows: {0}")]
    Empty(String),
    /// Something SAELens supports that this crate does not (yet).
    #[error("unsupported {what}: {value}; {hint}")]
    Unsupported {
        /// The feature (`architecture`, `normalize_activations`, `dtype`, ...).
        what: &'static str,
        /// The value found.
        value: String,
        /// What is supported instead.
        hint: String,
    },
    /// The activation store could not be read (missing, incomplete, no such hook, ...).
    #[error(transparent)]
    Store(#[from] circuitry_store::Error),
    /// The GPT-2 forward used for `ce_loss_score` failed (loading or running it).
    #[error(transparent)]
    Model(#[from] circuitry_models::Error),
    /// `--gemm mkl` was asked for but Intel MKL could not be loaded.
    #[error("{reason}")]
    MklUnavailable {
        /// Where it was looked for, why it failed, and how to install it.
        reason: String,
    },
    /// A safetensors serialisation error.
    #[error("safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
}

/// Result alias of the SAE crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn config(
        field: &'static str,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        Error::BadConfig {
            field,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
