//! Node effects of SAE features and SAE error nodes on the metric, for a batch of pairs:
//! attribution patching, integrated gradients and exact activation patching.
use circuitry_core::HookPoint;
use circuitry_models::transformer::{Backward, Forward, KvPrefix, Transformer};
use ndarray::{s, Array2, Array3, ArrayViewMut3, Axis};

use super::pairs::{answer_diff, answer_ids, answers, PairBatch};
use super::splice::{dot_last, SubState, Submodule, Submodules};
use crate::{Error, Result};

/// How node effects are estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Method {
    /// `∇m · Δa` with the gradient at the clean prompt (one forward + backward).
    Attribution,
    /// `(1/N) Σ_{k<N} ∇m(a_clean + k/N · Δa) · Δa`, one submodule interpolated at a
    /// time, as in Marks et al. (`N` forward + backward passes per submodule).
    IntegratedGradients {
        /// `N`, the number of steps (10 by default).
        steps: usize,
    },
    /// `m(patch node i to its patch value) − m(clean)`, one forward pass per node and
    /// position (batched).
    Exact,
}

impl Method {
    /// Short name (`attribution`, `ig`, `exact`).
    pub fn name(&self) -> &'static str {
        match self {
            Method::Attribution => "attribution",
            Method::IntegratedGradients { .. } => "ig",
            Method::Exact => "exact",
        }
    }
}

/// What one clean and one patch forward pass of a batch give.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Clean features and errors per submodule.
    pub clean: Vec<SubState>,
    /// Patch features and errors per submodule.
    pub patch: Vec<SubState>,
    /// `patch − clean` per submodule.
    pub delta: Vec<SubState>,
    /// The clean metric per pair (batch).
    pub metric: ndarray::Array1<f32>,
    /// Whether the model (no SAEs spliced) prefers the right verb on both sides of each
    /// pair: the clean answer on the clean prompt (`m < 0`) and the patch answer on the
    /// patch prompt.
    pub right: ndarray::Array1<bool>,
    /// Attribution gradients `∂m/∂x` at each submodule's hook (batch, seq, d_model).
    pub grad: Vec<Array3<f32>>,
    /// The clean `resid_pre` of every block (batch, seq, d_model), for exact patching.
    pub resid_pre: Vec<Array3<f32>>,
    /// The clean run's keys and values at the positions before the first one where
    /// any pair's prompts (and so any submodule's `Δ`) differ, at every block; `None`
    /// when they differ at the first position. Every run that patches a submodule
    /// between clean and patch values leaves those positions as in the clean run
    /// (attention is causal), so IG's runs start after them.
    pub prefix: Option<KvPrefix<f32>>,
}

/// Run the clean prompts (with a backward pass from the metric) and the patch prompts,
/// and encode every submodule's activations.
pub fn prepare(model: &Transformer, subs: &Submodules, batch: &PairBatch) -> Result<Prepared> {
    let n_layer = model.config().n_layer;
    let mut hooks = subs.hooks();
    let resid: Vec<HookPoint> = (0..n_layer)
        .map(|layer| HookPoint::ResidPre { layer })
        .collect();
    hooks.extend(
        resid
            .iter()
            .filter(|h| !hooks.contains(h))
            .collect::<Vec<_>>(),
    );
    let ids = answer_ids(&answers(batch), batch.len());
    let trim = subs.allow_trim(model);
    let clean = model.run(
        &Forward::tokens(batch.clean.view())
            .capture(&hooks)
            .logits_of(ids.view())
            .trim_last_block(trim)
            .trace(true),
    )?;
    let patch = model.run(
        &Forward::tokens(batch.patch.view())
            .capture(&hooks)
            .logits_of(ids.view())
            .trim_last_block(trim),
    )?;
    let logits = clean.logits.as_ref().ok_or_else(no_logits)?;
    let (metric, d_logits) = answer_diff(logits.view());
    let patch_logits = patch.logits.as_ref().ok_or_else(no_logits)?;
    let (patch_metric, _) = answer_diff(patch_logits.view());
    let right = ndarray::Zip::from(&metric)
        .and(&patch_metric)
        .map_collect(|&c, &p| c < 0.0 && p > 0.0);
    let trace = clean.trace.as_ref().ok_or_else(no_logits)?;
    let sub_hooks = subs.hooks();
    let grads = model.backward(
        trace,
        &Backward::from_logits(d_logits.view()).want(&sub_hooks),
    )?;
    let mut p = Prepared {
        clean: Vec::new(),
        patch: Vec::new(),
        delta: Vec::new(),
        metric,
        right,
        grad: Vec::new(),
        resid_pre: resid
            .iter()
            .map(|h| clean.hooks.get(h).cloned().ok_or_else(no_logits))
            .collect::<Result<_>>()?,
        prefix: None,
    };
    for sub in subs.all() {
        let get = |out: &circuitry_models::transformer::Output<f32>| {
            out.hooks.get(&sub.hook).cloned().ok_or_else(no_logits)
        };
        let c = sub.encode(get(&clean)?.view())?;
        let pt = sub.encode(get(&patch)?.view())?;
        p.delta.push(pt.minus(&c));
        p.clean.push(c);
        p.patch.push(pt);
        p.grad
            .push(grads.get(&sub.hook).cloned().ok_or_else(no_logits)?);
    }
    let same = same_prefix(batch, &p.delta);
    if same > 0 {
        p.prefix = Some(model.kv_prefix(trace, same)?);
    }
    Ok(p)
}

/// The number of leading positions where every pair's clean and patch prompts agree
/// and every submodule's `Δ` is exactly zero, at most `seq − 1` (a run needs a
/// position to compute).
fn same_prefix(batch: &PairBatch, delta: &[SubState]) -> usize {
    let (b, seq) = batch.clean.dim();
    let zero_at = |p: usize| {
        (0..b).all(|i| batch.clean[[i, p]] == batch.patch[[i, p]])
            && delta.iter().all(|d| {
                d.f.slice(s![.., p, ..]).iter().all(|&v| v == 0.0)
                    && d.err.slice(s![.., p, ..]).iter().all(|&v| v == 0.0)
            })
    };
    (0..seq.saturating_sub(1))
        .find(|&p| !zero_at(p))
        .unwrap_or(seq.saturating_sub(1))
}

fn no_logits() -> Error {
    Error::Missing {
        what: "a forward output".into(),
        detail: "the model did not return a value it was asked for (internal error)".into(),
    }
}

/// Node effects of one batch: per submodule, features (batch, seq, d_sae) and the error
/// node (batch, seq), plus the gradient used (for edges).
#[derive(Debug, Clone)]
pub struct NodeEffects {
    /// Feature effects per submodule (batch, seq, d_sae).
    pub feat: Vec<Array3<f32>>,
    /// Error-node effects per submodule (batch, seq).
    pub err: Vec<Array2<f32>>,
    /// The gradient at each hook that the effects use (batch, seq, d_model): the clean
    /// gradient for attribution and exact patching, the mean over the path for IG.
    pub grad: Vec<Array3<f32>>,
}

/// Effects of every node of every submodule on the batch's metric.
pub fn node_effects(
    model: &Transformer,
    subs: &Submodules,
    batch: &PairBatch,
    prep: &Prepared,
    method: Method,
    max_rows: usize,
) -> Result<NodeEffects> {
    let mut out = NodeEffects {
        feat: Vec::new(),
        err: Vec::new(),
        grad: Vec::new(),
    };
    for (s, sub) in subs.all().iter().enumerate() {
        let grad = match method {
            Method::Attribution | Method::Exact => prep.grad[s].clone(),
            Method::IntegratedGradients { steps } => ig_grad(
                model,
                sub,
                (
                    batch,
                    &prep.resid_pre[block_of(sub.hook)],
                    prep.prefix.as_ref(),
                ),
                (&prep.clean[s], &prep.grad[s]),
                &prep.delta[s],
                steps,
                max_rows,
            )?,
        };
        let (feat, err) = match method {
            Method::Exact => exact(model, sub, batch, prep, s, max_rows)?,
            _ => (
                sub.feature_grad_at(grad.view(), prep.delta[s].f.view()) * &prep.delta[s].f,
                dot_last(grad.view(), prep.delta[s].err.view()),
            ),
        };
        out.feat.push(feat);
        out.err.push(err);
        out.grad.push(grad);
    }
    Ok(out)
}

/// The block whose run computes `hook` (`resid_pre`, `attn_out`, `mlp_out` or
/// `resid_post` of block L: L): a run from that block's clean `resid_pre` gives the
/// hook the same input as a run from the tokens.
pub fn block_of(hook: HookPoint) -> usize {
    match hook {
        HookPoint::ResidPost { layer } => layer,
        h => h.layer().unwrap_or(0),
    }
}

/// The mean gradient at `sub`'s hook over the path `clean + k/N · delta`, `k < N`,
/// with the submodule spliced as `decode(f) + err` and everything else left to run.
/// `resid_pre` is the clean input of the hook's block ([`block_of`]): the runs start
/// there, since nothing before the hook changes along the path (the backward pass
/// stops at the hook). The first step (`k = 0`) is the clean run itself, whose
/// gradient at the hook `clean_grad` ([`prepare`]'s) is used as it is: the runs are the
/// steps `k = 1 … N−1` (the spliced `decode(f) + err` equals the clean activation up to
/// rounding). With `prefix` ([`Prepared::prefix`]) the runs compute only the positions
/// after it; at the prefix's positions, where `delta` is zero and every use of the
/// gradient is multiplied by it, the clean gradient stands in.
pub fn ig_grad(
    model: &Transformer,
    sub: &Submodule,
    (batch, resid_pre, prefix): (&PairBatch, &Array3<f32>, Option<&KvPrefix<f32>>),
    (clean, clean_grad): (&SubState, &Array3<f32>),
    delta: &SubState,
    steps: usize,
    max_rows: usize,
) -> Result<Array3<f32>> {
    let (b, seq) = batch.clean.dim();
    let pre = prefix.map_or(0, KvPrefix::len);
    let tail = seq - pre;
    let per_chunk = (max_rows / (b * tail).max(1)).clamp(1, steps.max(1));
    let mut total = clean_grad.slice(s![.., pre.., ..]).to_owned(); // (batch, tail, d): step 0
    let ans = answers(batch);
    let want = [sub.hook];
    let mut k0 = 1;
    while k0 < steps {
        let k1 = (k0 + per_chunk).min(steps);
        let n = k1 - k0;
        let input = Array3::from_shape_fn((n * b, tail, resid_pre.dim().2), |(r, p, k)| {
            resid_pre[[r % b, pre + p, k]]
        });
        let alpha = |r: usize| (k0 + r / b) as f32 / steps as f32;
        let f = Array3::from_shape_fn((n * b, tail, clean.f.dim().2), |(r, p, i)| {
            clean.f[[r % b, pre + p, i]] + alpha(r) * delta.f[[r % b, pre + p, i]]
        });
        let err = Array3::from_shape_fn((n * b, tail, clean.err.dim().2), |(r, p, i)| {
            clean.err[[r % b, pre + p, i]] + alpha(r) * delta.err[[r % b, pre + p, i]]
        });
        let spliced = sub.decode(&SubState { f, err }); // (n·batch, tail, d)
        let hook = sub.hook;
        let stacked = prefix.map(|kv| kv.repeat(n));
        let ids = answer_ids(&ans, n * b);
        let mut fwd = Forward::from_resid_pre(block_of(hook), input.view())
            .logits_of(ids.view())
            .trim_last_block(model.kept_by_trim(hook))
            .trace(true);
        if let Some(kv) = &stacked {
            fwd = fwd.prefix(kv);
        }
        let out = model.run_with(&fwd, |h: HookPoint, mut act: ArrayViewMut3<'_, f32>| {
            if h == hook {
                act.assign(&spliced);
            }
            Ok::<(), Error>(())
        })?;
        let logits = out.logits.as_ref().ok_or_else(no_logits)?;
        let (_, d_logits) = answer_diff(logits.view());
        let trace = out.trace.as_ref().ok_or_else(no_logits)?;
        let g = model.backward(trace, &Backward::from_logits(d_logits.view()).want(&want))?;
        let g = g.get(&hook).ok_or_else(no_logits)?;
        for j in 0..n {
            total += &g.slice(s![j * b..(j + 1) * b, .., ..]);
        }
        k0 = k1;
    }
    let mut mean = clean_grad.clone();
    mean.slice_mut(s![.., pre.., ..])
        .assign(&(total / steps as f32));
    Ok(mean)
}

/// One exact-patching variant at a position: pair `b`, feature `i` (`None`: error).
#[derive(Debug, Clone, Copy)]
struct Variant {
    b: usize,
    i: Option<usize>,
}

/// Exact effects: every (pair, position, node) whose patch value differs is patched
/// alone, the model run from the clean `resid_pre` of the submodule's block. A variant
/// at position `p` changes nothing before `p` (causal attention), so its run computes
/// positions `p..` only, attending to the clean run's keys and values of the positions
/// before ([`KvPrefix`]); variants are batched by position.
fn exact(
    model: &Transformer,
    sub: &Submodule,
    batch: &PairBatch,
    prep: &Prepared,
    s: usize,
    max_rows: usize,
) -> Result<(Array3<f32>, Array2<f32>)> {
    let delta = &prep.delta[s];
    let (b, seq, d_sae) = delta.f.dim();
    // Per position: the variants there.
    let mut at: Vec<Vec<Variant>> = vec![Vec::new(); seq];
    for bi in 0..b {
        for (p, here) in at.iter_mut().enumerate() {
            for i in 0..d_sae {
                if delta.f[[bi, p, i]] != 0.0 {
                    here.push(Variant { b: bi, i: Some(i) });
                }
            }
            if delta.err.slice(s![bi, p, ..]).iter().any(|&v| v != 0.0) {
                here.push(Variant { b: bi, i: None });
            }
        }
    }
    let layer = block_of(sub.hook);
    let resid = &prep.resid_pre[layer]; // (batch, seq, d)
    let d = resid.dim().2;
    let ans = answers(batch);
    let mut feat = Array3::zeros((b, seq, d_sae));
    let mut err = Array2::zeros((b, seq));
    // The clean run from the block, traced for its keys and values (one pass of the
    // batch; only needed when some variant is after the first position).
    let clean = if at.iter().skip(1).any(|v| !v.is_empty()) {
        model
            .run(
                &Forward::from_resid_pre(layer, resid.view())
                    .logits(false)
                    .trace(true),
            )?
            .trace
    } else {
        None
    };
    for (p, variants) in at.iter().enumerate().filter(|(_, v)| !v.is_empty()) {
        let prefix = match (&clean, p) {
            (_, 0) => None,
            (Some(trace), _) => Some(model.kv_prefix(trace, p)?),
            (None, _) => return Err(no_logits()),
        };
        let tail = seq - p;
        let per_chunk = (max_rows / tail.max(1)).max(1);
        for chunk in variants.chunks(per_chunk) {
            let v = chunk.len();
            let input =
                Array3::from_shape_fn((v, tail, d), |(r, q, k)| resid[[chunk[r].b, p + q, k]]);
            // The patch, at the first position of the run (position p).
            let mut add = Array3::<f32>::zeros((v, tail, d));
            for (r, var) in chunk.iter().enumerate() {
                let mut row = add.slice_mut(s![r, 0, ..]);
                match var.i {
                    Some(i) => row.scaled_add(delta.f[[var.b, p, i]], &sub.direction(i)),
                    None => row.assign(&delta.err.slice(s![var.b, p, ..])),
                }
            }
            let rows = prefix
                .as_ref()
                .map(|kv| kv.rows(&chunk.iter().map(|v| v.b).collect::<Vec<_>>()));
            let var_ans: Vec<(u32, u32)> = chunk.iter().map(|v| ans[v.b]).collect();
            let ids = answer_ids(&var_ans, v);
            let mut fwd = Forward::from_resid_pre(layer, input.view())
                .logits_of(ids.view())
                .trim_last_block(model.kept_by_trim(sub.hook));
            if let Some(kv) = &rows {
                fwd = fwd.prefix(kv);
            }
            let hook = sub.hook;
            let out = model.run_with(&fwd, |h: HookPoint, mut act: ArrayViewMut3<'_, f32>| {
                if h == hook {
                    act += &add;
                }
                Ok::<(), Error>(())
            })?;
            let logits = out.logits.as_ref().ok_or_else(no_logits)?;
            let (m, _) = answer_diff(logits.view());
            for (r, var) in chunk.iter().enumerate() {
                let e = m[r] - prep.metric[var.b];
                match var.i {
                    Some(i) => feat[[var.b, p, i]] = e,
                    None => err[[var.b, p]] = e,
                }
            }
        }
    }
    Ok((feat, err))
}

/// Sum of a node-effect array over pairs: features (seq, d_sae) and error (seq).
pub fn sum_over_batch(
    feat: &Array3<f32>,
    err: &Array2<f32>,
) -> (Array2<f64>, ndarray::Array1<f64>) {
    (
        feat.mapv(f64::from).sum_axis(Axis(0)),
        err.mapv(f64::from).sum_axis(Axis(0)),
    )
}
