//! TopK's exact selection with a bf16 prefilter: the encoder's big product in bf16
//! (MKL's `cblas_gemm_bf16bf16f32`, on CPUs with AVX512-BF16 or AMX), then `f32` for
//! the few latents that can still be among a row's `k` largest.
//!
//! For row `b` and latent `i`, with `x = x_in[b]`, `w = W_enc[:, i]`, `a` the bf16
//! product (f32 accumulation) and `p = dot(x, w) + b_enc[i]` the `f32` pre-activation
//! the selection uses, the error of `a + b_enc[i]` is bounded:
//!
//! `|a + b_enc[i] − p| ≤ m = c·‖x‖₂‖w‖₂ + 2⁻²¹(|a| + |b_enc[i]|) + 10⁻³⁰(1 + ‖x‖₂)`
//!
//! - `c = 2⁻⁸ + 2⁻¹⁶ + γ(d_in, 2⁻²³) + γ(d_in, 2⁻²⁴)` (×1.001), `γ(n, u) = nu/(1 − nu)`:
//!   rounding both operands to bf16 changes each product by at most `2⁻⁸ + 2⁻¹⁶` of
//!   itself; the two sums (MKL's, in any order and rounding mode, and [`vector::dot`])
//!   add at most `γ` of `Σ|x_j w_j|` each; `Σ|x_j w_j| ≤ ‖x‖‖w‖` (Cauchy–Schwarz);
//! - the second term covers adding `b_enc` on both sides, the third flushed
//!   subnormals.
//!
//! Per row: `L`, the `k`-th largest lower bound `a + b − m` (floored at 0, since TopK
//! keeps only positive values), is at most the row's `k`-th largest `p`; a latent whose
//! upper bound `a + b + m` is below `L` cannot be selected. The others (candidates,
//! about 2–3 k on random weights) get `p` in `f32`, and TopK picks among them exactly
//! as among all latents: the same latents and values as computing every `p` in `f32`
//! with [`vector::dot`]. Dead latents (AuxK) are computed in `f32` outright (a product
//! over their columns), so AuxK sees exact values too.
use half::bf16;
use half::slice::HalfFloatSliceExt;
use multiversion::multiversion;
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

use super::sparse::Selection;
use super::{matmul, select, vector, Backend, Gemm, Real, Setup};

/// Rows encoded at once (rounded up to whole chunks).
const SLAB_ROWS: usize = 1024;
/// Latents per parallel work item of the transpose.
const TRANSPOSE_BLOCK: usize = 64;
/// Below these widths the `f32` product is cheap and the prefilter's set-up (a
/// transpose and a bf16 copy of `W_enc` per step) does not pay: the caller encodes in
/// `f32`.
pub const MIN_D_IN: usize = 64;
/// See [`MIN_D_IN`].
pub const MIN_D_SAE: usize = 1024;
/// Above this share of dead latents the `f32` product over their columns costs as much
/// as the bf16 prefilter saves: the caller encodes in `f32` instead.
const MAX_DEAD_SHARE: f64 = 0.25;

/// Whether TopK training of an SAE of `d_in × d_sae` uses the prefilter here: `backend`
/// is MKL with `cblas_gemm_bf16bf16f32`, the CPU has AVX512-BF16 (without it MKL
/// emulates bf16 products, slower than `f32`), and the SAE is at least
/// [`MIN_D_IN`] × [`MIN_D_SAE`]. (A step with more than a quarter of its latents dead
/// still encodes in `f32`.)
pub fn available(backend: Backend, d_in: usize, d_sae: usize) -> bool {
    let hardware = match backend {
        Backend::Mkl(mkl) => mkl.has_bf16_gemm() && cpu_has_bf16(),
        Backend::Faer => false,
    };
    hardware && d_in >= MIN_D_IN && d_sae >= MIN_D_SAE
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512bf16")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_bf16() -> bool {
    false
}

/// `c` of the module's bound for rows of `d_in` values.
pub(super) fn margin_coefficient(d_in: usize) -> f32 {
    let gamma = |u: f64| {
        let nu = d_in as f64 * u;
        nu / (1.0 - nu)
    };
    let c = 2f64.powi(-8) + 2f64.powi(-16) + gamma(2f64.powi(-23)) + gamma(2f64.powi(-24));
    (c * 1.001) as f32
}

/// `lower = (a + b) − m`, `upper = (a + b) + m` elementwise, `m` the module's bound
/// with `cx = c·‖x‖` and `eps = 10⁻³⁰(1 + ‖x‖)`.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
fn bounds(
    a: &[f32],
    b: &[f32],
    w_norm: &[f32],
    (cx, eps): (f32, f32),
    lower: &mut [f32],
    upper: &mut [f32],
) {
    let n = a
        .len()
        .min(b.len())
        .min(w_norm.len())
        .min(lower.len())
        .min(upper.len());
    let rel = 2f32.powi(-21);
    for i in 0..n {
        let (v, bi) = (a[i], b[i]);
        let m = cx * w_norm[i] + rel * (v.abs() + bi.abs()) + eps;
        let s = v + bi;
        lower[i] = s - m;
        upper[i] = s + m;
    }
}

/// `‖v‖₂` rounded up (computed in `f64`).
fn norm_up(v: &[f32]) -> f32 {
    (vector::sum_sq(v).sqrt() * (1.0 + 1e-6)) as f32
}

/// What every row of a step shares.
struct Weights<'a> {
    /// `W_encᵀ (d_sae, d_in)`: latent `i`'s encoder column as a contiguous row.
    wt: Array2<f32>,
    /// `‖W_enc[:, i]‖₂` rounded up `(d_sae)`.
    w_norm: Vec<f32>,
    b_enc: &'a [f32],
    /// The dead latents, increasing; empty without AuxK.
    dead: Vec<u32>,
    /// `(d_sae)`: whether each latent is in `dead`.
    is_dead: Vec<bool>,
    c: f32,
    k: usize,
    k_aux: usize,
}

impl<'a> Weights<'a> {
    /// From `W_enc (d_in, d_sae)`, `b_enc (d_sae)`, the dead latents (increasing), `k`
    /// and AuxK's `k` (0 without AuxK); `None` if a column norm is not finite.
    fn new(
        w_enc: ArrayView2<'_, f32>,
        b_enc: &'a [f32],
        dead: Vec<u32>,
        k: usize,
        k_aux: usize,
    ) -> Option<Self> {
        let (d_in, d_sae) = w_enc.dim();
        let w_enc = w_enc.as_standard_layout(); // a copy only if it is not
        let src = w_enc.as_slice().unwrap_or(&[]);
        let mut wt = vec![0f32; d_sae * d_in]; // (d_sae, d_in)
        wt.par_chunks_mut(TRANSPOSE_BLOCK * d_in)
            .enumerate()
            .for_each(|(blk, dst)| {
                let i0 = blk * TRANSPOSE_BLOCK;
                let n = dst.len() / d_in.max(1);
                for j in 0..d_in {
                    let row = &src[j * d_sae + i0..j * d_sae + i0 + n];
                    for (r, &v) in row.iter().enumerate() {
                        dst[r * d_in + j] = v;
                    }
                }
            });
        let wt = Array2::from_shape_vec((d_sae, d_in), wt).ok()?;
        let w_norm: Vec<f32> = wt
            .axis_iter(Axis(0))
            .into_par_iter()
            .map(|r| norm_up(r.as_slice().unwrap_or(&[])))
            .collect();
        if w_norm.iter().any(|n| !n.is_finite()) {
            return None;
        }
        let mut is_dead = vec![false; d_sae];
        for &i in &dead {
            is_dead[i as usize] = true;
        }
        Some(Weights {
            wt,
            w_norm,
            b_enc,
            dead,
            is_dead,
            c: margin_coefficient(d_in),
            k,
            k_aux,
        })
    }
}

/// TopK's compressed rows for `x_in (rows, d_in)`, in chunks of `chunk` rows, or `None`
/// when the prefilter does not apply (not `f32`, not enabled, not [`available`], a
/// non-contiguous operand, non-finite norms, or too many dead latents):
/// the caller then encodes in `f32`.
pub(super) fn select_topk<F: Real>(
    s: &Setup<'_, '_, F>,
    x_in: ArrayView2<'_, F>,
    k: usize,
    chunk: usize,
) -> Option<Vec<Selection<F>>> {
    let Backend::Mkl(mkl) = s.spec.backend else {
        return None;
    };
    let p = s.p;
    let (d_in, d_sae) = p.w_enc.dim();
    if !s.spec.topk_prefilter || !available(s.spec.backend, d_in, d_sae) {
        return None;
    }
    let w_enc = F::as_f32(p.w_enc.as_slice()?)?; // (d_in, d_sae)
    let b_enc = F::as_f32(p.b_enc.as_slice()?)?; // (d_sae)
    let x_all = F::as_f32(x_in.as_slice()?)?; // (rows, d_in)
    let x_all = ArrayView2::from_shape((x_in.nrows(), d_in), x_all).ok()?;
    let dead: Vec<u32> = match s.aux {
        Some(a) => (0..d_sae as u32).filter(|&i| a.dead[i as usize]).collect(),
        None => Vec::new(),
    };
    if dead.len() as f64 > MAX_DEAD_SHARE * d_sae as f64 {
        return None;
    }

    let weights = Weights::new(
        ArrayView2::from_shape((d_in, d_sae), w_enc).ok()?,
        b_enc,
        dead,
        k,
        s.aux.map_or(0, |a| a.k),
    )?;
    let mut wb = vec![bf16::ZERO; d_in * d_sae];
    wb.par_chunks_mut(d_sae)
        .zip(w_enc.par_chunks(d_sae))
        .for_each(|(dst, src)| dst.convert_from_f32_slice(src));
    // (d_in, d_sae)
    let wb = ArrayView2::from_shape((d_in, d_sae), &wb[..]).ok()?;
    // The dead latents' columns, as rows (n_dead, d_in).
    let w_dead = weights.wt.select(
        Axis(0),
        &weights.dead.iter().map(|&i| i as usize).collect::<Vec<_>>(),
    );

    let slab = SLAB_ROWS.div_ceil(chunk) * chunk;
    let mut out: Vec<Selection<f32>> = Vec::with_capacity(x_all.nrows().div_ceil(chunk));
    for xs in x_all.axis_chunks_iter(Axis(0), slab) {
        let rows = xs.nrows();
        let mut xb = vec![bf16::ZERO; rows * d_in];
        xb.par_chunks_mut(d_in)
            .zip(xs.axis_iter(Axis(0)).into_par_iter())
            .for_each(|(dst, src)| dst.convert_from_f32_slice(src.as_slice().unwrap_or(&[])));
        let xb = ArrayView2::from_shape((rows, d_in), &xb[..]).ok()?; // (rows, d_in)
                                                                      // (rows, d_sae)
        let approx = Array2::<f32>::uninit((rows, d_sae));
        // SAFETY: `f32` has no invalid bit patterns and no drop, and with β = 0 MKL
        // writes every element of `approx` without reading it (checked below: when
        // the product is not done, the function returns before `approx` is read).
        let mut approx = unsafe { approx.assume_init() };
        if !matmul::mkl_gemm::<bf16>(mkl, approx.view_mut(), false, xb, wb, 1.0) {
            return None;
        }
        // The dead latents' pre-activations in f32 (rows, n_dead).
        let mut exact_dead = Array2::<f32>::zeros((rows, weights.dead.len()));
        f32::gemm(
            s.spec.backend,
            exact_dead.view_mut(),
            false,
            xs,
            w_dead.t(),
            1.0,
        );
        for mut r in exact_dead.rows_mut() {
            for (v, &i) in r.iter_mut().zip(&weights.dead) {
                *v += b_enc[i as usize];
            }
        }
        out.par_extend(
            approx
                .axis_chunks_iter(Axis(0), chunk)
                .into_par_iter()
                .zip(xs.axis_chunks_iter(Axis(0), chunk))
                .zip(exact_dead.axis_chunks_iter(Axis(0), chunk))
                .map(|((a, x), e)| select_chunk(&weights, a, x, e)),
        );
    }
    Some(out.into_iter().map(Selection::into_real).collect())
}

/// Per-row buffers.
#[derive(Default)]
struct RowScratch {
    /// Lower and upper bounds of the row's pre-activations `(d_sae)`.
    lower: Vec<f32>,
    upper: Vec<f32>,
    /// Maxima of groups of `upper`.
    maxima: Vec<f32>,
    sel: select::Scratch<f32>,
    candidates: Vec<(usize, f32)>,
    picked: Vec<(u32, f32)>,
    aux: Vec<(u32, f32)>,
    heap: Vec<(f32, u32)>,
}

/// The compressed rows of one chunk: `approx (rows, d_sae)`, `x (rows, d_in)`,
/// `exact_dead (rows, n_dead)`.
fn select_chunk(
    w: &Weights<'_>,
    approx: ArrayView2<'_, f32>,
    x: ArrayView2<'_, f32>,
    exact_dead: ArrayView2<'_, f32>,
) -> Selection<f32> {
    let mut sel = Selection::with_rows(x.nrows());
    let mut sc = RowScratch::default();
    for r in 0..x.nrows() {
        let (Some(a), Some(xr), Some(e)) = (
            approx.row(r).to_slice(),
            x.row(r).to_slice(),
            exact_dead.row(r).to_slice(),
        ) else {
            continue; // never: rows of standard-layout arrays
        };
        select_row(w, a, xr, e, &mut sc);
        sel.push_row(&mut sc.picked, &mut sc.aux);
    }
    sel
}

/// One row: `a (d_sae)` holds the bf16 product, `x (d_in)` the input, `e (n_dead)` the
/// dead latents' exact pre-activations. The active `(latent, value)` pairs go to
/// `sc.picked`, AuxK's to `sc.aux`.
///
/// The bounds' own arithmetic rounds (`a + b`, `± m`, `m` itself): the `2⁻²¹` term is
/// 8 times the additions' worst rounding and `c` carries 0.1% of slack, so the
/// computed lower bound never exceeds `p`, nor the computed upper bound falls below it.
fn select_row(w: &Weights<'_>, a: &[f32], x: &[f32], e: &[f32], sc: &mut RowScratch) {
    let d_sae = a.len();
    let x_norm = norm_up(x);
    sc.lower.resize(d_sae, 0.0);
    sc.upper.resize(d_sae, 0.0);
    bounds(
        a,
        w.b_enc,
        &w.w_norm,
        (w.c * x_norm, 1e-30 * (1.0 + x_norm)),
        &mut sc.lower,
        &mut sc.upper,
    );
    for (&i, &p) in w.dead.iter().zip(e) {
        sc.lower[i as usize] = p;
        sc.upper[i as usize] = p;
    }
    select::top_k_above(&sc.lower, w.k, 0.0, &mut sc.sel);
    // At most the row's k-th largest positive `p` (0 when fewer than k lower bounds
    // are positive: only positive values are kept).
    let floor = if sc.sel.heap.len() == w.k {
        sc.sel
            .heap
            .iter()
            .fold(f32::INFINITY, |m, &(v, _)| m.min(v))
    } else {
        0.0
    };
    // Candidates: upper bound ≥ floor; whole groups below it are skipped.
    sc.maxima.clear();
    sc.maxima
        .resize(d_sae.div_ceil(select::GROUP), f32::NEG_INFINITY);
    f32::group_maxima(&sc.upper, &mut sc.maxima);
    sc.candidates.clear();
    for (g, _) in sc.maxima.iter().enumerate().filter(|&(_, &m)| m >= floor) {
        let start = g * select::GROUP;
        let end = (start + select::GROUP).min(d_sae);
        for i in start..end {
            if sc.upper[i] < floor {
                continue;
            }
            let p = if w.is_dead[i] {
                sc.upper[i]
            } else {
                let row = w.wt.row(i);
                vector::dot(x, row.as_slice().unwrap_or(&[])) + w.b_enc[i]
            };
            sc.candidates.push((i, p));
        }
    }
    select::top_k(sc.candidates.iter().copied(), w.k, &mut sc.heap);
    sc.picked.clear();
    sc.picked.extend(
        sc.heap
            .iter()
            .filter(|&&(v, _)| v > 0.0)
            .map(|&(v, i)| (i, v)),
    );
    sc.aux.clear();
    if w.k_aux > 0 {
        select::top_k(e.iter().copied().enumerate(), w.k_aux, &mut sc.heap);
        sc.aux
            .extend(sc.heap.iter().map(|&(v, j)| (w.dead[j as usize], v)));
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array1, Array2};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    use super::super::sparse::Selection;
    use super::super::{select, vector};
    use super::{select_chunk, Weights};

    fn normal(shape: (usize, usize), scale: f32, r: &mut ChaCha8Rng) -> Array2<f32> {
        Array2::from_shape_fn(shape, |_| {
            let v: f32 = StandardNormal.sample(r);
            v * scale
        })
    }

    /// The prefilter's rows against TopK (and AuxK) over every `p = dot(x, w) + b`,
    /// with the bf16 product replaced by `p − b` plus an error of up to 99% of the
    /// bound, adversarial (±) or uniform: the selections must be equal, bit for bit.
    #[test]
    fn selection_equals_exact_topk_for_any_error_within_the_bound() {
        let mut r = ChaCha8Rng::seed_from_u64(5);
        let (rows, d_in, d_sae, k, k_aux) = (96, 40, 700, 12, 9);
        let w_enc = normal((d_in, d_sae), 0.2, &mut r); // (d_in, d_sae)
        let mut b_enc = normal((1, d_sae), 0.05, &mut r).row(0).to_owned(); // (d_sae)
        b_enc[3] = -50.0; // a latent that never fires
        let mut x = normal((rows, d_in), 1.0, &mut r); // (rows, d_in)
        x.row_mut(0).fill(0.0); // only b_enc: ties broken by index
        x.row_mut(1).mapv_inplace(|v| v * 1e-3); // few positive pre-activations
        let b = b_enc.as_slice().unwrap();
        let dead: Vec<u32> = (0..d_sae as u32).filter(|i| i % 7 == 2).collect();
        let w = Weights::new(w_enc.view(), b, dead.clone(), k, k_aux).unwrap();
        // Exact values (rows, d_sae) and their bound's main term.
        let p = Array2::from_shape_fn((rows, d_sae), |(bi, i)| {
            vector::dot(
                x.row(bi).as_slice().unwrap(),
                w.wt.row(i).as_slice().unwrap(),
            ) + b[i]
        });
        let exact_dead =
            Array2::from_shape_fn((rows, dead.len()), |(bi, j)| p[[bi, dead[j] as usize]]);
        let x_norm: Array1<f32> = x
            .rows()
            .into_iter()
            .map(|r| super::norm_up(r.as_slice().unwrap()))
            .collect();
        let mut max_cands = 0.0f64;
        for mode in 0..3 {
            let approx = Array2::from_shape_fn((rows, d_sae), |(bi, i)| {
                let m = 0.99 * w.c * x_norm[bi] * w.w_norm[i];
                let noise = match mode {
                    0 => m,
                    1 => -m,
                    _ => r.random_range(-m..=m),
                };
                (p[[bi, i]] - b[i]) + noise
            });
            let got = select_chunk(&w, approx.view(), x.view(), exact_dead.view());
            // The reference: TopK over every p, AuxK over the dead latents' p.
            let mut want = Selection::with_rows(rows);
            let (mut heap, mut picked, mut aux) = (Vec::new(), Vec::new(), Vec::new());
            for bi in 0..rows {
                let row = p.row(bi);
                select::top_k(row.iter().copied().enumerate(), k, &mut heap);
                picked.clear();
                picked.extend(heap.iter().filter(|h| h.0 > 0.0).map(|&(v, i)| (i, v)));
                select::top_k(
                    dead.iter().map(|&i| row[i as usize]).enumerate(),
                    k_aux,
                    &mut heap,
                );
                aux.clear();
                aux.extend(heap.iter().map(|&(v, j)| (dead[j as usize], v)));
                want.push_row(&mut picked, &mut aux);
            }
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(got.start, want.start, "mode {mode}: active counts");
            assert_eq!(got.idx, want.idx, "mode {mode}: active latents");
            assert_eq!(
                bits(&got.val),
                bits(&want.val),
                "mode {mode}: active values"
            );
            assert_eq!(got.aux_idx, want.aux_idx, "mode {mode}: AuxK latents");
            assert_eq!(
                bits(&got.aux_val),
                bits(&want.aux_val),
                "mode {mode}: AuxK values"
            );
            assert!(!got.idx.contains(&3), "latent 3 cannot fire");
            max_cands = max_cands.max(got.idx.len() as f64 / rows as f64);
        }
        eprintln!("equal selections in 3 error modes; mean active per row {max_cands:.1} (k {k})");
    }
}
