//! Dump a GPT-2 or Llama model exported by `scripts/export_onnx.py` with ONNX Runtime.
//!
//! A model folder holds `model.onnx`, its sidecar `model.onnx.json` (graph outputs ↔
//! hook names, widths, `n_ctx`, vocabulary, the weights' fingerprint) and
//! `tokenizer.json`. Inputs are a text corpus packed into windows (`seq` = window,
//! `pos` = position) or paired agreement prompts (`example`, `side` columns, plus
//! `examples.jsonl` in the store). Sequences are batched with left padding and an
//! attention mask; padded positions are never written. Batches are fixed by sequence
//! index, so a resumed dump recomputes exactly the batches of an uninterrupted one.
//!
//! - [`cli`]: the command-line arguments.
//! - [`sidecar`]: the sidecar and choosing hooks by name or glob.
//! - [`runtime`]: finding `libonnxruntime`, the session.
//! - [`text`]: tokenizer, corpus reading and packing, pairs.
//! - [`bench`]: bare ONNX Runtime on the dump's batches (the benchmark's reference).
use std::fs;
use std::path::{Path, PathBuf};

use circuitry_core::preflight::MemoryLimit;
use circuitry_core::progress::Progress;
use circuitry_core::{atomic, fingerprint::fingerprint_path};
use circuitry_store::{Dtype, HookMeta, RowBatch, StoreMeta, StoreSpec, StoreWriter};
use ndarray::{s, Array2, ArrayView2, ArrayView3, Ix3};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A dump's part `I/N` ([`Part::rows`] with chunks of `shard_rows` rows): a fixed,
/// contiguous range of whole shards of the dump in one go. A part computes the same
/// batches as the dump in one go for its rows, so its shards hold the same rows with
/// the same values as that dump's shards — and the assembled store has the same
/// shards.
pub use circuitry_core::part::{Part, PARTS_DIR};

pub mod bench;
pub mod cli;
pub mod runtime;
pub mod sidecar;
pub mod text;

use sidecar::Sidecar;
use text::{PairExample, Tok};

/// File name of the pairs table written beside a paired store's shards.
pub const EXAMPLES_FILE: &str = "examples.jsonl";

/// What to run the model on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DumpInput {
    /// A corpus (.txt lines, .jsonl `text`, .parquet `text`), packed into windows.
    Corpus(PathBuf),
    /// An agreement JSONL; both sides of every pair are written.
    Pairs(PathBuf),
}

impl DumpInput {
    /// The input file.
    pub fn path(&self) -> &Path {
        match self {
            DumpInput::Corpus(p) | DumpInput::Pairs(p) => p,
        }
    }
}

/// Validated configuration of an ONNX dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnnxDumpConfig {
    /// Model folder: `model.onnx`, `model.onnx.json`, `tokenizer.json`.
    pub model: PathBuf,
    /// Output store directory.
    pub out: PathBuf,
    /// Hook names or globs.
    pub hooks: Vec<String>,
    /// The input.
    pub input: DumpInput,
    /// Window length for a corpus (default: the model's context).
    pub context_size: Option<usize>,
    /// Sequences per ONNX Runtime call.
    pub batch_size: usize,
    /// Intra-op threads.
    pub threads: usize,
    /// Storage dtype.
    pub dtype: Dtype,
    /// Rows per shard.
    pub shard_rows: usize,
    /// Cap on the number of tokens (rows) dumped.
    pub max_tokens: Option<usize>,
    /// The ONNX Runtime library (`libonnxruntime.so`); `None`: looked for as
    /// [`runtime::find_library`] says. Not serialised: where the library is changes
    /// no output, and this configuration is recorded in the store's `meta.json`,
    /// whose fingerprint keys every later stage.
    #[serde(skip)]
    pub ort_library: Option<PathBuf>,
}

impl OnnxDumpConfig {
    /// Check the ranges; the returned config is the only one [`dump`] accepts.
    pub fn check(self) -> Result<Self> {
        let positive = [
            ("batch-size", Some(self.batch_size)),
            ("threads", Some(self.threads)),
            ("shard-rows", Some(self.shard_rows)),
            ("max-tokens", self.max_tokens),
            ("context-size", self.context_size),
        ];
        for (name, value) in positive {
            if value == Some(0) {
                return Err(Error::BadParameter {
                    name,
                    value: "0".into(),
                    message: "must be at least 1".into(),
                });
            }
        }
        if self.hooks.is_empty() {
            return Err(Error::BadParameter {
                name: "hooks",
                value: String::new(),
                message: "give at least one hook name or glob, e.g. blocks.*.hook_resid_pre".into(),
            });
        }
        Ok(self)
    }

    /// The ONNX graph of the model folder.
    pub fn onnx_path(&self) -> PathBuf {
        self.model.join("model.onnx")
    }

    /// The tokenizer of the model folder.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.model.join("tokenizer.json")
    }
}

/// Token sequences to run, with what each one is in the store.
struct Sequences {
    ids: Vec<Vec<u32>>,
    /// (example, side) per sequence, for paired inputs.
    pairs: Option<Vec<(u32, u8)>>,
    context_size: usize,
    examples: Option<Vec<PairExample>>,
}

/// Run the model over the input and write the store at `cfg.out`; everything is
/// checked before the first file is written. Resumes a partial store of the same spec.
/// When `cfg.out/parts/` holds parts written by [`dump_part`], dumps the parts still
/// missing or incomplete and assembles them instead
/// ([`StoreWriter::assemble`]): the store reads row for row like one dumped in one go.
pub fn dump(cfg: &OnnxDumpConfig) -> Result<StoreMeta> {
    dump_with(cfg, None)
}

/// Dump only `part` of the input into `cfg.out/parts/<index>/` (a job array task);
/// returns the part's metadata. `cfg.out/meta.json` is not written: [`dump`] with
/// the same configuration assembles the parts.
pub fn dump_part(cfg: &OnnxDumpConfig, part: Part) -> Result<StoreMeta> {
    dump_with(cfg, Some(part))
}

/// What a run over `cfg`'s input needs, checked: the graph file, its sidecar, the
/// chosen hooks, the tokenizer, the sequences and the loaded session.
struct Prepared {
    onnx: PathBuf,
    sidecar: Sidecar,
    hooks: Vec<sidecar::ChosenHook>,
    tok: Tok,
    seqs: Sequences,
    graph: runtime::Graph,
}

/// Read and check everything [`dump`] and [`bench::bare_ort`] run on.
fn prepare(cfg: &OnnxDumpConfig) -> Result<Prepared> {
    let onnx = cfg.onnx_path();
    let sidecar = Sidecar::read(&onnx)?;
    let hooks = sidecar.choose(&cfg.hooks, &onnx)?;
    let tok_path = cfg.tokenizer_path();
    check_tokenizer(&sidecar, &onnx, &tok_path)?;
    let tok = Tok::load(&tok_path)?;
    if tok.vocab_size > sidecar.vocab_size {
        return Err(Error::VocabTooLarge {
            path: tok_path,
            tokenizer_vocab: tok.vocab_size,
            model_vocab: sidecar.vocab_size,
        });
    }
    let seqs = sequences(cfg, &tok, sidecar.n_ctx)?;
    let graph = runtime::Graph::load(
        runtime::environment(cfg.ort_library.as_deref())?,
        &onnx,
        cfg.threads,
        hooks.iter().map(|h| h.output.clone()).collect(),
    )?;
    Ok(Prepared {
        onnx,
        sidecar,
        hooks,
        tok,
        seqs,
        graph,
    })
}

/// Refuse a `tokenizer.json` other than the one the sidecar of `onnx` records
/// (when it records one).
fn check_tokenizer(sidecar: &Sidecar, onnx: &Path, tok_path: &Path) -> Result<()> {
    let Some(recorded) = &sidecar.tokenizer_fingerprint else {
        return Ok(());
    };
    if !tok_path.is_file() {
        return Ok(()); // Tok::load says what is missing
    }
    let found = fingerprint_path(tok_path)?;
    if found != recorded.hex {
        return Err(Error::TokenizerMismatch {
            path: tok_path.to_path_buf(),
            sidecar: Sidecar::path_for(onnx),
            expected: recorded.hex.clone(),
            found,
        });
    }
    Ok(())
}

/// `--check-only` for `circuitry-dump onnx`: the options, the sidecar and the
/// chosen hooks, the tokenizer against the sidecar, the input (corpus or pairs,
/// tokenized and checked line by line), the memory estimate (one batch of
/// windows at every chosen hook, plus a shard being written) and that `--out` can
/// be written. Loads neither ONNX Runtime nor the graph; writes nothing. The
/// estimate is compared with `limit`.
pub fn check_only(cfg: &OnnxDumpConfig, limit: MemoryLimit) -> Result<()> {
    circuitry_core::preflight::check_writable(&cfg.out, "--out")?;
    let onnx = cfg.onnx_path();
    if !onnx.is_file() {
        return Ok(()); // produced by an earlier stage that has not run yet
    }
    let sidecar = Sidecar::read(&onnx)?;
    let hooks = sidecar.choose(&cfg.hooks, &onnx)?;
    let tok_path = cfg.tokenizer_path();
    check_tokenizer(&sidecar, &onnx, &tok_path)?;
    // The longest sequence: the context size of a corpus, the longest tokenized
    // prompt of a pairs file (when it exists yet).
    let mut seq = cfg.context_size.unwrap_or(sidecar.n_ctx);
    if cfg.input.path().is_file() && tok_path.is_file() {
        let tok = Tok::load(&tok_path)?;
        seq = sequences(cfg, &tok, sidecar.n_ctx)?.context_size;
    }
    let seq = seq as u128;
    let width: u128 = hooks.iter().map(|h| h.width as u128).sum();
    // ORT computes the logits too when the graph has them as an output.
    let logits = if sidecar.outputs.iter().any(|o| o.hook == "logits") {
        sidecar.vocab_size as u128
    } else {
        0
    };
    let mut est = circuitry_core::preflight::MemoryEstimate::new();
    est.add(
        "one batch's hook outputs",
        (cfg.batch_size as u128 * seq).saturating_mul(width + logits),
        4,
    );
    est.add(
        "a shard being encoded",
        (cfg.shard_rows as u128).saturating_mul(width),
        4,
    );
    est.check_within(
        "circuitry-dump onnx",
        "lower --batch-size, --shard-rows or --context-size, or dump fewer --hooks",
        limit,
    )?;
    Ok(())
}

fn dump_with(cfg: &OnnxDumpConfig, part: Option<Part>) -> Result<StoreMeta> {
    let Prepared {
        onnx,
        sidecar,
        hooks,
        tok,
        seqs,
        mut graph,
    } = prepare(cfg)?;

    let spec = StoreSpec {
        hooks: hooks
            .iter()
            .map(|h| HookMeta {
                hook: h.hook,
                width: h.width,
            })
            .collect(),
        dtype: cfg.dtype,
        model_fingerprint: sidecar.fingerprint.hex.clone(),
        tokenizer_fingerprint: Some(fingerprint_path(&cfg.tokenizer_path())?),
        context_size: seqs.context_size,
        paired: seqs.pairs.is_some(),
        shard_rows: cfg.shard_rows,
        extra: serde_json::json!({
            "source": "onnx",
            "input_fingerprint": fingerprint_path(cfg.input.path())?,
            "bos": tok.bos,
            "n_sequences": seqs.ids.len(),
            "n_tokens": seqs.ids.iter().map(Vec::len).sum::<usize>(),
            "config": cfg,
        }),
    };
    let total_rows: usize = seqs.ids.iter().map(Vec::len).sum();
    // Dump `rows` into the part store `part_dir`, unless it is complete.
    let mut run = |part_dir: &Path, rows: std::ops::Range<usize>, spec: StoreSpec| {
        check_same_input(part_dir, &spec)?;
        if StoreWriter::is_complete(part_dir, &spec)? {
            return Ok(());
        }
        let writer = StoreWriter::create(part_dir, spec)?;
        write_batches(
            writer,
            &mut graph,
            &onnx,
            &hooks,
            &seqs,
            cfg.batch_size,
            rows,
        )
        .map(|_| ())
    };
    if let Some(part) = part {
        // One task of a job array: only this part's store.
        let part_spec = with_part(&spec, part);
        run(
            &part.dir(&cfg.out),
            part.rows(total_rows, cfg.shard_rows),
            part_spec,
        )?;
        return StoreMeta::read(&part.dir(&cfg.out))?.ok_or_else(|| Error::Input {
            path: part.dir(&cfg.out),
            line: None,
            message: "the part's meta.json is missing after writing it".into(),
        });
    }
    let Some(count) = part_count(&cfg.out)? else {
        // The whole dump in one go.
        check_same_input(&cfg.out, &spec)?;
        let writer = StoreWriter::create(&cfg.out, spec)?;
        if let Some(examples) = &seqs.examples {
            write_examples(&cfg.out, examples)?;
        }
        let range = 0..total_rows;
        return write_batches(
            writer,
            &mut graph,
            &onnx,
            &hooks,
            &seqs,
            cfg.batch_size,
            range,
        );
    };
    // Finish the parts a job array left undone, then assemble them.
    let mut parts = Vec::with_capacity(count);
    for index in 0..count {
        let part = Part { index, count };
        run(
            &part.dir(&cfg.out),
            part.rows(total_rows, cfg.shard_rows),
            with_part(&spec, part),
        )?;
        parts.push(PathBuf::from(PARTS_DIR).join(index.to_string()));
    }
    if let Some(examples) = &seqs.examples {
        write_examples(&cfg.out, examples)?;
    }
    Ok(StoreWriter::assemble(&cfg.out, spec, &parts)?)
}

/// `spec` with the part recorded in its provenance.
fn with_part(spec: &StoreSpec, part: Part) -> StoreSpec {
    let mut spec = spec.clone();
    if let Some(extra) = spec.extra.as_object_mut() {
        extra.insert("part".into(), serde_json::json!(part.to_string()));
    }
    spec
}

/// The number of parts in `out/parts/`, from the parts' `meta.json`: `None` when
/// there are none; an error when they disagree.
fn part_count(out: &Path) -> Result<Option<usize>> {
    let dir = out.join(PARTS_DIR);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(None);
    };
    let mut count = None;
    for entry in entries.flatten() {
        let Some(meta) = StoreMeta::read(&entry.path())? else {
            continue;
        };
        let part: Option<Part> = meta.extra["part"].as_str().and_then(|p| p.parse().ok());
        match (part, count) {
            (Some(p), None) => count = Some(p.count),
            (Some(p), Some(n)) if p.count == n => {}
            _ => {
                return Err(Error::Input {
                    path: entry.path(),
                    line: None,
                    message: format!(
                        "this part does not belong to a dump in {} parts (its meta.json says part {:?}); delete {} and dump again",
                        count.map_or("?".to_string(), |n| n.to_string()),
                        meta.extra["part"],
                        dir.display()
                    ),
                })
            }
        }
    }
    Ok(count)
}

/// Append rows `rows` of the input (token rows, counted over all sequences in order)
/// to `writer`, skipping the rows it already holds (a resume), and finish the store.
/// The batches (`batch_size` sequences, fixed by sequence index) that overlap the
/// range are computed whole, exactly as in a dump of every row.
fn write_batches(
    mut writer: StoreWriter,
    graph: &mut runtime::Graph,
    onnx: &Path,
    hooks: &[sidecar::ChosenHook],
    seqs: &Sequences,
    batch_size: usize,
    rows_wanted: std::ops::Range<usize>,
) -> Result<StoreMeta> {
    let start = rows_wanted.start + writer.rows_done() as usize; // first row still to write
                                                                 // Reused buffers for the rows of padded batches, one per hook.
    let mut unpadded: Vec<Vec<f32>> = vec![Vec::new(); hooks.len()];
    let mut progress = Progress::new("dump", "tokens", rows_wanted.len() as u64);
    progress.resume_at((start - rows_wanted.start) as u64);
    let mut row = 0; // first row of the current batch
    for (b, batch) in seqs.ids.chunks(batch_size).enumerate() {
        let first = b * batch_size;
        let rows: usize = batch.iter().map(Vec::len).sum();
        if row >= rows_wanted.end {
            break;
        }
        if row + rows <= start {
            row += rows;
            continue;
        }
        let (ids, mask) = left_pad(batch); // (batch, seq) each
        let width = ids.ncols();
        let mut cols = Columns::default();
        for (j, seq) in batch.iter().enumerate() {
            for (p, &t) in seq.iter().enumerate() {
                cols.seq.push((first + j) as u64);
                cols.pos.push(p as u32);
                cols.token_id.push(t);
                if let Some(pairs) = &seqs.pairs {
                    cols.example.push(pairs[first + j].0);
                    cols.side.push(pairs[first + j].1);
                }
            }
        }
        // The rows of this batch to write: not yet in the store, inside the range.
        let from = start.saturating_sub(row);
        let to = rows.min(rows_wanted.end - row);
        let paired = seqs.pairs.is_some();
        graph.run(&ids, &mask, |outputs| {
            let mut acts = Vec::with_capacity(hooks.len()); // each (rows, width_h)
            for ((hook, values), buf) in hooks.iter().zip(outputs).zip(&mut unpadded) {
                let values =
                    values
                        .view()
                        .into_dimensionality::<Ix3>()
                        .map_err(|e| Error::Ort {
                            action: "running",
                            path: onnx.to_path_buf(),
                            message: format!(
                                "output {} is not (batch, seq, width): {e}",
                                hook.output
                            ),
                        })?; // (batch, seq, width_h)
                let rows =
                    unpad(values, batch, width, hook.width, buf).map_err(|e| Error::Ort {
                        action: "running",
                        path: onnx.to_path_buf(),
                        message: format!("output {} has an unexpected shape: {e}", hook.output),
                    })?; // (rows, width_h)
                acts.push((hook.hook, rows));
            }
            writer.write(RowBatch {
                seq: &cols.seq[from..to],
                pos: &cols.pos[from..to],
                token_id: &cols.token_id[from..to],
                example: paired.then(|| &cols.example[from..to]),
                side: paired.then(|| &cols.side[from..to]),
                acts: acts
                    .iter()
                    .map(|(h, a)| (*h, a.slice(s![from..to, ..])))
                    .collect(),
            })?;
            Ok(())
        })?;
        row += rows;
        progress.set_position((row.min(rows_wanted.end) - rows_wanted.start) as u64);
    }
    progress.finish();
    Ok(writer.finish()?)
}

/// The rows of one output (batch, seq, width_h) at the unpadded positions, in
/// order, as (rows, width_h): a view of ONNX Runtime's buffer when no sequence is
/// padded, else copied into `buf` (reused from batch to batch).
fn unpad<'a>(
    values: ArrayView3<'a, f32>,
    batch: &[Vec<u32>],
    width: usize,
    width_h: usize,
    buf: &'a mut Vec<f32>,
) -> std::result::Result<ArrayView2<'a, f32>, ndarray::ShapeError> {
    let rows: usize = batch.iter().map(Vec::len).sum();
    if rows == batch.len() * width {
        if let Ok(flat) = values.into_shape_with_order((rows, width_h)) {
            return Ok(flat);
        }
    }
    buf.clear();
    for (j, seq) in batch.iter().enumerate() {
        let part = values.slice(s![j, width - seq.len().., ..]); // (len, width_h)
        match part.as_slice() {
            Some(flat) => buf.extend_from_slice(flat),
            None => buf.extend(part.iter().copied()),
        }
    }
    ArrayView2::from_shape((rows, width_h), &buf[..])
}

#[derive(Default)]
struct Columns {
    seq: Vec<u64>,
    pos: Vec<u32>,
    token_id: Vec<u32>,
    example: Vec<u32>,
    side: Vec<u8>,
}

/// A partial store at `out` must have been started on the same input file.
fn check_same_input(out: &Path, spec: &StoreSpec) -> Result<()> {
    let Some(meta) = StoreMeta::read(out)? else {
        return Ok(());
    };
    let (stored, asked) = (
        &meta.extra["input_fingerprint"],
        &spec.extra["input_fingerprint"],
    );
    if stored != asked {
        return Err(Error::Input {
            path: out.to_path_buf(),
            line: None,
            message: format!(
                "this store was started on another input (fingerprint {stored} vs {asked}); give another --out or delete it"
            ),
        });
    }
    Ok(())
}

/// Read, tokenize and check the input's sequences against the model's context.
fn sequences(cfg: &OnnxDumpConfig, tok: &Tok, n_ctx: usize) -> Result<Sequences> {
    match &cfg.input {
        DumpInput::Corpus(path) => {
            let context_size = cfg.context_size.unwrap_or(n_ctx);
            if context_size > n_ctx {
                return Err(Error::TooLong {
                    what: "--context-size".into(),
                    len: context_size,
                    n_ctx,
                    fix: "give a --context-size no larger than the model's",
                });
            }
            let docs = text::read_corpus(path)?;
            let ids = text::pack_corpus(tok, path, &docs, context_size, cfg.max_tokens)?;
            Ok(Sequences {
                ids,
                pairs: None,
                context_size,
                examples: None,
            })
        }
        DumpInput::Pairs(path) => {
            let examples = text::read_pairs(tok, path, cfg.max_tokens)?;
            let mut ids = Vec::with_capacity(2 * examples.len());
            let mut pairs = Vec::with_capacity(2 * examples.len());
            for ex in &examples {
                for (side, seq) in [(0u8, &ex.clean_ids), (1, &ex.patch_ids)] {
                    if seq.len() > n_ctx {
                        return Err(Error::TooLong {
                            what: format!("{} pair {} side {side}", path.display(), ex.example),
                            len: seq.len(),
                            n_ctx,
                            fix: "drop or shorten that prompt",
                        });
                    }
                    ids.push(seq.clone());
                    pairs.push((ex.example, side));
                }
            }
            let context_size = ids.iter().map(Vec::len).max().unwrap_or(1);
            Ok(Sequences {
                ids,
                pairs: Some(pairs),
                context_size,
                examples: Some(examples),
            })
        }
    }
}

/// Left-pad sequences to a batch: ids and mask (batch, longest), padding id 0, mask 0.
fn left_pad(batch: &[Vec<u32>]) -> (Array2<i64>, Array2<i64>) {
    let width = batch.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Array2::zeros((batch.len(), width)); // (batch, seq)
    let mut mask = Array2::zeros((batch.len(), width)); // (batch, seq)
    for (j, seq) in batch.iter().enumerate() {
        let off = width - seq.len();
        for (p, &t) in seq.iter().enumerate() {
            ids[[j, off + p]] = i64::from(t);
            mask[[j, off + p]] = 1;
        }
    }
    (ids, mask)
}

/// Write `examples.jsonl` (one [`PairExample`] a line) atomically.
fn write_examples(dir: &Path, examples: &[PairExample]) -> Result<()> {
    let mut text = String::new();
    for ex in examples {
        let line = serde_json::to_string(ex).map_err(|e| Error::Input {
            path: dir.join(EXAMPLES_FILE),
            line: None,
            message: e.to_string(),
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    Ok(atomic::write_bytes(
        &dir.join(EXAMPLES_FILE),
        text.as_bytes(),
    )?)
}
