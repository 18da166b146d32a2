//! Evaluation metrics with SAELens definitions.
use ndarray::{Array1, ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::Sae;

/// Rows per parallel work item in evaluation (fixed: results do not depend on threads).
const EVAL_CHUNK_ROWS: usize = 2048;

/// Reconstruction and sparsity metrics over a set of rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Squared reconstruction error summed over `d_in`, mean over rows (the training
    /// loss's convention, SAELens `mse_loss`).
    pub mse: f64,
    /// `1 − Σ‖x − x̂‖² / Σ‖x − x̄‖²`, pooled over all rows, `x̄` the mean row of the
    /// evaluated set (SAELens v6 `explained_variance`). 1.0 if the data has no
    /// variance and the reconstruction is exact, 0.0 if it has none and is not.
    pub explained_variance: f64,
    /// Mean number of active (non-zero) features per row.
    pub l0: f64,
    /// Fraction of features that are active on none of the rows.
    pub dead_fraction: f64,
}

/// [`Metrics`] of `sae` on `x (rows, d_in)`. Zero rows give all metrics 0 except
/// `dead_fraction` 1.
pub fn evaluate(sae: &Sae, x: ArrayView2<'_, f32>) -> Metrics {
    evaluate_with_density(sae, x).0
}

/// Fraction of the rows of `x (rows, d_in)` on which each feature is active, `(d_sae)`.
pub fn feature_density(sae: &Sae, x: ArrayView2<'_, f32>) -> Array1<f64> {
    evaluate_with_density(sae, x).1
}

/// SAELens's `log_feature_sparsity`: `log10(density + 1e-10)`, `(d_sae)`.
pub fn log10_feature_density(density: ArrayView1<'_, f64>) -> Array1<f32> {
    density.mapv(|d| (d + 1e-10).log10() as f32)
}

/// [`Metrics`] and [`feature_density`] in one pass.
pub fn evaluate_with_density(sae: &Sae, x: ArrayView2<'_, f32>) -> (Metrics, Array1<f64>) {
    let rows = x.nrows();
    let d_sae = sae.cfg.d_sae;
    if rows == 0 {
        let m = Metrics {
            mse: 0.0,
            explained_variance: 0.0,
            l0: 0.0,
            dead_fraction: 1.0,
        };
        return (m, Array1::zeros(d_sae));
    }
    let chunks: Vec<ArrayView2<'_, f32>> = x.axis_chunks_iter(Axis(0), EVAL_CHUNK_ROWS).collect();
    // Column means in f64, summed in chunk order.
    let sums: Vec<Array1<f64>> = chunks
        .par_iter()
        .map(|c| c.mapv(f64::from).sum_axis(Axis(0)))
        .collect();
    let mut mean = Array1::<f64>::zeros(x.ncols()); // (d_in)
    for s in &sums {
        mean += s;
    }
    mean /= rows as f64;

    struct Part {
        sse: f64,
        sst: f64,
        active: Array1<u64>, // (d_sae)
    }
    let parts: Vec<Part> = chunks
        .par_iter()
        .map(|c| {
            let f = sae.encode(*c); // (rows, d_sae)
            let x_hat = sae.reconstruct(*c, f.view()); // (rows, d_in)
            let mut sse = 0.0;
            let mut sst = 0.0;
            for (xr, hr) in c.outer_iter().zip(x_hat.outer_iter()) {
                for ((&xv, &hv), &m) in xr.iter().zip(hr.iter()).zip(mean.iter()) {
                    let e = f64::from(xv) - f64::from(hv);
                    let t = f64::from(xv) - m;
                    sse += e * e;
                    sst += t * t;
                }
            }
            let active = f.map_axis(Axis(0), |col| {
                col.iter().filter(|&&a| a != 0.0).count() as u64
            });
            Part { sse, sst, active }
        })
        .collect();
    let (mut sse, mut sst) = (0.0, 0.0);
    let mut active = Array1::<u64>::zeros(d_sae);
    for p in parts {
        sse += p.sse;
        sst += p.sst;
        active += &p.active;
    }
    let explained_variance = if sst > 0.0 {
        1.0 - sse / sst
    } else if sse == 0.0 {
        1.0
    } else {
        0.0
    };
    let density = active.mapv(|a| a as f64 / rows as f64);
    let metrics = Metrics {
        mse: sse / rows as f64,
        explained_variance,
        l0: active.iter().sum::<u64>() as f64 / rows as f64,
        dead_fraction: active.iter().filter(|&&a| a == 0).count() as f64 / d_sae.max(1) as f64,
    };
    (metrics, density)
}

/// [`Metrics`] accumulated chunk by chunk over a stream of rows, with the same
/// definitions as [`evaluate_with_density`] (the mean row for explained variance is
/// the mean of everything added, through `Σx` and `Σ‖x‖²` in f64).
#[derive(Debug, Clone)]
pub struct MetricsAccumulator {
    rows: u64,
    sse: f64,
    sum_sq: f64,
    sum: Array1<f64>,    // (d_in)
    active: Array1<u64>, // (d_sae)
}

impl MetricsAccumulator {
    /// An empty accumulator for `d_in` inputs and `d_sae` features.
    pub fn new(d_in: usize, d_sae: usize) -> Self {
        MetricsAccumulator {
            rows: 0,
            sse: 0.0,
            sum_sq: 0.0,
            sum: Array1::zeros(d_in),
            active: Array1::zeros(d_sae),
        }
    }

    /// Add rows `x (rows, d_in)`, their reconstructions `x_hat (rows, d_in)` and
    /// features `f (rows, d_sae)`.
    pub fn add(
        &mut self,
        x: ArrayView2<'_, f32>,
        x_hat: ArrayView2<'_, f32>,
        f: ArrayView2<'_, f32>,
    ) {
        for (xr, hr) in x.outer_iter().zip(x_hat.outer_iter()) {
            for ((&xv, &hv), s) in xr.iter().zip(hr.iter()).zip(self.sum.iter_mut()) {
                let (xv, hv) = (f64::from(xv), f64::from(hv));
                self.sse += (xv - hv) * (xv - hv);
                self.sum_sq += xv * xv;
                *s += xv;
            }
        }
        for fr in f.outer_iter() {
            for (a, &v) in self.active.iter_mut().zip(fr.iter()) {
                if v != 0.0 {
                    *a += 1;
                }
            }
        }
        self.rows += x.nrows() as u64;
    }

    /// Rows added so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The metrics of everything added, and each feature's density, `(d_sae)`.
    pub fn finish(&self) -> (Metrics, Array1<f64>) {
        let d_sae = self.active.len();
        if self.rows == 0 {
            let m = Metrics {
                mse: 0.0,
                explained_variance: 0.0,
                l0: 0.0,
                dead_fraction: 1.0,
            };
            return (m, Array1::zeros(d_sae));
        }
        let n = self.rows as f64;
        let sst = (self.sum_sq - self.sum.dot(&self.sum) / n).max(0.0);
        let explained_variance = if sst > 0.0 {
            1.0 - self.sse / sst
        } else if self.sse == 0.0 {
            1.0
        } else {
            0.0
        };
        let density = self.active.mapv(|a| a as f64 / n);
        let metrics = Metrics {
            mse: self.sse / n,
            explained_variance,
            l0: self.active.iter().sum::<u64>() as f64 / n,
            dead_fraction: self.active.iter().filter(|&&a| a == 0).count() as f64
                / d_sae.max(1) as f64,
        };
        (metrics, density)
    }
}
