//! The writer's background thread: it encodes chunks of rows into the open shard
//! while the caller computes the next rows, and commits each complete shard
//! (temporary name, fsync, rename, checksum, `meta.json`).
//!
//! Each chunk becomes one row group, written to the file at once: the small columns
//! with parquet's column writers, the hook columns as column chunks encoded by
//! [`super::pages`] (arrow-rs's Arrow path computes Parquet levels value by value and
//! wraps every f16 in its own `Bytes`). The file's footer carries the Arrow schema,
//! as `ArrowWriter` writes it, so readers see the store's Arrow types. The bytes of a
//! shard depend only on its rows: the caller cuts chunks at fixed offsets inside the
//! shard (multiples of [`CHUNK_ROWS`]), whatever its batches.
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use arrow::datatypes::{Field, SchemaRef};
use circuitry_core::atomic;
use half::f16;
use half::slice::HalfFloatSliceExt;
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter};
use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{DataType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesPtr};
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::types::{ColumnPath, SchemaDescPtr};

use super::pages::{HookEncoder, HookValues};
use crate::meta::{shard_file_name, Dtype, ShardMeta, StoreMeta, StoreSpec};
use crate::{Error, Result};

/// Rows per chunk handed to the background thread (and per row group).
pub(super) const CHUNK_ROWS: usize = 1024;

/// zstd level of the activation columns: level 1 compresses BYTE_STREAM_SPLIT floats
/// as well as level 3 (measured on GPT-2 activations: 83.8% vs 84.6% of the raw f32
/// size; f16 41.6% vs 41.3%) at a fraction of the time.
const ZSTD_LEVEL_ACTS: i32 = 1;

/// Rows buffered on the caller's thread, column by column (activations: one
/// row-major (rows * width,) buffer per hook, in spec order).
pub(super) use crate::schema::ShardColumns as Chunk;

/// Empty `chunk`, keeping its buffers' capacity.
fn clear(chunk: &mut Chunk) {
    chunk.seq.clear();
    chunk.pos.clear();
    chunk.token_id.clear();
    chunk.example.clear();
    chunk.side.clear();
    for a in &mut chunk.acts {
        a.clear();
    }
}

/// Nice value of the writer thread. The caller's compute (ONNX Runtime's intra-op
/// threads) fills every core; at equal priority the writer preempts one of them in the
/// middle of a parallel section and the other waits for it. Niced, the writer runs in
/// the cores' idle moments and, when it falls behind, while the caller waits on the
/// bounded channel (measurements: docs/benchmarks/dump.md).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const WRITER_NICE: i32 = 19;

/// Lower the calling thread's priority to [`WRITER_NICE`] (Linux; elsewhere nothing).
/// Failing to is harmless: the writer then runs at the caller's priority.
pub(super) fn yield_cores() {
    #[cfg(target_os = "linux")]
    {
        // On Linux a thread id names one thread: only the writer is reniced.
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), WRITER_NICE) {
            tracing::debug!(nice = WRITER_NICE, error = %e, "could not lower the store writer's priority");
        }
    }
}

/// A message to the background thread: rows, and whether they end the open shard.
pub(super) type Message = (Chunk, bool);

/// Parquet writer settings: the store's ([`crate::schema::writer_properties`]: zstd,
/// BYTE_STREAM_SPLIT and no dictionary on the activation leaves), and on the
/// activation leaves no statistics (min/max of activations serve no reader and cost
/// a comparison per value) and zstd level 1 — the settings [`super::pages`] encodes
/// the activation leaves with; parquet's column writers use them for the others.
pub(super) fn writer_properties(spec: &StoreSpec) -> WriterProperties {
    let zstd = ZstdLevel::try_new(ZSTD_LEVEL_ACTS).unwrap_or_default();
    let mut builder = crate::schema::writer_properties(spec).into_builder();
    for h in &spec.hooks {
        // The leaf of a FixedSizeList column is `<name>.list.<item field name>`.
        let leaf = ColumnPath::new(vec![
            h.hook.to_string(),
            "list".into(),
            Field::LIST_FIELD_DEFAULT_NAME.into(),
        ]);
        builder = builder
            .set_column_statistics_enabled(leaf.clone(), EnabledStatistics::None)
            .set_column_compression(leaf, Compression::ZSTD(zstd));
    }
    builder.build()
}

/// A file being written that hashes (BLAKE3) every byte on its way: the shard's
/// checksum without reading the file back. Beneath a large `BufWriter`, so BLAKE3
/// sees megabyte-sized updates (its SIMD lanes need many 1 KiB chunks at once).
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type ShardFile = SerializedFileWriter<BufWriter<Hashing<File>>>;

/// The shard being written: its final path, its temporary one, its rows so far.
struct OpenShard {
    path: PathBuf,
    tmp: PathBuf,
    rows: u64,
    writer: ShardFile,
}

/// State of the background thread.
pub(super) struct Sink {
    dir: PathBuf,
    spec: StoreSpec,
    meta: StoreMeta,
    /// The Parquet schema (leaves: the small columns, then one per hook).
    parquet: SchemaDescPtr,
    /// The store's settings, with the Arrow schema in the footer's metadata.
    props: WriterPropertiesPtr,
    /// Emptied chunks go back to the caller for reuse (no fresh pages per chunk).
    recycle: SyncSender<Chunk>,
    open: Option<OpenShard>,
    /// Reused f16 conversion buffers, one per hook.
    halves: Vec<Vec<f16>>,
    encoder: HookEncoder,
}

impl Sink {
    pub fn new(
        dir: PathBuf,
        spec: StoreSpec,
        meta: StoreMeta,
        schema: SchemaRef,
        recycle: SyncSender<Chunk>,
    ) -> Result<Sink> {
        let fail = |e| Error::parquet("preparing the writer of", &dir, e);
        let mut props = writer_properties(&spec);
        add_encoded_arrow_schema_to_metadata(&schema, &mut props);
        let parquet = ArrowSchemaConverter::new()
            .with_coerce_types(props.coerce_types())
            .convert(&schema)
            .map_err(fail)?;
        let encoder = HookEncoder::new(ZSTD_LEVEL_ACTS).map_err(fail)?;
        Ok(Sink {
            parquet: Arc::new(parquet),
            props: Arc::new(props),
            halves: vec![Vec::new(); spec.hooks.len()],
            encoder,
            dir,
            spec,
            meta,
            recycle,
            open: None,
        })
    }

    /// Encode messages until the caller hangs up; returns the metadata of the
    /// shards committed. A shard left open (the caller dropped the writer without
    /// finishing it, or an error) is discarded: its rows are computed again on resume.
    pub fn run(mut self, messages: Receiver<Message>) -> Result<StoreMeta> {
        let result = (|| {
            for (chunk, ends_shard) in messages {
                self.append(chunk)?;
                if ends_shard {
                    self.commit()?;
                }
            }
            Ok(())
        })();
        if let Some(open) = self.open.take() {
            drop(open.writer);
            let _ = fs::remove_file(&open.tmp);
        }
        result.map(|()| self.meta)
    }

    /// Write a chunk as a row group of the open shard (opening the next shard first
    /// if needed).
    fn append(&mut self, mut chunk: Chunk) -> Result<()> {
        if chunk.len() == 0 {
            return Ok(());
        }
        if self.open.is_none() {
            self.open = Some(self.open_shard()?);
        }
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        let written = write_row_group(
            &mut open.writer,
            &self.spec,
            &self.parquet,
            &mut self.encoder,
            &mut self.halves,
            &chunk,
        );
        written.map_err(|e| Error::parquet("writing", &open.tmp, e))?;
        open.rows += chunk.len() as u64;
        clear(&mut chunk);
        let _ = self.recycle.try_send(chunk); // the caller may have gone or have enough
        Ok(())
    }

    fn open_shard(&self) -> Result<OpenShard> {
        let path = self.dir.join(shard_file_name(self.meta.shards.len()));
        let tmp = atomic::temp_path(&path);
        let file = File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
        let sink = BufWriter::with_capacity(
            1 << 20,
            Hashing {
                inner: file,
                hasher: blake3::Hasher::new(),
            },
        );
        let writer =
            SerializedFileWriter::new(sink, self.parquet.root_schema_ptr(), self.props.clone())
                .map_err(|e| Error::parquet("starting", &tmp, e))?;
        Ok(OpenShard {
            path,
            tmp,
            rows: 0,
            writer,
        })
    }

    /// Close the open shard, make it durable under its final name and record it.
    fn commit(&mut self) -> Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let OpenShard {
            path,
            tmp,
            rows,
            writer,
        } = open;
        let result = (|| -> Result<String> {
            let buffered = writer
                .into_inner()
                .map_err(|e| Error::parquet("closing", &tmp, e))?;
            let Hashing {
                inner: file,
                hasher,
            } = buffered
                .into_inner()
                .map_err(|e| Error::io("flushing", &tmp, e.into_error()))?;
            file.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| Error::io("renaming into place", &path, e))?;
            Ok(hasher.finalize().to_hex().to_string())
        })();
        let checksum = match result {
            Ok(checksum) => checksum,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        self.meta.shards.push(ShardMeta {
            file: shard_file_name(self.meta.shards.len()),
            rows,
            checksum,
        });
        self.meta.n_rows += rows;
        self.meta.write(&self.dir)?;
        tracing::debug!(shard = %path.display(), rows, "shard written");
        Ok(())
    }
}

/// Write `chunk` as the next row group of `file`: the small columns with parquet's
/// column writers, then each hook's column chunk from `encoder` (f16 values are
/// converted into `halves` first).
fn write_row_group(
    file: &mut ShardFile,
    spec: &StoreSpec,
    parquet: &SchemaDescPtr,
    encoder: &mut HookEncoder,
    halves: &mut [Vec<f16>],
    chunk: &Chunk,
) -> parquet::errors::Result<()> {
    let mut group = file.next_row_group()?;
    // Unsigned Arrow columns are stored in Parquet's signed types, bit for bit.
    let seq: Vec<i64> = chunk.seq.iter().map(|&v| v as i64).collect();
    write_column::<Int64Type>(&mut group, &seq)?;
    let as_i32 = |v: &[u32]| v.iter().map(|&x| x as i32).collect::<Vec<i32>>();
    write_column::<Int32Type>(&mut group, &as_i32(&chunk.pos))?;
    write_column::<Int32Type>(&mut group, &as_i32(&chunk.token_id))?;
    let mut first_hook = 3;
    if spec.paired {
        write_column::<Int32Type>(&mut group, &as_i32(&chunk.example))?;
        let side: Vec<i32> = chunk.side.iter().map(|&s| i32::from(s)).collect();
        write_column::<Int32Type>(&mut group, &side)?;
        first_hook = 5;
    }
    for (i, h) in spec.hooks.iter().enumerate() {
        let values = match spec.dtype {
            Dtype::F32 => HookValues::F32(&chunk.acts[i]),
            Dtype::F16 => {
                let half = &mut halves[i];
                half.clear();
                half.resize(chunk.acts[i].len(), f16::ZERO);
                // Round to nearest even, as f16::from_f32 (F16C instructions where present).
                half.convert_from_f32_slice(&chunk.acts[i]);
                HookValues::F16(half)
            }
        };
        let (bytes, close) = encoder.encode(&parquet.column(first_hook + i), values, h.width)?;
        group.append_column(&bytes, close)?;
    }
    group.close()?;
    Ok(())
}

/// Write the next column of `group`, a required column of physical type `T`.
fn write_column<T: DataType>(
    group: &mut SerializedRowGroupWriter<'_, BufWriter<Hashing<File>>>,
    values: &[T::T],
) -> parquet::errors::Result<()> {
    let mut column = group
        .next_column()?
        .ok_or_else(|| ParquetError::General("the shard schema has too few columns".into()))?;
    column.typed::<T>().write_batch(values, None, None)?;
    column.close()
}
