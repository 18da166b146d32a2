//! Paired prompts (clean / patch) from a pairs dump, the metric, and the check that the
//! Rust forward reproduces the cached activations.
use std::collections::BTreeMap;
use std::path::Path;

use circuitry_core::HookPoint;
use circuitry_models::transformer::{Forward, Transformer};
use circuitry_store::ActivationStore;
use ndarray::{s, Array1, Array2, Array3, ArrayView3};
use serde::Deserialize;

use crate::{Error, Result};

/// File name of the pairs table a pairs dump writes beside its shards.
pub const EXAMPLES_FILE: &str = "examples.jsonl";

/// A batch of pairs whose prompts all have the same length.
#[derive(Debug, Clone, PartialEq)]
pub struct PairBatch {
    /// The pairs' `example` ids in the store.
    pub examples: Vec<u32>,
    /// Clean prompts.
    pub clean: Array2<u32>, // (batch, seq)
    /// Patch prompts.
    pub patch: Array2<u32>, // (batch, seq)
    /// The clean prompt's answer token.
    pub clean_answer: Vec<u32>,
    /// The patch prompt's answer token.
    pub patch_answer: Vec<u32>,
    /// The pairs' `case` (e.g. `singular`).
    pub cases: Vec<String>,
}

impl PairBatch {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// True when the batch holds no pair.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Prompt length.
    pub fn seq(&self) -> usize {
        self.clean.ncols()
    }

    /// The pairs `range` as a batch.
    pub fn slice(&self, range: std::ops::Range<usize>) -> PairBatch {
        PairBatch {
            examples: self.examples[range.clone()].to_vec(),
            clean: self.clean.slice(s![range.clone(), ..]).to_owned(),
            patch: self.patch.slice(s![range.clone(), ..]).to_owned(),
            clean_answer: self.clean_answer[range.clone()].to_vec(),
            patch_answer: self.patch_answer[range.clone()].to_vec(),
            cases: self.cases[range].to_vec(),
        }
    }
}

/// The metric of Marks et al.: `logit(patch answer) − logit(clean answer)` at the last
/// position, per pair, and its gradient with respect to the logits (of the sum over
/// pairs). `logits` is (batch, seq, vocab), or (batch, 1, vocab) from a run with
/// `last_logits`; each pair's row of `answers` is
/// `(clean, patch)`. Rows are taken modulo `answers.len()` so a batch that repeats the
/// pairs (integrated-gradient steps, exact-patching variants) uses the same answers.
pub fn logit_diff(
    logits: ArrayView3<'_, f32>,
    answers: &[(u32, u32)],
) -> (Array1<f32>, Array3<f32>) /* (batch), (batch, seq, vocab) */ {
    let (b, s, _) = logits.dim();
    let mut m = Array1::zeros(b);
    let mut d = Array3::zeros(logits.raw_dim());
    for i in 0..b {
        let (c, p) = answers[i % answers.len()];
        let (c, p) = (c as usize, p as usize);
        m[i] = logits[[i, s - 1, p]] - logits[[i, s - 1, c]];
        d[[i, s - 1, p]] += 1.0;
        d[[i, s - 1, c]] -= 1.0;
    }
    (m, d)
}

/// The vocabulary ids the metric reads, for a run of `rows` rows whose row `r` is pair
/// `r % answers.len()`: (rows, 2), `[clean, patch]`. Run with
/// [`Forward::logits_of`](circuitry_models::transformer::Forward::logits_of) and take
/// the metric with [`answer_diff`]: the run computes two logits a row, not the whole
/// vocabulary's.
pub fn answer_ids(answers: &[(u32, u32)], rows: usize) -> Array2<u32> {
    Array2::from_shape_fn((rows, 2), |(r, j)| {
        let (c, p) = answers[r % answers.len()];
        if j == 0 {
            c
        } else {
            p
        }
    })
}

/// [`logit_diff`] of the logits of a run with `logits_of(answer_ids(..))`, (rows, 1, 2):
/// the metric per row and its gradient with respect to those logits.
pub fn answer_diff(logits: ArrayView3<'_, f32>) -> (Array1<f32>, Array3<f32>) {
    logit_diff(logits, &[(0, 1)])
}

/// `(clean, patch)` answer ids of a batch.
pub fn answers(batch: &PairBatch) -> Vec<(u32, u32)> {
    batch
        .clean_answer
        .iter()
        .zip(&batch.patch_answer)
        .map(|(&c, &p)| (c, p))
        .collect()
}

/// One line of `examples.jsonl`.
#[derive(Debug, Deserialize)]
struct ExampleLine {
    example: u32,
    case: String,
    clean_answer: String,
    patch_answer: String,
    clean_answer_ids: Vec<u32>,
    patch_answer_ids: Vec<u32>,
}

/// Cached clean and patch activations (batch, seq, width) of one batch, by hook.
pub type Cached = BTreeMap<HookPoint, (Array3<f32>, Array3<f32>)>;

/// Pairs of one prompt length: the example line and its clean and patch store rows.
type LengthGroup<'a> = Vec<(&'a ExampleLine, Vec<usize>, Vec<usize>)>;

/// The pairs of a paired store, batched by prompt length, with the cached activations
/// of each batch at `hooks` for the reproduction check.
#[derive(Debug, Clone)]
pub struct PairData {
    /// Batches of at most `batch_size` pairs, each of one prompt length.
    pub batches: Vec<PairBatch>,
    /// Per batch and hook: the cached clean and patch activations (batch, seq, width).
    pub cached: Vec<Cached>,
}

impl PairData {
    /// Read `store` (a pairs dump: `example`/`side` columns and `examples.jsonl`),
    /// keeping at most `max_examples` pairs (in example order) in batches of
    /// `batch_size`.
    pub fn read(
        store: &ActivationStore,
        hooks: &[HookPoint],
        batch_size: usize,
        max_examples: Option<usize>,
    ) -> Result<PairData> {
        let dir = store.dir().to_path_buf();
        let lines = read_examples(&dir.join(EXAMPLES_FILE))?;
        let tokens = store.read_tokens()?;
        let (Some(ex_col), Some(side_col)) = (&tokens.example, &tokens.side) else {
            return Err(Error::Missing {
                what: "example and side columns".into(),
                detail: format!(
                    "{} is not a pairs dump; dump the agreement pairs with `circuitry-dump onnx --pairs FILE.jsonl`",
                    dir.display()
                ),
            });
        };
        // rows[(example, side)] = store rows by position.
        let mut rows: BTreeMap<(u32, u8), Vec<(u32, usize)>> = BTreeMap::new();
        for r in 0..tokens.pos.len() {
            rows.entry((ex_col[r], side_col[r]))
                .or_default()
                .push((tokens.pos[r], r));
        }
        for v in rows.values_mut() {
            v.sort_unstable();
        }
        let mut by_len: BTreeMap<usize, LengthGroup<'_>> = BTreeMap::new();
        for line in lines.iter().take(max_examples.unwrap_or(usize::MAX)) {
            let get = |side: u8| -> Result<Vec<usize>> {
                rows.get(&(line.example, side))
                    .map(|v| v.iter().map(|&(_, r)| r).collect())
                    .ok_or_else(|| Error::Missing {
                        what: format!("example {} side {side}", line.example),
                        detail: format!(
                            "{} lists it in {EXAMPLES_FILE} but its shards have no rows for it; re-run the dump",
                            dir.display()
                        ),
                    })
            };
            let (c, p) = (get(0)?, get(1)?);
            if c.len() != p.len() {
                return Err(Error::Mismatch {
                    what: format!("example {} in {}", line.example, dir.display()),
                    detail: format!(
                        "the clean prompt has {} tokens and the patch prompt {}; circuits need pairs of equal token length (filter the dataset)",
                        c.len(),
                        p.len()
                    ),
                });
            }
            for (what, ids) in [
                (&line.clean_answer, &line.clean_answer_ids),
                (&line.patch_answer, &line.patch_answer_ids),
            ] {
                if ids.len() != 1 {
                    return Err(Error::Mismatch {
                        what: format!("example {} answer {what:?}", line.example),
                        detail: format!(
                            "it is {} tokens; the logit-difference metric needs single-token answers (filter the dataset)",
                            ids.len()
                        ),
                    });
                }
            }
            by_len.entry(c.len()).or_default().push((line, c, p));
        }
        if by_len.is_empty() {
            return Err(Error::Missing {
                what: "pairs".into(),
                detail: format!("{} holds no pairs", dir.display()),
            });
        }
        let acts: Vec<(HookPoint, Array2<f32>)> = hooks
            .iter()
            .map(|&h| store.read_hook(h).map(|a| (h, a)))
            .collect::<std::result::Result<_, _>>()?;
        let mut data = PairData {
            batches: Vec::new(),
            cached: Vec::new(),
        };
        for (len, group) in by_len {
            for chunk in group.chunks(batch_size.max(1)) {
                let n = chunk.len();
                let ids = |side: usize| {
                    Array2::from_shape_fn((n, len), |(b, p)| {
                        let r = if side == 0 { &chunk[b].1 } else { &chunk[b].2 };
                        tokens.token_id[r[p]]
                    })
                };
                data.batches.push(PairBatch {
                    examples: chunk.iter().map(|c| c.0.example).collect(),
                    clean: ids(0),
                    patch: ids(1),
                    clean_answer: chunk.iter().map(|c| c.0.clean_answer_ids[0]).collect(),
                    patch_answer: chunk.iter().map(|c| c.0.patch_answer_ids[0]).collect(),
                    cases: chunk.iter().map(|c| c.0.case.clone()).collect(),
                });
                let mut cached = BTreeMap::new();
                for (h, a) in &acts {
                    let w = a.ncols();
                    let gather = |side: usize| {
                        Array3::from_shape_fn((n, len, w), |(b, p, k)| {
                            let r = if side == 0 { &chunk[b].1 } else { &chunk[b].2 };
                            a[[r[p], k]]
                        })
                    };
                    cached.insert(*h, (gather(0), gather(1)));
                }
                data.cached.push(cached);
            }
        }
        Ok(data)
    }

    /// Number of pairs.
    pub fn n_examples(&self) -> usize {
        self.batches.iter().map(PairBatch::len).sum()
    }
}

fn read_examples(path: &Path) -> Result<Vec<ExampleLine>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Missing {
        what: EXAMPLES_FILE.into(),
        detail: format!(
            "cannot read {}: {e}; the store must come from a pairs dump (circuitry-dump onnx --pairs)",
            path.display()
        ),
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Mismatch {
                what: format!("{} line {}", path.display(), i + 1),
                detail: format!("not a pairs-dump example line ({e}); re-run the dump"),
            })
        })
        .collect()
}

/// Largest accepted |cached − recomputed| activation, relative to `max(1, max |cached|)`.
pub const REPRODUCTION_TOLERANCE: f32 = 2e-3;

/// Check that the Rust forward of `model` on a batch's prompts reproduces the cached
/// activations; the error names the hook, the largest difference and the likely cause.
pub fn check_reproduces(
    model: &Transformer,
    batch: &PairBatch,
    cached: &Cached,
    store_dir: &Path,
    fingerprints: (&str, &str),
) -> Result<()> {
    let hooks: Vec<HookPoint> = cached.keys().copied().collect();
    for (side, ids) in [("clean", &batch.clean), ("patch", &batch.patch)] {
        let out = model.run(&Forward::tokens(ids.view()).capture(&hooks).logits(false))?;
        for (h, (c, p)) in cached {
            let want = if side == "clean" { c } else { p };
            let Some(got) = out.hooks.get(h) else {
                continue;
            };
            let (diff, scale) = max_diff(got.view(), want.view());
            if diff > REPRODUCTION_TOLERANCE * scale.max(1.0) {
                let (model_fp, store_fp) = fingerprints;
                let cause = if model_fp != store_fp {
                    format!("the store was dumped from a model with fingerprint {store_fp}, but the weights given have {model_fp}: another model")
                } else {
                    "the model fingerprints agree, so the prompts were tokenized differently (another tokenizer) or the dump used other position ids".into()
                };
                return Err(Error::Mismatch {
                    what: format!("cached {h} in {}", store_dir.display()),
                    detail: format!(
                        "the Rust forward on the {side} prompts of examples {:?}… differs from the cached activations by up to {diff:.3e} (tolerance {:.1e} × max(1, max|a| = {scale:.3})); likely cause: {cause}. Re-run the dump with the model given here",
                        &batch.examples[..batch.examples.len().min(3)],
                        REPRODUCTION_TOLERANCE
                    ),
                });
            }
        }
    }
    Ok(())
}

/// `(max |a − b|, max |b|)`.
fn max_diff(a: ArrayView3<'_, f32>, b: ArrayView3<'_, f32>) -> (f32, f32) {
    if a.dim() != b.dim() {
        return (f32::INFINITY, 0.0);
    }
    a.iter().zip(b).fold((0.0f32, 0.0f32), |(d, m), (&x, &y)| {
        (d.max((x - y).abs()), m.max(y.abs()))
    })
}

/// The per-pair metric on clean prompts with no edit (batch).
pub fn clean_metric(model: &Transformer, batch: &PairBatch) -> Result<Array1<f32>> {
    let ids = answer_ids(&answers(batch), batch.len());
    let out = model.run(&Forward::tokens(batch.clean.view()).logits_of(ids.view()))?;
    let logits = out.logits.ok_or_else(|| Error::Missing {
        what: "logits".into(),
        detail: "the forward was asked for logits".into(),
    })?;
    Ok(answer_diff(logits.view()).0)
}
