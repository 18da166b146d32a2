//! Circuit discovery over a whole dataset: node effects of every batch, their means,
//! the nodes above a threshold, the edges between them, and the faithfulness sweep.
use std::collections::BTreeMap;

use circuitry_core::progress::Progress;
use circuitry_models::transformer::Transformer;
use ndarray::{s, Array1, Array2};
use serde::Serialize;

use super::edgeeval::{all_edges, edges_at_least, EdgeEval};
use super::edges::{add_edges, BatchState, EdgeSums, NodeRef};
use super::eval::{
    ablated_metrics, case_counts, case_means, mean_of, position_means, right_count, right_mean,
    Ablation, EdgeEvalRow, Ends, EvalRow, Membership,
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

/// Node effects of every batch with `method`.
pub fn analyse(
    model: &Transformer,
    subs: &Submodules,
    batches: &[PairBatch],
    method: Method,
    max_rows: usize,
) -> Result<Analysis> {
    let seq_max = batches.iter().map(PairBatch::seq).max().unwrap_or(0);
    let zeros2 = |s: &super::splice::Submodule| Array2::<f64>::zeros((seq_max, s.d_sae()));
    let mut a = Analysis {
        preps: Vec::new(),
        effects: Vec::new(),
        feat: subs.all().iter().map(zeros2).collect(),
        err: subs.all().iter().map(|_| Array1::zeros(seq_max)).collect(),
        activation: subs.all().iter().map(zeros2).collect(),
        error_norm: subs.all().iter().map(|_| Array1::zeros(seq_max)).collect(),
        n_examples: 0,
        seq_max,
    };
    let mut progress = Progress::new(
        format!("node effects ({})", method.name()),
        "pairs",
        batches.iter().map(PairBatch::len).sum::<usize>() as u64,
    );
    for batch in batches {
        let _span = tracing::info_span!("batch", pairs = batch.len()).entered();
        let prep = prepare(model, subs, batch)?;
        let eff = node_effects(model, subs, batch, &prep, method, max_rows)?;
        let seq = batch.seq();
        for s in 0..subs.len() {
            let f = eff.feat[s].mapv(f64::from).sum_axis(ndarray::Axis(0)); // (seq, d_sae)
            let mut dst = a.feat[s].slice_mut(s![..seq, ..]);
            dst += &f;
            let e = eff.err[s].mapv(f64::from).sum_axis(ndarray::Axis(0)); // (seq)
            let mut dst = a.err[s].slice_mut(s![..seq]);
            dst += &e;
            let act = prep.clean[s].f.mapv(f64::from).sum_axis(ndarray::Axis(0));
            let mut dst = a.activation[s].slice_mut(s![..seq, ..]);
            dst += &act;
            let norm = super::splice::norm_last(prep.clean[s].err.view())
                .mapv(f64::from)
                .sum_axis(ndarray::Axis(0));
            let mut dst = a.error_norm[s].slice_mut(s![..seq]);
            dst += &norm;
        }
        a.n_examples += batch.len();
        a.preps.push(prep);
        a.effects.push(eff);
        progress.inc(batch.len() as u64);
    }
    progress.finish();
    let n = a.n_examples.max(1) as f64;
    for s in 0..subs.len() {
        a.feat[s].mapv_inplace(|v| v / n);
        a.err[s].mapv_inplace(|v| v / n);
        a.activation[s].mapv_inplace(|v| v / n);
        a.error_norm[s].mapv_inplace(|v| v / n);
    }
    Ok(a)
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
    let mut sums = EdgeSums::new();
    let mut progress = Progress::new(
        format!("edges between {} nodes", nodes.len()),
        "pairs",
        analysis.n_examples as u64,
    );
    for ((batch, prep), effects) in batches.iter().zip(&analysis.preps).zip(&analysis.effects) {
        let state = BatchState {
            batch,
            prep,
            effects,
        };
        add_edges(model, subs, state, nodes, max_rows, &mut sums)?;
        progress.inc(batch.len() as u64);
    }
    progress.finish();
    let n = analysis.n_examples.max(1) as f64;
    for v in sums.values_mut() {
        *v /= n;
    }
    Ok(sums)
}

/// Faithfulness and completeness of the circuits at each threshold.
#[allow(clippy::too_many_arguments)]
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
    let per_position = (aggregation == Aggregation::PerPosition).then_some(analysis.seq_max);
    // F(M), F(∅), then each threshold's circuit and complement.
    let progress = std::cell::RefCell::new(Progress::new(
        "faithfulness sweep",
        "ablated runs",
        2 + 2 * thresholds.len() as u64,
    ));
    let eval = |keep: &Membership| -> Result<(f64, BTreeMap<String, f64>, Option<f64>)> {
        let per_pair = ablated_metrics(
            model,
            subs,
            batches,
            &analysis.preps,
            &means,
            keep,
            ablation,
        )?;
        progress.borrow_mut().inc(1);
        Ok((
            mean_of(&per_pair),
            case_means(batches, &per_pair),
            right_mean(&analysis.preps, &per_pair),
        ))
    };
    let (f_model, f_model_by_case, f_model_right) = eval(&Membership::filled(subs, true))?;
    let (f_empty, f_empty_by_case, f_empty_right) = eval(&Membership::filled(subs, false))?;
    let ends = Ends {
        f_model,
        f_empty,
        f_model_by_case,
        f_empty_by_case,
        pairs_by_case: case_counts(batches),
        pairs_right: right_count(&analysis.preps),
        f_model_right,
        f_empty_right,
    };
    let scored = analysis.scored_nodes(aggregation);
    let total = scored.len();
    let mut rows = Vec::new();
    for &t in thresholds {
        let nodes = select(&scored, t);
        let keep = Membership::of(subs, &nodes, per_position);
        let (f_circuit, c_by_case, c_right) = eval(&keep)?;
        let (f_complement, m_by_case, m_right) = eval(&keep.complement())?;
        rows.push(EvalRow {
            threshold: t,
            nodes: nodes.len(),
            node_fraction: nodes.len() as f64 / total.max(1) as f64,
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
    progress.into_inner().finish();
    Ok((ends, rows))
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
    let all = all_edges(eval.subs, nodes).len();
    let mut rows = Vec::new();
    let mut progress = Progress::new("edge faithfulness", "thresholds", thresholds.len() as u64);
    for &t in thresholds {
        let _span = tracing::info_span!("edge threshold", t).entered();
        let kept = edges_at_least(sums, t);
        let per_pair = eval.metrics(nodes, per_position, &kept)?;
        let f_circuit = mean_of(&per_pair);
        rows.push(EdgeEvalRow {
            edge_threshold: t,
            nodes: nodes.len(),
            edges: kept.len(),
            edge_fraction: kept.len() as f64 / all.max(1) as f64,
            f_circuit,
            faithfulness: ends.normalise(f_circuit),
            faithfulness_by_case: ends.normalise_by_case(&case_means(eval.batches, &per_pair)),
            faithfulness_right: ends.normalise_right(right_mean(eval.preps, &per_pair)),
        });
        progress.inc(1);
    }
    progress.finish();
    Ok(rows)
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
