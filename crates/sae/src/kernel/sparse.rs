//! The sparse path for TopK and BatchTopK: only the encoder is a dense product.
//!
//! 1. Encode slab by slab (faer) and keep, per row, the active latents (index and
//!    value) and the AuxK latents (index and pre-activation): compressed rows.
//! 2. Per row, in parallel over fixed chunks of rows: `x̂` as a gather over the active
//!    rows of `W_dec`, the error, `∂L/∂x̂`, and `∂L/∂pre` at the active latents
//!    (one dot product each); likewise `ê`, `∂L/∂ê` and `∂L/∂pre` at the AuxK latents.
//! 3. Transpose the compressed rows into per-latent lists (in row order) and, in
//!    parallel over blocks of latents, add up `∂W_dec[i] = Σ_b f_bi ∂x̂_b (+ AuxK)`,
//!    `∂W_enc[:, i] = Σ_b ∂pre_bi x_in_b` and `∂b_enc[i] = Σ_b ∂pre_bi`.
//!
//! Every sum runs in a fixed order, so the result does not depend on the threads.
use ndarray::{Array2, ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;

use super::{
    batch_threshold, centred_input, centring_grad, encode, prefilter, select, vector, Grads, Real,
    Setup, Sums,
};
use crate::Architecture;

/// Rows encoded at once (rounded up to whole chunks).
const SLAB_ROWS: usize = 1024;
/// Latents per parallel work item of step 3.
const LATENT_BLOCK: usize = 32;

/// The selected latents of a chunk of rows, as compressed rows.
pub(super) struct Selection<F> {
    /// `rows + 1` offsets into `idx`/`val`.
    pub(super) start: Vec<usize>,
    pub(super) idx: Vec<u32>,
    /// Active feature values (positive).
    pub(super) val: Vec<F>,
    /// `rows + 1` offsets into `aux_idx`/`aux_val`.
    pub(super) aux_start: Vec<usize>,
    pub(super) aux_idx: Vec<u32>,
    /// Pre-activations of the AuxK latents.
    pub(super) aux_val: Vec<F>,
}

impl<F: Real> Selection<F> {
    /// Empty, with room for `rows` rows.
    pub(super) fn with_rows(rows: usize) -> Self {
        let mut start = Vec::with_capacity(rows + 1);
        start.push(0);
        let mut aux_start = Vec::with_capacity(rows + 1);
        aux_start.push(0);
        Selection {
            start,
            idx: Vec::new(),
            val: Vec::new(),
            aux_start,
            aux_idx: Vec::new(),
            aux_val: Vec::new(),
        }
    }

    /// Appends a row: its active `(latent, value)` pairs and its AuxK
    /// `(latent, pre-activation)` pairs (empty without AuxK); both are sorted by latent
    /// here.
    pub(super) fn push_row(&mut self, active: &mut [(u32, F)], aux: &mut [(u32, F)]) {
        active.sort_unstable_by_key(|&(i, _)| i);
        self.idx.extend(active.iter().map(|&(i, _)| i));
        self.val.extend(active.iter().map(|&(_, v)| v));
        self.start.push(self.idx.len());
        aux.sort_unstable_by_key(|&(i, _)| i);
        self.aux_idx.extend(aux.iter().map(|&(i, _)| i));
        self.aux_val.extend(aux.iter().map(|&(_, v)| v));
        self.aux_start.push(self.aux_idx.len());
    }
}

impl Selection<f32> {
    /// The same rows in `F` (a move for `f32`).
    pub(super) fn into_real<F: Real>(self) -> Selection<F> {
        Selection {
            start: self.start,
            idx: self.idx,
            val: F::from_f32_vec(self.val),
            aux_start: self.aux_start,
            aux_idx: self.aux_idx,
            aux_val: F::from_f32_vec(self.aux_val),
        }
    }
}

/// Step 2's results for a chunk: `∂L/∂pre` at each selected latent, and sums.
struct RowGrads<F> {
    d_act: Vec<F>,
    d_aux: Vec<F>,
    sse: f64,
    aux_sse: f64,
}

/// One nonzero of `∂L/∂pre`, listed under its latent.
#[derive(Clone, Copy)]
struct Entry<F> {
    row: u32,
    /// The feature value (active) or pre-activation (AuxK): weight of `∂x̂`/`∂ê`.
    coef: F,
    /// `∂L/∂pre` at this row and latent.
    grad: F,
    aux: bool,
}

pub(super) fn run<F: Real>(s: &Setup<'_, '_, F>, x: ArrayView2<'_, F>) -> (Sums, Grads<F>) {
    let p = s.p;
    let (d_in, d_sae) = p.w_enc.dim();
    let rows = x.nrows();
    let chunk = s.spec.chunk_rows.max(1);
    let x_in = centred_input(p, x, s.spec.apply_b_dec_to_input); // (rows, d_in)
    let aux = s.aux;

    // 1. Encode and select.
    let mut batch_t = F::zero();
    let mut sel: Vec<Selection<F>> = Vec::with_capacity(rows.div_ceil(chunk));
    match s.spec.architecture {
        Architecture::BatchTopK { k } => {
            let pre = encode(s.spec.backend, p, x_in.view()); // (rows, d_sae)
            batch_t = batch_threshold(&[pre.view()], k);
            let t = batch_t;
            sel.par_extend(
                pre.axis_chunks_iter(Axis(0), chunk)
                    .into_par_iter()
                    .map(|c| compress(c, |row, out| above(row, t, out), aux)),
            );
        }
        arch => {
            let k = match arch {
                Architecture::TopK { k } => k,
                _ => 0,
            };
            let slab = SLAB_ROWS.div_ceil(chunk) * chunk;
            // TopK: the bf16 prefilter when it applies, else every pre-activation in f32.
            let prefiltered = match arch {
                Architecture::TopK { .. } => prefilter::select_topk(s, x_in.view(), k, chunk),
                _ => None,
            };
            match prefiltered {
                Some(rows) => sel = rows,
                None => {
                    for xs in x_in.axis_chunks_iter(Axis(0), slab) {
                        let pre = encode(s.spec.backend, p, xs); // (slab, d_sae)
                        sel.par_extend(pre.axis_chunks_iter(Axis(0), chunk).into_par_iter().map(
                            |c| {
                                let mut scratch = select::Scratch::default();
                                compress(
                                    c,
                                    |row, out| top_k_positive(row, k, &mut scratch, out),
                                    aux,
                                )
                            },
                        ));
                    }
                }
            }
        }
    }

    // 2. Per row: reconstruction, errors and ∂L/∂pre at the selected latents.
    let mut d_x_hat = Array2::<F>::zeros((rows, d_in)); // (rows, d_in)
    let mut d_e_hat = Array2::<F>::zeros((rows, if aux.is_some() { d_in } else { 0 })); // (rows, d_in | 0)
    let two_inv_b = F::of(2.0) * s.inv_b;
    let aux_c = aux.map_or(F::zero(), |a| F::of(2.0 * a.weight) * s.inv_b);
    let x_std = x.as_standard_layout(); // (rows, d_in), a copy only if x is not
    let (xs_raw, w_dec, b_dec) = (
        x_std.as_slice().unwrap_or(&[]),
        p.w_dec.as_standard_layout(),
        p.b_dec.to_vec(),
    );
    let w_dec = w_dec.as_slice().unwrap_or(&[]); // (d_sae, d_in)
    let row_grads: Vec<RowGrads<F>> = sel
        .par_iter()
        .enumerate()
        .zip(d_x_hat.axis_chunks_iter_mut(Axis(0), chunk).into_par_iter())
        .zip(d_e_hat.axis_chunks_iter_mut(Axis(0), chunk).into_par_iter())
        .map(|(((c, sel), mut dx), mut de)| {
            let mut out = RowGrads {
                d_act: Vec::with_capacity(sel.idx.len()),
                d_aux: Vec::with_capacity(sel.aux_idx.len()),
                sse: 0.0,
                aux_sse: 0.0,
            };
            let (dx, de) = (
                dx.as_slice_mut().unwrap_or(&mut []),
                de.as_slice_mut().unwrap_or(&mut []),
            );
            for r in 0..sel.start.len() - 1 {
                let b = c * chunk + r;
                let (a0, a1) = (sel.start[r], sel.start[r + 1]);
                // x̂, then x̂ − x, then ∂L/∂x̂ (d_in)
                let err = &mut dx[r * d_in..(r + 1) * d_in];
                err.copy_from_slice(&b_dec);
                for (&i, &v) in sel.idx[a0..a1].iter().zip(&sel.val[a0..a1]) {
                    vector::axpy(err, v, row_of(w_dec, i as usize, d_in));
                }
                vector::sub_assign(err, row_of(xs_raw, b, d_in));
                out.sse += vector::sum_sq(err);
                if aux.is_some() {
                    let (z0, z1) = (sel.aux_start[r], sel.aux_start[r + 1]);
                    // ê − e = ê + err, then ∂L/∂ê (d_in)
                    let diff = &mut de[r * d_in..(r + 1) * d_in];
                    diff.copy_from_slice(err);
                    for (&i, &z) in sel.aux_idx[z0..z1].iter().zip(&sel.aux_val[z0..z1]) {
                        vector::axpy(diff, z, row_of(w_dec, i as usize, d_in));
                    }
                    out.aux_sse += vector::sum_sq(diff);
                    vector::scale(diff, aux_c);
                    for &i in &sel.aux_idx[z0..z1] {
                        out.d_aux
                            .push(vector::dot(diff, row_of(w_dec, i as usize, d_in)));
                    }
                }
                vector::scale(err, two_inv_b);
                for &i in &sel.idx[a0..a1] {
                    out.d_act
                        .push(vector::dot(err, row_of(w_dec, i as usize, d_in)));
                }
            }
            out
        })
        .collect();

    // 3. Per latent, in row order.
    let mut offsets = vec![0usize; d_sae + 1];
    let mut fired = vec![false; d_sae];
    let (mut active, mut min_active, mut sse, mut aux_sse) = (0usize, f64::INFINITY, 0.0, 0.0);
    for (sel, rg) in sel.iter().zip(&row_grads) {
        for &i in sel.idx.iter().chain(&sel.aux_idx) {
            offsets[i as usize + 1] += 1;
        }
        for (&i, &v) in sel.idx.iter().zip(&sel.val) {
            fired[i as usize] = true;
            min_active = min_active.min(v.as_f64());
        }
        active += sel.idx.len();
        sse += rg.sse;
        aux_sse += rg.aux_sse;
    }
    let mut total = 0;
    for o in offsets.iter_mut() {
        total += *o;
        *o = total;
    }
    let blank = Entry {
        row: 0,
        coef: F::zero(),
        grad: F::zero(),
        aux: false,
    };
    let mut entries = vec![blank; offsets[d_sae]];
    let mut next = offsets.clone();
    let mut row0 = 0usize;
    for (sel, rg) in sel.iter().zip(&row_grads) {
        let n_rows = sel.start.len() - 1;
        for r in 0..n_rows {
            let row = (row0 + r) as u32;
            let act = (sel.start[r]..sel.start[r + 1]).map(|j| (j, false));
            let auxs = (sel.aux_start[r]..sel.aux_start[r + 1]).map(|j| (j, true));
            for (j, is_aux) in act.chain(auxs) {
                let (i, coef, grad) = if is_aux {
                    (sel.aux_idx[j], sel.aux_val[j], rg.d_aux[j])
                } else {
                    (sel.idx[j], sel.val[j], rg.d_act[j])
                };
                let slot = &mut next[i as usize];
                entries[*slot] = Entry {
                    row,
                    coef,
                    grad,
                    aux: is_aux,
                };
                *slot += 1;
            }
        }
        row0 += n_rows;
    }

    let mut g = Grads::zeros(d_in, d_sae, false);
    // All three are standard-layout arrays made above: rows are slices.
    let (xs, dxs, des) = (
        x_in.as_slice().unwrap_or(&[]),
        d_x_hat.as_slice().unwrap_or(&[]),
        d_e_hat.as_slice().unwrap_or(&[]),
    );
    g.w_dec
        .axis_chunks_iter_mut(Axis(0), LATENT_BLOCK)
        .into_par_iter()
        .zip(
            g.w_enc
                .axis_chunks_iter_mut(Axis(1), LATENT_BLOCK)
                .into_par_iter(),
        )
        .zip(
            g.b_enc
                .axis_chunks_iter_mut(Axis(0), LATENT_BLOCK)
                .into_par_iter(),
        )
        .enumerate()
        .for_each(|(blk, ((mut g_dec, mut g_enc), mut g_benc))| {
            let i0 = blk * LATENT_BLOCK;
            let nb = g_dec.nrows();
            if offsets[i0] == offsets[i0 + nb] {
                return;
            }
            let mut tile = Array2::<F>::zeros((nb, d_in)); // ∂W_enc[:, i0..]ᵀ (nb, d_in)
            for j in 0..nb {
                let mut dec_row = g_dec.row_mut(j);
                let mut enc_row = tile.row_mut(j);
                let (Some(dec), Some(enc)) = (dec_row.as_slice_mut(), enc_row.as_slice_mut())
                else {
                    continue; // never: both are rows of standard-layout arrays
                };
                let mut g_b = F::zero();
                for e in &entries[offsets[i0 + j]..offsets[i0 + j + 1]] {
                    let b = e.row as usize;
                    let src = if e.aux {
                        row_of(des, b, d_in)
                    } else {
                        row_of(dxs, b, d_in)
                    };
                    vector::axpy(dec, e.coef, src);
                    vector::axpy(enc, e.grad, row_of(xs, b, d_in));
                    g_b += e.grad;
                }
                g_benc[j] = g_b;
            }
            g_enc.assign(&tile.t());
        });
    g.b_dec = d_x_hat.sum_axis(Axis(0));
    if s.spec.apply_b_dec_to_input {
        centring_grad(s.spec.backend, p, &g.b_enc, &mut g.b_dec);
    }
    let sums = Sums {
        sse,
        weighted_l1: 0.0,
        aux_sse,
        active,
        fired,
        min_active,
        batch_threshold: batch_t.as_f64(),
    };
    (sums, g)
}

/// Compressed rows of a chunk of pre-activations `(rows, d_sae)`: `pick` writes a
/// row's active `(index, value)` pairs; AuxK's `k` largest dead latents follow.
fn compress<F: Real>(
    pre: ArrayView2<'_, F>,
    mut pick: impl FnMut(ArrayView1<'_, F>, &mut Vec<(u32, F)>),
    aux: Option<super::ResolvedAux<'_>>,
) -> Selection<F> {
    let mut sel = Selection::with_rows(pre.nrows());
    let mut picked = Vec::new();
    let mut heap = Vec::new();
    let mut aux_pairs = Vec::new();
    for row in pre.outer_iter() {
        pick(row, &mut picked);
        aux_pairs.clear();
        if let Some(a) = aux {
            let dead = row.iter().copied().enumerate().filter(|&(i, _)| a.dead[i]);
            select::top_k(dead, a.k, &mut heap);
            aux_pairs.extend(heap.iter().map(|&(_, i)| (i, row[i as usize])));
        }
        sel.push_row(&mut picked, &mut aux_pairs);
    }
    sel
}

/// TopK: the `k` largest pre-activations of the row that are positive.
fn top_k_positive<F: Real>(
    row: ArrayView1<'_, F>,
    k: usize,
    scratch: &mut select::Scratch<F>,
    out: &mut Vec<(u32, F)>,
) {
    match row.as_slice() {
        // The k largest positive values are the positive ones among the k largest.
        Some(values) => select::top_k_above(values, k, F::zero(), scratch),
        None => select::top_k(row.iter().copied().enumerate(), k, &mut scratch.heap),
    }
    out.clear();
    out.extend(
        scratch
            .heap
            .iter()
            .map(|&(_, i)| (i, row[i as usize]))
            .filter(|&(_, v)| v > F::zero()),
    );
}

/// BatchTopK: the positive pre-activations at or above the batch threshold `t`.
fn above<F: Real>(row: ArrayView1<'_, F>, t: F, out: &mut Vec<(u32, F)>) {
    out.clear();
    out.extend(
        row.iter()
            .enumerate()
            .filter(|&(_, &v)| v > F::zero() && v >= t)
            .map(|(i, &v)| (i as u32, v)),
    );
}

/// Row `b` of a row-major `(rows, d)` array held in `m`.
fn row_of<F>(m: &[F], b: usize, d: usize) -> &[F] {
    m.get(b * d..(b + 1) * d).unwrap_or(&[])
}
