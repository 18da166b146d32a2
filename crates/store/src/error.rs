use std::path::PathBuf;

use circuitry_core::HookPoint;

/// Errors of the activation store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("reading", "listing", ...).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An error from circuitry-core (atomic writes, JSON, fingerprints).
    #[error(transparent)]
    Core(#[from] circuitry_core::Error),
    /// Parquet could not encode or decode a shard.
    #[error("Parquet {op} {path}: {source}")]
    Parquet {
        /// What was being done.
        op: &'static str,
        /// The shard file.
        path: PathBuf,
        /// The underlying error.
        source: parquet::errors::ParquetError,
    },
    /// Arrow could not assemble a record batch.
    #[error("building an Arrow record batch for {path}: {source}")]
    Arrow {
        /// The shard file.
        path: PathBuf,
        /// The underlying error.
        source: arrow::error::ArrowError,
    },
    /// The directory has no `meta.json`.
    #[error("{dir} is not an activation store: it has no meta.json; create one with circuitry-dump, or check the path")]
    NotAStore {
        /// The directory.
        dir: PathBuf,
    },
    /// A writer was pointed at a non-empty directory that is not a store.
    #[error("{dir} is not empty and is not an activation store (no meta.json); choose another --out or empty it")]
    DirNotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// `meta.json` was written by another schema version.
    #[error("{path} has schema_version {found}, this build reads version {expected}; re-run the dump with this version of circuitry")]
    SchemaVersion {
        /// The meta.json file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build writes and reads.
        expected: u32,
    },
    /// The store was not finished (the dump crashed or is still running).
    #[error("activation store {dir} is incomplete ({n_rows} rows in {n_shards} complete shards): the dump stopped before finishing; re-run the dump with the same options to resume it")]
    Incomplete {
        /// The directory.
        dir: PathBuf,
        /// Rows in its complete shards.
        n_rows: u64,
        /// Its complete shards.
        n_shards: usize,
    },
    /// The store is already complete; a writer will not append to it.
    #[error("activation store {dir} is already complete ({n_rows} rows); open it with ActivationStore::open, or delete the directory to write it again")]
    AlreadyComplete {
        /// The directory.
        dir: PathBuf,
        /// Its rows.
        n_rows: u64,
    },
    /// The directory holds a dataset made with a different spec.
    #[error("{dir} holds a different activation dataset ({differences}); delete it or choose another --out")]
    SpecMismatch {
        /// The directory.
        dir: PathBuf,
        /// Which fields differ, with both values.
        differences: String,
    },
    /// A spec that cannot describe a store.
    #[error("invalid store spec: {0}")]
    BadSpec(String),
    /// A shard's content does not match the checksum in meta.json.
    #[error("shard {path} does not match its checksum in meta.json (expected BLAKE3 {expected}, found {found}): the file was changed or damaged after the dump; re-run the dump stage (`circuitry run MANIFEST --force STAGE`, STAGE being the dump stage) or delete the store directory and re-run the dump")]
    Checksum {
        /// The shard file.
        path: PathBuf,
        /// Checksum recorded in meta.json.
        expected: String,
        /// Checksum of the file now.
        found: String,
    },
    /// A shard listed in meta.json is missing.
    #[error("shard {path} is listed in meta.json but missing; delete the store directory and re-run the dump")]
    MissingShard {
        /// The shard file.
        path: PathBuf,
    },
    /// A shard's Parquet schema or content is not what meta.json describes.
    #[error(
        "shard {path}: {reason}; the store was written by another tool or damaged, re-run the dump"
    )]
    ShardMismatch {
        /// The shard file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
    /// A hook the store does not hold.
    #[error("the activation store has no hook {hook}; it has: {available}")]
    UnknownHook {
        /// The hook asked for.
        hook: HookPoint,
        /// The hooks the store holds, comma separated.
        available: String,
    },
    /// A batch given to the writer is malformed.
    #[error("bad row batch: {0}")]
    BadBatch(String),
    /// A NaN or infinity in activations.
    #[error("non-finite activation {value} at hook {hook}, row {row} of the batch (row {global_row} of the store), column {col}: the model produced NaN/Inf; check the model and inputs")]
    NonFinite {
        /// The hook.
        hook: HookPoint,
        /// Row within the batch.
        row: usize,
        /// Row within the whole store.
        global_row: u64,
        /// Column within the hook's width.
        col: usize,
        /// The value.
        value: f32,
    },
    /// Bad arguments to the shuffle buffer.
    #[error("shuffle buffer: {0}")]
    Shuffle(String),
}

/// Result alias of the store crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parquet(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: parquet::errors::ParquetError,
    ) -> Self {
        Error::Parquet {
            op,
            path: path.into(),
            source,
        }
    }
}
