//! Edge effects between nodes of adjacent submodules (Marks et al. 2024, eq. 4–5):
//! `w(u_i → d_j) = ∇_{d_j} m · ∂d_j/∂u_i · Δu_i`, by backward passes from the downstream
//! nodes of the circuit, with every other submodule detached so that only the direct
//! path counts (resid → attn, resid → mlp, attn → mlp, attn/mlp/resid → next resid).
use std::collections::BTreeMap;

use circuitry_core::HookPoint;
use circuitry_models::gemm::matmul;
use circuitry_models::transformer::{Backward, Forward, Trace, Transformer};
use ndarray::{s, Array2, Array3, ArrayView3};

use super::nodes::{block_of, Prepared};
use super::pairs::{answer_diff, answer_ids, answers, PairBatch};
use super::splice::{from_rows, to_rows, Submodules};
use crate::{Error, Result};

/// A node of a GPT-2 circuit: a feature or the error of a submodule, at one position or
/// summed over positions; `sub == len` stands for the metric (output) node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeRef {
    /// Submodule index in forward order (`Submodules::len()` = the metric).
    pub sub: usize,
    /// Position; `None` = summed over positions.
    pub position: Option<usize>,
    /// Feature index; `None` = the error node (or the metric).
    pub feature: Option<usize>,
}

impl NodeRef {
    /// The positions of a prompt of length `seq` that the node covers.
    pub(crate) fn positions(&self, seq: usize) -> std::ops::Range<usize> {
        match self.position {
            Some(p) if p < seq => p..p + 1,
            Some(_) => 0..0,
            None => 0..seq,
        }
    }
}

/// Edge weights summed over the pairs seen so far: `(upstream, downstream) → Σ weight`.
pub type EdgeSums = BTreeMap<(NodeRef, NodeRef), f64>;

/// One batch with its forward results and node effects.
#[derive(Debug, Clone, Copy)]
pub struct BatchState<'a> {
    /// The pairs.
    pub batch: &'a PairBatch,
    /// Their clean/patch states and clean gradients.
    pub prep: &'a Prepared,
    /// Per submodule, the gradient the node effects used (batch, seq, d_model):
    /// [`NodeEffects::grad`](super::nodes::NodeEffects::grad), the left vector of the edges.
    pub grad: &'a [Array3<f32>],
}

/// Add the edges of one batch between the `nodes` of the circuit to `sums`.
/// `state.grad` gives `∇m` at each submodule (the left vector); Jacobians are taken
/// at the clean prompts; `max_rows` bounds batch·seq of one pass.
pub fn add_edges(
    model: &Transformer,
    subs: &Submodules,
    state: BatchState<'_>,
    nodes: &[NodeRef],
    max_rows: usize,
    sums: &mut EdgeSums,
) -> Result<()> {
    let BatchState { batch, prep, grad } = state;
    let (b, seq) = batch.clean.dim();
    let hooks = subs.hooks();
    for d in 0..=subs.len() {
        let down: Vec<NodeRef> = nodes.iter().copied().filter(|n| n.sub == d).collect();
        let up_idx = subs.upstream(d);
        let up_nodes: Vec<Vec<NodeRef>> = up_idx
            .iter()
            .map(|&u| nodes.iter().copied().filter(|n| n.sub == u).collect())
            .collect();
        if up_nodes.iter().all(Vec::is_empty) {
            continue;
        }
        let detach: Vec<HookPoint> = hooks
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != d)
            .map(|(_, &h)| h)
            .collect();
        let want: Vec<HookPoint> = up_idx.iter().map(|&u| hooks[u]).collect();
        if d == subs.len() {
            // The metric node: backward from the logits, every submodule detached.
            let ids = answer_ids(&answers(batch), batch.len());
            let out = model.run(
                &Forward::tokens(batch.clean.view())
                    .logits_of(ids.view())
                    .trim_last_block(subs.allow_trim(model))
                    .trace(true),
            )?;
            let logits = out.logits.as_ref().ok_or_else(internal)?;
            let (_, d_logits) = answer_diff(logits.view());
            let trace = out.trace.as_ref().ok_or_else(internal)?;
            let g = model.backward(
                trace,
                &Backward::from_logits(d_logits.view())
                    .want(&want)
                    .detach(&detach),
            )?;
            let target = NodeRef {
                sub: d,
                position: None,
                feature: None,
            };
            for (k, &u) in up_idx.iter().enumerate() {
                let gu = g.get(&hooks[u]).ok_or_else(internal)?;
                add_upstream(subs, prep, u, gu.view(), &up_nodes[k], target, sums);
            }
            continue;
        }
        if down.is_empty() {
            continue;
        }
        let sub_d = &subs.all()[d];
        let per_chunk = (max_rows / (b * seq).max(1)).max(1);
        // ∂m/∂f (batch, seq, d_sae) at the clean run's active latents: the only ones
        // whose encoder VJP is nonzero.
        let left_f = sub_d.feature_grad_at(grad[d].view(), prep.clean[d].f.view());
        // The runs start at the block of the earliest upstream hook, from its clean
        // input: nothing before it is wanted.
        let start = want.iter().map(|&h| block_of(h)).min().unwrap_or(0);
        let resid = &prep.resid_pre[start]; // (batch, seq, d_model)
                                            // Every downstream node's backward runs through the same clean forward: run it
                                            // once and stack copies of its trace, one per node of a chunk.
        let out = model.run(
            &Forward::from_resid_pre(start, resid.view())
                .logits(false)
                .trace(true),
        )?;
        let once = out.trace.as_ref().ok_or_else(internal)?;
        let mut stacked: Option<(usize, Trace<f32>)> = None;
        for group in down.chunks(per_chunk) {
            let k = group.len();
            if stacked.as_ref().is_none_or(|(n, _)| *n != k) {
                stacked = Some((k, once.repeat(k)));
            }
            let dm = model.config().d_model;
            let mut seed = Array3::<f32>::zeros((k * b, seq, dm));
            for (j, node) in group.iter().enumerate() {
                let mut part = seed.slice_mut(s![j * b..(j + 1) * b, .., ..]);
                let range = node.positions(seq);
                match node.feature {
                    Some(i) => {
                        // ∂f_i/∂x = [f_i ≠ 0] W_enc[:, i]; left = ∂m/∂f_i.
                        let mut left = Array2::<f32>::zeros((b, seq));
                        for bi in 0..b {
                            for p in range.clone() {
                                left[[bi, p]] = left_f[[bi, p, i]];
                            }
                        }
                        part.assign(&sub_d.encoder_vjp_one(prep.clean[d].f.view(), left.view(), i));
                    }
                    None => {
                        let mut left = Array3::<f32>::zeros((b, seq, dm));
                        for p in range {
                            left.slice_mut(s![.., p, ..])
                                .assign(&grad[d].slice(s![.., p, ..]));
                        }
                        part.assign(&sub_d.error_vjp(prep.clean[d].f.view(), left.view()));
                    }
                }
            }
            let trace = &stacked.as_ref().ok_or_else(internal)?.1;
            let g = model.backward(
                trace,
                &Backward::from_hook(hooks[d], seed.view())
                    .want(&want)
                    .detach(&detach),
            )?;
            for (j, &node) in group.iter().enumerate() {
                for (m, &u) in up_idx.iter().enumerate() {
                    let gu = g.get(&hooks[u]).ok_or_else(internal)?;
                    let gu = gu.slice(s![j * b..(j + 1) * b, .., ..]);
                    add_upstream(subs, prep, u, gu, &up_nodes[m], node, sums);
                }
            }
        }
    }
    Ok(())
}

/// For the gradient `gu` (batch, seq, d_model) at submodule `u` that one downstream
/// node sends, add `Σ_pairs Σ_positions (gu · W_dec[i]) Δf_i` (features) and
/// `Σ gu · Δerr` (error) to the edges from `u`'s circuit nodes.
fn add_upstream(
    subs: &Submodules,
    prep: &Prepared,
    u: usize,
    gu: ArrayView3<'_, f32>,
    up: &[NodeRef],
    target: NodeRef,
    sums: &mut EdgeSums,
) {
    if up.is_empty() {
        return;
    }
    let (b, seq, _) = gu.dim();
    let sub = &subs.all()[u];
    let delta = &prep.delta[u];
    let feats: Vec<usize> = up.iter().filter_map(|n| n.feature).collect();
    // (batch·seq, n_feats): gu · W_dec[i] for the circuit's features only.
    let dirs = Array2::from_shape_fn((feats.len(), gu.dim().2), |(r, c)| {
        sub.sae.w_dec[[feats[r], c]]
    });
    let proj = from_rows(matmul(to_rows(gu).view(), dirs.t()), b, seq); // (batch, seq, n_feats)
    let mut col = 0;
    for &n in up {
        let mut w = 0.0f64;
        match n.feature {
            Some(i) => {
                for bi in 0..b {
                    for p in n.positions(seq) {
                        w += f64::from(proj[[bi, p, col]] * delta.f[[bi, p, i]]);
                    }
                }
                col += 1;
            }
            None => {
                for bi in 0..b {
                    for p in n.positions(seq) {
                        let g = gu.slice(s![bi, p, ..]);
                        w += f64::from(g.dot(&delta.err.slice(s![bi, p, ..])));
                    }
                }
            }
        }
        *sums.entry((n, target)).or_insert(0.0) += w;
    }
}

fn internal() -> Error {
    Error::Missing {
        what: "a forward or backward output".into(),
        detail: "the model did not return a value it was asked for (internal error)".into(),
    }
}
