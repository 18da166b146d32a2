//! Circuit discovery over a whole dataset: node effects of every batch, their means,
//! the nodes above a threshold, the edges between them, and the faithfulness sweep.
use circuitry_core::progress::Progress;
use circuitry_models::transformer::Transformer;
use ndarray::{s, Array1, Array2, Array3};
use serde::Serialize;

use super::edgeeval::{all_edges, edges_at_least, EdgeEval, EdgeSet};
use super::edges::{add_edges, BatchState, EdgeSums, NodeRef};
use super::eval::{
    ablated_metrics, case_counts, case_means, mean_of, position_means, right_count, right_mean,
    rights, Ablation, EdgeEvalRow, Ends, EvalRow, Membership,
};
use super::nodes::{node_effects, prepare, Method, NodeEffects, Prepared};
use super::pairs::PairBatch;
use super::splice::Submodules;
use crate::Result;

/// How node effects are aggregated over token positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// One node per feature, its effect summed over positions (Marks et al.'s default).
    Sum,
    /// One node per feature and position (all prompts must have one length).
    PerPosition,
}

/// Node effects of every batch and their means over pairs.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Per batch: forward results.
    pub preps: Vec<Prepared>,
    /// Per batch: node effects.
    pub effects: Vec<NodeEffects>,
    /// Per submodule: mean feature effect over pairs, per position (seq_max, d_sae).
    pub feat: Vec<Array2<f64>>,
    /// Per submodule: mean error-node effect over pairs, per position (seq_max).
    pub err: Vec<Array1<f64>>,
    /// Per submodule: mean clean feature activation per position (seq_max, d_sae).
    pub activation: Vec<Array2<f64>>,
    /// Per submodule: mean clean ‖error‖ per position (seq_max).
    pub error_norm: Vec<Array1<f64>>,
    /// Number of pairs.
    pub n_examples: usize,
    /// Longest prompt.
    pub seq_max: usize,
}

/// Sums over pairs of node effects and clean activations, per submodule and position:
/// what a share of the pairs contributes to an [`Analysis`]. Sums of shares add up to
/// the sums over all pairs (the split of a circuit into parts rests on this).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSums {
    /// Per submodule: Σ feature effects (seq_max, d_sae).
    pub feat: Vec<Array2<f64>>,
    /// Per submodule: Σ error-node effects (seq_max).
    pub err: Vec<Array1<f64>>,
    /// Per submodule: Σ clean feature activations (seq_max, d_sae).
    pub activation: Vec<Array2<f64>>,
    /// Per submodule: Σ clean ‖error‖ (seq_max).
    pub error_norm: Vec<Array1<f64>>,
    /// Number of pairs summed.
    pub n_examples: usize,
}

impl NodeSums {
    /// Nothing summed yet, for prompts of at most `seq_max` tokens.
    pub fn zeros(subs: &Submodules, seq_max: usize) -> NodeSums {
        let zeros2 = |s: &super::splice::Submodule| Array2::<f64>::zeros((seq_max, s.d_sae()));
        NodeSums {
            feat: subs.all().iter().map(zeros2).collect(),
            err: subs.all().iter().map(|_| Array1::zeros(seq_max)).collect(),
            activation: subs.all().iter().map(zeros2).collect(),
            error_norm: subs.all().iter().map(|_| Array1::zeros(seq_max)).collect(),
            n_examples: 0,
        }
    }

    /// Add one batch: its forward results and node effects.
    pub fn add_batch(&mut self, prep: &Prepared, eff: &NodeEffects) {
        let axis = ndarray::Axis(0);
        for s in 0..self.feat.len() {
            let seq = eff.err[s].ncols();
            let mut dst = self.feat[s].slice_mut(s![..seq, ..]);
            dst += &eff.feat[s].mapv(f64::from).sum_axis(axis); // (seq, d_sae)
            let mut dst = self.err[s].slice_mut(s![..seq]);
            dst += &eff.err[s].mapv(f64::from).sum_axis(axis); // (seq)
            let mut dst = self.activation[s].slice_mut(s![..seq, ..]);
            dst += &prep.clean[s].f.mapv(f64::from).sum_axis(axis);
            let norm = super::splice::norm_last(prep.clean[s].err.view());
            let mut dst = self.error_norm[s].slice_mut(s![..seq]);
            dst += &norm.mapv(f64::from).sum_axis(axis);
        }
        self.n_examples += prep.metric.len();
    }

    /// Add another share's sums (of the same shapes).
    pub fn add(&mut self, other: &NodeSums) {
        for s in 0..self.feat.len() {
            self.feat[s] += &other.feat[s];
            self.err[s] += &other.err[s];
            self.activation[s] += &other.activation[s];
            self.error_norm[s] += &other.error_norm[s];
        }
        self.n_examples += other.n_examples;
    }
}

impl Analysis {
    /// The means of `sums`, with the batches' forward results and effects (empty when
    /// they were computed elsewhere, e.g. by the parts of a split run).
    pub fn from_sums(sums: &NodeSums, preps: Vec<Prepared>, effects: Vec<NodeEffects>) -> Analysis {
        let n = sums.n_examples.max(1) as f64;
        let mean2 = |a: &Vec<Array2<f64>>| a.iter().map(|x| x / n).collect();
        let mean1 = |a: &Vec<Array1<f64>>| a.iter().map(|x| x / n).collect();
        Analysis {
            preps,
            effects,
            feat: mean2(&sums.feat),
            err: mean1(&sums.err),
            activation: mean2(&sums.activation),
            error_norm: mean1(&sums.error_norm),
            n_examples: sums.n_examples,
            seq_max: sums.err.first().map_or(0, |e| e.len()),
        }
    }
}

/// Node effects of every batch with `method`.
pub fn analyse(
    model: &Transformer,
    subs: &Submodules,
    batches: &[PairBatch],
    method: Method,
    max_rows: usize,
) -> Result<Analysis> {
    let seq_max = batches.iter().map(PairBatch::seq).max().unwrap_or(0);
    let mut sums = NodeSums::zeros(subs, seq_max);
    let (mut preps, mut effects) = (Vec::new(), Vec::new());
    let mut progress = Progress::new(
        format!("node effects ({})", method.name()),
        "pairs",
        batches.iter().map(PairBatch::len).sum::<usize>() as u64,
    );
    for batch in batches {
        let _span = tracing::info_span!("batch", pairs = batch.len()).entered();
        let prep = prepare(model, subs, batch)?;
        let eff = node_effects(model, subs, batch, &prep, method, max_rows)?;
        sums.add_batch(&prep, &eff);
        preps.push(prep);
        effects.push(eff);
        progress.inc(batch.len() as u64);
    }
    progress.finish();
    Ok(Analysis::from_sums(&sums, preps, effects))
}

/// A node with its mean effect and mean activation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredNode {
    /// The node.
    pub node: NodeRef,
    /// Mean effect over pairs (summed over positions for [`Aggregation::Sum`]).
    pub effect: f64,
    /// Mean clean activation (error node: mean ‖error‖), summed likewise.
    pub activation: f64,
}

impl Analysis {
    /// Every node of the model's SAEs with its mean effect, aggregated.
    pub fn scored_nodes(&self, aggregation: Aggregation) -> Vec<ScoredNode> {
        let mut out = Vec::new();
        for s in 0..self.feat.len() {
            let d_sae = self.feat[s].ncols();
            let positions: Vec<Option<usize>> = match aggregation {
                Aggregation::Sum => vec![None],
                Aggregation::PerPosition => (0..self.seq_max).map(Some).collect(),
            };
            for position in positions {
                let rows = match position {
                    Some(p) => p..p + 1,
                    None => 0..self.seq_max,
                };
                for i in 0..d_sae {
                    let col = self.feat[s].slice(s![rows.clone(), i]);
                    let act = self.activation[s].slice(s![rows.clone(), i]);
                    out.push(ScoredNode {
                        node: NodeRef {
                            sub: s,
                            position,
                            feature: Some(i),
                        },
                        effect: col.sum(),
                        activation: act.sum(),
                    });
                }
                out.push(ScoredNode {
                    node: NodeRef {
                        sub: s,
                        position,
                        feature: None,
                    },
                    effect: self.err[s].slice(s![rows.clone()]).sum(),
                    activation: self.error_norm[s].slice(s![rows]).sum(),
                });
            }
        }
        out
    }
}

/// The nodes whose |mean effect| exceeds `threshold`.
pub fn select(scored: &[ScoredNode], threshold: f64) -> Vec<NodeRef> {
    scored
        .iter()
        .filter(|n| n.effect.abs() > threshold)
        .map(|n| n.node)
        .collect()
}

/// Mean edge weights over pairs between `nodes` (and from them to the metric).
pub fn mean_edges(
    model: &Transformer,
    subs: &Submodules,
    batches: &[PairBatch],
    analysis: &Analysis,
    nodes: &[NodeRef],
    max_rows: usize,
) -> Result<EdgeSums> {
    let grads: Vec<&[Array3<f32>]> = analysis.effects.iter().map(|e| e.grad.as_slice()).collect();
    let mut sums = edge_sums(
        model,
        subs,
        batches,
        &analysis.preps,
        &grads,
        nodes,
        max_rows,
    )?;
    let n = analysis.n_examples.max(1) as f64;
    for v in sums.values_mut() {
        *v /= n;
    }
    Ok(sums)
}

/// Edge weights between `nodes` (and from them to the metric) summed over the pairs
/// of `batches`, given each batch's forward results and node-effect gradients
/// ([`NodeEffects::grad`]).
pub fn edge_sums(
    model: &Transformer,
    subs: &Submodules,
    batches: &[PairBatch],
    preps: &[Prepared],
    grads: &[&[Array3<f32>]],
    nodes: &[NodeRef],
    max_rows: usize,
) -> Result<EdgeSums> {
    let mut sums = EdgeSums::new();
    let mut progress = Progress::new(
        format!("edges between {} nodes", nodes.len()),
        "pairs",
        batches.iter().map(PairBatch::len).sum::<usize>() as u64,
    );
    for ((batch, prep), grad) in batches.iter().zip(preps).zip(grads) {
        let state = BatchState { batch, prep, grad };
        add_edges(model, subs, state, nodes, max_rows, &mut sums)?;
        progress.inc(batch.len() as u64);
    }
    progress.finish();
    Ok(sums)
}

/// The circuits a node sweep evaluates: every node kept (`F(M)`), none (`F(∅)`), then
/// for each threshold the circuit and its complement.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    /// The thresholds.
    pub thresholds: Vec<f64>,
    /// Every node, the empty circuit, then per threshold the circuit and its complement.
    pub keep: Vec<Membership>,
    /// Per threshold: the circuit's node count.
    pub nodes: Vec<usize>,
    /// Number of nodes of the model's SAEs.
    pub total: usize,
}

impl SweepPlan {
    /// The circuits at `thresholds` of the nodes of `analysis` (aggregated as given).
    pub fn new(
        subs: &Submodules,
        analysis: &Analysis,
        aggregation: Aggregation,
        thresholds: &[f64],
    ) -> SweepPlan {
        let per_position = (aggregation == Aggregation::PerPosition).then_some(analysis.seq_max);
        let scored = analysis.scored_nodes(aggregation);
        let mut keep = vec![
            Membership::filled(subs, true),
            Membership::filled(subs, false),
        ];
        let mut nodes = Vec::new();
        for &t in thresholds {
            let chosen = select(&scored, t);
            let circuit = Membership::of(subs, &chosen, per_position);
            let complement = circuit.complement();
            keep.extend([circuit, complement]);
            nodes.push(chosen.len());
        }
        SweepPlan {
            thresholds: thresholds.to_vec(),
            keep,
            nodes,
            total: scored.len(),
        }
    }
}

/// Per circuit of `plan`, the metric of every pair of `batches` (one array per batch)
/// with the nodes outside it ablated: the node sweep's runs over a share of the pairs.
/// `batches` is a run of the dataset's batches with the index of its first; `means`
/// are the per-position means over all pairs.
#[allow(clippy::too_many_arguments)]
pub fn sweep_metrics(
    model: &Transformer,
    subs: &Submodules,
    batches: (&[PairBatch], usize),
    preps: &[Prepared],
    means: &[(Array2<f32>, Array2<f32>)],
    plan: &SweepPlan,
    ablation: Ablation,
) -> Result<Vec<Vec<Array1<f32>>>> {
    let mut progress = Progress::new("faithfulness sweep", "ablated runs", plan.keep.len() as u64);
    let mut out = Vec::with_capacity(plan.keep.len());
    for keep in &plan.keep {
        out.push(ablated_metrics(
            model, subs, batches, preps, means, keep, ablation,
        )?);
        progress.inc(1);
    }
    progress.finish();
    Ok(out)
}

/// The node sweep's ends and rows from [`sweep_metrics`] over all pairs (`metrics`: per
/// circuit of `plan`, one array per batch of `batches`); `right`: per batch, whether the
/// model gets each pair right.
pub fn sweep_rows(
    batches: &[PairBatch],
    right: &[Array1<bool>],
    plan: &SweepPlan,
    metrics: &[Vec<Array1<f32>>],
) -> (Ends, Vec<EvalRow>) {
    let eval = |per_pair: &[Array1<f32>]| {
        (
            mean_of(per_pair),
            case_means(batches, per_pair),
            right_mean(right, per_pair),
        )
    };
    let (f_model, f_model_by_case, f_model_right) = eval(&metrics[0]);
    let (f_empty, f_empty_by_case, f_empty_right) = eval(&metrics[1]);
    let ends = Ends {
        f_model,
        f_empty,
        f_model_by_case,
        f_empty_by_case,
        pairs_by_case: case_counts(batches),
        pairs_right: right_count(right),
        f_model_right,
        f_empty_right,
    };
    let mut rows = Vec::new();
    for (k, &t) in plan.thresholds.iter().enumerate() {
        let (f_circuit, c_by_case, c_right) = eval(&metrics[2 + 2 * k]);
        let (f_complement, m_by_case, m_right) = eval(&metrics[3 + 2 * k]);
        rows.push(EvalRow {
            threshold: t,
            nodes: plan.nodes[k],
            node_fraction: plan.nodes[k] as f64 / plan.total.max(1) as f64,
            f_circuit,
            f_complement,
            faithfulness: ends.normalise(f_circuit),
            complement_faithfulness: ends.normalise(f_complement),
            faithfulness_by_case: ends.normalise_by_case(&c_by_case),
            complement_faithfulness_by_case: ends.normalise_by_case(&m_by_case),
            faithfulness_right: ends.normalise_right(c_right),
            complement_faithfulness_right: ends.normalise_right(m_right),
        });
    }
    (ends, rows)
}

/// Faithfulness and completeness of the circuits at each threshold.
pub fn sweep(
    model: &Transformer,
    subs: &Submodules,
    batches: &[PairBatch],
    analysis: &Analysis,
    aggregation: Aggregation,
    ablation: Ablation,
    thresholds: &[f64],
) -> Result<(Ends, Vec<EvalRow>)> {
    let means = position_means(&analysis.preps);
    let plan = SweepPlan::new(subs, analysis, aggregation, thresholds);
    let metrics = sweep_metrics(
        model,
        subs,
        (batches, 0),
        &analysis.preps,
        &means,
        &plan,
        ablation,
    )?;
    Ok(sweep_rows(
        batches,
        &rights(&analysis.preps),
        &plan,
        &metrics,
    ))
}

/// Per threshold, the metric of every pair of `eval.batches` (one array per batch) with
/// the circuit `nodes` and only the edges of `sums` whose |mean weight| is at least the
/// threshold kept (every other edge between circuit nodes ablated, see
/// [`super::edgeeval`]). `per_position`: the prompt length when nodes are per position.
pub fn edge_sweep_metrics(
    eval: &EdgeEval<'_>,
    nodes: &[NodeRef],
    per_position: Option<usize>,
    sums: &EdgeSums,
    thresholds: &[f64],
) -> Result<Vec<Vec<Array1<f32>>>> {
    let mut out: Vec<Vec<Array1<f32>>> = Vec::new();
    let mut progress = Progress::new("edge faithfulness", "thresholds", thresholds.len() as u64);
    let mut previous: Option<EdgeSet> = None;
    for &t in thresholds {
        let _span = tracing::info_span!("edge threshold", t).entered();
        let edges = edges_at_least(sums, t);
        // Thresholds that keep the same edges (above the largest weight: none) give the
        // same metrics: evaluate once.
        let metrics = match (&previous, out.last()) {
            (Some(p), Some(m)) if *p == edges => m.clone(),
            _ => eval.metrics(nodes, per_position, &edges)?,
        };
        out.push(metrics);
        previous = Some(edges);
        progress.inc(1);
    }
    progress.finish();
    Ok(out)
}

/// The edge sweep's rows from [`edge_sweep_metrics`] over all pairs (`metrics`: per
/// threshold, one array per batch of `batches`), normalised by the node sweep's `ends`.
pub fn edge_sweep_rows(
    (batches, right): (&[PairBatch], &[Array1<bool>]),
    (nodes, all): (usize, usize),
    sums: &EdgeSums,
    thresholds: &[f64],
    metrics: &[Vec<Array1<f32>>],
    ends: &Ends,
) -> Vec<EdgeEvalRow> {
    thresholds
        .iter()
        .zip(metrics)
        .map(|(&t, per_pair)| {
            let kept = edges_at_least(sums, t).len();
            let f_circuit = mean_of(per_pair);
            EdgeEvalRow {
                edge_threshold: t,
                nodes,
                edges: kept,
                edge_fraction: kept as f64 / all.max(1) as f64,
                f_circuit,
                faithfulness: ends.normalise(f_circuit),
                faithfulness_by_case: ends.normalise_by_case(&case_means(batches, per_pair)),
                faithfulness_right: ends.normalise_right(right_mean(right, per_pair)),
            }
        })
        .collect()
}

/// Faithfulness of the circuit `nodes` with only the edges of `sums` whose |mean weight|
/// is at least each threshold kept (every other edge between circuit nodes ablated,
/// see [`super::edgeeval`]), normalised by the node sweep's `ends`. `per_position`: the
/// prompt length when nodes are per position.
pub fn edge_sweep(
    eval: &EdgeEval<'_>,
    nodes: &[NodeRef],
    per_position: Option<usize>,
    sums: &EdgeSums,
    thresholds: &[f64],
    ends: &Ends,
) -> Result<Vec<EdgeEvalRow>> {
    let metrics = edge_sweep_metrics(eval, nodes, per_position, sums, thresholds)?;
    let all = all_edges(eval.subs, nodes).len();
    Ok(edge_sweep_rows(
        (eval.batches, &rights(eval.preps)),
        (nodes.len(), all),
        sums,
        thresholds,
        &metrics,
        ends,
    ))
}

/// `count` thresholds log-spaced from `10^lo` to `10^hi`, ascending.
pub fn log_thresholds(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    if count <= 1 {
        return vec![10f64.powf(lo)];
    }
    (0..count)
        .map(|k| 10f64.powf(lo + (hi - lo) * k as f64 / (count - 1) as f64))
        .collect()
}

/// Pearson correlation of two equally long series (NaN when either is constant).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}
