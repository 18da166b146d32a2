//! Writing a store shard by shard, crash-safely, with resume.
//!
//! The caller's thread validates rows and copies them into chunks; a background
//! thread ([`sink`]) encodes the chunks into the open shard and commits complete
//! shards, so encoding and writing overlap the caller's next batch.
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use circuitry_core::{atomic, fingerprint::fingerprint_path, HookPoint};
use ndarray::{s, ArrayView2};

use crate::meta::{ShardMeta, StoreMeta, StoreSpec};
use crate::schema::arrow_schema;
use crate::{Error, Result};

mod pages;
mod sink;

use sink::{Chunk, Message, Sink, CHUNK_ROWS};

/// Chunks in flight between the caller and the background thread (besides the one
/// being encoded): the caller runs at most this far ahead of the encoder.
const CHUNKS_IN_FLIGHT: usize = 2;

/// One batch of token rows to append to a store.
#[derive(Debug, Clone)]
pub struct RowBatch<'a> {
    /// Window (sequence) index of each row: (rows,)
    pub seq: &'a [u64],
    /// Position within the window: (rows,), each below the spec's `context_size`.
    pub pos: &'a [u32],
    /// Token id: (rows,)
    pub token_id: &'a [u32],
    /// Pair index, exactly when the store is paired: (rows,)
    pub example: Option<&'a [u32]>,
    /// Side, exactly when the store is paired (0 clean, 1 patch): (rows,)
    pub side: Option<&'a [u8]>,
    /// Activations per hook, each (rows, width), in any order; must cover exactly
    /// the spec's hooks.
    pub acts: Vec<(HookPoint, ArrayView2<'a, f32>)>,
}

impl RowBatch<'_> {
    /// Number of rows in the batch.
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    /// True when the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }
}

/// Writes an activation store: rows are buffered and written as a shard every
/// `shard_rows` rows (temporary name, then rename), and `meta.json` is rewritten
/// after each shard. Shards are encoded and written on a background thread while
/// the caller computes more rows. Dropping the writer without
/// [`StoreWriter::finish`] waits for the shards already complete to be written
/// and loses only the rows of the open shard; [`StoreWriter::create`] on the same
/// directory resumes.
#[derive(Debug)]
pub struct StoreWriter {
    dir: PathBuf,
    spec: StoreSpec,
    /// Rows in complete shards (committed, or handed to the background thread).
    rows_done: u64,
    /// Rows of the open shard accepted so far.
    shard_fill: usize,
    /// Rows of the open shard not yet handed to the background thread.
    chunk: Chunk,
    to_sink: Option<SyncSender<Message>>,
    recycled: Receiver<Chunk>,
    thread: Option<JoinHandle<Result<StoreMeta>>>,
}

impl StoreWriter {
    /// Create a store in `dir`, or resume one.
    ///
    /// - No `dir`, or an empty one: a new store (`meta.json` with `complete: false`
    ///   is written at once).
    /// - A store with the same spec (all fields but `extra`) and `complete: false`:
    ///   its complete shards are verified against their checksums and kept, stray
    ///   files of the crashed run are removed, and writing continues after
    ///   [`StoreWriter::rows_done`] rows — the caller skips that many input rows.
    /// - A store with the same spec and `complete: true`: [`Error::AlreadyComplete`];
    ///   ask [`StoreWriter::is_complete`] first to skip the work.
    /// - A store with another spec: [`Error::SpecMismatch`] naming the fields.
    /// - A non-empty directory without `meta.json`: [`Error::DirNotEmpty`].
    pub fn create(dir: &Path, spec: StoreSpec) -> Result<StoreWriter> {
        spec.check()?;
        let meta = match StoreMeta::read(dir)? {
            Some(mut meta) => {
                check_same_dataset(dir, &spec, &meta)?;
                if meta.complete {
                    return Err(Error::AlreadyComplete {
                        dir: dir.to_path_buf(),
                        n_rows: meta.n_rows,
                    });
                }
                verify_shards(dir, &meta)?;
                remove_strays(dir, &meta)?;
                meta.extra = spec.extra.clone();
                meta.tool_version = circuitry_core::TOOL_VERSION.into();
                tracing::info!(
                    dir = %dir.display(),
                    rows = meta.n_rows,
                    shards = meta.shards.len(),
                    "resuming activation store"
                );
                meta
            }
            None => {
                prepare_empty_dir(dir)?;
                StoreMeta::new(spec.clone())
            }
        };
        meta.write(dir)?;
        let rows_done = meta.n_rows;
        let (to_sink, messages) = mpsc::sync_channel::<Message>(CHUNKS_IN_FLIGHT);
        let (recycle, recycled) = mpsc::sync_channel::<Chunk>(CHUNKS_IN_FLIGHT + 2);
        let sink = Sink::new(
            dir.to_path_buf(),
            spec.clone(),
            meta,
            arrow_schema(&spec),
            recycle,
        )?;
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                sink::yield_cores();
                sink.run(messages)
            })
            .map_err(|e| Error::io("starting the writer thread for", dir, e))?;
        Ok(StoreWriter {
            dir: dir.to_path_buf(),
            chunk: Chunk::new(spec.hooks.len()),
            spec,
            rows_done,
            shard_fill: 0,
            to_sink: Some(to_sink),
            recycled,
            thread: Some(thread),
        })
    }

    /// Whether `dir` already holds a complete store of `spec`: `false` when there
    /// is no store or an incomplete one (create resumes it), an error when it holds
    /// a different dataset.
    pub fn is_complete(dir: &Path, spec: &StoreSpec) -> Result<bool> {
        match StoreMeta::read(dir)? {
            None => Ok(false),
            Some(meta) => {
                check_same_dataset(dir, spec, &meta)?;
                Ok(meta.complete)
            }
        }
    }

    /// Assemble a store in `dir` from complete stores in its subdirectories `parts`
    /// (relative paths such as `parts/0`, in row order), written separately — e.g.
    /// by the tasks of a job array, each over a contiguous range of the input. The
    /// parts must all have `spec` (every field but `extra`); their shards are
    /// verified against their checksums and listed, in order, in `dir/meta.json`
    /// (`parts/0/shard_00000.parquet`, …), written last with `complete: true` and
    /// `spec.extra`. No shard is copied: [`crate::ActivationStore`] reads the result
    /// row for row like a store written in one go. Idempotent: a `dir` already
    /// assembled from the same parts is returned as it is.
    pub fn assemble(dir: &Path, spec: StoreSpec, parts: &[PathBuf]) -> Result<StoreMeta> {
        spec.check()?;
        if parts.is_empty() {
            return Err(Error::BadSpec(format!(
                "no parts to assemble into {}",
                dir.display()
            )));
        }
        let mut meta = StoreMeta::new(spec.clone());
        for part in parts {
            let part_dir = dir.join(part);
            let part_meta = StoreMeta::read(&part_dir)?.ok_or_else(|| Error::NotAStore {
                dir: part_dir.clone(),
            })?;
            check_same_dataset(&part_dir, &spec, &part_meta)?;
            if !part_meta.complete {
                return Err(Error::Incomplete {
                    dir: part_dir,
                    n_rows: part_meta.n_rows,
                    n_shards: part_meta.shards.len(),
                });
            }
            verify_shards(&part_dir, &part_meta)?;
            for shard in part_meta.shards {
                let file = Path::new(part).join(&shard.file);
                meta.shards.push(ShardMeta {
                    file: file.to_string_lossy().replace('\\', "/"),
                    ..shard
                });
            }
            meta.n_rows += part_meta.n_rows;
        }
        meta.complete = true;
        if let Some(old) = StoreMeta::read(dir)? {
            if old.complete && old.shards == meta.shards && old.spec().differences(&spec).is_empty()
            {
                return Ok(old);
            }
        }
        fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))?;
        meta.write(dir)?;
        tracing::info!(
            dir = %dir.display(),
            rows = meta.n_rows,
            parts = parts.len(),
            "activation store assembled from parts"
        );
        Ok(meta)
    }

    /// Rows in complete shards: after [`StoreWriter::create`], the rows kept from
    /// an earlier run; later, plus the shards completed since (durable once the
    /// writer is finished or dropped).
    pub fn rows_done(&self) -> u64 {
        self.rows_done
    }

    /// Rows accepted so far: rows in complete shards plus those of the open shard.
    pub fn rows_written(&self) -> u64 {
        self.rows_done + self.shard_fill as u64
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Append a batch. It is validated whole before anything is buffered: column
    /// lengths, paired columns, `side` in {0, 1}, `pos` below `context_size`,
    /// exactly the spec's hooks with their widths, and finite activations.
    pub fn write(&mut self, batch: RowBatch<'_>) -> Result<()> {
        let order = self.validate(&batch)?;
        let n = batch.len();
        let mut start = 0;
        while start < n {
            // Chunks start at fixed offsets inside a shard, whatever the batches.
            let chunk_room = CHUNK_ROWS - self.shard_fill % CHUNK_ROWS;
            let take = chunk_room
                .min(self.spec.shard_rows - self.shard_fill)
                .min(n - start);
            let end = start + take;
            let c = &mut self.chunk;
            c.seq.extend_from_slice(&batch.seq[start..end]);
            c.pos.extend_from_slice(&batch.pos[start..end]);
            c.token_id.extend_from_slice(&batch.token_id[start..end]);
            if let (Some(ex), Some(side)) = (batch.example, batch.side) {
                c.example.extend_from_slice(&ex[start..end]);
                c.side.extend_from_slice(&side[start..end]);
            }
            for (buf, &i) in c.acts.iter_mut().zip(&order) {
                let rows = batch.acts[i].1.slice(s![start..end, ..]); // (take, width)
                match rows.as_slice() {
                    Some(flat) => buf.extend_from_slice(flat),
                    None => buf.extend(rows.iter().copied()),
                }
            }
            start = end;
            self.shard_fill += take;
            if self.shard_fill == self.spec.shard_rows {
                self.send(true)?;
                self.rows_done += self.shard_fill as u64;
                self.shard_fill = 0;
            } else if self.chunk.len() == CHUNK_ROWS {
                self.send(false)?;
            }
        }
        Ok(())
    }

    /// Write the last partial shard and `meta.json` with `complete: true`.
    pub fn finish(mut self) -> Result<StoreMeta> {
        if self.shard_fill > 0 {
            self.send(true)?;
            self.rows_done += self.shard_fill as u64;
            self.shard_fill = 0;
        }
        let mut meta = self.join()?;
        meta.complete = true;
        meta.write(&self.dir)?;
        tracing::info!(
            dir = %self.dir.display(),
            rows = meta.n_rows,
            shards = meta.shards.len(),
            "activation store complete"
        );
        Ok(meta)
    }

    /// Hand the buffered rows to the background thread; `ends_shard` commits the shard.
    fn send(&mut self, ends_shard: bool) -> Result<()> {
        let next = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| Chunk::new(self.spec.hooks.len()));
        let chunk = std::mem::replace(&mut self.chunk, next);
        let sent = match &self.to_sink {
            Some(to_sink) => to_sink.send((chunk, ends_shard)).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The background thread stopped: it failed, and says why.
        self.join()?;
        Err(Error::io(
            "writing",
            &self.dir,
            std::io::Error::other("the store's writer thread stopped early"),
        ))
    }

    /// Stop the background thread after it has written what it was given.
    fn join(&mut self) -> Result<StoreMeta> {
        drop(self.to_sink.take());
        let Some(thread) = self.thread.take() else {
            return Err(Error::io(
                "writing",
                &self.dir,
                std::io::Error::other("the store's writer thread has already stopped"),
            ));
        };
        thread.join().unwrap_or_else(|_| {
            Err(Error::io(
                "writing",
                &self.dir,
                std::io::Error::other("the store's writer thread panicked"),
            ))
        })
    }

    /// Check a batch; returns, for each spec hook, its index in `batch.acts`.
    fn validate(&self, batch: &RowBatch<'_>) -> Result<Vec<usize>> {
        let bad = |m: String| Err(Error::BadBatch(m));
        let n = batch.len();
        for (name, len) in [("pos", batch.pos.len()), ("token_id", batch.token_id.len())] {
            if len != n {
                return bad(format!("{name} has {len} rows but seq has {n}"));
            }
        }
        match (self.spec.paired, batch.example, batch.side) {
            (true, Some(ex), Some(side)) => {
                if ex.len() != n || side.len() != n {
                    return bad(format!(
                        "example has {} rows and side {}, but seq has {n}",
                        ex.len(),
                        side.len()
                    ));
                }
                if let Some(i) = side.iter().position(|&s| s > 1) {
                    return bad(format!(
                        "side[{i}] is {}; it must be 0 (clean) or 1 (patch)",
                        side[i]
                    ));
                }
            }
            (true, _, _) => return bad("the store is paired: example and side are required".into()),
            (false, None, None) => {}
            (false, _, _) => {
                return bad("the store is not paired: example and side must be None".into())
            }
        }
        let ctx = self.spec.context_size;
        if let Some(i) = batch.pos.iter().position(|&p| p as usize >= ctx) {
            return bad(format!(
                "pos[{i}] is {}, not below context_size {ctx}",
                batch.pos[i]
            ));
        }
        let hook_list = || {
            self.spec
                .hooks
                .iter()
                .map(|h| h.hook.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if batch.acts.len() != self.spec.hooks.len() {
            return bad(format!(
                "{} activation arrays given, the store has {} hooks: {}",
                batch.acts.len(),
                self.spec.hooks.len(),
                hook_list()
            ));
        }
        let mut order = Vec::with_capacity(self.spec.hooks.len());
        for h in &self.spec.hooks {
            let Some(i) = batch.acts.iter().position(|(hook, _)| *hook == h.hook) else {
                return bad(format!(
                    "no activations for hook {}; the store's hooks are {}",
                    h.hook,
                    hook_list()
                ));
            };
            let shape = batch.acts[i].1.dim();
            if shape != (n, h.width) {
                return bad(format!(
                    "activations of {} have shape {shape:?}, expected ({n}, {})",
                    h.hook, h.width
                ));
            }
            order.push(i);
        }
        for (hook, acts) in &batch.acts {
            if all_finite(acts) {
                continue;
            }
            for (row, values) in acts.outer_iter().enumerate() {
                if let Some(col) = values.iter().position(|v| !v.is_finite()) {
                    return Err(Error::NonFinite {
                        hook: *hook,
                        row,
                        global_row: self.rows_written() + row as u64,
                        col,
                        value: values[col],
                    });
                }
            }
        }
        Ok(order)
    }
}

impl Drop for StoreWriter {
    /// Let the background thread write the shards already complete, then stop it.
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.join();
        }
    }
}

/// Whether every value is finite; vectorised (`x * 0` is NaN exactly for NaN and ±inf).
fn all_finite(acts: &ArrayView2<'_, f32>) -> bool {
    let Some(flat) = acts.as_slice() else {
        return acts.iter().all(|v| v.is_finite());
    };
    let mut acc = [0f32; 16];
    let mut lanes = flat.chunks_exact(16);
    for lane in &mut lanes {
        for (a, &x) in acc.iter_mut().zip(lane) {
            *a += x * 0.0;
        }
    }
    lanes.remainder().iter().all(|v| v.is_finite()) && acc.iter().all(|a| *a == 0.0)
}

fn check_same_dataset(dir: &Path, spec: &StoreSpec, meta: &StoreMeta) -> Result<()> {
    let differences = meta.spec().differences(spec);
    if differences.is_empty() {
        Ok(())
    } else {
        Err(Error::SpecMismatch {
            dir: dir.to_path_buf(),
            differences: format!("stored vs requested: {differences}"),
        })
    }
}

/// Check that every listed shard exists and matches its checksum.
fn verify_shards(dir: &Path, meta: &StoreMeta) -> Result<()> {
    for shard in &meta.shards {
        let path = dir.join(&shard.file);
        if !path.is_file() {
            return Err(Error::MissingShard { path });
        }
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

/// Remove temporary files and shards that `meta.json` does not list (written by a
/// run that crashed before recording them); they will be written again.
fn remove_strays(dir: &Path, meta: &StoreMeta) -> Result<()> {
    for name in list_dir(dir)? {
        let stray_shard = name.starts_with("shard_")
            && name.ends_with(".parquet")
            && !meta.shards.iter().any(|s| s.file == name);
        if atomic::is_temp_name(&name) || stray_shard {
            let path = dir.join(&name);
            fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
        }
    }
    Ok(())
}

/// Make sure `dir` exists and holds nothing but temporary files (which are removed).
fn prepare_empty_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io("creating directory", dir, e))?;
    let names = list_dir(dir)?;
    if names.iter().any(|n| !atomic::is_temp_name(n)) {
        return Err(Error::DirNotEmpty {
            dir: dir.to_path_buf(),
        });
    }
    for name in names {
        let path = dir.join(&name);
        fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
    }
    Ok(())
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))? {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ActivationStore, Dtype, HookMeta};
    use ndarray::Array2;

    fn spec(part: Option<&str>) -> StoreSpec {
        StoreSpec {
            hooks: vec![HookMeta {
                hook: HookPoint::ToyHidden,
                width: 3,
            }],
            dtype: Dtype::F32,
            model_fingerprint: "m".into(),
            tokenizer_fingerprint: None,
            context_size: 4,
            paired: false,
            shard_rows: 3,
            extra: serde_json::json!({ "part": part }),
        }
    }

    /// Rows `range` of a 10-row dataset, written as one store in `dir`.
    fn write_rows(dir: &Path, range: std::ops::Range<usize>, spec: StoreSpec) {
        let n = range.len();
        let acts = Array2::from_shape_fn((n, 3), |(i, j)| ((range.start + i) * 3 + j) as f32); // (rows, 3)
        let seq: Vec<u64> = range.clone().map(|i| (i / 4) as u64).collect();
        let pos: Vec<u32> = range.clone().map(|i| (i % 4) as u32).collect();
        let tok: Vec<u32> = range.clone().map(|i| 100 + i as u32).collect();
        let mut w = StoreWriter::create(dir, spec).unwrap();
        w.write(RowBatch {
            seq: &seq,
            pos: &pos,
            token_id: &tok,
            example: None,
            side: None,
            acts: vec![(HookPoint::ToyHidden, acts.view())],
        })
        .unwrap();
        w.finish().unwrap();
    }

    /// Parts written separately and assembled read row for row like one store.
    #[test]
    fn assembled_parts_read_like_one_store() {
        let tmp = tempfile::tempdir().unwrap();
        let (one, split) = (tmp.path().join("one"), tmp.path().join("split"));
        write_rows(&one, 0..10, spec(None));
        let parts: Vec<PathBuf> = ["parts/0", "parts/1", "parts/2"]
            .iter()
            .map(PathBuf::from)
            .collect();
        for (part, range) in parts.iter().zip([0..4, 4..4, 4..10]) {
            write_rows(&split.join(part), range, spec(Some("x")));
        }
        let meta = StoreWriter::assemble(&split, spec(None), &parts).unwrap();
        assert_eq!(meta.n_rows, 10);
        assert_eq!(meta.shards[0].file, "parts/0/shard_00000.parquet");
        let (a, b) = (
            ActivationStore::open(&one).unwrap(),
            ActivationStore::open(&split).unwrap(),
        );
        assert_eq!(
            a.read_hook(HookPoint::ToyHidden).unwrap(),
            b.read_hook(HookPoint::ToyHidden).unwrap()
        );
        let (ta, tb) = (a.read_tokens().unwrap(), b.read_tokens().unwrap());
        assert_eq!((ta.seq, ta.pos, ta.token_id), (tb.seq, tb.pos, tb.token_id));
        // Idempotent.
        assert_eq!(
            StoreWriter::assemble(&split, spec(None), &parts).unwrap(),
            meta
        );
    }

    #[test]
    fn assemble_refuses_incomplete_or_different_parts() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        write_rows(&dir.join("p0"), 0..4, spec(None));
        StoreWriter::create(&dir.join("p1"), spec(None)).unwrap();
        let parts = [PathBuf::from("p0"), PathBuf::from("p1")];
        let err = StoreWriter::assemble(&dir, spec(None), &parts).unwrap_err();
        assert!(matches!(err, Error::Incomplete { .. }), "{err}");
        let mut other = spec(None);
        other.shard_rows = 5;
        let err = StoreWriter::assemble(&dir, other, &parts[..1]).unwrap_err();
        assert!(matches!(err, Error::SpecMismatch { .. }), "{err}");
        assert!(!dir.join("meta.json").exists(), "nothing assembled");
    }
}
