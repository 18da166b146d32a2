//! The layers of GPT-2, each with `load`, `forward` and the vector–Jacobian product
//! of its forward with respect to its input (`backward`). Activations are flattened to
//! rows: `(rows, width)` with `rows = batch * seq`.
use circuitry_core::Gpt2Config;
use ndarray::linalg::general_mat_mul;
use ndarray::parallel::prelude::*;
use ndarray::{s, Array1, Array2, Array4, ArrayView2, Axis, Zip};

use super::{get1, get2, Fetch, Scalar};
use crate::Result;

/// Fewest rows per parallel task in [`matmul`].
const MIN_ROW_CHUNK: usize = 16;

/// `x · w`, parallel over one block of rows per thread (each block packs `w` once, so
/// fewer, larger blocks are faster).
pub(crate) fn matmul<A: Scalar>(
    x: ArrayView2<'_, A>, // (n, k)
    w: ArrayView2<'_, A>, // (k, m)
) -> Array2<A> /* (n, m) */ {
    let mut out = Array2::zeros((x.nrows(), w.ncols()));
    let threads = rayon::current_num_threads().max(1);
    let chunk = x.nrows().div_ceil(threads).max(MIN_ROW_CHUNK);
    out.axis_chunks_iter_mut(Axis(0), chunk)
        .into_par_iter()
        .zip(x.axis_chunks_iter(Axis(0), chunk).into_par_iter())
        .for_each(|(mut o, xc)| general_mat_mul(A::one(), &xc, &w, A::zero(), &mut o));
    out
}

/// LayerNorm over the last axis: `(x - mean) / sqrt(var + eps) * weight + bias`.
#[derive(Debug, Clone)]
pub struct LayerNorm<A: Scalar> {
    /// Gain.
    pub weight: Array1<A>, // (d)
    /// Bias.
    pub bias: Array1<A>, // (d)
    /// Added to the variance.
    pub eps: A,
}

/// What LayerNorm's backward needs.
#[derive(Debug, Clone)]
pub(crate) struct LnCache<A> {
    /// The normalised input, before gain and bias.
    xhat: Array2<A>, // (rows, d)
    /// `1 / sqrt(var + eps)` per row.
    rstd: Array1<A>, // (rows)
}

impl<A: Scalar> LayerNorm<A> {
    pub(crate) fn load(fetch: &mut Fetch<'_, A>, prefix: &str, d: usize, eps: A) -> Result<Self> {
        Ok(LayerNorm {
            weight: get1(fetch, &format!("{prefix}weight"), d)?,
            bias: get1(fetch, &format!("{prefix}bias"), d)?,
            eps,
        })
    }

    /// Normalise each row of `x` (rows, d).
    pub fn forward(&self, x: ArrayView2<'_, A>) -> Array2<A> /* (rows, d) */ {
        self.forward_cached(x).0
    }

    pub(crate) fn forward_cached(&self, x: ArrayView2<'_, A>) -> (Array2<A>, LnCache<A>) {
        let d = A::of(x.ncols() as f64);
        let mean = x.sum_axis(Axis(1)) / d; // (rows)
        let xc = &x - &mean.view().insert_axis(Axis(1)); // (rows, d)
        let var = xc.mapv(|v| v * v).sum_axis(Axis(1)) / d; // (rows)
        let rstd = var.mapv(|v| A::one() / (v + self.eps).sqrt()); // (rows)
        let xhat = xc * rstd.view().insert_axis(Axis(1));
        let y = &xhat * &self.weight + &self.bias;
        (y, LnCache { xhat, rstd })
    }

    /// `dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))`, `dxhat = dy * weight`.
    pub(crate) fn backward(&self, cache: &LnCache<A>, dy: ArrayView2<'_, A>) -> Array2<A> {
        let d = A::of(dy.ncols() as f64);
        let dxhat = &dy * &self.weight; // (rows, d)
        let mean_d = dxhat.sum_axis(Axis(1)) / d; // (rows)
        let mean_dx = (&dxhat * &cache.xhat).sum_axis(Axis(1)) / d; // (rows)
        let mut dx = dxhat - mean_d.view().insert_axis(Axis(1));
        dx = dx - &cache.xhat * &mean_dx.view().insert_axis(Axis(1));
        dx * cache.rstd.view().insert_axis(Axis(1))
    }

    pub(crate) fn cast<B: Scalar>(&self) -> LayerNorm<B> {
        LayerNorm {
            weight: self.weight.mapv(cast),
            bias: self.bias.mapv(cast),
            eps: cast(self.eps),
        }
    }
}

/// An affine map in Hugging Face's `Conv1D` layout: `y = x · weight + bias`.
#[derive(Debug, Clone)]
pub struct Linear<A: Scalar> {
    /// Weight, stored `[in, out]`.
    pub weight: Array2<A>, // (d_in, d_out)
    /// Bias.
    pub bias: Array1<A>, // (d_out)
}

impl<A: Scalar> Linear<A> {
    fn load(fetch: &mut Fetch<'_, A>, prefix: &str, d_in: usize, d_out: usize) -> Result<Self> {
        Ok(Linear {
            weight: get2(fetch, &format!("{prefix}weight"), [d_in, d_out])?,
            bias: get1(fetch, &format!("{prefix}bias"), d_out)?,
        })
    }

    /// `x · weight + bias` for `x` (rows, d_in).
    pub fn forward(&self, x: ArrayView2<'_, A>) -> Array2<A> /* (rows, d_out) */ {
        matmul(x, self.weight.view()) + &self.bias
    }

    /// `dx = dy · weightᵀ` for `dy` (rows, d_out).
    pub(crate) fn backward(&self, dy: ArrayView2<'_, A>) -> Array2<A> /* (rows, d_in) */ {
        matmul(dy, self.weight.t())
    }

    fn cast<B: Scalar>(&self) -> Linear<B> {
        Linear {
            weight: self.weight.mapv(cast),
            bias: self.bias.mapv(cast),
        }
    }
}

/// Causal multi-head self-attention: `c_attn` gives q, k, v; `c_proj` mixes the heads.
#[derive(Debug, Clone)]
pub struct Attention<A: Scalar> {
    /// Query, key and value projections, concatenated.
    pub c_attn: Linear<A>, // (d, 3 d)
    /// Output projection.
    pub c_proj: Linear<A>, // (d, d)
    /// Number of heads.
    pub n_head: usize,
}

/// What attention's backward needs.
#[derive(Debug, Clone)]
pub(crate) struct AttnCache<A> {
    qkv: Array2<A>,   // (rows, 3 d)
    probs: Array4<A>, // (batch, head, query, key)
}

impl<A: Scalar> AttnCache<A> {
    /// The attention pattern.
    pub(crate) fn probs(&self) -> &Array4<A> /* (batch, head, query, key) */ {
        &self.probs
    }
}

impl<A: Scalar> Attention<A> {
    /// `c_proj(softmax(q kᵀ / √d_head + mask) v)` for `x` (batch·seq, d) = `ln_1` output.
    /// `keys` (batch, seq) says which keys may be attended to (false: padding); a query
    /// with no allowed key (a padded one) attends causally to all keys.
    pub(crate) fn forward_cached(
        &self,
        x: ArrayView2<'_, A>,       // (rows, d)
        keys: ArrayView2<'_, bool>, // (batch, seq)
    ) -> (Array2<A>, AttnCache<A>) {
        let (batch, seq) = keys.dim();
        let d = x.ncols();
        let (nh, dh) = (self.n_head, d / self.n_head);
        let scale = A::one() / A::of(dh as f64).sqrt();
        let qkv = self.c_attn.forward(x); // (rows, 3 d)
        let heads: Vec<(Array2<A>, Array2<A>)> = (0..batch * nh)
            .into_par_iter()
            .map(|bh| {
                let (b, h) = (bh / nh, bh % nh);
                let rows = qkv.slice(s![b * seq..(b + 1) * seq, ..]); // (seq, 3 d)
                let q = rows.slice(s![.., h * dh..(h + 1) * dh]); // (seq, dh)
                let k = rows.slice(s![.., d + h * dh..d + (h + 1) * dh]); // (seq, dh)
                let v = rows.slice(s![.., 2 * d + h * dh..2 * d + (h + 1) * dh]); // (seq, dh)
                let mut p = q.dot(&k.t()) * scale; // (seq, seq)
                masked_softmax(&mut p, keys.row(b));
                let z = p.dot(&v); // (seq, dh)
                (p, z)
            })
            .collect();
        let mut z = Array2::zeros((batch * seq, d)); // (rows, d)
        let mut probs = Array4::zeros((batch, nh, seq, seq));
        for (bh, (p, zh)) in heads.into_iter().enumerate() {
            let (b, h) = (bh / nh, bh % nh);
            probs.slice_mut(s![b, h, .., ..]).assign(&p);
            z.slice_mut(s![b * seq..(b + 1) * seq, h * dh..(h + 1) * dh])
                .assign(&zh);
        }
        (self.c_proj.forward(z.view()), AttnCache { qkv, probs })
    }

    /// Gradient w.r.t. the input `x` given `dy` (rows, d) w.r.t. the output.
    pub(crate) fn backward(&self, cache: &AttnCache<A>, dy: ArrayView2<'_, A>) -> Array2<A> {
        let (batch, nh, seq, _) = cache.probs.dim();
        let d = dy.ncols();
        let dh = d / nh;
        let scale = A::one() / A::of(dh as f64).sqrt();
        let dz = self.c_proj.backward(dy); // (rows, d)
        let heads: Vec<[Array2<A>; 3]> = (0..batch * nh)
            .into_par_iter()
            .map(|bh| {
                let (b, h) = (bh / nh, bh % nh);
                let rows = cache.qkv.slice(s![b * seq..(b + 1) * seq, ..]);
                let q = rows.slice(s![.., h * dh..(h + 1) * dh]); // (seq, dh)
                let k = rows.slice(s![.., d + h * dh..d + (h + 1) * dh]);
                let v = rows.slice(s![.., 2 * d + h * dh..2 * d + (h + 1) * dh]);
                let p = cache.probs.slice(s![b, h, .., ..]); // (seq, seq)
                let dzh = dz.slice(s![b * seq..(b + 1) * seq, h * dh..(h + 1) * dh]); // (seq, dh)
                let dp = dzh.dot(&v.t()); // (seq, seq)
                let dv = p.t().dot(&dzh); // (seq, dh)
                                          // softmax: dS_ij = P_ij (dP_ij - Σ_k P_ik dP_ik)
                let row_dot = (&dp * &p).sum_axis(Axis(1)); // (seq)
                let ds = (dp - &row_dot.insert_axis(Axis(1))) * p * scale; // (seq, seq)
                [ds.dot(&k), ds.t().dot(&q), dv]
            })
            .collect();
        let mut dqkv = Array2::zeros((batch * seq, 3 * d)); // (rows, 3 d)
        for (bh, parts) in heads.into_iter().enumerate() {
            let (b, h) = (bh / nh, bh % nh);
            for (i, part) in parts.iter().enumerate() {
                let col = i * d + h * dh;
                dqkv.slice_mut(s![b * seq..(b + 1) * seq, col..col + dh])
                    .assign(part);
            }
        }
        self.c_attn.backward(dqkv.view())
    }

    fn cast<B: Scalar>(&self) -> Attention<B> {
        Attention {
            c_attn: self.c_attn.cast(),
            c_proj: self.c_proj.cast(),
            n_head: self.n_head,
        }
    }
}

/// Row-wise softmax of `scores` (query, key) over the keys `j <= i` with `keys[j]`;
/// other entries become 0. A row with no such key uses all `j <= i`.
fn masked_softmax<A: Scalar>(scores: &mut Array2<A>, keys: ndarray::ArrayView1<'_, bool>) {
    for (i, mut row) in scores.outer_iter_mut().enumerate() {
        let any = keys.iter().take(i + 1).any(|&k| k);
        let allowed = |j: usize| j <= i && (keys[j] || !any);
        let max = row
            .iter()
            .enumerate()
            .filter(|(j, _)| allowed(*j))
            .fold(A::neg_infinity(), |m, (_, &v)| m.max(v));
        let mut sum = A::zero();
        for (j, v) in row.iter_mut().enumerate() {
            *v = if allowed(j) {
                (*v - max).exp()
            } else {
                A::zero()
            };
            sum += *v;
        }
        row.mapv_inplace(|v| v / sum);
    }
}

/// The MLP: `c_proj(gelu_new(c_fc(x)))`.
#[derive(Debug, Clone)]
pub struct Mlp<A: Scalar> {
    /// Up projection.
    pub c_fc: Linear<A>, // (d, d_mlp)
    /// Down projection.
    pub c_proj: Linear<A>, // (d_mlp, d)
}

impl<A: Scalar> Mlp<A> {
    /// `c_proj(gelu_new(c_fc(x)))` for `x` (rows, d).
    pub fn forward(&self, x: ArrayView2<'_, A>) -> Array2<A> /* (rows, d) */ {
        self.c_proj.forward(gelu_new(&self.c_fc.forward(x)).view())
    }
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_C: f64 = 0.044_715;

/// `gelu_new`, GPT-2's tanh approximation:
/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
pub fn gelu_new<A: Scalar>(x: &Array2<A>) -> Array2<A> {
    let (half, k, c) = (A::of(0.5), A::of(SQRT_2_OVER_PI), A::of(GELU_C));
    x.mapv(|x| half * x * (A::one() + (k * (x + c * x * x * x)).tanh()))
}

/// `d gelu_new / dx` times `dy`, for pre-activations `x`.
pub(crate) fn gelu_new_backward<A: Scalar>(x: &Array2<A>, dy: ArrayView2<'_, A>) -> Array2<A> {
    let (half, k, c) = (A::of(0.5), A::of(SQRT_2_OVER_PI), A::of(GELU_C));
    let three_c = A::of(3.0 * GELU_C);
    let mut dx = dy.to_owned();
    Zip::from(&mut dx).and(x).for_each(|g, &x| {
        let t = (k * (x + c * x * x * x)).tanh();
        let dt = (A::one() - t * t) * k * (A::one() + three_c * x * x);
        *g *= half * (A::one() + t) + half * x * dt;
    });
    dx
}

/// One transformer block: `x + attn(ln_1(x))`, then `+ mlp(ln_2(·))`.
#[derive(Debug, Clone)]
pub struct Block<A: Scalar> {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm<A>,
    /// Causal self-attention.
    pub attn: Attention<A>,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm<A>,
    /// The MLP.
    pub mlp: Mlp<A>,
}

impl<A: Scalar> Block<A> {
    pub(crate) fn load(fetch: &mut Fetch<'_, A>, prefix: &str, cfg: &Gpt2Config) -> Result<Self> {
        let (d, eps) = (cfg.n_embd, A::of(f64::from(cfg.layer_norm_epsilon)));
        Ok(Block {
            ln_1: LayerNorm::load(fetch, &format!("{prefix}ln_1."), d, eps)?,
            attn: Attention {
                c_attn: Linear::load(fetch, &format!("{prefix}attn.c_attn."), d, 3 * d)?,
                c_proj: Linear::load(fetch, &format!("{prefix}attn.c_proj."), d, d)?,
                n_head: cfg.n_head,
            },
            ln_2: LayerNorm::load(fetch, &format!("{prefix}ln_2."), d, eps)?,
            mlp: Mlp {
                c_fc: Linear::load(fetch, &format!("{prefix}mlp.c_fc."), d, cfg.d_mlp())?,
                c_proj: Linear::load(fetch, &format!("{prefix}mlp.c_proj."), cfg.d_mlp(), d)?,
            },
        })
    }

    pub(crate) fn cast<B: Scalar>(&self) -> Block<B> {
        Block {
            ln_1: self.ln_1.cast(),
            attn: self.attn.cast(),
            ln_2: self.ln_2.cast(),
            mlp: Mlp {
                c_fc: self.mlp.c_fc.cast(),
                c_proj: self.mlp.c_proj.cast(),
            },
        }
    }
}

fn cast<A: Scalar, B: Scalar>(x: A) -> B {
    B::of(super::to_f64(x))
}
