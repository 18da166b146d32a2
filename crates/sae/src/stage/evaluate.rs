//! The stage's last pass over the store, after training: metrics on training and
//! held-out rows and feature statistics for every SAE, and the check that the
//! model given for `ce_loss_score` reproduces the stored activations.
use std::path::Path;

use circuitry_core::HookPoint;
use circuitry_store::ActivationStore;
use ndarray::{Array2, Axis};
use rayon::prelude::*;

use super::{StageConfig, EVAL_CHUNK, REPRODUCTION_TOLERANCE};
use crate::ce::CeEvaluator;
use crate::stats::FeatureStats;
use crate::stream::{self, is_eval_row, HookLayout};
use crate::train::LogEntry;
use crate::{Error, MetricsAccumulator, Result, Sae};

/// What the final pass gathers for one SAE.
pub(super) struct Final {
    pub(super) train: MetricsAccumulator,
    pub(super) eval: MetricsAccumulator,
    pub(super) stats: FeatureStats,
    /// The rows of `check_rows`, `(rows, d_in)`.
    pub(super) check: Array2<f32>,
}

/// Check that the model's clean forward on the first `ce_loss_score` batch
/// reproduces the stored activations of `hook` (`stored`: `(rows, width)` in the
/// batch's row order).
pub(super) fn check_reproduces(
    ev: &CeEvaluator<'_>,
    hook: HookPoint,
    stored: &Array2<f32>,
    store: &Path,
) -> Result<()> {
    if stored.nrows() == 0 {
        return Ok(());
    }
    let got = ev.activations(0, hook)?; // (windows, len, width)
    let (b, s, w) = got.dim();
    let mut diff = 0.0f32;
    let mut scale = 0.0f32;
    for (g, x) in got.iter().zip(stored.iter()) {
        diff = diff.max((g - x).abs());
        scale = scale.max(x.abs());
    }
    if stored.dim() != (b * s, w) || diff > REPRODUCTION_TOLERANCE * scale.max(1.0) {
        return Err(Error::config(
            "model",
            hook,
            format!(
                "the model's forward on the token windows rebuilt from {} differs from the stored activations by up to {diff:.3e} (tolerance {REPRODUCTION_TOLERANCE:.1e} × max(1, {scale:.3})); the store was dumped with other positions or another tokenization — re-run the dump, or drop --model",
                store.display()
            ),
        ));
    }
    Ok(())
}

/// One pass over the store in row order: metrics on training and held-out rows,
/// and feature statistics over all rows, for every SAE.
pub(super) fn final_pass(
    cfg: &StageConfig,
    store: &ActivationStore,
    layout: &HookLayout,
    saes: &[(Sae, Vec<LogEntry>, u64)],
    check_rows: &[u64],
    max_norms: &[f32],
) -> Result<Vec<Final>> {
    let mut finals: Vec<Final> = saes
        .iter()
        .map(|(sae, _, _)| Final {
            train: MetricsAccumulator::new(sae.cfg.d_in, sae.cfg.d_sae),
            eval: MetricsAccumulator::new(sae.cfg.d_in, sae.cfg.d_sae),
            stats: FeatureStats::new(sae.cfg.d_sae, cfg.top_n),
            check: Array2::zeros((check_rows.len(), sae.cfg.d_in)),
        })
        .collect();
    let mut first = 0u64;
    for shard in 0..store.meta().shards.len() {
        let arrays = stream::read_checked(store, layout, shard, first)?; // per hook (rows, width)
        let n = arrays.first().map_or(0, |a| a.nrows());
        let eval: Vec<bool> = (0..n)
            .map(|r| is_eval_row(cfg.train.seed, cfg.eval_fraction, first + r as u64))
            .collect();
        finals
            .par_iter_mut()
            .zip(saes.par_iter())
            .zip(arrays.par_iter())
            .zip(max_norms.par_iter())
            .for_each(|(((fin, (sae, _, _)), x), &max_norm)| {
                for (j, &r) in check_rows.iter().enumerate() {
                    if (first..first + n as u64).contains(&r) {
                        fin.check.row_mut(j).assign(&x.row((r - first) as usize));
                    }
                }
                for (c, chunk) in x.axis_chunks_iter(Axis(0), EVAL_CHUNK).enumerate() {
                    let start = c * EVAL_CHUNK;
                    let mut f = sae.encode(chunk); // (rows, d_sae)
                    let x_hat = sae.reconstruct(chunk, f.view()); // (rows, d_in)
                                                                  // Outlier rows (--outlier-norm-ratio) count nowhere.
                    let kept: Vec<bool> = stream::row_norms(chunk)
                        .iter()
                        .map(|&n| n <= max_norm)
                        .collect();
                    for (mut row, _) in f.outer_iter_mut().zip(&kept).filter(|(_, &k)| !k) {
                        row.fill(0.0);
                    }
                    fin.stats.add(f.view(), first + start as u64);
                    for (want_eval, acc) in [(false, &mut fin.train), (true, &mut fin.eval)] {
                        let idx: Vec<usize> = (0..chunk.nrows())
                            .filter(|&r| kept[r] && eval[start + r] == want_eval)
                            .collect();
                        if !idx.is_empty() {
                            acc.add(
                                chunk.select(Axis(0), &idx).view(),
                                x_hat.select(Axis(0), &idx).view(),
                                f.select(Axis(0), &idx).view(),
                            );
                        }
                    }
                }
            });
        first += n as u64;
    }
    Ok(finals)
}
