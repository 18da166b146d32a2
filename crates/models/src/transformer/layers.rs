//! The layers of both families, each with `forward` and the vector–Jacobian product of
//! its forward with respect to its input (`backward`). Activations are flattened to
//! rows: `(rows, width)` with `rows = batch * seq`.
//!
//! | layer | GPT-2 | Llama |
//! |---|---|---|
//! | [`Norm`] | LayerNorm (gain and bias) | RMSNorm (gain) |
//! | [`Attention`] | fused `c_attn`, one key/value head per query head | `q_proj`/`k_proj`/`v_proj` fused here, grouped key/value heads, rotary positions ([`Rotary`]) |
//! | [`Mlp`] | `c_proj(gelu_new(c_fc x))` | `down_proj(silu(gate_proj x) · up_proj x)` |
use ndarray::parallel::prelude::*;
use ndarray::{
    s, Array1, Array2, Array3, Array4, ArrayView2, ArrayView3, ArrayViewMut2, Axis, CowArray, Ix2,
    Zip,
};

use super::{swiglu, Scalar};

pub(crate) use crate::gemm::matmul;
use crate::gemm::{matmul_weight, panels::Panels};

/// Which normalisation a [`Norm`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// `(x - mean) / sqrt(var + eps) * weight + bias` (GPT-2).
    LayerNorm,
    /// `x / sqrt(mean(x²) + eps) * weight` (Llama).
    RmsNorm,
}

/// A normalisation over the last axis: LayerNorm or RMSNorm.
#[derive(Debug, Clone)]
pub struct Norm<A: Scalar> {
    /// LayerNorm or RMSNorm.
    pub kind: NormKind,
    /// Gain.
    pub weight: Array1<A>, // (d)
    /// Bias (LayerNorm only).
    pub bias: Option<Array1<A>>, // (d)
    /// Added to the variance (or mean square).
    pub eps: A,
}

/// What a norm's backward needs.
#[derive(Debug, Clone)]
pub(crate) struct NormCache<A> {
    /// The normalised input, before gain and bias.
    xhat: Array2<A>, // (rows, d)
    /// `1 / sqrt(var + eps)` (or `1 / sqrt(mean(x²) + eps)`) per row.
    rstd: Array1<A>, // (rows)
}

impl<A: Scalar> NormCache<A> {
    /// The cache of `n` stacked copies of the rows.
    pub(crate) fn repeat(&self, n: usize) -> Self {
        NormCache {
            xhat: tile(&self.xhat, n),
            rstd: tile(&self.rstd, n),
        }
    }
}

/// `n` copies of `a` stacked along its first axis.
pub(crate) fn tile<A: Clone, D: ndarray::RemoveAxis>(
    a: &ndarray::Array<A, D>,
    n: usize,
) -> ndarray::Array<A, D> {
    let views = vec![a.view(); n];
    ndarray::concatenate(Axis(0), &views).expect("copies of one array have the same shape")
}

impl<A: Scalar> Norm<A> {
    /// Normalise each row of `x` (rows, d).
    pub fn forward(&self, x: ArrayView2<'_, A>) -> Array2<A> /* (rows, d) */ {
        self.forward_cached(x).0
    }

    pub(crate) fn forward_cached(&self, x: ArrayView2<'_, A>) -> (Array2<A>, NormCache<A>) {
        let d = A::of(x.ncols() as f64);
        let mut xhat = Array2::zeros(x.raw_dim());
        let mut y = Array2::zeros(x.raw_dim());
        let mut rstd = Array1::zeros(x.nrows());
        // Row by row, rows spread over rayon's threads (each row's arithmetic is the
        // same whatever the thread count).
        Zip::from(xhat.rows_mut())
            .and(y.rows_mut())
            .and(&mut rstd)
            .and(x.rows())
            .par_for_each(|mut xh, mut yr, r, xr| {
                let mean = match self.kind {
                    NormKind::LayerNorm => xr.sum() / d,
                    NormKind::RmsNorm => A::zero(),
                };
                let var = xr.fold(A::zero(), |acc, &v| acc + (v - mean) * (v - mean)) / d;
                *r = A::one() / (var + self.eps).sqrt();
                Zip::from(&mut xh)
                    .and(&mut yr)
                    .and(&xr)
                    .and(&self.weight)
                    .for_each(|xh, y, &v, &w| {
                        *xh = (v - mean) * *r;
                        *y = *xh * w;
                    });
                if let Some(b) = &self.bias {
                    yr += b;
                }
            });
        (y, NormCache { xhat, rstd })
    }

    /// LayerNorm: `dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))`; RMSNorm: the
    /// same without the `mean(dxhat)` term; `dxhat = dy * weight`.
    pub(crate) fn backward(&self, cache: &NormCache<A>, dy: ArrayView2<'_, A>) -> Array2<A> {
        let d = A::of(dy.ncols() as f64);
        let mut dx = Array2::zeros(dy.raw_dim());
        Zip::from(dx.rows_mut())
            .and(dy.rows())
            .and(cache.xhat.rows())
            .and(&cache.rstd)
            .par_for_each(|mut dxr, dyr, xh, &r| {
                Zip::from(&mut dxr)
                    .and(&dyr)
                    .and(&self.weight)
                    .for_each(|g, &y, &w| *g = y * w); // dxhat
                let mean_dx = Zip::from(&dxr)
                    .and(&xh)
                    .fold(A::zero(), |acc, &g, &x| acc + g * x)
                    / d;
                let mean_d = match self.kind {
                    NormKind::LayerNorm => dxr.sum() / d,
                    NormKind::RmsNorm => A::zero(),
                };
                Zip::from(&mut dxr)
                    .and(&xh)
                    .for_each(|g, &x| *g = (*g - mean_d - x * mean_dx) * r);
            });
        dx
    }

    pub(crate) fn cast<B: Scalar>(&self) -> Norm<B> {
        Norm {
            kind: self.kind,
            weight: self.weight.mapv(cast),
            bias: self.bias.as_ref().map(|b| b.mapv(cast)),
            eps: cast(self.eps),
        }
    }
}

/// An affine map `y = x · weight + bias`, weight stored `[in, out]` (Hugging Face's
/// GPT-2 `Conv1D` layout; Llama's `nn.Linear` weights are transposed on loading).
///
/// Products with few rows go through panel copies of the weight, one per direction,
/// built on first use ([`crate::gemm::matmul_weight`]); the weight is therefore
/// read-only once made.
#[derive(Debug, Clone)]
pub struct Linear<A: Scalar> {
    weight: Array2<A>,       // (d_in, d_out)
    bias: Option<Array1<A>>, // (d_out)
    /// Panels of `weight` for `x · weight`...
    forward_panels: Panels,
    /// ...and of `weightᵀ` for `dy · weightᵀ`.
    backward_panels: Panels,
}

impl<A: Scalar> Linear<A> {
    /// The map with `weight (d_in, d_out)` and an optional `bias (d_out)`.
    pub fn new(weight: Array2<A>, bias: Option<Array1<A>>) -> Linear<A> {
        Linear {
            weight,
            bias,
            forward_panels: Panels::default(),
            backward_panels: Panels::default(),
        }
    }

    /// The weight `(d_in, d_out)`.
    pub fn weight(&self) -> &Array2<A> {
        &self.weight
    }

    /// The bias `(d_out)`, when the layer has one.
    pub fn bias(&self) -> Option<&Array1<A>> {
        self.bias.as_ref()
    }

    /// `x · weight + bias` for `x` (rows, d_in).
    pub fn forward(&self, x: ArrayView2<'_, A>) -> Array2<A> /* (rows, d_out) */ {
        let y = matmul_weight(x, self.weight.view(), &self.forward_panels);
        match &self.bias {
            Some(b) => y + b,
            None => y,
        }
    }

    /// `dx = dy · weightᵀ` for `dy` (rows, d_out).
    pub(crate) fn backward(&self, dy: ArrayView2<'_, A>) -> Array2<A> /* (rows, d_in) */ {
        matmul_weight(dy, self.weight.t(), &self.backward_panels)
    }

    fn cast<B: Scalar>(&self) -> Linear<B> {
        Linear::new(
            self.weight.mapv(cast),
            self.bias.as_ref().map(|b| b.mapv(cast)),
        )
    }
}

/// Rotary position embeddings (Su et al. 2021) as Hugging Face Llama applies them: the
/// two halves of each head, `(x₁, x₂)`, become `(x₁ cos − x₂ sin, x₂ cos + x₁ sin)` with
/// angle `position · θ^(−2i/d_head)` for `i < d_head / 2` ("rotate half", not
/// interleaved pairs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rotary {
    /// The frequencies' base θ (`rope_theta`).
    pub theta: f64,
}

/// The rotation of every row: cos and sin of its angles.
#[derive(Debug, Clone)]
pub(crate) struct RotaryTable<A> {
    cos: Array2<A>, // (rows, d_head / 2)
    sin: Array2<A>, // (rows, d_head / 2)
}

impl Rotary {
    /// cos and sin per row for positions (batch, seq), flattened to rows.
    ///
    /// Angles follow Hugging Face's float32 arithmetic (`inv_freq` and `position ·
    /// inv_freq` rounded to f32), so long positions agree with transformers.
    pub(crate) fn table<A: Scalar>(
        &self,
        positions: ArrayView2<'_, usize>, // (batch, seq)
        d_head: usize,
    ) -> RotaryTable<A> {
        let half = d_head / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0f32 / (self.theta as f32).powf((2 * i) as f32 / d_head as f32))
            .collect();
        let rows = positions.len();
        let mut cos = Array2::zeros((rows, half));
        let mut sin = Array2::zeros((rows, half));
        for (r, &p) in positions.iter().enumerate() {
            for (i, &f) in inv_freq.iter().enumerate() {
                let angle = f64::from(p as f32 * f);
                cos[[r, i]] = A::of(angle.cos());
                sin[[r, i]] = A::of(angle.sin());
            }
        }
        RotaryTable { cos, sin }
    }
}

/// The rotary table of one forward pass, computed at its first rotary block and reused
/// by the others (every block of a model rotates with the same θ and positions; the
/// table is made anew if a block's differs).
#[derive(Debug)]
pub(crate) struct RotaryMemo<A>(Option<(Rotary, usize, RotaryTable<A>)>);

impl<A: Scalar> RotaryMemo<A> {
    pub(crate) fn new() -> Self {
        RotaryMemo(None)
    }

    fn get(&mut self, r: Rotary, positions: ArrayView2<'_, usize>, dh: usize) -> &RotaryTable<A> {
        if !matches!(&self.0, Some((seen, d, _)) if *seen == r && *d == dh) {
            self.0 = Some((r, dh, r.table(positions, dh)));
        }
        &self.0.as_ref().expect("set above").2
    }
}

impl<A: Scalar> RotaryTable<A> {
    /// Rotate the heads of width `d_head` in `x` (rows, n · d_head) in place; `inverse`
    /// applies the transpose (for gradients).
    fn apply(&self, mut x: ArrayViewMut2<'_, A>, d_head: usize, inverse: bool) {
        let half = d_head / 2;
        Zip::from(x.rows_mut())
            .and(self.cos.rows())
            .and(self.sin.rows())
            .par_for_each(|mut row, cos, sin| {
                for h in 0..row.len() / d_head {
                    for i in 0..half {
                        let (a, b) = (h * d_head + i, h * d_head + half + i);
                        let (c, s) = (cos[i], if inverse { -sin[i] } else { sin[i] });
                        let (x1, x2) = (row[a], row[b]);
                        row[a] = x1 * c - x2 * s;
                        row[b] = x2 * c + x1 * s;
                    }
                }
            });
    }
}

/// Causal multi-head self-attention with optional grouped key/value heads and rotary
/// positions: `c_attn` gives q (`n_head` heads), k and v (`n_kv_head` heads each); query
/// head `h` reads key/value head `h / (n_head / n_kv_head)`; `c_proj` mixes the heads.
#[derive(Debug, Clone)]
pub struct Attention<A: Scalar> {
    /// Query, key and value projections, concatenated: columns `[q | k | v]`.
    pub c_attn: Linear<A>, // (d, d + 2 d_kv)
    /// Output projection (`c_proj`, Llama's `o_proj`).
    pub c_proj: Linear<A>, // (d, d)
    /// Number of query heads.
    pub n_head: usize,
    /// Number of key/value heads (`n_head` without grouping).
    pub n_kv_head: usize,
    /// Rotary embeddings of q and k (Llama); `None` for learned positions (GPT-2).
    pub rotary: Option<Rotary>,
}

/// What attention's backward needs.
#[derive(Debug, Clone)]
pub(crate) struct AttnCache<A> {
    /// q, k (rotated, when rotary) and v.
    qkv: Array2<A>, // (rows, d + 2 d_kv)
    probs: Array4<A>, // (batch, head, query, prefix + key)
    rotary: Option<RotaryTable<A>>,
    /// Keys and values of positions before the rows (see `forward_cached`).
    prefix: Option<Array3<A>>, // (batch, prefix, 2 d_kv)
}

impl<A: Scalar> AttnCache<A> {
    /// The cache of `n` stacked copies of the batch.
    pub(crate) fn repeat(&self, n: usize) -> Self {
        AttnCache {
            qkv: tile(&self.qkv, n),
            probs: tile(&self.probs, n),
            rotary: self.rotary.as_ref().map(|t| RotaryTable {
                cos: tile(&t.cos, n),
                sin: tile(&t.sin, n),
            }),
            prefix: self.prefix.as_ref().map(|p| tile(p, n)),
        }
    }

    /// The attention pattern.
    pub(crate) fn probs(&self) -> &Array4<A> /* (batch, head, query, prefix + key) */ {
        &self.probs
    }

    /// q, k (rotated, when rotary) and v of the rows (rows, d + 2 d_kv).
    pub(crate) fn qkv(&self) -> &Array2<A> {
        &self.qkv
    }
}

impl<A: Scalar> Attention<A> {
    /// `(d_head, d_kv, group)`: head width, key width, query heads per key/value head.
    fn dims(&self, d: usize) -> (usize, usize, usize) {
        let dh = d / self.n_head;
        (dh, self.n_kv_head * dh, self.n_head / self.n_kv_head)
    }

    /// `c_proj(softmax(q kᵀ / √d_head + mask) v)` for `x` (batch·seq, d), the norm's
    /// output. `keys` (batch, prefix + seq) says which keys may be attended to (false:
    /// padding); a query with no allowed key (a padded one) attends causally to all
    /// keys. `positions` (batch, seq) are the rotary positions (their table comes from
    /// `memo` when an earlier block made it). `prefix` (batch, prefix,
    /// 2 d_kv): the keys (rotated) and values `[k | v]` of positions that come before
    /// the rows of `x` and are not recomputed (a [`KvPrefix`](super::KvPrefix) layer).
    /// `queries`: only each sequence's last `queries` positions attend (1 ≤ queries ≤
    /// seq); the output has those rows only (batch · queries, d), while every position
    /// still gives its key and value.
    pub(crate) fn forward_cached(
        &self,
        x: ArrayView2<'_, A>,             // (rows, d)
        keys: ArrayView2<'_, bool>,       // (batch, prefix + seq)
        positions: ArrayView2<'_, usize>, // (batch, seq)
        prefix: Option<ArrayView3<'_, A>>,
        memo: &mut RotaryMemo<A>,
        queries: usize,
    ) -> (Array2<A>, AttnCache<A>) {
        let (batch, seq) = positions.dim();
        let nq = queries;
        let first = seq - nq; // the first query's position among the rows
        let pre = prefix.map_or(0, |kv| kv.dim().1);
        let d = x.ncols();
        let (dh, dkv, group) = self.dims(d);
        let nh = self.n_head;
        let scale = A::one() / A::of(dh as f64).sqrt();
        let mut qkv = self.c_attn.forward(x); // (rows, d + 2 d_kv)
        let rotary = self.rotary.map(|r| {
            let table = memo.get(r, positions, dh).clone();
            table.apply(qkv.slice_mut(s![.., ..d + dkv]), dh, false);
            table
        });
        // One task per (sequence, key/value head): the `group` query heads that share the
        // key/value head are stacked, row `j·seq + i` = head `g·group + j` at position i,
        // so each task makes two products instead of 2 · group tiny ones.
        let nkv = self.n_kv_head;
        let groups: Vec<(Array2<A>, Array2<A>)> = (0..batch * nkv)
            .into_par_iter()
            .map(|bg| {
                let (b, g) = (bg / nkv, bg % nkv);
                let (kc, vc) = (d + g * dh, d + dkv + g * dh);
                let rows = qkv.slice(s![b * seq..(b + 1) * seq, ..]); // (seq, d + 2 d_kv)
                let q = stack_heads(rows.slice(s![first.., ..]), g * group, group, dh); // (group · nq, dh)
                let (k, v) = with_prefix(prefix, b, (rows, kc, vc), (d, dh)); // (pre + seq, dh)
                let mut p = q.dot(&k.t()) * scale; // (group · nq, pre + seq)
                for j in 0..group {
                    let rows = s![j * nq..(j + 1) * nq, ..];
                    masked_softmax(p.slice_mut(rows), keys.row(b), pre + first);
                }
                let z = p.dot(&v); // (group · nq, dh)
                (p, z)
            })
            .collect();
        let mut z = Array2::zeros((batch * nq, d)); // (batch · nq, d)
        let mut probs = Array4::zeros((batch, nh, nq, pre + seq));
        for (bg, (p, zg)) in groups.into_iter().enumerate() {
            let (b, g) = (bg / nkv, bg % nkv);
            for j in 0..group {
                let h = g * group + j;
                let own = s![j * nq..(j + 1) * nq, ..];
                probs.slice_mut(s![b, h, .., ..]).assign(&p.slice(own));
                z.slice_mut(s![b * nq..(b + 1) * nq, h * dh..(h + 1) * dh])
                    .assign(&zg.slice(own));
            }
        }
        let out = self.c_proj.forward(z.view());
        let prefix = prefix.map(|kv| kv.to_owned());
        (
            out,
            AttnCache {
                qkv,
                probs,
                rotary,
                prefix,
            },
        )
    }

    /// Gradient w.r.t. the input `x` given `dy` (rows, d) w.r.t. the output.
    /// `dy` has the query rows of the forward (batch · queries, d); the gradient has
    /// every row (batch · seq, d).
    pub(crate) fn backward(&self, cache: &AttnCache<A>, dy: ArrayView2<'_, A>) -> Array2<A> {
        let (batch, _, nq, total) = cache.probs.dim();
        let seq = cache.qkv.nrows() / batch;
        let (pre, first) = (total - seq, seq - nq);
        let prefix = cache.prefix.as_ref().map(|kv| kv.view());
        let d = dy.ncols();
        let (dh, dkv, group) = self.dims(d);
        let scale = A::one() / A::of(dh as f64).sqrt();
        let dz = self.c_proj.backward(dy); // (rows, d)
        let nkv = self.n_kv_head;
        // Per (sequence, key/value head), its query heads stacked as in the forward; the
        // products over the stacked rows sum the group's key and value gradients.
        let groups: Vec<[Array2<A>; 3]> = (0..batch * nkv)
            .into_par_iter()
            .map(|bg| {
                let (b, g) = (bg / nkv, bg % nkv);
                let (kc, vc) = (d + g * dh, d + dkv + g * dh);
                let rows = cache.qkv.slice(s![b * seq..(b + 1) * seq, ..]);
                let q = stack_heads(rows.slice(s![first.., ..]), g * group, group, dh); // (group · nq, dh)
                let (k, v) = with_prefix(prefix, b, (rows, kc, vc), (d, dh)); // (pre + seq, dh)
                let heads = g * group..(g + 1) * group;
                let p = cache
                    .probs
                    .slice(s![b, heads.clone(), .., ..])
                    .to_shape((group * nq, total))
                    .expect("a head range of one sequence's pattern")
                    .into_owned(); // (group · nq, pre + seq)
                let dz = stack_heads(dz.slice(s![b * nq..(b + 1) * nq, ..]), g * group, group, dh);
                let dp = dz.dot(&v.t()); // (group · nq, pre + seq)
                let dv = p.slice(s![.., pre..]).t().dot(&dz); // (seq, dh); the prefix's: constants
                let row_dot = (&dp * &p).sum_axis(Axis(1)); // dS = P (dP − Σ_k P dP)
                let ds = (dp - &row_dot.insert_axis(Axis(1))) * p * scale;
                [ds.dot(&k), ds.slice(s![.., pre..]).t().dot(&q), dv]
            })
            .collect();
        let mut dqkv = Array2::zeros((batch * seq, d + 2 * dkv)); // (rows, d + 2 d_kv)
        for (bg, [dq, dk, dv]) in groups.into_iter().enumerate() {
            let (b, g) = (bg / nkv, bg % nkv);
            let (kc, vc) = (d + g * dh, d + dkv + g * dh);
            let r = b * seq..(b + 1) * seq;
            let queries = b * seq + first..(b + 1) * seq;
            for j in 0..group {
                let h = g * group + j;
                dqkv.slice_mut(s![queries.clone(), h * dh..(h + 1) * dh])
                    .assign(&dq.slice(s![j * nq..(j + 1) * nq, ..]));
            }
            dqkv.slice_mut(s![r.clone(), kc..kc + dh]).assign(&dk);
            dqkv.slice_mut(s![r, vc..vc + dh]).assign(&dv);
        }
        if let Some(table) = &cache.rotary {
            table.apply(dqkv.slice_mut(s![.., ..d + dkv]), dh, true);
        }
        self.c_attn.backward(dqkv.view())
    }

    fn cast<B: Scalar>(&self) -> Attention<B> {
        Attention {
            c_attn: self.c_attn.cast(),
            c_proj: self.c_proj.cast(),
            n_head: self.n_head,
            n_kv_head: self.n_kv_head,
            rotary: self.rotary,
        }
    }
}

/// The columns of query heads `first..first + n` (each `dh` wide) of `rows` (seq, ·),
/// stacked: (n · seq, dh), row `j · seq + i` = head `first + j` at position `i`.
fn stack_heads<A: Scalar>(rows: ArrayView2<'_, A>, first: usize, n: usize, dh: usize) -> Array2<A> {
    let seq = rows.nrows();
    let mut out = Array2::zeros((n * seq, dh));
    for j in 0..n {
        let h = first + j;
        out.slice_mut(s![j * seq..(j + 1) * seq, ..])
            .assign(&rows.slice(s![.., h * dh..(h + 1) * dh]));
    }
    out
}

/// One head's keys and values `(pre + seq, dh)` for batch row `b`: the prefix's
/// (`prefix` (batch, pre, 2 d_kv) = `[k | v]`) followed by the rows' own, the head's
/// columns `kc` and `vc` of `rows` (seq, d + 2 d_kv); views when there is no prefix.
#[allow(clippy::type_complexity)]
fn with_prefix<'a, A: Scalar>(
    prefix: Option<ArrayView3<'a, A>>,
    b: usize,
    (rows, kc, vc): (ArrayView2<'a, A>, usize, usize),
    (d, dh): (usize, usize),
) -> (CowArray<'a, A, Ix2>, CowArray<'a, A, Ix2>) {
    let k = rows.slice_move(s![.., kc..kc + dh]);
    let v = rows.slice_move(s![.., vc..vc + dh]);
    let Some(kv) = prefix else {
        return (k.into(), v.into());
    };
    let (pk, pv) = (kc - d, vc - d); // the head's columns in the prefix's [k | v]
    let cat = |p: ArrayView2<'_, A>, own: ArrayView2<'_, A>| {
        ndarray::concatenate(Axis(0), &[p, own]).expect("both slices are dh columns wide")
    };
    (
        cat(kv.slice(s![b, .., pk..pk + dh]), k).into(),
        cat(kv.slice(s![b, .., pv..pv + dh]), v).into(),
    )
}

/// Row-wise softmax of `scores` (query, key) over the keys `j <= i` with `keys[j]`;
/// other entries become 0. A row with no such key uses all `j <= i`. Row `r` is the
/// query at `i = pre + r` (the first `pre` keys are a prefix's).
fn masked_softmax<A: Scalar>(
    mut scores: ArrayViewMut2<'_, A>, // (seq, pre + seq)
    keys: ndarray::ArrayView1<'_, bool>,
    pre: usize,
) {
    for (r, mut row) in scores.outer_iter_mut().enumerate() {
        let i = pre + r; // the query's place in the sequence
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

/// The MLP's nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_new(pre)` (GPT-2); the input projection has width `d_mlp`.
    GeluNew,
    /// `silu(gate) · up` (Llama); the input projection is `[gate | up]`, width `2 d_mlp`.
    SwiGlu,
}

/// The MLP: `w_out(act(w_in x))`. GPT-2: `w_in` = `c_fc`, `w_out` = `c_proj`. Llama:
/// `w_in` = `[gate_proj | up_proj]` (fused), `w_out` = `down_proj`.
#[derive(Debug, Clone)]
pub struct Mlp<A: Scalar> {
    /// Input projection.
    pub w_in: Linear<A>, // (d, d_mlp) or (d, 2 d_mlp)
    /// Output projection.
    pub w_out: Linear<A>, // (d_mlp, d)
    /// The nonlinearity between them.
    pub act: Activation,
}

impl<A: Scalar> Mlp<A> {
    /// `w_out(act(w_in x))` for `x` (rows, d).
    pub fn forward(&self, x: ArrayView2<'_, A>) -> Array2<A> /* (rows, d) */ {
        self.w_out
            .forward(self.activate(&self.w_in.forward(x)).view())
    }

    /// `mlp.hook_post` from the input projection's output `pre` (rows, d_mlp or 2 d_mlp).
    pub fn activate(&self, pre: &Array2<A>) -> Array2<A> /* (rows, d_mlp) */ {
        match self.act {
            Activation::GeluNew => gelu_new(pre),
            Activation::SwiGlu => {
                let m = pre.ncols() / 2;
                let pre = pre.as_standard_layout();
                let mut out = Array2::zeros((pre.nrows(), m));
                Zip::from(out.rows_mut())
                    .and(pre.rows())
                    .par_for_each(|mut o, p| {
                        let (o, p) = (o.as_slice_mut(), p.as_slice());
                        let (o, p) = (o.expect("a new array's row"), p.expect("standard layout"));
                        swiglu::forward(&p[..m], &p[m..], o);
                    });
                out
            }
        }
    }

    /// Gradient at `pre` given `dy` (rows, d_mlp) at [`activate`](Self::activate)'s output.
    pub(crate) fn activate_backward(&self, pre: &Array2<A>, dy: ArrayView2<'_, A>) -> Array2<A> {
        match self.act {
            Activation::GeluNew => gelu_new_backward(pre, dy),
            Activation::SwiGlu => {
                let m = pre.ncols() / 2;
                let (pre, dy) = (pre.as_standard_layout(), dy.as_standard_layout());
                let mut d = Array2::zeros(pre.dim()); // (rows, 2 d_mlp)
                Zip::from(d.rows_mut())
                    .and(pre.rows())
                    .and(dy.rows())
                    .par_for_each(|mut dr, p, y| {
                        let dr = dr.as_slice_mut().expect("a new array's row");
                        let (p, y) = (p.as_slice(), y.as_slice());
                        let (p, y) = (p.expect("standard layout"), y.expect("standard layout"));
                        let (dg, du) = dr.split_at_mut(m);
                        swiglu::backward((&p[..m], &p[m..], y), dg, du);
                    });
                d
            }
        }
    }

    fn cast<B: Scalar>(&self) -> Mlp<B> {
        Mlp {
            w_in: self.w_in.cast(),
            w_out: self.w_out.cast(),
            act: self.act,
        }
    }
}

/// `gelu_new`, GPT-2's tanh approximation:
/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, computed as its equal
/// `x σ(2u)`, `u = √(2/π) (x + 0.044715 x³)` (`gelu`: no call per element, and
/// no cancellation in `1 + tanh` where `u` is negative).
pub fn gelu_new<A: Scalar>(x: &Array2<A>) -> Array2<A> {
    let mut out = Array2::zeros(x.raw_dim());
    Zip::from(out.rows_mut())
        .and(x.rows())
        .par_for_each(|mut o, x| match (o.as_slice_mut(), x.as_slice()) {
            (Some(o), Some(x)) => super::gelu::forward(x, o),
            _ => o.zip_mut_with(&x, |o, &x| *o = super::gelu::value(x)),
        });
    out
}

/// `d gelu_new / dx` times `dy`, for pre-activations `x`.
pub(crate) fn gelu_new_backward<A: Scalar>(x: &Array2<A>, dy: ArrayView2<'_, A>) -> Array2<A> {
    let mut dx = dy.to_owned();
    Zip::from(dx.rows_mut())
        .and(x.rows())
        .par_for_each(|mut g, x| match (g.as_slice_mut(), x.as_slice()) {
            (Some(g), Some(x)) => super::gelu::backward(x, g),
            _ => g.zip_mut_with(&x, |g, &x| *g *= super::gelu::slope(x)),
        });
    dx
}

/// One transformer block: `x + attn(ln_1(x))`, then `+ mlp(ln_2(·))` (Llama's
/// `input_layernorm` and `post_attention_layernorm` are `ln_1` and `ln_2`).
#[derive(Debug, Clone)]
pub struct Block<A: Scalar> {
    /// Norm before attention.
    pub ln_1: Norm<A>,
    /// Causal self-attention.
    pub attn: Attention<A>,
    /// Norm before the MLP.
    pub ln_2: Norm<A>,
    /// The MLP.
    pub mlp: Mlp<A>,
}

impl<A: Scalar> Block<A> {
    pub(crate) fn cast<B: Scalar>(&self) -> Block<B> {
        Block {
            ln_1: self.ln_1.cast(),
            attn: self.attn.cast(),
            ln_2: self.ln_2.cast(),
            mlp: self.mlp.cast(),
        }
    }
}

fn cast<A: Scalar, B: Scalar>(x: A) -> B {
    B::of(super::to_f64(x))
}
