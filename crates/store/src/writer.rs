//! Writing a store shard by shard, crash-safely, with resume.
use std::fs;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use circuitry_core::{atomic, fingerprint::fingerprint_path, HookPoint};
use ndarray::{s, ArrayView2};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::meta::{shard_file_name, ShardMeta, StoreMeta, StoreSpec};
use crate::schema::{arrow_schema, writer_properties, ShardColumns};
use crate::{Error, Result};

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
/// after each shard. Dropping the writer without [`StoreWriter::finish`] loses
/// only the buffered rows; [`StoreWriter::create`] on the same directory resumes.
#[derive(Debug)]
pub struct StoreWriter {
    dir: PathBuf,
    meta: StoreMeta,
    spec: StoreSpec,
    schema: SchemaRef,
    props: WriterProperties,
    buf: ShardColumns,
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
        Ok(StoreWriter {
            dir: dir.to_path_buf(),
            schema: arrow_schema(&spec),
            props: writer_properties(&spec),
            buf: ShardColumns::new(spec.hooks.len()),
            meta,
            spec,
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

    /// Rows already durable in complete shards (after a resume, the rows kept).
    pub fn rows_done(&self) -> u64 {
        self.meta.n_rows
    }

    /// Rows accepted so far: durable rows plus buffered ones.
    pub fn rows_written(&self) -> u64 {
        self.meta.n_rows + self.buf.len() as u64
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
            let take = (self.spec.shard_rows - self.buf.len()).min(n - start);
            let end = start + take;
            self.buf.seq.extend_from_slice(&batch.seq[start..end]);
            self.buf.pos.extend_from_slice(&batch.pos[start..end]);
            self.buf
                .token_id
                .extend_from_slice(&batch.token_id[start..end]);
            if let (Some(ex), Some(side)) = (batch.example, batch.side) {
                self.buf.example.extend_from_slice(&ex[start..end]);
                self.buf.side.extend_from_slice(&side[start..end]);
            }
            for (buf, &i) in self.buf.acts.iter_mut().zip(&order) {
                let rows = batch.acts[i].1.slice(s![start..end, ..]); // (take, width)
                match rows.as_slice() {
                    Some(flat) => buf.extend_from_slice(flat),
                    None => buf.extend(rows.iter().copied()),
                }
            }
            start = end;
            if self.buf.len() == self.spec.shard_rows {
                self.flush_shard()?;
            }
        }
        Ok(())
    }

    /// Write the last partial shard and `meta.json` with `complete: true`.
    pub fn finish(mut self) -> Result<StoreMeta> {
        if self.buf.len() > 0 {
            self.flush_shard()?;
        }
        self.meta.complete = true;
        self.meta.write(&self.dir)?;
        tracing::info!(
            dir = %self.dir.display(),
            rows = self.meta.n_rows,
            shards = self.meta.shards.len(),
            "activation store complete"
        );
        Ok(self.meta)
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

    /// Write the buffered rows as the next shard and record it in `meta.json`.
    fn flush_shard(&mut self) -> Result<()> {
        let file = shard_file_name(self.meta.shards.len());
        let path = self.dir.join(&file);
        let rows = self.buf.len() as u64;
        let batch = self.buf.take_batch(&self.spec, &self.schema, &path)?;
        let (schema, props) = (self.schema.clone(), self.props.clone());
        atomic::write_with(&path, |w| {
            let mut writer =
                ArrowWriter::try_new(w, schema, Some(props)).map_err(std::io::Error::other)?;
            writer.write(&batch).map_err(std::io::Error::other)?;
            writer.close().map_err(std::io::Error::other)?;
            Ok(())
        })?;
        let checksum = fingerprint_path(&path)?;
        self.meta.shards.push(ShardMeta {
            file,
            rows,
            checksum,
        });
        self.meta.n_rows += rows;
        self.meta.write(&self.dir)?;
        tracing::debug!(shard = %path.display(), rows, "shard written");
        Ok(())
    }
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
