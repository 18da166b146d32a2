//! # circuitry-store
//!
//! The activation dataset on disk — the only crate that knows its Parquet schema.
//! A store is a directory:
//!
//! - `shard_00000.parquet`, … — one row per token: `seq` (u64), `pos` (u32),
//!   `token_id` (u32), `example` (u32) and `side` (u8, 0 clean / 1 patch) when the
//!   store is paired, and one `FixedSizeList<f32|f16, width>` column per hook named
//!   by its TransformerLens name (`blocks.0.hook_resid_pre`). zstd, with
//!   BYTE_STREAM_SPLIT on the activation values. pyarrow, polars and duckdb read it
//!   as it is.
//! - `meta.json` — [`StoreMeta`]: schema version, the [`StoreSpec`] (hooks and widths,
//!   dtype, model and tokenizer fingerprints, context size, paired, rows per shard,
//!   free-form provenance), per-shard rows and BLAKE3 checksums, and `complete`.
//!
//! Parts:
//!
//! - [`StoreWriter`]: appends [`RowBatch`]es; each shard is written to a temporary
//!   name and renamed when complete, then `meta.json` is rewritten; a rerun resumes
//!   after the last complete shard ([`StoreWriter::rows_done`]).
//! - [`ActivationStore`]: opens a complete store; reads one hook column
//!   ([`ActivationStore::read_hook`]), streams hooks shard by shard
//!   ([`ActivationStore::hook_batches`], [`ActivationStore::multi_hook_batches`]), reads
//!   the token columns ([`ActivationStore::read_tokens`]).
//! - [`ShuffleBuffer`]: a seeded, bounded shuffle over streamed token rows.
//!
//! ```
//! use circuitry_core::HookPoint;
//! use circuitry_store::{ActivationStore, Dtype, HookMeta, RowBatch, ShuffleBuffer, StoreSpec, StoreWriter};
//! use ndarray::Array2;
//!
//! # fn main() -> circuitry_store::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let spec = StoreSpec {
//!     hooks: vec![HookMeta { hook: HookPoint::ToyHidden, width: 4 }],
//!     dtype: Dtype::F32,
//!     model_fingerprint: "toy-weights".into(),
//!     tokenizer_fingerprint: None,
//!     context_size: 1,
//!     paired: false,
//!     shard_rows: 3,
//!     extra: serde_json::json!({ "seed": 0 }),
//! };
//! let acts = Array2::from_shape_fn((5, 4), |(i, j)| (i * 4 + j) as f32); // (rows, width)
//! let mut writer = StoreWriter::create(dir.path(), spec)?;
//! writer.write(RowBatch {
//!     seq: &[0, 1, 2, 3, 4],
//!     pos: &[0; 5],
//!     token_id: &[0; 5],
//!     example: None,
//!     side: None,
//!     acts: vec![(HookPoint::ToyHidden, acts.view())],
//! })?;
//! let meta = writer.finish()?;
//! assert_eq!(meta.shards.len(), 2); // 3 rows + 2 rows
//!
//! let store = ActivationStore::open(dir.path())?;
//! assert_eq!(store.read_hook(HookPoint::ToyHidden)?, acts);
//! let shuffled = ShuffleBuffer::seeded(4, 4, 42)?.shuffle(store.hook_batches(HookPoint::ToyHidden)?, 2)?;
//! let rows: usize = shuffled.map(|b| b.map(|b| b.nrows())).sum::<Result<_, _>>()?;
//! assert_eq!(rows, 5);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod error;
mod meta;
mod reader;
mod schema;
mod shuffle;
mod writer;

pub use error::{Error, Result};
pub use meta::{Dtype, HookMeta, ShardMeta, StoreMeta, StoreSpec, META_FILE, SCHEMA_VERSION};
pub use reader::{ActivationStore, HookBatches, MultiHookBatches, TokenColumns};
pub use shuffle::{RngState, ShuffleBuffer, ShuffleState, Shuffled};
pub use writer::{RowBatch, StoreWriter};
