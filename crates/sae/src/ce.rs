//! `ce_loss_score`: how much of the model's next-token cross-entropy survives when
//! the SAE's reconstruction replaces the activation at its hook, with SAELens's
//! definition
//!
//! ```text
//! ce_loss_score = (CE_zero_ablation − CE_with_SAE) / (CE_zero_ablation − CE_clean)
//! ```
//!
//! (1: the reconstruction loses nothing the model uses; 0: as bad as zeroing the
//! hook). The three cross-entropies are means over the same counted positions of
//! the same token windows, run through the Rust model ([`circuitry_models::transformer`], GPT-2 or Llama):
//! clean, with `Sae::forward` of the activation spliced in at every position of the
//! hook, and with the hook set to zero at every position.
//!
//! The windows are rebuilt from an activation store's `seq`, `pos` and `token_id`
//! columns ([`windows`]): a sequence whose positions are `0..n` becomes one window;
//! position `t` counts when its row is selected (the stage selects the held-out
//! rows) and `t + 1 < n` (it has a next token to predict).
use std::collections::BTreeMap;

use circuitry_core::HookPoint;
use circuitry_models::transformer::{Forward, Transformer};
use circuitry_store::{ActivationStore, TokenColumns};
use ndarray::{Array2, ArrayView2, ArrayView3, ArrayViewMut3, Axis};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Sae};

/// The cross-entropies behind `ce_loss_score` and the score itself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CeLoss {
    /// Mean next-token cross-entropy (nats) of the unedited model.
    pub ce_clean: f64,
    /// With the SAE's reconstruction spliced in at its hook.
    pub ce_with_sae: f64,
    /// With the hook's activation set to zero.
    pub ce_zero_ablation: f64,
    /// `(ce_zero_ablation − ce_with_sae) / (ce_zero_ablation − ce_clean)`; NaN
    /// (written as `null`) when zero ablation does not change the loss.
    pub ce_loss_score: f64,
    /// Positions the means are over.
    pub tokens: u64,
    /// Token windows they come from.
    pub sequences: u64,
}

/// Token windows of one length, run as one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct CeBatch {
    /// Token ids `(windows, len)`.
    pub ids: Array2<u32>,
    /// `(windows, len)`: whether position `t`'s prediction of token `t + 1` counts
    /// (always false at the last position).
    pub counted: Array2<bool>,
    /// `(windows, len)`: the store row of each token.
    pub rows: Array2<u64>,
}

impl CeBatch {
    /// Counted positions.
    pub fn tokens(&self) -> u64 {
        self.counted.iter().filter(|&&c| c).count() as u64
    }
}

/// One sequence's `(pos, token, store row)` triples.
type Window = Vec<(u32, u32, u64)>;

/// Rebuild token windows from a store's token columns: every sequence whose
/// positions are exactly `0..n` (`n ≥ 2`) with at least one row for which
/// `counted_row(row)` holds; at most `max_sequences` of them, evenly spaced over the
/// candidates in `seq` order; grouped by length into batches of at most
/// `batch_size` windows. Deterministic.
pub fn windows(
    tokens: &TokenColumns,
    counted_row: impl Fn(u64) -> bool,
    max_sequences: usize,
    batch_size: usize,
) -> Vec<CeBatch> {
    let mut by_seq: BTreeMap<u64, Window> = BTreeMap::new();
    for (row, ((&seq, &pos), &tok)) in tokens
        .seq
        .iter()
        .zip(&tokens.pos)
        .zip(&tokens.token_id)
        .enumerate()
    {
        by_seq.entry(seq).or_default().push((pos, tok, row as u64));
    }
    let mut candidates: Vec<Window> = Vec::new();
    for (_, mut toks) in by_seq {
        toks.sort_unstable();
        let contiguous = toks.iter().enumerate().all(|(i, t)| t.0 as usize == i);
        let n = toks.len();
        if contiguous && n >= 2 && toks[..n - 1].iter().any(|t| counted_row(t.2)) {
            candidates.push(toks);
        }
    }
    let take = max_sequences.min(candidates.len());
    let picked: Vec<&Window> = (0..take)
        .map(|i| &candidates[i * candidates.len() / take.max(1)])
        .collect();
    batches(&picked, &counted_row, batch_size)
}

/// [`windows`] over `store`, reading its token columns shard by shard in two passes
/// (count the candidate windows, then keep the picked ones), so that memory grows
/// with the windows picked and one shard, not with the store. The same windows as
/// `windows(&store.read_tokens()?, ..)`, which it falls back to when the store's
/// sequences are not runs of consecutive rows in increasing `seq` order with
/// increasing positions (the dump always writes them so).
pub fn windows_from_store(
    store: &ActivationStore,
    counted_row: impl Fn(u64) -> bool,
    max_sequences: usize,
    batch_size: usize,
) -> Result<Vec<CeBatch>> {
    let shards = store.meta().shards.len();
    let streamed = windows_streamed(
        || (0..shards).map(|s| Ok(store.read_shard_tokens(s)?)),
        &counted_row,
        max_sequences,
        batch_size,
    )?;
    match streamed {
        Some(b) => Ok(b),
        None => Ok(windows(
            &store.read_tokens()?,
            counted_row,
            max_sequences,
            batch_size,
        )),
    }
}

/// [`windows`] over token columns that `chunks()` yields in row order (each call
/// starts again from the first row); `None` when the sequences are not runs of
/// consecutive rows in increasing `seq` order with increasing positions.
pub fn windows_streamed<I>(
    chunks: impl Fn() -> I,
    counted_row: &impl Fn(u64) -> bool,
    max_sequences: usize,
    batch_size: usize,
) -> Result<Option<Vec<CeBatch>>>
where
    I: Iterator<Item = Result<TokenColumns>>,
{
    // Pass 1: count the candidates.
    let mut count = 0usize;
    if !scan_runs(chunks(), counted_row, |_| count += 1)? {
        return Ok(None);
    }
    let take = max_sequences.min(count);
    let wanted: Vec<usize> = (0..take).map(|i| i * count / take.max(1)).collect();
    // Pass 2: keep the picked ones.
    let (mut ordinal, mut next, mut kept) = (0usize, 0usize, Vec::with_capacity(take));
    scan_runs(chunks(), counted_row, |w| {
        if wanted.get(next) == Some(&ordinal) {
            kept.push(w);
            next += 1;
        }
        ordinal += 1;
    })?;
    let picked: Vec<&Window> = kept.iter().collect();
    Ok(Some(batches(&picked, counted_row, batch_size)))
}

/// Call `found` with every candidate window (positions `0..n`, `n ≥ 2`, a counted
/// row before the last) in row order; `false` when the rows are not laid out as
/// [`windows_streamed`] needs.
fn scan_runs<I>(
    chunks: I,
    counted_row: &impl Fn(u64) -> bool,
    mut found: impl FnMut(Window),
) -> Result<bool>
where
    I: Iterator<Item = Result<TokenColumns>>,
{
    // The current run: its seq, its rows, and whether a row before its last counts.
    let mut run: Option<(u64, Window, bool)> = None;
    let mut finish = |run: Option<(u64, Window, bool)>| {
        if let Some((_, w, counted_early)) = run {
            let contiguous = w.iter().enumerate().all(|(i, t)| t.0 as usize == i);
            if contiguous && w.len() >= 2 && counted_early {
                found(w);
            }
        }
    };
    let mut row = 0u64;
    for chunk in chunks {
        let t = chunk?;
        for ((&seq, &pos), &tok) in t.seq.iter().zip(&t.pos).zip(&t.token_id) {
            match run.as_mut() {
                Some((s, w, early)) if *s == seq => {
                    if w.last().is_some_and(|last| pos < last.0) {
                        return Ok(false); // positions out of order
                    }
                    *early |= w.last().is_some_and(|last| counted_row(last.2));
                    w.push((pos, tok, row));
                }
                Some((s, _, _)) if seq < *s => return Ok(false), // seq not increasing
                _ => {
                    finish(run.take());
                    run = Some((seq, vec![(pos, tok, row)], false));
                }
            }
            row += 1;
        }
    }
    finish(run);
    Ok(true)
}

/// The picked windows grouped by length into batches of at most `batch_size`.
fn batches(
    picked: &[&Window],
    counted_row: &impl Fn(u64) -> bool,
    batch_size: usize,
) -> Vec<CeBatch> {
    let mut by_len: BTreeMap<usize, Vec<&Window>> = BTreeMap::new();
    for &w in picked {
        by_len.entry(w.len()).or_default().push(w);
    }
    let mut out = Vec::new();
    for (len, ws) in by_len {
        for chunk in ws.chunks(batch_size.max(1)) {
            let b = chunk.len();
            out.push(CeBatch {
                ids: Array2::from_shape_fn((b, len), |(i, t)| chunk[i][t].1),
                counted: Array2::from_shape_fn((b, len), |(i, t)| {
                    t + 1 < len && counted_row(chunk[i][t].2)
                }),
                rows: Array2::from_shape_fn((b, len), |(i, t)| chunk[i][t].2),
            });
        }
    }
    out
}

/// Sum of next-token cross-entropies `-log p(ids[t+1] | ..t)` over the counted
/// positions, from logits `(batch, seq, vocab)`, in f64.
pub fn ce_sum(logits: ArrayView3<'_, f32>, batch: &CeBatch) -> f64 {
    let mut total = 0.0f64;
    for ((b, t), _) in batch.counted.indexed_iter().filter(|(_, &c)| c) {
        let row = logits.slice(ndarray::s![b, t, ..]); // (vocab)
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        total += lse - row[batch.ids[[b, t + 1]] as usize] as f64;
    }
    total
}

/// What happens at the SAE's hook.
#[derive(Debug, Clone, Copy)]
enum Splice<'a> {
    Clean,
    Sae(&'a Sae),
    Zero(HookPoint),
}

/// Computes `ce_loss_score` for SAEs on one model over fixed windows; the clean
/// cross-entropy is computed once.
#[derive(Debug)]
pub struct CeEvaluator<'m> {
    model: &'m Transformer,
    batches: Vec<CeBatch>,
    clean: f64,
    tokens: u64,
}

impl<'m> CeEvaluator<'m> {
    /// Run the clean model over `batches`; an error when they count no position.
    pub fn new(model: &'m Transformer, batches: Vec<CeBatch>) -> Result<Self> {
        let tokens: u64 = batches.iter().map(CeBatch::tokens).sum();
        if tokens == 0 {
            return Err(Error::Empty(
                "no token window with a counted position for ce_loss_score: the store needs sequences whose positions run 0..n with n ≥ 2 (and held-out rows when --eval-fraction > 0)".into(),
            ));
        }
        let mut ev = CeEvaluator {
            model,
            batches,
            clean: 0.0,
            tokens,
        };
        ev.clean = ev.mean(Splice::Clean, f32::INFINITY)?;
        Ok(ev)
    }

    /// The windows.
    pub fn batches(&self) -> &[CeBatch] {
        &self.batches
    }

    /// The clean model's activations at `hook` for batch `i`, `(windows, len, width)`.
    pub fn activations(&self, i: usize, hook: HookPoint) -> Result<ndarray::Array3<f32>> {
        let hooks = [hook];
        let b = self
            .batches
            .get(i)
            .ok_or_else(|| Error::Empty(format!("batch {i} of {} windows", self.batches.len())))?;
        let mut out = self
            .model
            .run(&Forward::tokens(b.ids.view()).capture(&hooks).logits(false))?;
        out.hooks
            .remove(&hook)
            .ok_or_else(|| Error::Empty(format!("the forward did not reach {hook}")))
    }

    /// The three cross-entropies and the score for `sae` spliced in at its hook.
    /// Positions whose activation norm there is above `max_norm` (outliers the SAE
    /// was not trained on, `f32::INFINITY` for none) keep their activation in both
    /// the SAE and the zero-ablation runs, as SAELens's
    /// `exclude_special_tokens_from_reconstruction` does for special tokens.
    pub fn evaluate(&self, sae: &Sae, max_norm: f32) -> Result<CeLoss> {
        self.check_hook(sae)?;
        let with_sae = self.mean(Splice::Sae(sae), max_norm)?;
        let zero = self.mean(Splice::Zero(sae.cfg.hook_name), max_norm)?;
        Ok(CeLoss {
            ce_clean: self.clean,
            ce_with_sae: with_sae,
            ce_zero_ablation: zero,
            ce_loss_score: (zero - with_sae) / (zero - self.clean),
            tokens: self.tokens,
            sequences: self.batches.iter().map(|b| b.ids.nrows() as u64).sum(),
        })
    }

    fn check_hook(&self, sae: &Sae) -> Result<()> {
        let hook = sae.cfg.hook_name;
        let width = self.model.width(hook);
        let n_layer = self.model.config().n_layer;
        let in_model = hook.layer().is_some_and(|l| l < n_layer);
        if !in_model || width != sae.cfg.d_in {
            return Err(Error::config(
                "model",
                hook,
                format!(
                    "the SAE reads {hook} with d_in = {}, but the model (n_layer = {n_layer}) has {}; give the model the store was dumped from",
                    sae.cfg.d_in,
                    if in_model { format!("width {width} there") } else { "no such block".into() }
                ),
            ));
        }
        Ok(())
    }

    fn mean(&self, splice: Splice<'_>, max_norm: f32) -> Result<f64> {
        let mut total = 0.0;
        for b in &self.batches {
            let fwd = Forward::tokens(b.ids.view());
            let out = self
                .model
                .run_with(&fwd, |hook, act| edit(splice, hook, act, max_norm))?;
            let logits = out
                .logits
                .ok_or_else(|| Error::Empty("the forward returned no logits".into()))?;
            total += ce_sum(logits.view(), b);
        }
        Ok(total / self.tokens as f64)
    }
}

fn edit(
    splice: Splice<'_>,
    hook: HookPoint,
    mut act: ArrayViewMut3<'_, f32>,
    max_norm: f32,
) -> Result<()> {
    let outlier = |row: ndarray::ArrayView1<'_, f32>| {
        max_norm.is_finite() && row.iter().map(|v| v * v).sum::<f32>().sqrt() > max_norm
    };
    match splice {
        Splice::Zero(h) if h == hook => {
            for mut row in act.rows_mut() {
                if !outlier(row.view()) {
                    row.fill(0.0);
                }
            }
        }
        Splice::Sae(sae) if sae.cfg.hook_name == hook => {
            let (b, s, w) = act.dim();
            let x = act.to_shape((b * s, w)).map_err(|e| Error::Shape {
                what: format!("activations at {hook}: {e}"),
                expected: vec![b * s, w],
                got: act.shape().to_vec(),
            })?;
            let x: ArrayView2<'_, f32> = x.view(); // (b·s, d_in)
            let x_hat = sae.forward(x); // (b·s, d_in)
            let keep: Vec<bool> = x.outer_iter().map(&outlier).collect();
            for (i, row) in x_hat.axis_iter(Axis(0)).enumerate() {
                if !keep[i] {
                    act.slice_mut(ndarray::s![i / s, i % s, ..]).assign(&row);
                }
            }
        }
        _ => {}
    }
    Ok(())
}
