//! The SAE's math, in one place: pre-activations, activation functions, decoding,
//! and the training loss with its hand-written backward pass.
//!
//! Everything is generic over [`Real`] (`f32` for training, `f64` for the gradient
//! check). The batch is cut into chunks of a fixed number of rows that rayon works on
//! in parallel; partial results are summed in chunk order, so results do not depend
//! on the number of threads.
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

/// A float type the SAE math runs in (`f32` or `f64`).
pub trait Real: NdFloat {
    /// Convert from `f64` (rounding).
    fn of(x: f64) -> Self;
    /// Convert to `f64`.
    fn as_f64(self) -> f64;
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn as_f64(self) -> f64 {
        self
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

/// `(x − b_dec · apply) W_enc + b_enc`: `x (rows, d_in)` → `(rows, d_sae)`.
pub fn pre_activations<F: Real>(
    p: &Params<'_, F>,
    x: ArrayView2<'_, F>,
    apply_b_dec_to_input: bool,
) -> Array2<F> {
    let x_in = centred_input(p, x, apply_b_dec_to_input);
    let mut pre = x_in.dot(&p.w_enc); // (rows, d_sae)
    pre += &p.b_enc;
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
    match architecture {
        Architecture::Standard => pre.mapv(|v| if v > F::zero() { v } else { F::zero() }),
        Architecture::TopK { k } => {
            let mut out = Array2::zeros(pre.raw_dim()); // (rows, d_sae)
            let mut order: Vec<usize> = Vec::with_capacity(pre.ncols());
            for (row, mut out_row) in pre.outer_iter().zip(out.outer_iter_mut()) {
                for i in top_indices(row, k, |_| true, &mut order) {
                    let v = row[*i];
                    out_row[*i] = if v > F::zero() { v } else { F::zero() };
                }
            }
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
                Zip::from(out.rows_mut()).for_each(|mut row| {
                    row.zip_mut_with(&t, |v, &t| {
                        if *v <= t {
                            *v = F::zero()
                        }
                    })
                });
            } else {
                out.mapv_inplace(|v| if v > F::zero() { v } else { F::zero() });
            }
            out
        }
    }
}

/// `f W_dec + b_dec`: features `(rows, d_sae)` → reconstruction `(rows, d_in)`.
pub fn decode<F: Real>(p: &Params<'_, F>, f: ArrayView2<'_, F>) -> Array2<F> {
    let mut x_hat = f.dot(&p.w_dec); // (rows, d_in)
    x_hat += &p.b_dec;
    x_hat
}

/// The training loss of batch `x (rows, d_in)` and its gradient with respect to every
/// parameter (see the module docs for the loss).
pub fn loss_and_grads<F: Real>(
    p: &Params<'_, F>,
    x: ArrayView2<'_, F>,
    spec: &LossSpec<'_>,
) -> Result<(LossTerms, Grads<F>)> {
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
    let norms: Array1<F> = p.w_dec.map_axis(Axis(1), |r| r.dot(&r).sqrt()); // (d_sae)
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
    let chunks: Vec<ArrayView2<'_, F>> = x
        .axis_chunks_iter(Axis(0), spec.chunk_rows.max(1))
        .collect();
    // BatchTopK needs every row's pre-activations before it can pick the threshold.
    let pres: Option<Vec<Array2<F>>> = match spec.architecture {
        Architecture::BatchTopK { .. } => Some(
            chunks
                .par_iter()
                .map(|c| pre_activations(p, *c, spec.apply_b_dec_to_input))
                .collect(),
        ),
        _ => None,
    };
    let t = match (spec.architecture, &pres) {
        (Architecture::BatchTopK { k }, Some(pres)) => {
            let views: Vec<ArrayView2<'_, F>> = pres.iter().map(|a| a.view()).collect();
            batch_threshold(&views, k)
        }
        _ => F::zero(),
    };
    let ctx = Ctx {
        p,
        spec,
        aux,
        norms: norms.view(),
        inv_b: F::of(1.0 / x.nrows() as f64),
        theta: theta.as_ref().map(|t| t.view()),
        batch_t: t,
    };
    let parts: Vec<ChunkOut<F>> = match pres {
        Some(pres) => chunks
            .par_iter()
            .zip(pres)
            .map(|(c, pre)| ctx.chunk(*c, Some(pre)))
            .collect(),
        None => chunks.par_iter().map(|c| ctx.chunk(*c, None)).collect(),
    };

    let mut grads = Grads {
        w_enc: Array2::zeros((d_in, d_sae)),
        b_enc: Array1::zeros(d_sae),
        w_dec: Array2::zeros((d_sae, d_in)),
        b_dec: Array1::zeros(d_in),
        threshold: theta.as_ref().map(|_| Array1::zeros(d_sae)),
    };
    let (mut sse, mut sparsity, mut aux_sse, mut active) = (0.0, 0.0, 0.0, 0usize);
    let mut min_active = f64::INFINITY;
    let mut fired = vec![false; d_sae];
    let mut act_sums = Array1::<F>::zeros(d_sae); // (d_sae)
    for part in parts {
        grads.w_enc += &part.grads.w_enc;
        grads.b_enc += &part.grads.b_enc;
        grads.w_dec += &part.grads.w_dec;
        grads.b_dec += &part.grads.b_dec;
        act_sums += &part.act_sums;
        if let (Some(g), Some(pg)) = (grads.threshold.as_mut(), part.grads.threshold.as_ref()) {
            *g += pg;
        }
        min_active = min_active.min(part.min_active);
        sse += part.sse;
        sparsity += part.weighted_l1;
        aux_sse += part.aux_sse;
        active += part.active;
        for (f, g) in fired.iter_mut().zip(&part.fired) {
            *f |= *g;
        }
    }
    // The sparsity term depends on W_dec through the row norms:
    // ∂/∂W_dec[i] λ/B Σ_b f_bi ‖W_dec[i]‖ = λ/B (Σ_b f_bi) W_dec[i] / ‖W_dec[i]‖.
    let lambda = ctx.lambda();
    if lambda > F::zero() {
        for (i, mut g_row) in grads.w_dec.outer_iter_mut().enumerate() {
            if norms[i] > F::zero() {
                let c = lambda * ctx.inv_b * act_sums[i] / norms[i];
                g_row.scaled_add(c, &p.w_dec.row(i));
            }
        }
    }
    let rows = x.nrows() as f64;
    let mse = sse / rows;
    let sparsity = spec.l1_coefficient * sparsity / rows;
    let aux = aux.map_or(0.0, |a| a.weight * aux_sse / rows);
    let sparsity = if lambda > F::zero() || theta.is_some() {
        sparsity
    } else {
        0.0
    };
    let terms = LossTerms {
        total: mse + sparsity + aux,
        mse,
        sparsity,
        aux,
        l0: active as f64 / rows,
        fired,
        min_active,
        batch_threshold: t.as_f64(),
    };
    Ok((terms, grads))
}

#[derive(Clone, Copy)]
struct ResolvedAux<'a> {
    dead: &'a [bool],
    k: usize,
    weight: f64,
}

struct Ctx<'a, 'p, F> {
    p: &'a Params<'p, F>,
    spec: &'a LossSpec<'a>,
    aux: Option<ResolvedAux<'a>>,
    norms: ArrayView1<'a, F>, // (d_sae)
    inv_b: F,
    theta: Option<ArrayView1<'a, F>>, // (d_sae) JumpReLU threshold
    batch_t: F,                       // BatchTopK threshold
}

struct ChunkOut<F> {
    grads: Grads<F>,
    act_sums: Array1<F>, // (d_sae)
    sse: f64,
    weighted_l1: f64,
    aux_sse: f64,
    active: usize,
    fired: Vec<bool>,
    min_active: f64,
}

impl<F: Real> Ctx<'_, '_, F> {
    fn lambda(&self) -> F {
        match self.spec.architecture {
            Architecture::Standard if self.spec.l1_coefficient > 0.0 => {
                F::of(self.spec.l1_coefficient)
            }
            _ => F::zero(),
        }
    }

    /// Forward and backward for one chunk `x (rows, d_in)`; gradients are already
    /// divided by the whole batch's row count.
    fn chunk(&self, x: ArrayView2<'_, F>, pre: Option<Array2<F>>) -> ChunkOut<F> {
        let p = self.p;
        let apply = self.spec.apply_b_dec_to_input;
        let x_in = centred_input(p, x, apply); // (rows, d_in)
        let pre = pre.unwrap_or_else(|| {
            let mut pre = x_in.dot(&p.w_enc); // (rows, d_sae)
            pre += &p.b_enc;
            pre
        });
        let acts = match self.spec.architecture {
            Architecture::BatchTopK { .. } => {
                let t = self.batch_t;
                pre.mapv(|v| {
                    if v > F::zero() && v >= t {
                        v
                    } else {
                        F::zero()
                    }
                })
            }
            arch => activate(arch, pre.view(), self.theta),
        }; // (rows, d_sae)
        let x_hat = decode(p, acts.view()); // (rows, d_in)
        let err = &x_hat - &x; // (rows, d_in)
        let sse = sum_sq(err.view());

        let two_inv_b = F::of(2.0) * self.inv_b;
        let d_x_hat = err.mapv(|e| e * two_inv_b); // (rows, d_in)
        let mut g_w_dec = acts.t().dot(&d_x_hat); // (d_sae, d_in)
        let mut g_b_dec = d_x_hat.sum_axis(Axis(0)); // (d_in)
        let mut d_acts = d_x_hat.dot(&p.w_dec.t()); // (rows, d_sae)

        let lambda = self.lambda();
        let mut weighted_l1 = 0.0;
        if lambda > F::zero() {
            let lam_b = lambda * self.inv_b;
            for (a_row, mut d_row) in acts.outer_iter().zip(d_acts.outer_iter_mut()) {
                weighted_l1 += a_row.dot(&self.norms).as_f64();
                d_row.scaled_add(lam_b, &self.norms);
            }
        }

        // JumpReLU: θ's pseudo-derivatives, from the reconstruction through
        // −(θ/ε)K and from the L0 penalty through −(1/ε)K; the L0 count.
        let mut g_threshold = None;
        if let (Some(theta), Some(jump)) = (self.theta, self.spec.jump) {
            let eps = F::of(jump.bandwidth);
            let l0_grad = F::of(-self.spec.l1_coefficient / jump.bandwidth) * self.inv_b;
            let half = F::of(0.5);
            let mut g = Array1::<F>::zeros(theta.len()); // (d_sae)
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
            weighted_l1 = count as f64;
            g_threshold = Some(g);
        }

        // Gradient reaches the pre-activation only where the latent is active.
        let mut d_pre = d_acts; // (rows, d_sae)
        Zip::from(&mut d_pre).and(&acts).for_each(|d, &a| {
            if a <= F::zero() {
                *d = F::zero()
            }
        });

        let mut aux_sse = 0.0;
        if let Some(aux) = self.aux {
            let (z, selected) = aux_latents(pre.view(), aux.dead, aux.k); // (rows, d_sae) ×2
            let mut diff = z.dot(&p.w_dec); // ê (rows, d_in)
            diff += &err; // ê − e, since e = x − x̂ = −err
            aux_sse = sum_sq(diff.view());
            let c = F::of(2.0 * aux.weight) * self.inv_b;
            let d_e_hat = diff.mapv(|v| v * c); // (rows, d_in)
            g_w_dec += &z.t().dot(&d_e_hat);
            let d_z = d_e_hat.dot(&p.w_dec.t()); // (rows, d_sae)
            Zip::from(&mut d_pre)
                .and(&d_z)
                .and(&selected)
                .for_each(|d, &dz, &s| {
                    if s {
                        *d += dz
                    }
                });
        }

        let g_w_enc = x_in.t().dot(&d_pre); // (d_in, d_sae)
        let g_b_enc = d_pre.sum_axis(Axis(0)); // (d_sae)
        if apply {
            // x_in = x − b_dec, so b_dec also receives −W_enc · Σ_b d_pre.
            g_b_dec -= &p.w_enc.dot(&g_b_enc);
        }
        let fired = acts
            .axis_iter(Axis(1))
            .map(|col| col.iter().any(|&a| a > F::zero()))
            .collect();
        let active = acts.iter().filter(|&&a| a > F::zero()).count();
        let min_active = acts
            .iter()
            .filter(|&&a| a > F::zero())
            .fold(f64::INFINITY, |m, a| m.min(a.as_f64()));
        ChunkOut {
            grads: Grads {
                w_enc: g_w_enc,
                b_enc: g_b_enc,
                w_dec: g_w_dec,
                b_dec: g_b_dec,
                threshold: g_threshold,
            },
            min_active,
            act_sums: acts.sum_axis(Axis(0)),
            sse,
            weighted_l1,
            aux_sse,
            active,
            fired,
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
fn top_indices<'o, F: Real>(
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
