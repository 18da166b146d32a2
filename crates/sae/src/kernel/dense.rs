//! The dense path: every product over all `d_sae` latents. Standard and JumpReLU SAEs
//! train with it; for TopK and BatchTopK it is the reference the sparse path is
//! tested against (its top-k selection is a separate, sort-based implementation).
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Zip};
use rayon::prelude::*;

use super::{
    batch_threshold, centred_input, centring_grad, encode, sum_sq, vector, Grads, Real, Setup, Sums,
};
use crate::Architecture;

/// Rows per slab: the batch is processed slab after slab, each slab's products
/// parallel inside; gradients accumulate in slab order.
const SLAB_ROWS: usize = 1024;

pub(super) fn run<F: Real>(s: &Setup<'_, '_, F>, x: ArrayView2<'_, F>) -> (Sums, Grads<F>) {
    let p = s.p;
    let (d_in, d_sae) = p.w_enc.dim();
    let apply = s.spec.apply_b_dec_to_input;
    let lambda = s.lambda();
    let norms: Option<Array1<F>> =
        (lambda > F::zero()).then(|| p.w_dec.map_axis(Axis(1), |r| r.dot(&r).sqrt())); // (d_sae)
                                                                                       // BatchTopK needs every row's pre-activations before it can pick the threshold.
    let batch_t = match s.spec.architecture {
        Architecture::BatchTopK { k } => {
            let pre = super::pre_activations_with(s.spec.backend, p, x, apply); // (rows, d_sae)
            batch_threshold(&[pre.view()], k)
        }
        _ => F::zero(),
    };
    let mut g = Grads::zeros(d_in, d_sae, s.theta.is_some());
    let mut act_sums = Array1::<F>::zeros(d_sae); // (d_sae)
    let mut sums = Sums {
        sse: 0.0,
        weighted_l1: 0.0,
        aux_sse: 0.0,
        active: 0,
        fired: vec![false; d_sae],
        min_active: f64::INFINITY,
        batch_threshold: batch_t.as_f64(),
    };
    let two_inv_b = F::of(2.0) * s.inv_b;
    let chunk = s.spec.chunk_rows.max(1);
    for xs in x.axis_chunks_iter(Axis(0), SLAB_ROWS) {
        let x_in = centred_input(p, xs, apply); // (rows, d_in)
        let pre = encode(s.spec.backend, p, x_in.view()); // (rows, d_sae)
        let acts = match s.spec.architecture {
            Architecture::TopK { k } => reference_topk(pre.view(), k),
            Architecture::BatchTopK { .. } => pre.mapv(|v| {
                if v > F::zero() && v >= batch_t {
                    v
                } else {
                    F::zero()
                }
            }),
            arch => super::activate(arch, pre.view(), s.theta.as_ref().map(|t| t.view())),
        }; // (rows, d_sae)
        let mut err = super::decode_with(s.spec.backend, p, acts.view()); // x̂, then x̂ − x (rows, d_in)
        err -= &xs;
        sums.sse += sum_sq(err.view());
        let d_x_hat = err.mapv(|e| e * two_inv_b); // (rows, d_in)
        F::gemm(
            s.spec.backend,
            g.w_dec.view_mut(),
            true,
            acts.t(),
            d_x_hat.view(),
            F::one(),
        );
        g.b_dec += &d_x_hat.sum_axis(Axis(0));
        let mut d_acts = Array2::zeros(acts.raw_dim()); // (rows, d_sae)
        F::gemm(
            s.spec.backend,
            d_acts.view_mut(),
            false,
            d_x_hat.view(),
            p.w_dec.t(),
            F::one(),
        );

        if let (Some(theta), Some(jump), Some(g_t)) = (&s.theta, s.spec.jump, g.threshold.as_mut())
        {
            sums.weighted_l1 +=
                threshold_grad(s, theta.view(), jump.bandwidth, &pre, &d_acts, g_t) as f64;
        }
        // One pass over the rows: the L1 term and its gradient (standard), the mask of
        // inactive latents, and the activity statistics.
        let mut d_pre = d_acts; // (rows, d_sae)
        let lam_b = lambda * s.inv_b;
        let parts: Vec<RowPass<F>> = acts
            .axis_chunks_iter(Axis(0), chunk)
            .into_par_iter()
            .zip(d_pre.axis_chunks_iter_mut(Axis(0), chunk).into_par_iter())
            .map(|(a, d)| row_pass(a, d, norms.as_ref().map(|n| (n, lam_b))))
            .collect();
        for part in parts {
            sums.weighted_l1 += part.l1;
            act_sums += &part.sum;
            sums.active += part.active;
            sums.min_active = sums.min_active.min(part.min_active);
        }
        if let Some(aux) = s.aux {
            let (z, selected) = aux_latents(pre.view(), aux.dead, aux.k); // (rows, d_sae) ×2
            let mut diff = super::decode_with(s.spec.backend, p, z.view()); // ê + b_dec (rows, d_in)
            diff -= &p.b_dec;
            diff += &err; // ê − e, since e = x − x̂ = −err
            sums.aux_sse += sum_sq(diff.view());
            let c = F::of(2.0 * aux.weight) * s.inv_b;
            let d_e_hat = diff.mapv(|v| v * c); // (rows, d_in)
            F::gemm(
                s.spec.backend,
                g.w_dec.view_mut(),
                true,
                z.t(),
                d_e_hat.view(),
                F::one(),
            );
            let mut d_z = Array2::zeros(z.raw_dim()); // (rows, d_sae)
            F::gemm(
                s.spec.backend,
                d_z.view_mut(),
                false,
                d_e_hat.view(),
                p.w_dec.t(),
                F::one(),
            );
            Zip::from(&mut d_pre)
                .and(&d_z)
                .and(&selected)
                .for_each(|d, &dz, &s| {
                    if s {
                        *d += dz
                    }
                });
        }
        F::gemm(
            s.spec.backend,
            g.w_enc.view_mut(),
            true,
            x_in.t(),
            d_pre.view(),
            F::one(),
        );
        g.b_enc += &column_sums(d_pre.view(), chunk);
    }
    if apply {
        centring_grad(s.spec.backend, p, &g.b_enc, &mut g.b_dec);
    }
    // Features are non-negative, so a latent fired iff its sum is positive.
    for (f, &a) in sums.fired.iter_mut().zip(&act_sums) {
        *f = a > F::zero();
    }
    // The sparsity term depends on W_dec through the row norms:
    // ∂/∂W_dec[i] λ/B Σ_b f_bi ‖W_dec[i]‖ = λ/B (Σ_b f_bi) W_dec[i] / ‖W_dec[i]‖.
    if let Some(norms) = &norms {
        for (i, mut g_row) in g.w_dec.outer_iter_mut().enumerate() {
            if norms[i] > F::zero() {
                let c = lambda * s.inv_b * act_sums[i] / norms[i];
                g_row.scaled_add(c, &p.w_dec.row(i));
            }
        }
    }
    (sums, g)
}

/// What [`row_pass`] adds up over a chunk of rows.
struct RowPass<F> {
    /// `Σ_b Σ_i f_bi ‖W_dec[i]‖` (0 without norms).
    l1: f64,
    /// `Σ_b f_bi (d_sae)`.
    sum: Array1<F>,
    active: usize,
    min_active: f64,
}

/// Over a chunk of rows of features `acts (rows, d_sae)` and their gradient
/// `d (rows, d_sae)`: with `(norms, λ/B)`, adds `λ/B ‖W_dec[i]‖` to `d` and sums the L1
/// term; zeroes `d` where the feature is not positive (then it is `∂L/∂pre`); adds up
/// the features, counts the positive ones and finds their minimum. Rows in order, one
/// row's L1 sum in `F` added to the total in `f64`.
fn row_pass<F: Real>(
    acts: ArrayView2<'_, F>,
    mut d: ndarray::ArrayViewMut2<'_, F>,
    l1: Option<(&Array1<F>, F)>,
) -> RowPass<F> {
    let mut out = RowPass {
        l1: 0.0,
        sum: Array1::zeros(acts.ncols()),
        active: 0,
        min_active: f64::INFINITY,
    };
    let sum = out.sum.as_slice_mut().unwrap_or(&mut []);
    let norms = l1.and_then(|(n, _)| n.as_slice());
    let lam_b = l1.map_or(F::zero(), |(_, c)| c);
    for (a_row, mut d_row) in acts.outer_iter().zip(d.outer_iter_mut()) {
        let (Some(a), Some(dr)) = (a_row.to_slice(), d_row.as_slice_mut()) else {
            continue; // never: rows of standard-layout arrays
        };
        if let Some(n) = norms {
            out.l1 += vector::dot(a, n).as_f64();
            vector::axpy(dr, lam_b, n);
        }
        let (active, min) = vector::mask_and_count(a, dr, sum);
        out.active += active;
        out.min_active = out.min_active.min(min.as_f64());
    }
    out
}

/// Column sums of `a (rows, cols)`: per fixed chunk of rows in parallel, then added
/// in chunk order (the same for any number of threads).
fn column_sums<F: Real>(a: ArrayView2<'_, F>, chunk: usize) -> Array1<F> {
    let parts: Vec<Array1<F>> = a
        .axis_chunks_iter(Axis(0), chunk)
        .into_par_iter()
        .map(|c| c.sum_axis(Axis(0)))
        .collect();
    parts
        .into_iter()
        .fold(Array1::zeros(a.ncols()), |acc, p| acc + p)
}

/// JumpReLU: θ's pseudo-derivatives, from the reconstruction through −(θ/ε)K and
/// from the L0 penalty through −(1/ε)K, added to `g (d_sae)`; returns the L0 count.
fn threshold_grad<F: Real>(
    s: &Setup<'_, '_, F>,
    theta: ArrayView1<'_, F>,
    bandwidth: f64,
    pre: &Array2<F>,    // (rows, d_sae)
    d_acts: &Array2<F>, // (rows, d_sae)
    g: &mut Array1<F>,  // (d_sae)
) -> usize {
    let eps = F::of(bandwidth);
    let l0_grad = F::of(-s.spec.l1_coefficient / bandwidth) * s.inv_b;
    let half = F::of(0.5);
    let mut count = 0usize;
    for (pre_row, d_row) in pre.outer_iter().zip(d_acts.outer_iter()) {
        for (i, (&z, &d)) in pre_row.iter().zip(d_row.iter()).enumerate() {
            let th = theta[i];
            if z > th {
                count += 1;
            }
            if ((z - th) / eps).abs() < half {
                g[i] += d * (-th / eps) + l0_grad;
            }
        }
    }
    count
}

/// TopK by sorting each row (the reference for the sparse path's heap).
fn reference_topk<F: Real>(pre: ArrayView2<'_, F>, k: usize) -> Array2<F> {
    let mut out = Array2::zeros(pre.raw_dim()); // (rows, d_sae)
    let mut order: Vec<usize> = Vec::with_capacity(pre.ncols());
    for (row, mut out_row) in pre.outer_iter().zip(out.outer_iter_mut()) {
        for &i in top_indices(row, k, |_| true, &mut order) {
            let v = row[i];
            out_row[i] = if v > F::zero() { v } else { F::zero() };
        }
    }
    out
}

/// Per row, the pre-activations of the `k` largest dead latents (ties to the lower
/// index) and a mask of where they are. Both `(rows, d_sae)`.
fn aux_latents<F: Real>(
    pre: ArrayView2<'_, F>,
    dead: &[bool],
    k: usize,
) -> (Array2<F>, Array2<bool>) {
    let mut z = Array2::zeros(pre.raw_dim());
    let mut mask = Array2::from_elem(pre.raw_dim(), false);
    let mut order = Vec::with_capacity(pre.ncols());
    for (r, row) in pre.outer_iter().enumerate() {
        for &i in top_indices(row, k, |i| dead[i], &mut order) {
            z[[r, i]] = row[i];
            mask[[r, i]] = true;
        }
    }
    (z, mask)
}

/// The indices of the `k` largest values of `row` among those `keep` admits,
/// ranked by value (descending) then index (ascending); unordered within the top k.
pub(super) fn top_indices<'o, F: Real>(
    row: ArrayView1<'_, F>,
    k: usize,
    keep: impl Fn(usize) -> bool,
    order: &'o mut Vec<usize>,
) -> &'o [usize] {
    order.clear();
    order.extend((0..row.len()).filter(|&i| keep(i)));
    let k = k.min(order.len());
    if k == 0 {
        return &order[..0];
    }
    // NaN ranks lowest, so the comparison is a total order.
    let key = |i: usize| {
        let v = row[i];
        if v.is_nan() {
            F::neg_infinity()
        } else {
            v
        }
    };
    let cmp = |a: &usize, b: &usize| {
        key(*b)
            .partial_cmp(&key(*a))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(b))
    };
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, cmp);
    }
    &order[..k]
}
