//! The SAE's math, in one place: pre-activations, activation functions, decoding,
//! and the training loss with its hand-written backward pass.
//!
//! Everything is generic over [`Real`] (`f32` for training, `f64` for the gradient
//! check). Results do not depend on the number of threads: dense products go through
//! faer ([`matmul`]), whose output elements are each summed by one thread in a fixed
//! order, and every other reduction runs in a fixed order over fixed chunks.
//!
//! Two implementations of the loss share these definitions:
//! - [`dense`] (standard and JumpReLU; the reference for the others): batch slabs of
//!   dense products — encode, decode and the three backward products;
//! - [`sparse`] (TopK and BatchTopK): only the dense encoder; decoding and the whole
//!   backward pass touch only the active (and AuxK) latents of each row — a gather
//!   over rows of `W_dec` and, per latent, sums over the rows where it is active.
//!
//! Loss (SAELens v6 conventions), for a batch of `B` rows:
//! - `mse    = (1/B) Σ_b Σ_d (x̂_bd − x_bd)²` (sum over `d_in`, mean over the batch);
//! - standard: `sparsity = λ (1/B) Σ_b Σ_i f_bi ‖W_dec[i]‖₂`;
//! - TopK: `aux = α · scale · (1/B) Σ_b Σ_d (ê_bd − e_bd)²` with `e = x − x̂` held
//!   constant, `ê = z W_dec` where `z` keeps, per row, the pre-activations of the
//!   `k_aux` largest dead latents (Gao et al. 2024, AuxK). `k_aux = min(k_aux_max,
//!   n_dead)`, `scale = min(n_dead / k_aux_max, 1)` as in SAELens. Unlike SAELens,
//!   `ê` does not include `b_dec` (the residual has no bias to reconstruct).
//! - BatchTopK (Bussmann et al. 2024): the `k · B` largest positive pre-activations
//!   of the whole batch stay active (a threshold `t` per batch), with AuxK as TopK.
//! - JumpReLU (Rajamanoharan et al. 2024): `f = pre · H(pre − θ)`, `sparsity =
//!   λ (1/B) Σ_b Σ_i H(pre_bi − θ_i)`; θ gets the paper's pseudo-derivatives with a
//!   rectangle kernel `K(u) = 1[|u| < ½]` of bandwidth `ε`:
//!   `∂f/∂θ = −(θ/ε) K((pre − θ)/ε)`, `∂H/∂θ = −(1/ε) K((pre − θ)/ε)`; no
//!   gradient reaches `pre` through `H` (straight-through, as in the paper).
use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, NdFloat, Zip};
use rayon::prelude::*;

use crate::{Architecture, Error, Result};

mod dense;
mod matmul;
mod mkl;
#[cfg(test)]
mod mkl_tests;
mod prefilter;
mod select;
mod sparse;
#[cfg(test)]
mod tests;
mod vector;

pub use matmul::{use_for_transformer, Backend, Gemm, GemmChoice};
pub use mkl::{CbwrBranch, CbwrMode, Mkl, MklSettings, DEFAULT_CBWR, MKL_ENV, MKL_LIB};
pub use prefilter::available as topk_prefilter_available;

/// A float type the SAE math runs in (`f32` or `f64`).
pub trait Real: NdFloat + Gemm {
    /// Convert from `f64` (rounding).
    fn of(x: f64) -> Self;
    /// Convert to `f64`.
    fn as_f64(self) -> f64;
    /// The maximum of every group of 32 consecutive values of `row` into `out` (the
    /// last group may be short), NaN ignored: the first pass of TopK's selection.
    /// `f32` uses AVX-512 or AVX when the CPU has them.
    fn group_maxima(row: &[Self], out: &mut [Self]) {
        select::group_maxima_scalar(row, out);
    }
    /// The slice as `f32`, if `Self` is `f32` (the bf16 prefilter runs in `f32` only).
    fn as_f32(values: &[Self]) -> Option<&[f32]>;
    /// `f32` values as `Self` (a move for `f32`).
    fn from_f32_vec(values: Vec<f32>) -> Vec<Self>;
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
    fn group_maxima(row: &[Self], out: &mut [Self]) {
        select::group_maxima_f32(row, out);
    }
    fn as_f32(values: &[Self]) -> Option<&[f32]> {
        Some(values)
    }
    fn from_f32_vec(values: Vec<f32>) -> Vec<Self> {
        values
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn as_f64(self) -> f64 {
        self
    }
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn from_f32_vec(values: Vec<f32>) -> Vec<Self> {
        values.into_iter().map(f64::from).collect()
    }
}

/// Borrowed SAE parameters.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a, F> {
    /// `(d_in, d_sae)`
    pub w_enc: ArrayView2<'a, F>,
    /// `(d_sae)`
    pub b_enc: ArrayView1<'a, F>,
    /// `(d_sae, d_in)`
    pub w_dec: ArrayView2<'a, F>,
    /// `(d_in)`
    pub b_dec: ArrayView1<'a, F>,
}

/// Gradients of the loss, one per parameter, shaped like it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grads<F> {
    /// `(d_in, d_sae)`
    pub w_enc: Array2<F>,
    /// `(d_sae)`
    pub b_enc: Array1<F>,
    /// `(d_sae, d_in)`
    pub w_dec: Array2<F>,
    /// `(d_in)`
    pub b_dec: Array1<F>,
    /// `(d_sae)`: JumpReLU's threshold θ (pseudo-derivative); `None` otherwise.
    pub threshold: Option<Array1<F>>,
}

/// The AuxK term of a TopK training step.
#[derive(Debug, Clone, Copy)]
pub struct AuxK<'a> {
    /// `(d_sae)`: latents that have not fired within the dead-feature window.
    pub dead: &'a [bool],
    /// `k_aux_max`: at most this many dead latents per row (SAELens: `d_in / 2`).
    pub k_aux: usize,
    /// `α`, the weight of the aux loss (Gao et al.: 1/32).
    pub coefficient: f64,
}

/// The JumpReLU threshold and its pseudo-derivative's bandwidth.
#[derive(Debug, Clone, Copy)]
pub struct Jump<'a> {
    /// `θ (d_sae)`, positive.
    pub threshold: &'a [f64],
    /// `ε`, the kernel's bandwidth.
    pub bandwidth: f64,
}

/// What loss to compute.
#[derive(Debug, Clone, Copy)]
pub struct LossSpec<'a> {
    /// Activation function and objective.
    pub architecture: Architecture,
    /// Subtract `b_dec` from the input before encoding.
    pub apply_b_dec_to_input: bool,
    /// `λ` of the sparsity penalty: L1 (standard) or L0 (JumpReLU); ignored by
    /// TopK and BatchTopK.
    pub l1_coefficient: f64,
    /// The AuxK term (TopK only); `None` leaves it out.
    pub aux: Option<AuxK<'a>>,
    /// Rows per parallel work item; fixed so that results do not depend on threads.
    pub chunk_rows: usize,
    /// JumpReLU only: the threshold (required) and bandwidth.
    pub jump: Option<Jump<'a>>,
    /// The library of the dense products.
    pub backend: Backend,
    /// TopK, `f32`: select with the exact bf16 prefilter when
    /// [`topk_prefilter_available`] (MKL, a CPU with AVX512-BF16, a wide SAE); otherwise
    /// ignored. The selected latents are those of the `f32` encoder.
    pub topk_prefilter: bool,
}

/// Loss terms of a batch (means over its rows) and activity statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct LossTerms {
    /// `mse + sparsity + aux`.
    pub total: f64,
    /// Reconstruction loss: squared error summed over `d_in`, mean over rows.
    pub mse: f64,
    /// Standard SAE's weighted L1 term, `λ` included.
    pub sparsity: f64,
    /// TopK's AuxK term, `α · scale` included.
    pub aux: f64,
    /// Mean number of active latents per row.
    pub l0: f64,
    /// `(d_sae)`: whether each latent fired on any row of the batch.
    pub fired: Vec<bool>,
    /// The smallest positive activation of the batch (∞ if none); BatchTopK's
    /// running threshold follows it.
    pub min_active: f64,
    /// BatchTopK: the batch's threshold `t` (0 otherwise).
    pub batch_threshold: f64,
}

/// `(x − b_dec · apply) W_enc + b_enc`: `x (rows, d_in)` → `(rows, d_sae)` (faer, or
/// MKL where [`use_for_transformer`] installed it).
pub fn pre_activations<F: Real>(
    p: &Params<'_, F>,
    x: ArrayView2<'_, F>,
    apply_b_dec_to_input: bool,
) -> Array2<F> {
    pre_activations_with(matmul::inference(), p, x, apply_b_dec_to_input)
}

/// [`pre_activations`] with the dense product on `backend`.
pub fn pre_activations_with<F: Real>(
    backend: Backend,
    p: &Params<'_, F>,
    x: ArrayView2<'_, F>,
    apply_b_dec_to_input: bool,
) -> Array2<F> {
    let x_in = centred_input(p, x, apply_b_dec_to_input); // (rows, d_in)
    encode(backend, p, x_in.view())
}

/// [`pre_activations`] with the product `x_in · W_enc` from `product` where it gives
/// one (for example through a panel copy of a frozen `W_enc`,
/// [`circuitry_models::gemm::panels`]), else on the inference backend.
pub fn pre_activations_by<F: Real>(
    p: &Params<'_, F>,
    x: ArrayView2<'_, F>,
    apply_b_dec_to_input: bool,
    product: impl FnOnce(ArrayView2<'_, F>, ArrayView2<'_, F>) -> Option<Array2<F>>,
) -> Array2<F> {
    let x_in = centred_input(p, x, apply_b_dec_to_input); // (rows, d_in)
    match product(x_in.view(), p.w_enc) {
        Some(mut pre) => {
            pre += &p.b_enc;
            pre
        }
        None => encode(matmul::inference(), p, x_in.view()),
    }
}

/// `x_in W_enc + b_enc` for an already centred input `x_in (rows, d_in)`.
/// The output starts as `b_enc` in every row and the product is added to it, so the
/// `(rows, d_sae)` array is written once before the product instead of zeroed before
/// and read and written again after it.
fn encode<F: Real>(backend: Backend, p: &Params<'_, F>, x_in: ArrayView2<'_, F>) -> Array2<F> {
    let mut pre = Array2::uninit((x_in.nrows(), p.w_enc.ncols())); // (rows, d_sae)
    Zip::from(pre.rows_mut()).par_for_each(|row| p.b_enc.assign_to(row));
    // SAFETY: every row was just written with `b_enc` (same length, d_sae).
    let mut pre = unsafe { pre.assume_init() };
    F::gemm(backend, pre.view_mut(), true, x_in, p.w_enc, F::one());
    pre
}

/// The activation function: pre-activations `(rows, d_sae)` → features `(rows, d_sae)`.
/// `threshold (d_sae)` is used by JumpReLU only (`None` means zeros).
///
/// TopK ranks by pre-activation (ties go to the lower index), keeps the `k` largest
/// and applies ReLU to them, as SAELens does.
pub fn activate<F: Real>(
    architecture: Architecture,
    pre: ArrayView2<'_, F>,
    threshold: Option<ArrayView1<'_, F>>,
) -> Array2<F> {
    let relu = |v: F| if v > F::zero() { v } else { F::zero() };
    match architecture {
        Architecture::Standard => {
            let mut out = pre.to_owned();
            out.par_mapv_inplace(relu);
            out
        }
        Architecture::TopK { k } => {
            let mut out = Array2::zeros(pre.raw_dim()); // (rows, d_sae)
            out.axis_iter_mut(Axis(0))
                .into_par_iter()
                .zip(pre.axis_iter(Axis(0)).into_par_iter())
                .for_each_init(select::Scratch::default, |scratch, (mut out_row, row)| {
                    // ReLU after TopK keeps the positive values among the k largest:
                    // the k largest of the positive values.
                    match row.as_slice() {
                        Some(values) => select::top_k_above(values, k, F::zero(), scratch),
                        None => {
                            select::top_k(row.iter().copied().enumerate(), k, &mut scratch.heap)
                        }
                    }
                    for &(_, i) in &scratch.heap {
                        out_row[i as usize] = relu(row[i as usize]);
                    }
                });
            out
        }
        Architecture::BatchTopK { k } => {
            let t = match threshold {
                Some(t) => return activate(Architecture::JumpRelu, pre, Some(t)),
                None => batch_threshold(&[pre], k),
            };
            pre.mapv(|v| {
                if v > F::zero() && v >= t {
                    v
                } else {
                    F::zero()
                }
            })
        }
        Architecture::JumpRelu => {
            let mut out = pre.to_owned();
            if let Some(t) = threshold {
                Zip::from(out.rows_mut()).par_for_each(|mut row| {
                    row.zip_mut_with(&t, |v, &t| {
                        if *v <= t {
                            *v = F::zero()
                        }
                    })
                });
            } else {
                out.par_mapv_inplace(relu);
            }
            out
        }
    }
}

/// `f W_dec + b_dec`: features `(rows, d_sae)` → reconstruction `(rows, d_in)`.
///
/// Sparse features (at most one latent in [`SPARSE_DECODE_DENSITY`] active, as TopK's
/// are) are decoded as a gather: per row, the active rows of `W_dec` scaled and added in
/// index order, then `b_dec`; `k · d_in` operations a row instead of `d_sae · d_in`,
/// independent of the threads (each row's sum has a fixed order), rounded differently
/// from the dense product by a few ulp. Denser features go through the dense product
/// (faer's, or MKL's where [`use_for_transformer`] installed it).
pub fn decode<F: Real>(p: &Params<'_, F>, f: ArrayView2<'_, F>) -> Array2<F> {
    decode_by(p, f, |_, _| None)
}

/// [`decode`] with the dense product `f · W_dec` from `product` where it gives one
/// (sparse features are still gathered).
pub fn decode_by<F: Real>(
    p: &Params<'_, F>,
    f: ArrayView2<'_, F>,
    product: impl FnOnce(ArrayView2<'_, F>, ArrayView2<'_, F>) -> Option<Array2<F>>,
) -> Array2<F> {
    if is_sparse(f) {
        if let Some(x_hat) = decode_sparse(p, f) {
            return x_hat;
        }
    }
    match product(f, p.w_dec) {
        Some(mut x_hat) => {
            x_hat += &p.b_dec;
            x_hat
        }
        None => decode_with(matmul::inference(), p, f),
    }
}

/// [`decode`] gathers features with at most one latent in this many active.
const SPARSE_DECODE_DENSITY: usize = 16;

/// Whether features `f` are sparse enough for per-latent work (a gather over active
/// latents) to beat a dense product: at most one entry in [`SPARSE_DECODE_DENSITY`]
/// nonzero, as TopK's are. [`decode`] uses it, and so do the circuit stage's feature
/// gradients.
pub fn is_sparse<F: Real>(f: ArrayView2<'_, F>) -> bool {
    f.iter().filter(|&&v| v != F::zero()).count() * SPARSE_DECODE_DENSITY <= f.len()
}

/// `f W_dec + b_dec` with the dense product on `backend` (the training loss's dense
/// path).
pub fn decode_with<F: Real>(
    backend: Backend,
    p: &Params<'_, F>,
    f: ArrayView2<'_, F>,
) -> Array2<F> {
    let mut x_hat = Array2::zeros((f.nrows(), p.w_dec.ncols())); // (rows, d_in)
    F::gemm(backend, x_hat.view_mut(), false, f, p.w_dec, F::one());
    x_hat += &p.b_dec;
    x_hat
}

/// [`decode`]'s gather; `None` when `W_dec` or `b_dec` is not contiguous.
fn decode_sparse<F: Real>(p: &Params<'_, F>, f: ArrayView2<'_, F>) -> Option<Array2<F>> {
    let w_dec = p.w_dec.as_slice()?; // (d_sae, d_in), row-major
    let b_dec = p.b_dec.as_slice()?;
    let d_in = p.w_dec.ncols();
    let mut x_hat = Array2::zeros((f.nrows(), d_in)); // (rows, d_in)
    x_hat
        .axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(f.axis_iter(Axis(0)).into_par_iter())
        .for_each_init(Vec::new, |idx, (mut out, row)| {
            if let Some(out) = out.as_slice_mut() {
                nonzeros(row, idx);
                for &i in idx.iter() {
                    let i = i as usize;
                    vector::axpy(out, row[i], &w_dec[i * d_in..(i + 1) * d_in]);
                }
                for (o, &b) in out.iter_mut().zip(b_dec) {
                    *o += b;
                }
            }
        });
    Some(x_hat)
}

/// The indices of `row`'s nonzero entries, increasing, into `idx`
/// ([`vector::nonzero_indices`] when the row is contiguous).
fn nonzeros<F: Real>(row: ArrayView1<'_, F>, idx: &mut Vec<u32>) {
    match row.as_slice() {
        Some(r) => vector::nonzero_indices(r, idx),
        None => {
            idx.clear();
            idx.extend((0..row.len() as u32).filter(|&i| row[i as usize] != F::zero()));
        }
    }
}

/// The gradient with respect to sparse features, `g · W_decᵀ` `(rows, d_sae)` for the
/// gradient `g (rows, d_in)` at the reconstruction, at the entries where
/// `at (rows, d_sae)` is nonzero and zero elsewhere: [`decode`]'s gather transposed,
/// one dot product with a row of `W_dec` per entry (each row's in a fixed order, so
/// independent of the threads). `None` when `W_dec` is not contiguous or the shapes
/// do not agree.
pub fn decoder_grads_at<F: Real>(
    w_dec: ArrayView2<'_, F>,
    g: ArrayView2<'_, F>,
    at: ArrayView2<'_, F>,
) -> Option<Array2<F>> {
    let (d_sae, d_in) = w_dec.dim();
    if g.ncols() != d_in || at.ncols() != d_sae || g.nrows() != at.nrows() {
        return None;
    }
    let w = w_dec.as_slice()?; // (d_sae, d_in), row-major
    let g = g.as_standard_layout(); // a copy only if it is not
    let mut out = Array2::zeros(at.raw_dim()); // (rows, d_sae)
    out.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(at.axis_iter(Axis(0)).into_par_iter())
        .zip(g.axis_iter(Axis(0)).into_par_iter())
        .for_each_init(Vec::new, |idx, ((mut out, at), g)| {
            let g = g.as_slice().unwrap_or(&[]);
            nonzeros(at, idx);
            for &i in idx.iter() {
                let i = i as usize;
                out[i] = vector::dot(g, &w[i * d_in..(i + 1) * d_in]);
            }
        });
    Some(out)
}

/// The training loss of batch `x (rows, d_in)` and its gradient with respect to every
/// parameter (see the module docs for the loss). TopK and BatchTopK take the sparse
/// path, the others the dense one.
pub fn loss_and_grads<F: Real>(
    p: &Params<'_, F>,
    x: ArrayView2<'_, F>,
    spec: &LossSpec<'_>,
) -> Result<(LossTerms, Grads<F>)> {
    let setup = Setup::new(p, x, spec)?;
    let (sums, grads) = match spec.architecture {
        Architecture::TopK { .. } | Architecture::BatchTopK { .. } => sparse::run(&setup, x),
        Architecture::Standard | Architecture::JumpRelu => dense::run(&setup, x),
    };
    Ok(setup.finish(sums, grads, x.nrows()))
}

/// Validated inputs of one loss evaluation, shared by both paths.
struct Setup<'a, 'p, F> {
    p: &'a Params<'p, F>,
    spec: &'a LossSpec<'a>,
    aux: Option<ResolvedAux<'a>>,
    theta: Option<Array1<F>>, // (d_sae) JumpReLU threshold
    inv_b: F,
}

#[derive(Clone, Copy)]
struct ResolvedAux<'a> {
    dead: &'a [bool],
    k: usize,
    weight: f64,
}

/// What each path adds up besides the gradients.
struct Sums {
    sse: f64,
    /// Σ f·‖W_dec‖ (standard) or the L0 count (JumpReLU), before `λ`.
    weighted_l1: f64,
    aux_sse: f64,
    active: usize,
    fired: Vec<bool>,
    min_active: f64,
    batch_threshold: f64,
}

impl<'a, 'p, F: Real> Setup<'a, 'p, F> {
    fn new(p: &'a Params<'p, F>, x: ArrayView2<'_, F>, spec: &'a LossSpec<'a>) -> Result<Self> {
        let (d_in, d_sae) = p.w_enc.dim();
        check_shape("W_dec", &[d_sae, d_in], p.w_dec.shape())?;
        check_shape("b_enc", &[d_sae], p.b_enc.shape())?;
        check_shape("b_dec", &[d_in], p.b_dec.shape())?;
        check_shape("batch", &[x.nrows(), d_in], x.shape())?;
        if x.nrows() == 0 {
            return Err(Error::Empty("the training batch has no rows".into()));
        }
        if let Some(aux) = &spec.aux {
            check_shape("dead-latent mask", &[d_sae], &[aux.dead.len()])?;
        }
        let aux = spec.aux.and_then(|a| {
            let n_dead = a.dead.iter().filter(|d| **d).count();
            (n_dead > 0 && a.k_aux > 0 && a.coefficient > 0.0).then(|| ResolvedAux {
                dead: a.dead,
                k: a.k_aux.min(n_dead),
                weight: a.coefficient * (n_dead as f64 / a.k_aux as f64).min(1.0),
            })
        });
        let theta: Option<Array1<F>> = match (spec.architecture, spec.jump) {
            (Architecture::JumpRelu, Some(j)) => {
                check_shape("JumpReLU threshold", &[d_sae], &[j.threshold.len()])?;
                Some(j.threshold.iter().map(|&t| F::of(t)).collect())
            }
            (Architecture::JumpRelu, None) => {
                return Err(Error::config(
                    "threshold",
                    "none",
                    "JumpReLU training needs a threshold",
                ))
            }
            _ => None,
        };
        Ok(Setup {
            p,
            spec,
            aux,
            theta,
            inv_b: F::of(1.0 / x.nrows() as f64),
        })
    }

    /// `λ` of the standard SAE's L1 term (0 for the other architectures).
    fn lambda(&self) -> F {
        match self.spec.architecture {
            Architecture::Standard if self.spec.l1_coefficient > 0.0 => {
                F::of(self.spec.l1_coefficient)
            }
            _ => F::zero(),
        }
    }

    fn finish(&self, s: Sums, grads: Grads<F>, rows: usize) -> (LossTerms, Grads<F>) {
        let rows = rows as f64;
        let mse = s.sse / rows;
        let sparsity = if self.lambda() > F::zero() || self.theta.is_some() {
            self.spec.l1_coefficient * s.weighted_l1 / rows
        } else {
            0.0
        };
        let aux = self.aux.map_or(0.0, |a| a.weight * s.aux_sse / rows);
        let terms = LossTerms {
            total: mse + sparsity + aux,
            mse,
            sparsity,
            aux,
            l0: s.active as f64 / rows,
            fired: s.fired,
            min_active: s.min_active,
            batch_threshold: s.batch_threshold,
        };
        (terms, grads)
    }
}

impl<F: Real> Grads<F> {
    fn zeros(d_in: usize, d_sae: usize, threshold: bool) -> Self {
        Grads {
            w_enc: Array2::zeros((d_in, d_sae)),
            b_enc: Array1::zeros(d_sae),
            w_dec: Array2::zeros((d_sae, d_in)),
            b_dec: Array1::zeros(d_in),
            threshold: threshold.then(|| Array1::zeros(d_sae)),
        }
    }
}

/// BatchTopK's threshold: the `k · rows`-th largest positive value over all the
/// blocks of pre-activations (each `(rows, d_sae)`); 0 when fewer are positive.
fn batch_threshold<F: Real>(blocks: &[ArrayView2<'_, F>], k: usize) -> F {
    let rows: usize = blocks.iter().map(|b| b.nrows()).sum();
    let mut positive: Vec<F> = blocks
        .iter()
        .flat_map(|b| b.iter().copied().filter(|&v| v > F::zero()))
        .collect();
    let keep = k.saturating_mul(rows);
    if keep == 0 || positive.len() <= keep {
        return F::zero();
    }
    let (_, nth, _) = positive.select_nth_unstable_by(keep - 1, |a, b| {
        b.partial_cmp(a).unwrap_or(std::cmp::Ordering::Equal)
    });
    *nth
}

fn centred_input<F: Real>(p: &Params<'_, F>, x: ArrayView2<'_, F>, apply: bool) -> Array2<F> {
    if apply {
        &x - &p.b_dec
    } else {
        x.to_owned()
    }
}

/// `b_dec`'s extra gradient when the input is centred by it: `x_in = x − b_dec`, so
/// `∂/∂b_dec −= W_enc · Σ_b ∂/∂pre_b = W_enc · g_b_enc`.
fn centring_grad<F: Real>(
    backend: Backend,
    p: &Params<'_, F>,
    g_b_enc: &Array1<F>,
    g_b_dec: &mut Array1<F>,
) {
    let col = g_b_enc.view().insert_axis(Axis(1)); // (d_sae, 1)
    let mut out = Array2::zeros((p.w_enc.nrows(), 1)); // (d_in, 1)
    F::gemm(backend, out.view_mut(), false, p.w_enc, col, F::one());
    *g_b_dec -= &out.column(0);
}

fn sum_sq<F: Real>(a: ArrayView2<'_, F>) -> f64 {
    a.iter().map(|v| v.as_f64() * v.as_f64()).sum()
}

fn check_shape(what: &str, expected: &[usize], got: &[usize]) -> Result<()> {
    if expected != got {
        return Err(Error::Shape {
            what: what.into(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        });
    }
    Ok(())
}
