//! Evaluation of a circuit's *edges* (Marks et al. 2024 evaluate nodes only): the
//! nodes outside the circuit are ablated as in [`super::eval`], and in addition every
//! edge between circuit nodes that is not in the circuit is ablated.
//!
//! What "ablating the edge `m → n`" means: `n` (a node of submodule `d`, `m` a node of
//! a submodule directly upstream of `d`, see [`Submodules::upstream`]) is computed
//! from an input in which `m`'s contribution is replaced by `m`'s ablated value
//! (mean, zero or resample, as for nodes), while every other consumer of `m` still
//! sees `m`'s actual value. The residual stream is a sum of submodule outputs and an
//! SAE decodes linearly, so `m`'s contribution to the input of `d` is
//! `f_m · W_dec[m]` (a feature) or the error vector (an error node), and the input
//! `n` sees is
//!
//! ```text
//! x_n = x_d − Σ_{m ∈ C upstream of d, (m → n) ∉ E} (value(m) − ablated(m)) · dir(m)
//! ```
//!
//! at `m`'s positions, where `x_d` is `d`'s input in this run (the residual itself for
//! a residual submodule, `resid_pre` of the block for attention, `resid_mid` for the
//! MLP). Then `d`'s output on `x_n` is computed (identity, the block's attention, or
//! `mlp(ln_2(·))`), encoded by `d`'s SAE, and `n` takes its own value from it (its
//! feature, or the error). Nodes of `d` outside the circuit are ablated; circuit nodes
//! none of whose incoming edges are removed keep the value computed from `x_d`. The
//! metric node is treated the same way: the final residual `blocks.{L−1}.hook_resid_post`
//! loses `(value(m) − ablated(m)) · dir(m)` for each node `m` whose edge to the metric
//! is not kept.
//!
//! When a residual submodule's only upstream submodule is the residual of an earlier
//! block (no attention or MLP SAE in between, e.g. resid_pre-only SAEs), the blocks in
//! between are part of the edge (as for the edge weights, whose backward pass goes
//! through them): `x_n` is the earlier residual minus the removed contributions, run
//! through those blocks; likewise for the metric when its only upstream submodule is
//! such a residual.
//!
//! So with every edge between adjacent circuit nodes kept this is node ablation of the
//! same circuit, and with no edge kept the final residual is that of the empty circuit,
//! `F(∅)`. Cost: one extra pass of `d`'s own computation (nothing for a residual,
//! one block for attention, the MLP for an MLP) per set of removed edges into `d`'s
//! circuit nodes (nodes that lose the same upstream nodes share a pass), batched.
use std::collections::BTreeSet;

use circuitry_core::HookPoint;
use circuitry_models::transformer::{Forward, Transformer};
use ndarray::{s, Array1, Array2, Array3, ArrayView3, ArrayViewMut3};

use super::edges::{EdgeSums, NodeRef};
use super::eval::{ablate, ablated_error, ablated_feature, donor_perm, Ablation, Membership};
use super::nodes::Prepared;
use super::pairs::{answer_diff, answer_ids, answers, PairBatch};
use super::splice::{forward_order, to_rows, SubState, SubmoduleKind, Submodules};
use crate::{Error, Result};

/// The edges a circuit keeps: `(upstream, downstream)` node pairs; the metric node is
/// [`metric_node`].
pub type EdgeSet = BTreeSet<(NodeRef, NodeRef)>;

/// The metric (output) node of `subs`.
pub fn metric_node(subs: &Submodules) -> NodeRef {
    NodeRef {
        sub: subs.len(),
        position: None,
        feature: None,
    }
}

/// The edges of `sums` whose |mean weight| is at least `threshold`.
pub fn edges_at_least(sums: &EdgeSums, threshold: f64) -> EdgeSet {
    sums.iter()
        .filter(|(_, w)| w.abs() >= threshold)
        .map(|(k, _)| *k)
        .collect()
}

/// Every edge between adjacent circuit nodes and from the last submodules' circuit
/// nodes to the metric: keeping these is node ablation.
pub fn all_edges(subs: &Submodules, nodes: &[NodeRef]) -> EdgeSet {
    let mut out = EdgeSet::new();
    for d in 0..=subs.len() {
        let down: Vec<NodeRef> = if d == subs.len() {
            vec![metric_node(subs)]
        } else {
            nodes.iter().copied().filter(|n| n.sub == d).collect()
        };
        for u in subs.upstream(d) {
            for &m in nodes.iter().filter(|n| n.sub == u) {
                for &n in &down {
                    out.insert((m, n));
                }
            }
        }
    }
    out
}

/// Which circuit nodes lose which incoming edges.
#[derive(Debug, Clone)]
struct Plan {
    /// Per submodule: the circuit nodes with removed incoming edges, grouped by the
    /// upstream circuit nodes whose edge to them is removed. A node's input depends on
    /// that set alone, so a group shares one extra pass: at high edge thresholds most
    /// nodes of a submodule lose every incoming edge, and their passes are one.
    down: Vec<Vec<Group>>,
    /// The upstream circuit nodes whose edge to the metric is removed.
    metric: Vec<NodeRef>,
}

/// Circuit nodes of one submodule that lose the same incoming edges.
#[derive(Debug, Clone)]
struct Group {
    /// The upstream circuit nodes whose edges to `nodes` are removed.
    removed: Vec<NodeRef>,
    /// The nodes that take their value from the pass on the input without `removed`.
    nodes: Vec<NodeRef>,
}

impl Plan {
    fn new(subs: &Submodules, nodes: &[NodeRef], edges: &EdgeSet) -> Plan {
        let removed = |n: NodeRef| -> Vec<NodeRef> {
            let up = subs.upstream(n.sub);
            nodes
                .iter()
                .copied()
                .filter(|m| up.contains(&m.sub) && !edges.contains(&(*m, n)))
                .collect()
        };
        let mut down: Vec<Vec<Group>> = vec![Vec::new(); subs.len()];
        for &n in nodes.iter().filter(|n| n.sub < subs.len()) {
            let r = removed(n);
            if r.is_empty() {
                continue;
            }
            let groups = &mut down[n.sub];
            match groups.iter_mut().find(|g| g.removed == r) {
                Some(g) => g.nodes.push(n),
                None => groups.push(Group {
                    removed: r,
                    nodes: vec![n],
                }),
            }
        }
        Plan {
            down,
            metric: removed(metric_node(subs)),
        }
    }
}

/// What evaluating edges needs: the model, its SAEs, the pairs with their forward
/// results, the per-position means, and how to ablate.
#[derive(Debug, Clone, Copy)]
pub struct EdgeEval<'a> {
    /// The model.
    pub model: &'a Transformer,
    /// Its spliced submodules.
    pub subs: &'a Submodules,
    /// The pairs: a run of the dataset's batches.
    pub batches: &'a [PairBatch],
    /// The index of `batches[0]` in the dataset (seeds resample ablation).
    pub first_batch: usize,
    /// Their clean/patch states (for resample ablation).
    pub preps: &'a [Prepared],
    /// Per submodule: mean features (seq_max, d_sae) and errors (seq_max, d_model).
    pub means: &'a [(Array2<f32>, Array2<f32>)],
    /// What ablated nodes and edges are set to.
    pub ablation: Ablation,
    /// Most batch·seq rows of one extra pass.
    pub max_rows: usize,
}

/// The values one forward pass has produced so far.
struct RunState {
    /// Per submodule: its features and error as they went on.
    actual: Vec<Option<SubState>>,
    /// Per block: `resid_pre` and `resid_mid` as they went on (batch, seq, d_model).
    resid_pre: Vec<Option<Array3<f32>>>,
    resid_mid: Vec<Option<Array3<f32>>>,
}

impl EdgeEval<'_> {
    /// The metric of every pair (one array per batch) with the nodes outside `nodes`
    /// ablated and every edge between circuit nodes (and to the metric) that is not in
    /// `edges` ablated. `per_position`: the prompt length when nodes are per position.
    pub fn metrics(
        &self,
        nodes: &[NodeRef],
        per_position: Option<usize>,
        edges: &EdgeSet,
    ) -> Result<Vec<Array1<f32>>> {
        let keep = Membership::of(self.subs, nodes, per_position);
        let plan = Plan::new(self.subs, nodes, edges);
        self.batches
            .iter()
            .zip(self.preps)
            .enumerate()
            .map(|(bi, (batch, prep))| self.batch(self.first_batch + bi, batch, prep, &keep, &plan))
            .collect()
    }

    fn batch(
        &self,
        bi: usize,
        batch: &PairBatch,
        prep: &Prepared,
        keep: &Membership,
        plan: &Plan,
    ) -> Result<Array1<f32>> {
        let n_layer = self.model.config().n_layer;
        let donor = donor_perm(self.ablation, bi, batch.len());
        let hooks = self.subs.hooks();
        let last = HookPoint::ResidPost {
            layer: n_layer.saturating_sub(1),
        };
        let mut run = RunState {
            actual: vec![None; self.subs.len()],
            resid_pre: vec![None; n_layer],
            resid_mid: vec![None; n_layer],
        };
        let ids = answer_ids(&answers(batch), batch.len());
        let out = self.model.run_with(
            &Forward::tokens(batch.clean.view()).logits_of(ids.view()),
            |h: HookPoint, mut act: ArrayViewMut3<'_, f32>| -> Result<()> {
                if let Some(s) = hooks.iter().position(|&x| x == h) {
                    let st = self.splice(s, act.view(), prep, &donor, keep, plan, &run)?;
                    act.assign(&self.subs.all()[s].decode(&st));
                    run.actual[s] = Some(st);
                }
                match h {
                    HookPoint::ResidPre { layer } => run.resid_pre[layer] = Some(act.to_owned()),
                    HookPoint::ResidMid { layer } => run.resid_mid[layer] = Some(act.to_owned()),
                    _ => {}
                }
                if h == last && !plan.metric.is_empty() {
                    let (b, seq, d) = act.dim();
                    let delta = self.removed(&plan.metric, &run, prep, &donor, (b, seq, d))?;
                    match self.metric_through(n_layer) {
                        Some((u, start)) => {
                            let st = run.actual[u].as_ref().ok_or_else(internal)?;
                            let x = self.subs.all()[u].decode(st) - &delta;
                            let want = [last];
                            let mut o = self.model.run(
                                &Forward::from_resid_pre(start, x.view())
                                    .capture(&want)
                                    .logits(false),
                            )?;
                            act.assign(&o.hooks.remove(&last).ok_or_else(internal)?);
                        }
                        None => act -= &delta,
                    }
                }
                Ok(())
            },
        )?;
        let logits = out.logits.as_ref().ok_or_else(internal)?;
        Ok(answer_diff(logits.view()).0)
    }

    /// The state of submodule `s` whose model-computed activation is `act`.
    #[allow(clippy::too_many_arguments)]
    fn splice(
        &self,
        s: usize,
        act: ArrayView3<'_, f32>,
        prep: &Prepared,
        donor: &[usize],
        keep: &Membership,
        plan: &Plan,
        run: &RunState,
    ) -> Result<SubState> {
        let sub = &self.subs.all()[s];
        let mut st = sub.encode(act)?;
        ablate(
            &mut st,
            s,
            keep,
            self.ablation,
            &self.means[s],
            &prep.clean[s],
            donor,
        );
        let todo = &plan.down[s];
        if todo.is_empty() {
            return Ok(st);
        }
        let (b, seq, d) = act.dim();
        let layer = sub.hook.layer().unwrap_or(0);
        // A residual whose only upstream submodule is an earlier residual (nothing
        // spliced in between, e.g. resid_pre-only SAEs): its input is the blocks in
        // between run on that residual, so an edge's ablation re-runs them.
        let through = self.unspliced_blocks(s);
        let base: Array3<f32> = match (sub.kind, through) {
            (SubmoduleKind::Resid, Some((u, _))) => {
                self.subs.all()[u].decode(run.actual[u].as_ref().ok_or_else(internal)?)
            }
            (SubmoduleKind::Resid, None) => act.to_owned(),
            (SubmoduleKind::Attn, _) => run.resid_pre[layer].clone().ok_or_else(internal)?,
            (SubmoduleKind::Mlp, _) => run.resid_mid[layer].clone().ok_or_else(internal)?,
        };
        let per_chunk = (self.max_rows / (b * seq).max(1)).max(1);
        for chunk in todo.chunks(per_chunk) {
            let k = chunk.len();
            let mut input = Array3::<f32>::zeros((k * b, seq, d)); // (k·batch, seq, d)
            for (j, group) in chunk.iter().enumerate() {
                let delta = self.removed(&group.removed, run, prep, donor, (b, seq, d))?;
                input
                    .slice_mut(s![j * b..(j + 1) * b, .., ..])
                    .assign(&(&base - &delta));
            }
            let out = match sub.kind {
                SubmoduleKind::Resid => match through {
                    Some((_, start)) => {
                        let want = [sub.hook];
                        let mut o = self.model.run(
                            &Forward::from_resid_pre(start, input.view())
                                .capture(&want)
                                .logits(false),
                        )?;
                        o.hooks.remove(&sub.hook).ok_or_else(internal)?
                    }
                    None => input,
                },
                SubmoduleKind::Attn => {
                    let want = [sub.hook];
                    let mut o = self.model.run(
                        &Forward::from_resid_pre(layer, input.view())
                            .capture(&want)
                            .logits(false),
                    )?;
                    o.hooks.remove(&sub.hook).ok_or_else(internal)?
                }
                SubmoduleKind::Mlp => {
                    let block = &self.model.blocks()[layer];
                    let h = block
                        .mlp
                        .forward(block.ln_2.forward(to_rows(input.view()).view()).view());
                    super::splice::from_rows(h, k * b, seq)
                }
            };
            let enc = sub.encode(out.view())?;
            let taken = chunk
                .iter()
                .enumerate()
                .flat_map(|(j, g)| g.nodes.iter().map(move |n| (j, n)));
            for (j, n) in taken {
                for bi in 0..b {
                    for p in n.positions(seq) {
                        match n.feature {
                            Some(i) => st.f[[bi, p, i]] = enc.f[[j * b + bi, p, i]],
                            None => st.err.slice_mut(s![bi, p, ..]).assign(&enc.err.slice(s![
                                j * b + bi,
                                p,
                                ..
                            ])),
                        }
                    }
                }
            }
        }
        Ok(st)
    }

    /// For a residual submodule `s` whose only upstream submodule is a residual `u` of
    /// an earlier block: `(u, the block u enters)`.
    fn unspliced_blocks(&self, s: usize) -> Option<(usize, usize)> {
        let subs = self.subs.all();
        match self.subs.upstream(s).as_slice() {
            [u] if subs[s].kind == SubmoduleKind::Resid
                && subs[*u].kind == SubmoduleKind::Resid =>
            {
                let (lu, _) = forward_order(subs[*u].hook)?;
                let (ls, _) = forward_order(subs[s].hook)?;
                (lu < ls).then_some((*u, lu))
            }
            _ => None,
        }
    }

    /// When the metric's only upstream submodule is a residual `u` before the last
    /// block's output: `(u, the block u enters)`.
    fn metric_through(&self, n_layer: usize) -> Option<(usize, usize)> {
        let subs = self.subs.all();
        match self.subs.upstream(subs.len()).as_slice() {
            [u] if subs[*u].kind == SubmoduleKind::Resid => {
                let (lu, _) = forward_order(subs[*u].hook)?;
                (lu < n_layer).then_some((*u, lu))
            }
            _ => None,
        }
    }

    /// `Σ_m (value(m) − ablated(m)) · dir(m)` over `nodes`, at their positions
    /// (batch, seq, d_model).
    fn removed(
        &self,
        nodes: &[NodeRef],
        run: &RunState,
        prep: &Prepared,
        donor: &[usize],
        (b, seq, d): (usize, usize, usize),
    ) -> Result<Array3<f32>> {
        let mut delta = Array3::<f32>::zeros((b, seq, d));
        for m in nodes {
            let st = run
                .actual
                .get(m.sub)
                .and_then(Option::as_ref)
                .ok_or_else(internal)?;
            let sub = &self.subs.all()[m.sub];
            let (mean, clean) = (&self.means[m.sub], &prep.clean[m.sub]);
            for (bi, &other) in donor.iter().enumerate().take(b) {
                for p in m.positions(seq) {
                    let mut row = delta.slice_mut(s![bi, p, ..]);
                    match m.feature {
                        Some(i) => {
                            let c = st.f[[bi, p, i]]
                                - ablated_feature(self.ablation, mean, clean, other, p, i);
                            if c != 0.0 {
                                row.scaled_add(c, &sub.direction(i));
                            }
                        }
                        None => {
                            row += &st.err.slice(s![bi, p, ..]);
                            row -= &ablated_error(self.ablation, mean, clean, other, p);
                        }
                    }
                }
            }
        }
        Ok(delta)
    }
}

fn internal() -> Error {
    Error::Missing {
        what: "a value of the edge-ablated forward pass".into(),
        detail: "the forward pass did not produce a value in the order expected (internal error)"
            .into(),
    }
}
