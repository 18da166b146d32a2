//! Reading a complete store: whole hook columns, shard-by-shard streams, tokens.
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, UInt32Type, UInt64Type, UInt8Type};
use bytes::Bytes;
use circuitry_core::{fingerprint::fingerprint_path, HookPoint};
use ndarray::{s, Array2};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::meta::{ShardMeta, StoreMeta};
use crate::schema::{self, column_index, copy_hook_column, hook_type, primitive_values};
use crate::{Error, Result};

/// The token columns of a store, one entry per row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenColumns {
    /// Window (sequence) index: (n_rows,)
    pub seq: Vec<u64>,
    /// Position within the window: (n_rows,)
    pub pos: Vec<u32>,
    /// Token id: (n_rows,)
    pub token_id: Vec<u32>,
    /// Pair index, in paired stores: (n_rows,)
    pub example: Option<Vec<u32>>,
    /// Side (0 clean, 1 patch), in paired stores: (n_rows,)
    pub side: Option<Vec<u8>>,
}

/// A complete activation store opened for reading.
#[derive(Debug, Clone)]
pub struct ActivationStore {
    dir: PathBuf,
    meta: StoreMeta,
}

impl ActivationStore {
    /// Open the store in `dir`. Errors when there is no `meta.json`, when it has
    /// another schema version, when the store is incomplete (re-run the dump to
    /// resume it), or when a listed shard is missing. Checksums are not read here:
    /// every read of a shard (hooks, tokens) hashes the shard's bytes as it reads
    /// them and refuses a shard whose BLAKE3 differs from `meta.json`'s
    /// ([`Error::Checksum`]) before decoding any of it; [`ActivationStore::verify`]
    /// checks every shard at once.
    pub fn open(dir: &Path) -> Result<ActivationStore> {
        let meta = StoreMeta::read(dir)?.ok_or_else(|| Error::NotAStore {
            dir: dir.to_path_buf(),
        })?;
        if !meta.complete {
            return Err(Error::Incomplete {
                dir: dir.to_path_buf(),
                n_rows: meta.n_rows,
                n_shards: meta.shards.len(),
            });
        }
        for shard in &meta.shards {
            let path = dir.join(&shard.file);
            if !path.is_file() {
                return Err(Error::MissingShard { path });
            }
        }
        Ok(ActivationStore {
            dir: dir.to_path_buf(),
            meta,
        })
    }

    /// The store in `dir` once a dump has finished writing it; `None` while none has:
    /// no `meta.json` yet, or an incomplete one (a dump that stopped, or is still at
    /// work, and resumes when run again). For the checks a stage makes before the dump
    /// stage upstream of it has run; otherwise as [`ActivationStore::open`].
    pub fn open_if_finished(dir: &Path) -> Result<Option<ActivationStore>> {
        match StoreMeta::read(dir)? {
            Some(meta) if meta.complete => ActivationStore::open(dir).map(Some),
            _ => Ok(None),
        }
    }

    /// The store's metadata.
    pub fn meta(&self) -> &StoreMeta {
        &self.meta
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of token rows.
    pub fn n_rows(&self) -> u64 {
        self.meta.n_rows
    }

    /// The hooks the store holds, in column order.
    pub fn hooks(&self) -> Vec<HookPoint> {
        self.meta.hooks.iter().map(|h| h.hook).collect()
    }

    /// Width of `hook`'s rows; the error lists the hooks the store has.
    pub fn hook_width(&self, hook: HookPoint) -> Result<usize> {
        self.meta.hook_width(hook)
    }

    /// Paths of the shard files, in row order.
    pub fn shard_paths(&self) -> Vec<PathBuf> {
        self.meta
            .shards
            .iter()
            .map(|s| self.dir.join(&s.file))
            .collect()
    }

    /// Check every shard against its BLAKE3 checksum (reads every byte).
    pub fn verify(&self) -> Result<()> {
        for shard in &self.meta.shards {
            let path = self.dir.join(&shard.file);
            let found = fingerprint_path(&path)?;
            if found != shard.checksum {
                return Err(Error::Checksum {
                    path,
                    expected: shard.checksum.clone(),
                    found,
                });
            }
        }
        Ok(())
    }

    /// All rows of `hook`: (n_rows, width). Reads only that column of each shard.
    pub fn read_hook(&self, hook: HookPoint) -> Result<Array2<f32>> {
        let width = self.hook_width(hook)?;
        let n = usize::try_from(self.meta.n_rows).unwrap_or(usize::MAX);
        let mut out = Array2::<f32>::zeros((n, width)); // (n_rows, width)
        let mut start = 0;
        for batch in self.hook_batches(hook)? {
            let batch = batch?; // (shard rows, width)
            let end = start + batch.nrows();
            out.slice_mut(s![start..end, ..]).assign(&batch);
            start = end;
        }
        Ok(out)
    }

    /// Stream `hook` shard by shard: one (shard rows, width) array per shard, so
    /// memory is bounded by one shard.
    pub fn hook_batches(&self, hook: HookPoint) -> Result<HookBatches> {
        Ok(HookBatches {
            inner: self.multi_hook_batches(&[hook])?,
        })
    }

    /// Stream several hooks at once, shard by shard, reading each shard once: each
    /// item holds one (shard rows, width) array per requested hook, in the order
    /// asked.
    pub fn multi_hook_batches(&self, hooks: &[HookPoint]) -> Result<MultiHookBatches> {
        let mut cols = Vec::with_capacity(hooks.len());
        for &hook in hooks {
            cols.push((hook, self.hook_width(hook)?));
        }
        Ok(MultiHookBatches {
            dir: self.dir.clone(),
            dtype: self.meta.dtype,
            shards: self.meta.shards.clone(),
            next: 0,
            cols,
        })
    }

    /// The rows of shard `shard` (0-based, in row order) for each of `hooks`, in the
    /// order asked: one (shard rows, width) array per hook. Lets a reader start at
    /// any shard, e.g. to resume or to visit shards in a shuffled order.
    pub fn read_shard_hooks(&self, shard: usize, hooks: &[HookPoint]) -> Result<Vec<Array2<f32>>> {
        let meta = self.meta.shards.get(shard).ok_or_else(|| {
            Error::BadBatch(format!(
                "shard {shard} does not exist; the store has {} shards",
                self.meta.shards.len()
            ))
        })?;
        let batches = self.multi_hook_batches(hooks)?;
        batches.read_shard(meta)
    }

    /// The token columns of every row (16 bytes or more per row: for large stores,
    /// read shard by shard with [`ActivationStore::read_shard_tokens`]).
    pub fn read_tokens(&self) -> Result<TokenColumns> {
        let paired = self.meta.paired;
        let mut out = TokenColumns {
            example: paired.then(Vec::new),
            side: paired.then(Vec::new),
            ..Default::default()
        };
        for shard in 0..self.meta.shards.len() {
            let t = self.read_shard_tokens(shard)?;
            out.seq.extend(t.seq);
            out.pos.extend(t.pos);
            out.token_id.extend(t.token_id);
            if let (Some(ex), Some(side), Some(t_ex), Some(t_side)) =
                (out.example.as_mut(), out.side.as_mut(), t.example, t.side)
            {
                ex.extend(t_ex);
                side.extend(t_side);
            }
        }
        Ok(out)
    }

    /// The token columns of the rows of shard `shard` (0-based; its first row is the
    /// sum of the rows of the shards before it).
    pub fn read_shard_tokens(&self, shard: usize) -> Result<TokenColumns> {
        let meta = self.meta.shards.get(shard).ok_or_else(|| {
            Error::BadBatch(format!(
                "shard {shard} does not exist; the store has {} shards",
                self.meta.shards.len()
            ))
        })?;
        let paired = self.meta.paired;
        let mut names = vec![
            (schema::SEQ, DataType::UInt64),
            (schema::POS, DataType::UInt32),
            (schema::TOKEN_ID, DataType::UInt32),
        ];
        if paired {
            names.push((schema::EXAMPLE, DataType::UInt32));
            names.push((schema::SIDE, DataType::UInt8));
        }
        let mut out = TokenColumns {
            example: paired.then(Vec::new),
            side: paired.then(Vec::new),
            ..Default::default()
        };
        let path = self.dir.join(&meta.file);
        for batch in read_columns(&path, meta, &names)? {
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| Error::ShardMismatch {
                        path: path.clone(),
                        reason: format!("column {name} missing from the projection"),
                    })
            };
            out.seq.extend(primitive_values::<UInt64Type>(
                col(schema::SEQ)?,
                "seq",
                &path,
            )?);
            out.pos.extend(primitive_values::<UInt32Type>(
                col(schema::POS)?,
                "pos",
                &path,
            )?);
            out.token_id.extend(primitive_values::<UInt32Type>(
                col(schema::TOKEN_ID)?,
                "token_id",
                &path,
            )?);
            if let (Some(ex), Some(side)) = (out.example.as_mut(), out.side.as_mut()) {
                ex.extend(primitive_values::<UInt32Type>(
                    col(schema::EXAMPLE)?,
                    "example",
                    &path,
                )?);
                side.extend(primitive_values::<UInt8Type>(
                    col(schema::SIDE)?,
                    "side",
                    &path,
                )?);
            }
        }
        Ok(out)
    }
}

/// Bytes read and hashed at a time by [`read_verified`].
const READ_CHUNK: usize = 1 << 20;

/// The whole of one shard file, hashed (BLAKE3) chunk by chunk as it is read, so
/// the hash costs no second pass over the file and each chunk is hashed while it
/// is in cache. Errors with [`Error::Checksum`] when the hash is not the one
/// `meta.json` records: nothing of a changed or damaged shard is ever decoded.
fn read_verified(path: &Path, shard: &ShardMeta) -> Result<Bytes> {
    let mut file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("reading", path, e))?
        .len();
    // One byte more than the file, so reading to its end never reallocates.
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0).saturating_add(1));
    let mut hasher = blake3::Hasher::new();
    loop {
        let start = buf.len();
        buf.resize(start + READ_CHUNK, 0);
        match file.read(&mut buf[start..]) {
            Ok(0) => {
                buf.truncate(start);
                break;
            }
            Ok(n) => {
                buf.truncate(start + n);
                hasher.update(&buf[start..]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(start),
            Err(e) => return Err(Error::io("reading", path, e)),
        }
    }
    let found = hasher.finalize().to_hex().to_string();
    if found != shard.checksum {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            expected: shard.checksum.clone(),
            found,
        });
    }
    Ok(Bytes::from(buf))
}

/// Read the named columns of one shard (only those), checking the shard's
/// checksum ([`read_verified`]), the columns' types and the shard's row count.
fn read_columns(
    path: &Path,
    shard: &ShardMeta,
    columns: &[(&str, DataType)],
) -> Result<Vec<RecordBatch>> {
    let bytes = read_verified(path, shard)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| Error::parquet("reading the footer of", path, e))?;
    let rows = builder.metadata().file_metadata().num_rows();
    if u64::try_from(rows).ok() != Some(shard.rows) {
        return Err(Error::ShardMismatch {
            path: path.to_path_buf(),
            reason: format!("it holds {rows} rows, meta.json says {}", shard.rows),
        });
    }
    let mut roots = Vec::with_capacity(columns.len());
    for (name, ty) in columns {
        roots.push(column_index(builder.schema(), name, ty, path)?);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(usize::try_from(rows).unwrap_or(1).max(1))
        .build()
        .map_err(|e| Error::parquet("reading", path, e))?;
    reader
        .map(|b| {
            b.map_err(|source| Error::Arrow {
                path: path.to_path_buf(),
                source,
            })
        })
        .collect()
}

/// Iterator over one hook's rows, one (shard rows, width) array per shard; made
/// by [`ActivationStore::hook_batches`].
#[derive(Debug)]
pub struct HookBatches {
    inner: MultiHookBatches,
}

impl Iterator for HookBatches {
    type Item = Result<Array2<f32>>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.next()?;
        Some(item.and_then(|mut arrays| {
            arrays
                .pop()
                .ok_or_else(|| Error::BadBatch("internal: no hook read".into()))
        }))
    }
}

/// Iterator over several hooks' rows, shard by shard; made by
/// [`ActivationStore::multi_hook_batches`].
#[derive(Debug)]
pub struct MultiHookBatches {
    dir: PathBuf,
    dtype: crate::Dtype,
    shards: Vec<ShardMeta>,
    next: usize,
    /// (hook, width) in the order asked.
    cols: Vec<(HookPoint, usize)>,
}

impl MultiHookBatches {
    fn read_shard(&self, shard: &ShardMeta) -> Result<Vec<Array2<f32>>> {
        let path = self.dir.join(&shard.file);
        let names: Vec<(String, DataType)> = self
            .cols
            .iter()
            .map(|&(hook, width)| (hook.to_string(), hook_type(self.dtype, width)))
            .collect();
        let refs: Vec<(&str, DataType)> =
            names.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
        let batches = read_columns(&path, shard, &refs)?;
        let rows = usize::try_from(shard.rows).unwrap_or(usize::MAX);
        let mut out = Vec::with_capacity(self.cols.len());
        for ((name, _), &(_, width)) in names.iter().zip(&self.cols) {
            let mut arr = Array2::<f32>::zeros((rows, width)); // (shard rows, width)
            let flat = arr.as_slice_mut().ok_or_else(|| Error::ShardMismatch {
                path: path.clone(),
                reason: "internal: output array is not contiguous".into(),
            })?;
            let mut start = 0;
            for batch in &batches {
                let col = batch
                    .column_by_name(name)
                    .ok_or_else(|| Error::ShardMismatch {
                        path: path.clone(),
                        reason: format!("column {name} missing from the projection"),
                    })?;
                let end = start + col.len() * width;
                let dst = flat
                    .get_mut(start..end)
                    .ok_or_else(|| Error::ShardMismatch {
                        path: path.clone(),
                        reason: "more rows than its footer says".into(),
                    })?;
                copy_hook_column(col.as_ref(), dst, &path)?;
                start = end;
            }
            out.push(arr);
        }
        Ok(out)
    }
}

impl Iterator for MultiHookBatches {
    type Item = Result<Vec<Array2<f32>>>;

    fn next(&mut self) -> Option<Self::Item> {
        let shard = self.shards.get(self.next)?.clone();
        self.next += 1;
        Some(self.read_shard(&shard))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.shards.len() - self.next;
        (left, Some(left))
    }
}
