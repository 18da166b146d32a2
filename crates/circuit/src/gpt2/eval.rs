//! Evaluation of a circuit by ablating the nodes outside it (Marks et al. 2024, §3.2):
//! faithfulness `(F(C) − F(∅)) / (F(M) − F(∅))` and the same for the complement `M ∖ C`
//! (completeness: near 0 when the circuit holds everything that matters).
use std::collections::BTreeMap;

use circuitry_core::HookPoint;
use circuitry_models::transformer::{Forward, Transformer};
use ndarray::{s, Array1, Array2, ArrayViewMut3};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::edges::NodeRef;
use super::nodes::Prepared;
use super::pairs::{answer_diff, answer_ids, answers, PairBatch};
use super::splice::{SubState, Submodules};
use crate::{Error, Result};

/// What an ablated node is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Ablation {
    /// Its mean over the dataset (clean and patch prompts) at the same position.
    Mean,
    /// Zero (features 0, error 0: the activation becomes `b_dec`).
    Zero,
    /// Its clean value on another pair of the same batch (a seeded permutation).
    Resample {
        /// Seed of the permutation.
        seed: u64,
    },
}

/// Which nodes are in a circuit, per submodule: features (positions, d_sae) and error
/// (positions); `positions` is 1 when the nodes are summed over positions.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    feat: Vec<Array2<bool>>,
    err: Vec<Array1<bool>>,
}

impl Membership {
    /// The circuit holding `nodes` (all summed over positions, or all per position with
    /// prompts of length `seq`).
    pub fn of(subs: &Submodules, nodes: &[NodeRef], per_position: Option<usize>) -> Membership {
        let rows = per_position.unwrap_or(1);
        let mut m = Membership {
            feat: subs
                .all()
                .iter()
                .map(|s| Array2::from_elem((rows, s.d_sae()), false))
                .collect(),
            err: subs
                .all()
                .iter()
                .map(|_| Array1::from_elem(rows, false))
                .collect(),
        };
        for n in nodes.iter().filter(|n| n.sub < subs.len()) {
            let p = n.position.unwrap_or(0).min(rows - 1);
            match n.feature {
                Some(i) => m.feat[n.sub][[p, i]] = true,
                None => m.err[n.sub][p] = true,
            }
        }
        m
    }

    /// Every node in (`true`) or none (`false`).
    pub fn filled(subs: &Submodules, value: bool) -> Membership {
        let mut m = Membership::of(subs, &[], None);
        for f in &mut m.feat {
            f.fill(value);
        }
        for e in &mut m.err {
            e.fill(value);
        }
        m
    }

    /// The nodes not in `self`.
    pub fn complement(&self) -> Membership {
        Membership {
            feat: self.feat.iter().map(|f| f.mapv(|v| !v)).collect(),
            err: self.err.iter().map(|e| e.mapv(|v| !v)).collect(),
        }
    }

    /// Number of nodes in the circuit.
    pub fn count(&self) -> usize {
        let f: usize = self
            .feat
            .iter()
            .map(|f| f.iter().filter(|&&v| v).count())
            .sum();
        let e: usize = self
            .err
            .iter()
            .map(|e| e.iter().filter(|&&v| v).count())
            .sum();
        f + e
    }

    /// The membership row of position `p` (0 when nodes are summed over positions).
    pub(crate) fn row(&self, p: usize) -> usize {
        p.min(self.err.first().map_or(1, |e| e.len()) - 1)
    }
}

/// Sums of features and errors per position over the clean and patch prompts of a
/// share of the pairs, and how many prompts reached each position: the per-position
/// means of mean ablation are their totals over all pairs ([`PositionSums::means`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PositionSums {
    /// Per submodule: Σ features (seq_max, d_sae).
    pub feat: Vec<Array2<f64>>,
    /// Per submodule: Σ errors (seq_max, d_model).
    pub err: Vec<Array2<f64>>,
    /// Per position: prompts summed.
    pub count: Vec<u64>,
}

impl PositionSums {
    /// Nothing summed yet, for prompts of at most `seq_max` tokens.
    pub fn zeros(subs: &Submodules, seq_max: usize, d_model: usize) -> PositionSums {
        PositionSums {
            feat: subs
                .all()
                .iter()
                .map(|s| Array2::zeros((seq_max, s.d_sae())))
                .collect(),
            err: subs
                .all()
                .iter()
                .map(|_| Array2::zeros((seq_max, d_model)))
                .collect(),
            count: vec![0; seq_max],
        }
    }

    /// Add the clean and patch prompts of one batch.
    pub fn add_batch(&mut self, prep: &Prepared) {
        let axis = ndarray::Axis(0);
        for s in 0..self.feat.len() {
            for st in [&prep.clean[s], &prep.patch[s]] {
                let seq = st.f.dim().1;
                for p in 0..seq {
                    let mut fr = self.feat[s].row_mut(p);
                    fr += &st.f.slice(s![.., p, ..]).mapv(f64::from).sum_axis(axis);
                    let mut er = self.err[s].row_mut(p);
                    er += &st.err.slice(s![.., p, ..]).mapv(f64::from).sum_axis(axis);
                }
            }
        }
        let (b, seq) = (prep.metric.len() as u64, prep.clean[0].f.dim().1);
        for c in self.count.iter_mut().take(seq) {
            *c += 2 * b;
        }
    }

    /// Add another share's sums (of the same shapes).
    pub fn add(&mut self, other: &PositionSums) {
        for s in 0..self.feat.len() {
            self.feat[s] += &other.feat[s];
            self.err[s] += &other.err[s];
        }
        for (c, o) in self.count.iter_mut().zip(&other.count) {
            *c += o;
        }
    }

    /// Per submodule `(mean features (seq_max, d_sae), mean errors (seq_max, d_model))`;
    /// 0 at positions no prompt reached.
    pub fn means(&self) -> Vec<(Array2<f32>, Array2<f32>)> {
        let mean = |a: &Array2<f64>| {
            let mut out = Array2::<f32>::zeros(a.raw_dim());
            for (p, &c) in self.count.iter().enumerate() {
                let n = c.max(1) as f64;
                out.row_mut(p).assign(&a.row(p).mapv(|v| (v / n) as f32));
            }
            out
        };
        self.feat
            .iter()
            .zip(&self.err)
            .map(|(f, e)| (mean(f), mean(e)))
            .collect()
    }
}

/// Mean features and errors per position over clean and patch prompts of all batches:
/// per submodule `(f (seq_max, d_sae), err (seq_max, d_model))`.
pub fn position_means(preps: &[Prepared]) -> Vec<(Array2<f32>, Array2<f32>)> {
    let Some(first) = preps.first() else {
        return Vec::new();
    };
    let seq_max = preps
        .iter()
        .map(|p| p.clean[0].f.dim().1)
        .max()
        .unwrap_or(0);
    let mut sums = PositionSums {
        feat: first
            .clean
            .iter()
            .map(|st| Array2::zeros((seq_max, st.f.dim().2)))
            .collect(),
        err: first
            .clean
            .iter()
            .map(|st| Array2::zeros((seq_max, st.err.dim().2)))
            .collect(),
        count: vec![0; seq_max],
    };
    for prep in preps {
        sums.add_batch(prep);
    }
    sums.means()
}

/// The mean metric over all pairs with every node outside `keep` ablated.
pub fn ablated_metric(
    model: &Transformer,
    subs: &Submodules,
    batches: &[PairBatch],
    preps: &[Prepared],
    means: &[(Array2<f32>, Array2<f32>)],
    keep: &Membership,
    ablation: Ablation,
) -> Result<f64> {
    let per_pair = ablated_metrics(model, subs, (batches, 0), preps, means, keep, ablation)?;
    Ok(mean_of(&per_pair))
}

/// The mean of per-batch, per-pair metrics.
pub fn mean_of(per_pair: &[Array1<f32>]) -> f64 {
    let n: usize = per_pair.iter().map(Array1::len).sum();
    let total: f64 = per_pair
        .iter()
        .flat_map(|m| m.iter().map(|&v| f64::from(v)))
        .sum();
    total / n.max(1) as f64
}

/// The metric of every pair (one array per batch) with every node outside `keep`
/// ablated. `batches` is a run of the dataset's batches with the index of its first
/// (which seeds resample ablation's permutations).
pub fn ablated_metrics(
    model: &Transformer,
    subs: &Submodules,
    (batches, first_batch): (&[PairBatch], usize),
    preps: &[Prepared],
    means: &[(Array2<f32>, Array2<f32>)],
    keep: &Membership,
    ablation: Ablation,
) -> Result<Vec<Array1<f32>>> {
    let mut per_pair = Vec::new();
    for (bi, (batch, prep)) in batches.iter().zip(preps).enumerate() {
        let b = batch.len();
        let donor = donor_perm(ablation, first_batch + bi, b);
        let hooks = subs.hooks();
        let ids = answer_ids(&answers(batch), b);
        // The metric reads the last position: the last block runs there only, unless an
        // SAE sits in it past its resid_pre.
        let trim = subs.allow_trim(model);
        let out = model.run_with(
            &Forward::tokens(batch.clean.view())
                .logits_of(ids.view())
                .trim_last_block(trim),
            |h: HookPoint, mut act: ArrayViewMut3<'_, f32>| -> Result<()> {
                let Some(s) = hooks.iter().position(|&x| x == h) else {
                    return Ok(());
                };
                let sub = &subs.all()[s];
                let mut st = sub.encode(act.view())?;
                ablate(
                    &mut st,
                    s,
                    keep,
                    ablation,
                    &means[s],
                    &prep.clean[s],
                    &donor,
                );
                act.assign(&sub.decode(&st));
                Ok(())
            },
        )?;
        let logits = out.logits.as_ref().ok_or_else(|| Error::Missing {
            what: "logits".into(),
            detail: "the forward was asked for logits (internal error)".into(),
        })?;
        let (m, _) = answer_diff(logits.view());
        per_pair.push(m);
    }
    Ok(per_pair)
}

/// The donor pair of each pair of batch `bi` (resample ablation: a permutation seeded by
/// the seed and the batch index; otherwise the identity).
pub(crate) fn donor_perm(ablation: Ablation, bi: usize, b: usize) -> Vec<usize> {
    match ablation {
        Ablation::Resample { seed } => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(bi as u64));
            let mut perm: Vec<usize> = (0..b).collect();
            perm.shuffle(&mut rng);
            perm
        }
        _ => (0..b).collect(),
    }
}

/// The ablated value of feature `i` at position `p` of a pair whose donor is `other`.
pub(crate) fn ablated_feature(
    ablation: Ablation,
    mean: &(Array2<f32>, Array2<f32>),
    clean: &SubState,
    other: usize,
    p: usize,
    i: usize,
) -> f32 {
    match ablation {
        Ablation::Mean => mean.0[[p, i]],
        Ablation::Zero => 0.0,
        Ablation::Resample { .. } => clean.f[[other, p, i]],
    }
}

/// The ablated error vector at position `p` of a pair whose donor is `other` (d_model).
pub(crate) fn ablated_error(
    ablation: Ablation,
    mean: &(Array2<f32>, Array2<f32>),
    clean: &SubState,
    other: usize,
    p: usize,
) -> Array1<f32> {
    match ablation {
        Ablation::Mean => mean.1.row(p).to_owned(),
        Ablation::Zero => Array1::zeros(mean.1.ncols()),
        Ablation::Resample { .. } => clean.err.slice(s![other, p, ..]).to_owned(),
    }
}

/// Set every node of `st` (submodule `s`) that is not in `keep` to its ablated value.
pub(crate) fn ablate(
    st: &mut SubState,
    s: usize,
    keep: &Membership,
    ablation: Ablation,
    mean: &(Array2<f32>, Array2<f32>),
    clean: &SubState,
    donor: &[usize],
) {
    let (b, seq, d_sae) = st.f.dim();
    for p in 0..seq {
        let r = keep.row(p);
        let feat = keep.feat[s].row(r);
        for (bi, &other) in donor.iter().enumerate().take(b) {
            for i in 0..d_sae {
                if !feat[i] {
                    st.f[[bi, p, i]] = ablated_feature(ablation, mean, clean, other, p, i);
                }
            }
            if !keep.err[s][r] {
                st.err
                    .slice_mut(s![bi, p, ..])
                    .assign(&ablated_error(ablation, mean, clean, other, p));
            }
        }
    }
}

/// One row of the faithfulness table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRow {
    /// Node threshold on |mean effect|.
    pub threshold: f64,
    /// Nodes in the circuit.
    pub nodes: usize,
    /// `nodes` over all nodes of the model's SAEs (features + error nodes).
    pub node_fraction: f64,
    /// `F(C)`: mean metric with the nodes outside the circuit ablated.
    pub f_circuit: f64,
    /// `F(M ∖ C)`: mean metric with the circuit's nodes ablated.
    pub f_complement: f64,
    /// `(F(C) − F(∅)) / (F(M) − F(∅))`.
    pub faithfulness: f64,
    /// `(F(M ∖ C) − F(∅)) / (F(M) − F(∅))` (lower = more complete).
    pub complement_faithfulness: f64,
    /// Faithfulness per case, each case normalised by its own `F(M)` and `F(∅)`.
    pub faithfulness_by_case: BTreeMap<String, f64>,
    /// Complement faithfulness per case.
    pub complement_faithfulness_by_case: BTreeMap<String, f64>,
    /// Faithfulness over the pairs the model gets right ([`Ends::pairs_right`]),
    /// normalised by their own `F(M)` and `F(∅)`; `None` when there are none.
    pub faithfulness_right: Option<f64>,
    /// Complement faithfulness over the pairs the model gets right.
    pub complement_faithfulness_right: Option<f64>,
}

/// One row of the edge-faithfulness table: the circuit's nodes with only the edges
/// whose |mean weight| is at least `edge_threshold` kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeEvalRow {
    /// Edge threshold on |mean weight|.
    pub edge_threshold: f64,
    /// Nodes in the circuit (the default node threshold's).
    pub nodes: usize,
    /// Edges kept.
    pub edges: usize,
    /// `edges` over every edge between adjacent circuit nodes (and to the metric).
    pub edge_fraction: f64,
    /// Mean metric with the nodes outside the circuit and the edges outside it ablated.
    pub f_circuit: f64,
    /// `(F(C, E) − F(∅)) / (F(M) − F(∅))`.
    pub faithfulness: f64,
    /// Faithfulness per case, each case normalised by its own `F(M)` and `F(∅)`.
    pub faithfulness_by_case: BTreeMap<String, f64>,
    /// Faithfulness over the pairs the model gets right; `None` when there are none.
    pub faithfulness_right: Option<f64>,
}

/// `F(M)` and `F(∅)`, the two ends the scores are normalised by, over all pairs and per
/// `case` of the pairs (e.g. `singular` / `plural`: the direction of the change).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ends {
    /// Mean metric of the whole model (SAEs spliced, nothing ablated).
    pub f_model: f64,
    /// Mean metric with every node ablated.
    pub f_empty: f64,
    /// `F(M)` per case.
    pub f_model_by_case: BTreeMap<String, f64>,
    /// `F(∅)` per case.
    pub f_empty_by_case: BTreeMap<String, f64>,
    /// Pairs per case.
    pub pairs_by_case: BTreeMap<String, usize>,
    /// Pairs the model (no SAEs spliced) gets right on both sides: the clean verb
    /// preferred on the clean prompt and the patch verb on the patch prompt.
    pub pairs_right: usize,
    /// `F(M)` over those pairs (`None` when there are none).
    pub f_model_right: Option<f64>,
    /// `F(∅)` over those pairs.
    pub f_empty_right: Option<f64>,
}

impl Ends {
    /// `(F − F(∅)) / (F(M) − F(∅))`.
    pub fn normalise(&self, f: f64) -> f64 {
        (f - self.f_empty) / (self.f_model - self.f_empty)
    }

    /// `(F − F(∅)) / (F(M) − F(∅))` over the pairs the model gets right, `f` their mean.
    pub fn normalise_right(&self, f: Option<f64>) -> Option<f64> {
        let (f, m, e) = (f?, self.f_model_right?, self.f_empty_right?);
        Some((f - e) / (m - e))
    }

    /// `(F_c − F_c(∅)) / (F_c(M) − F_c(∅))` for each case `c` of `by_case`.
    pub fn normalise_by_case(&self, by_case: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
        by_case
            .iter()
            .filter_map(|(c, f)| {
                let (m, e) = (self.f_model_by_case.get(c)?, self.f_empty_by_case.get(c)?);
                Some((c.clone(), (f - e) / (m - e)))
            })
            .collect()
    }
}

/// The mean metric per `case` of the pairs, from per-batch, per-pair metrics.
pub fn case_means(batches: &[PairBatch], per_pair: &[Array1<f32>]) -> BTreeMap<String, f64> {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for (batch, m) in batches.iter().zip(per_pair) {
        for (case, &v) in batch.cases.iter().zip(m) {
            let e = sums.entry(case.clone()).or_insert((0.0, 0));
            e.0 += f64::from(v);
            e.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(c, (t, n))| (c, t / n.max(1) as f64))
        .collect()
}

/// Per batch, whether the model gets each pair right ([`Prepared::right`]).
pub fn rights(preps: &[Prepared]) -> Vec<Array1<bool>> {
    preps.iter().map(|p| p.right.clone()).collect()
}

/// The mean metric over the pairs the model gets right (`right`, per batch: see
/// [`rights`]), from per-batch, per-pair metrics; `None` when it gets none right.
pub fn right_mean(right: &[Array1<bool>], per_pair: &[Array1<f32>]) -> Option<f64> {
    let (total, n) = right
        .iter()
        .zip(per_pair)
        .flat_map(|(r, m)| r.iter().zip(m))
        .filter(|(&r, _)| r)
        .fold((0.0, 0usize), |(t, n), (_, &v)| (t + f64::from(v), n + 1));
    (n > 0).then(|| total / n as f64)
}

/// The number of pairs the model gets right (`right`, per batch: see [`rights`]).
pub fn right_count(right: &[Array1<bool>]) -> usize {
    right.iter().map(|r| r.iter().filter(|&&r| r).count()).sum()
}

/// The number of pairs per `case`.
pub fn case_counts(batches: &[PairBatch]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for case in batches.iter().flat_map(|b| &b.cases) {
        *out.entry(case.clone()).or_insert(0) += 1;
    }
    out
}
