//! A circuit computed in rounds over shares of the pairs, so that it can be split by
//! pairs into the tasks of a Slurm job array (`--part I/N`) or run in one go.
//!
//! Everything the stage computes over pairs is a sum over pairs, but not all of it in
//! one pass: the nodes of the circuit are those whose *mean* effect over all pairs
//! passes the threshold, and mean ablation uses the means over all pairs; the edges
//! kept at each edge threshold depend on the mean edge weights. So the work runs in
//! three rounds, each over the batches of one share, and each round's totals feed the
//! next:
//!
//! 1. [`NodeShare`]: node-effect and activation sums ([`NodeSums`]), per-position
//!    sums for mean ablation ([`PositionSums`]), the clean metric and whether the
//!    model gets each pair right, and the gradients the edges need;
//! 2. [`EdgeShare`]: edge-weight sums between the circuit's nodes, and the node
//!    sweep's metric for every pair;
//! 3. [`EdgeSweepShare`]: the edge sweep's metric for every pair.
//!
//! A run in one go is the same three rounds over one share holding every batch (the
//! forward results kept in memory between rounds). Split into parts, each part's
//! round is written to `OUT/parts/I/` ([`ShareFile`]) and the next round starts when
//! every part has written the previous one; the parts hold whole batches, the same
//! batches as a run in one go, so the totals agree with it up to the order of
//! floating-point additions of the sums (the per-pair metrics are the same values).
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use circuitry_core::atomic;
use circuitry_core::part::{Part, PARTS_DIR};
use circuitry_models::transformer::Transformer;
use ndarray::{Array1, Array2, Array3, ArrayD, IxDyn};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::discover::{
    edge_sums, edge_sweep_metrics, select, sweep_metrics, Aggregation, Analysis, NodeSums,
    ScoredNode, SweepPlan,
};
use super::edgeeval::EdgeEval;
use super::edges::{EdgeSums, NodeRef};
use super::eval::PositionSums;
use super::nodes::{node_effects, prepare, Prepared};
use super::pairs::{check_reproduces, PairData};
use super::splice::Submodules;
use super::stage::Gpt2StageConfig;
use crate::{Error, Result};

/// The rounds of a circuit run, in order, by the name of their share files.
pub const ROUNDS: [Round; 3] = [Round::Nodes, Round::Edges, Round::EdgeSweep];

/// The file recording how `OUT/parts/` is split: `{key, count}`.
pub const SPLIT_FILE: &str = "split.json";

/// One round of the computation over a share of the pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// Node effects, activations, position means, metric, gradients.
    Nodes,
    /// Edge weights and the node sweep.
    Edges,
    /// The edge sweep.
    EdgeSweep,
}

impl Round {
    /// 1-based number.
    pub fn number(self) -> usize {
        ROUNDS.iter().position(|&r| r == self).map_or(0, |i| i + 1)
    }

    /// What it computes, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Round::Nodes => "node effects",
            Round::Edges => "edges and the node sweep",
            Round::EdgeSweep => "the edge sweep",
        }
    }

    /// The share file of this round in a part's directory.
    pub fn file(self, part: Part, out: &Path) -> PathBuf {
        let name = match self {
            Round::Nodes => "nodes.safetensors",
            Round::Edges => "edges.safetensors",
            Round::EdgeSweep => "edge_sweep.safetensors",
        };
        part.dir(out).join(name)
    }
}

/// What the rounds run on: the model, its SAEs, every batch of pairs.
pub struct Work<'a> {
    /// The options.
    pub cfg: &'a Gpt2StageConfig,
    /// The model.
    pub model: &'a Transformer,
    /// Its spliced submodules.
    pub subs: &'a Submodules,
    /// Every batch of pairs and its cached activations.
    pub data: &'a PairData,
    /// `(model fingerprint, fingerprint the store records)`, for the reproduction check.
    pub fingerprints: (&'a str, &'a str),
}

impl Work<'_> {
    fn seq_max(&self) -> usize {
        self.data.batches.iter().map(|b| b.seq()).max().unwrap_or(0)
    }

    /// Check that the model reproduces the cached activations of the batches `range`
    /// (one clean and one patch forward per batch; round 1 runs it, the later rounds
    /// of the same inputs need not).
    pub fn check_range(&self, range: Range<usize>) -> Result<()> {
        for b in range {
            let (batch, cached) = (&self.data.batches[b], &self.data.cached[b]);
            check_reproduces(
                self.model,
                batch,
                cached,
                &self.cfg.store,
                self.fingerprints,
            )?;
        }
        Ok(())
    }

    /// Run the clean and patch prompts of the batches `range`.
    pub fn prepare_range(&self, range: Range<usize>) -> Result<Vec<Prepared>> {
        range
            .map(|b| prepare(self.model, self.subs, &self.data.batches[b]))
            .collect()
    }
}

/// Round 1 of a share: see the module docs.
#[derive(Debug, Clone)]
pub struct NodeShare {
    /// Node-effect and activation sums.
    pub sums: NodeSums,
    /// Per-position sums of features and errors.
    pub positions: PositionSums,
    /// Per batch: the clean metric of each pair.
    pub metric: Vec<Array1<f32>>,
    /// Per batch: whether the model gets each pair right.
    pub right: Vec<Array1<bool>>,
    /// Per batch, per submodule: the gradient the node effects used (the edges' left
    /// vector).
    pub grads: Vec<Vec<Array3<f32>>>,
}

/// Round 2 of a share: see the module docs.
#[derive(Debug, Clone)]
pub struct EdgeShare {
    /// Edge weights summed over the share's pairs.
    pub edges: EdgeSums,
    /// Per circuit of the node sweep, per batch: the metric of each pair.
    pub sweep: Vec<Vec<Array1<f32>>>,
}

/// Round 3 of a share: per edge threshold, per batch, the metric of each pair.
#[derive(Debug, Clone)]
pub struct EdgeSweepShare {
    /// The metrics.
    pub metrics: Vec<Vec<Array1<f32>>>,
}

/// Round 1 over the batches `range`, after checking that the model reproduces their
/// cached activations; also returns their forward results.
pub fn nodes_round(w: &Work<'_>, range: Range<usize>) -> Result<(NodeShare, Vec<Prepared>)> {
    w.check_range(range.clone())?;
    let preps = w.prepare_range(range.clone())?;
    let d_model = w.model.config().d_model;
    let mut share = NodeShare {
        sums: NodeSums::zeros(w.subs, w.seq_max()),
        positions: PositionSums::zeros(w.subs, w.seq_max(), d_model),
        metric: Vec::new(),
        right: Vec::new(),
        grads: Vec::new(),
    };
    let batches = &w.data.batches[range];
    let mut progress = circuitry_core::progress::Progress::new(
        format!("node effects ({})", w.cfg.method.name()),
        "pairs",
        batches.iter().map(|b| b.len()).sum::<usize>() as u64,
    );
    for (batch, prep) in batches.iter().zip(&preps) {
        let _span = tracing::info_span!("batch", pairs = batch.len()).entered();
        let eff = node_effects(w.model, w.subs, batch, prep, w.cfg.method, w.cfg.max_rows)?;
        share.sums.add_batch(prep, &eff);
        share.positions.add_batch(prep);
        share.metric.push(prep.metric.clone());
        share.right.push(prep.right.clone());
        share.grads.push(eff.grad);
        progress.inc(batch.len() as u64);
    }
    progress.finish();
    Ok((share, preps))
}

/// The totals of round 1 over every share: what rounds 2 and 3 need.
#[derive(Debug, Clone)]
pub struct NodeTotals {
    /// Mean node effects and activations (no forward results).
    pub analysis: Analysis,
    /// Per submodule, the per-position means of mean ablation.
    pub means: Vec<(Array2<f32>, Array2<f32>)>,
    /// Per batch of the dataset: the clean metric of each pair.
    pub metric: Vec<Array1<f32>>,
    /// Per batch of the dataset: whether the model gets each pair right.
    pub right: Vec<Array1<bool>>,
    /// Every node with its mean effect.
    pub scored: Vec<ScoredNode>,
    /// The circuit's nodes.
    pub nodes: Vec<NodeRef>,
    /// The node sweep's circuits.
    pub plan: SweepPlan,
}

impl NodeTotals {
    /// Add up the shares (in dataset order) and choose the circuit.
    pub fn new(cfg: &Gpt2StageConfig, subs: &Submodules, shares: &[&NodeShare]) -> NodeTotals {
        let mut sums = shares[0].sums.clone();
        let mut positions = shares[0].positions.clone();
        for s in &shares[1..] {
            sums.add(&s.sums);
            positions.add(&s.positions);
        }
        let analysis = Analysis::from_sums(&sums, Vec::new(), Vec::new());
        let scored = analysis.scored_nodes(cfg.aggregation);
        let nodes = select(&scored, cfg.node_threshold);
        let plan = SweepPlan::new(subs, &analysis, cfg.aggregation, &cfg.sweep);
        NodeTotals {
            means: positions.means(),
            metric: shares.iter().flat_map(|s| s.metric.clone()).collect(),
            right: shares.iter().flat_map(|s| s.right.clone()).collect(),
            analysis,
            scored,
            nodes,
            plan,
        }
    }

    /// The prompt length when nodes are per position.
    pub fn per_position(&self, aggregation: Aggregation) -> Option<usize> {
        (aggregation == Aggregation::PerPosition).then_some(self.analysis.seq_max)
    }
}

/// Round 2 over the batches `range` with their forward results and round-1 gradients.
pub fn edges_round(
    w: &Work<'_>,
    range: Range<usize>,
    preps: &[Prepared],
    grads: &[Vec<Array3<f32>>],
    totals: &NodeTotals,
) -> Result<EdgeShare> {
    let batches = &w.data.batches[range.clone()];
    let grads: Vec<&[Array3<f32>]> = grads.iter().map(Vec::as_slice).collect();
    let edges = edge_sums(
        w.model,
        w.subs,
        batches,
        preps,
        &grads,
        &totals.nodes,
        w.cfg.max_rows,
    )?;
    let sweep = sweep_metrics(
        w.model,
        w.subs,
        (batches, range.start),
        preps,
        &totals.means,
        &totals.plan,
        w.cfg.ablation,
    )?;
    Ok(EdgeShare { edges, sweep })
}

/// The mean edge weights over every share (in dataset order) of `n_examples` pairs.
pub fn mean_edges(shares: &[&EdgeShare], n_examples: usize) -> EdgeSums {
    let mut total = EdgeSums::new();
    for s in shares {
        for (k, v) in &s.edges {
            *total.entry(*k).or_insert(0.0) += v;
        }
    }
    let n = n_examples.max(1) as f64;
    for v in total.values_mut() {
        *v /= n;
    }
    total
}

/// Round 3 over the batches `range` with their forward results.
pub fn edge_sweep_round(
    w: &Work<'_>,
    range: Range<usize>,
    preps: &[Prepared],
    totals: &NodeTotals,
    (edges, thresholds): (&EdgeSums, &[f64]),
) -> Result<EdgeSweepShare> {
    let eval = EdgeEval {
        model: w.model,
        subs: w.subs,
        batches: &w.data.batches[range.clone()],
        first_batch: range.start,
        preps,
        means: &totals.means,
        ablation: w.cfg.ablation,
        max_rows: w.cfg.max_rows,
    };
    let per_position = totals.per_position(w.cfg.aggregation);
    let metrics = edge_sweep_metrics(&eval, &totals.nodes, per_position, edges, thresholds)?;
    Ok(EdgeSweepShare { metrics })
}

/// Per circuit (or threshold), the per-batch metrics of every share in dataset order.
pub fn concat(shares: &[&[Vec<Array1<f32>>]]) -> Vec<Vec<Array1<f32>>> {
    let k = shares.first().map_or(0, |s| s.len());
    (0..k)
        .map(|c| shares.iter().flat_map(|s| s[c].clone()).collect())
        .collect()
}

// ---- the split on disk ----

/// `OUT/parts/split.json`: which computation the parts belong to and how many there
/// are. A part of another key (other options or inputs) is stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Hash of everything the shares' values depend on.
    pub key: String,
    /// Number of parts.
    pub count: usize,
}

impl Split {
    /// The path of the split file in `out`.
    pub fn path(out: &Path) -> PathBuf {
        out.join(PARTS_DIR).join(SPLIT_FILE)
    }

    /// Read it; `None` when there is none or it does not parse.
    pub fn read(out: &Path) -> Option<Split> {
        let text = std::fs::read(Split::path(out)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Write it atomically.
    pub fn write(&self, out: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| {
            Error::Core(circuitry_core::Error::Json {
                path: Split::path(out),
                source,
            })
        })?;
        Ok(atomic::write_bytes(&Split::path(out), &bytes)?)
    }
}

/// The key of a split: the options that change values (not `out`, `title`,
/// `exact_check`), the fingerprints of the model, the SAEs and the pairs, the tool
/// version and the number of parts.
pub fn split_key(
    cfg: &Gpt2StageConfig,
    fingerprints: (&str, &BTreeMap<String, String>, &str),
    count: usize,
) -> String {
    let mut c = cfg.clone();
    c.out = PathBuf::new();
    c.title = None;
    c.exact_check = 0;
    c.model = PathBuf::new();
    c.store = PathBuf::new();
    c.saes = Vec::new();
    let (model, saes, store) = fingerprints;
    let text = serde_json::json!({
        "tool_version": circuitry_core::TOOL_VERSION,
        "config": c,
        "model": model,
        "saes": saes,
        "store": store,
        "count": count,
    })
    .to_string();
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// The metadata of a share file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ShareMeta {
    key: String,
    part: String,
    round: usize,
    batches: (usize, usize),
}

const META_KEY: &str = "circuitry_circuit_share";

/// Named tensors to write into a share file.
#[derive(Default)]
struct Tensors(Vec<(String, Dtype, Vec<usize>, Vec<u8>)>);

impl Tensors {
    fn f64<D: ndarray::Dimension>(&mut self, name: String, a: &ndarray::Array<f64, D>) {
        let bytes = a.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.0.push((name, Dtype::F64, a.shape().to_vec(), bytes));
    }
    fn f32<D: ndarray::Dimension>(&mut self, name: String, a: &ndarray::Array<f32, D>) {
        let bytes = a.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.0.push((name, Dtype::F32, a.shape().to_vec(), bytes));
    }
    fn bools(&mut self, name: String, a: &Array1<bool>) {
        let bytes = a.iter().map(|&v| u8::from(v)).collect();
        self.0.push((name, Dtype::U8, vec![a.len()], bytes));
    }
    fn u64s(&mut self, name: String, shape: Vec<usize>, v: &[u64]) {
        let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.0.push((name, Dtype::U64, shape, bytes));
    }
    fn metrics(&mut self, prefix: &str, m: &[Vec<Array1<f32>>]) {
        for (c, per_batch) in m.iter().enumerate() {
            for (b, a) in per_batch.iter().enumerate() {
                self.f32(format!("{prefix}.{c}.{b}"), a);
            }
        }
    }

    fn write(&self, path: &Path, meta: &ShareMeta) -> Result<()> {
        let views = self
            .0
            .iter()
            .map(|(n, dtype, shape, data)| {
                TensorView::new(*dtype, shape.clone(), data)
                    .map(|v| (n.as_str(), v))
                    .map_err(|e| damaged(path, &e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let json = serde_json::to_string(meta).map_err(|e| damaged(path, &e.to_string()))?;
        let info: HashMap<String, String> = [(META_KEY.to_string(), json)].into();
        let bytes =
            safetensors::serialize(views, Some(info)).map_err(|e| damaged(path, &e.to_string()))?;
        Ok(atomic::write_bytes(path, &bytes)?)
    }
}

fn damaged(path: &Path, why: &str) -> Error {
    Error::Mismatch {
        what: format!("circuit part file {}", path.display()),
        detail: format!("{why}; delete it and run its part again"),
    }
}

/// A share file read back.
struct Loaded {
    bytes: Vec<u8>,
    path: PathBuf,
}

impl Loaded {
    /// Read `path` if it exists and belongs to `key` and `part` with `batches`;
    /// `Ok(None)` otherwise (missing or stale). A file that does not parse is an error.
    fn read(path: &Path, key: &str, part: Part, batches: &Range<usize>) -> Result<Option<Loaded>> {
        let Ok(bytes) = std::fs::read(path) else {
            return Ok(None);
        };
        let (_, header) =
            SafeTensors::read_metadata(&bytes).map_err(|e| damaged(path, &e.to_string()))?;
        let meta: Option<ShareMeta> = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .and_then(|j| serde_json::from_str(j).ok());
        let want = (batches.start, batches.end);
        match meta {
            Some(m) if m.key == key && m.part == part.to_string() && m.batches == want => {
                Ok(Some(Loaded {
                    bytes,
                    path: path.to_path_buf(),
                }))
            }
            _ => Ok(None),
        }
    }

    fn tensors(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| damaged(&self.path, &e.to_string()))
    }

    fn get<T, const N: usize>(
        &self,
        st: &SafeTensors<'_>,
        name: &str,
        dtype: Dtype,
        from: fn([u8; N]) -> T,
    ) -> Result<ArrayD<T>> {
        let t = st
            .tensor(name)
            .map_err(|e| damaged(&self.path, &format!("tensor {name}: {e}")))?;
        if t.dtype() != dtype {
            return Err(damaged(
                &self.path,
                &format!("tensor {name} is {:?}", t.dtype()),
            ));
        }
        let values: Vec<T> = t
            .data()
            .chunks_exact(N)
            .map(|c| from(c.try_into().unwrap_or([0; N])))
            .collect();
        ArrayD::from_shape_vec(IxDyn(t.shape()), values)
            .map_err(|e| damaged(&self.path, &format!("tensor {name}: {e}")))
    }

    fn f64<D: ndarray::Dimension>(
        &self,
        st: &SafeTensors<'_>,
        name: &str,
    ) -> Result<ndarray::Array<f64, D>> {
        self.get(st, name, Dtype::F64, f64::from_le_bytes)?
            .into_dimensionality()
            .map_err(|e| damaged(&self.path, &format!("tensor {name}: {e}")))
    }

    fn f32<D: ndarray::Dimension>(
        &self,
        st: &SafeTensors<'_>,
        name: &str,
    ) -> Result<ndarray::Array<f32, D>> {
        self.get(st, name, Dtype::F32, f32::from_le_bytes)?
            .into_dimensionality()
            .map_err(|e| damaged(&self.path, &format!("tensor {name}: {e}")))
    }

    fn metrics(
        &self,
        st: &SafeTensors<'_>,
        prefix: &str,
        circuits: usize,
        batches: usize,
    ) -> Result<Vec<Vec<Array1<f32>>>> {
        (0..circuits)
            .map(|c| {
                (0..batches)
                    .map(|b| self.f32(st, &format!("{prefix}.{c}.{b}")))
                    .collect()
            })
            .collect()
    }
}

/// A part's share files: where they are and which computation they belong to.
pub struct ShareFile<'a> {
    /// The stage's output directory.
    pub out: &'a Path,
    /// The split's key.
    pub key: &'a str,
    /// The part.
    pub part: Part,
    /// Its batches.
    pub batches: Range<usize>,
}

impl ShareFile<'_> {
    fn meta(&self, round: Round) -> ShareMeta {
        ShareMeta {
            key: self.key.to_string(),
            part: self.part.to_string(),
            round: round.number(),
            batches: (self.batches.start, self.batches.end),
        }
    }

    fn load(&self, round: Round) -> Result<Option<Loaded>> {
        Loaded::read(
            &round.file(self.part, self.out),
            self.key,
            self.part,
            &self.batches,
        )
    }

    /// Whether this part's file of `round` is there and current.
    pub fn done(&self, round: Round) -> Result<bool> {
        Ok(self.load(round)?.is_some())
    }

    /// Write round 1.
    pub fn write_nodes(&self, s: &NodeShare) -> Result<()> {
        let mut t = Tensors::default();
        for (k, a) in s.sums.feat.iter().enumerate() {
            t.f64(format!("feat.{k}"), a);
            t.f64(format!("err.{k}"), &s.sums.err[k]);
            t.f64(format!("activation.{k}"), &s.sums.activation[k]);
            t.f64(format!("error_norm.{k}"), &s.sums.error_norm[k]);
            t.f64(format!("pos_feat.{k}"), &s.positions.feat[k]);
            t.f64(format!("pos_err.{k}"), &s.positions.err[k]);
        }
        t.u64s("n_examples".into(), vec![1], &[s.sums.n_examples as u64]);
        t.u64s(
            "pos_count".into(),
            vec![s.positions.count.len()],
            &s.positions.count,
        );
        for (b, m) in s.metric.iter().enumerate() {
            t.f32(format!("metric.{b}"), m);
            t.bools(format!("right.{b}"), &s.right[b]);
            for (k, g) in s.grads[b].iter().enumerate() {
                t.f32(format!("grad.{b}.{k}"), g);
            }
        }
        t.write(
            &Round::Nodes.file(self.part, self.out),
            &self.meta(Round::Nodes),
        )
    }

    /// Read round 1 (`None`: missing or stale), the gradients only `with_grads`.
    pub fn read_nodes(&self, subs: &Submodules, with_grads: bool) -> Result<Option<NodeShare>> {
        let Some(l) = self.load(Round::Nodes)? else {
            return Ok(None);
        };
        let st = l.tensors()?;
        let n_subs = subs.len();
        let count: ArrayD<u64> = l.get(&st, "pos_count", Dtype::U64, u64::from_le_bytes)?;
        let n: ArrayD<u64> = l.get(&st, "n_examples", Dtype::U64, u64::from_le_bytes)?;
        let mut s = NodeShare {
            sums: NodeSums {
                feat: Vec::new(),
                err: Vec::new(),
                activation: Vec::new(),
                error_norm: Vec::new(),
                n_examples: n.iter().next().copied().unwrap_or(0) as usize,
            },
            positions: PositionSums {
                feat: Vec::new(),
                err: Vec::new(),
                count: count.iter().copied().collect(),
            },
            metric: Vec::new(),
            right: Vec::new(),
            grads: Vec::new(),
        };
        for k in 0..n_subs {
            s.sums.feat.push(l.f64(&st, &format!("feat.{k}"))?);
            s.sums.err.push(l.f64(&st, &format!("err.{k}"))?);
            s.sums
                .activation
                .push(l.f64(&st, &format!("activation.{k}"))?);
            s.sums
                .error_norm
                .push(l.f64(&st, &format!("error_norm.{k}"))?);
            s.positions.feat.push(l.f64(&st, &format!("pos_feat.{k}"))?);
            s.positions.err.push(l.f64(&st, &format!("pos_err.{k}"))?);
        }
        for b in 0..self.batches.len() {
            s.metric.push(l.f32(&st, &format!("metric.{b}"))?);
            let r: ArrayD<u8> = l.get(&st, &format!("right.{b}"), Dtype::U8, u8::from_le_bytes)?;
            s.right.push(r.iter().map(|&v| v != 0).collect());
            if !with_grads {
                continue;
            }
            s.grads.push(
                (0..n_subs)
                    .map(|k| l.f32(&st, &format!("grad.{b}.{k}")))
                    .collect::<Result<_>>()?,
            );
        }
        Ok(Some(s))
    }

    /// Write round 2.
    pub fn write_edges(&self, s: &EdgeShare) -> Result<()> {
        let mut t = Tensors::default();
        let node = |n: &NodeRef| {
            [
                n.sub as u64,
                n.position.map_or(0, |p| p as u64 + 1),
                n.feature.map_or(0, |f| f as u64 + 1),
            ]
        };
        let ids: Vec<u64> = s
            .edges
            .keys()
            .flat_map(|(u, d)| node(u).into_iter().chain(node(d)))
            .collect();
        t.u64s("edge_nodes".into(), vec![s.edges.len(), 6], &ids);
        let w: Array1<f64> = s.edges.values().copied().collect();
        t.f64("edge_weights".into(), &w);
        t.metrics("sweep", &s.sweep);
        t.write(
            &Round::Edges.file(self.part, self.out),
            &self.meta(Round::Edges),
        )
    }

    /// Read round 2 (`None`: missing or stale); the node sweep has `circuits` circuits.
    pub fn read_edges(&self, circuits: usize) -> Result<Option<EdgeShare>> {
        let Some(l) = self.load(Round::Edges)? else {
            return Ok(None);
        };
        let st = l.tensors()?;
        let ids: ArrayD<u64> = l.get(&st, "edge_nodes", Dtype::U64, u64::from_le_bytes)?;
        let w: Array1<f64> = l.f64(&st, "edge_weights")?;
        let ids: Vec<u64> = ids.iter().copied().collect();
        if ids.len() != 6 * w.len() {
            return Err(damaged(&l.path, "edge_nodes and edge_weights disagree"));
        }
        let node = |c: &[u64]| NodeRef {
            sub: c[0] as usize,
            position: c[1].checked_sub(1).map(|p| p as usize),
            feature: c[2].checked_sub(1).map(|f| f as usize),
        };
        let edges = ids
            .chunks_exact(6)
            .zip(&w)
            .map(|(c, &v)| ((node(&c[..3]), node(&c[3..])), v))
            .collect();
        let sweep = l.metrics(&st, "sweep", circuits, self.batches.len())?;
        Ok(Some(EdgeShare { edges, sweep }))
    }

    /// Write round 3.
    pub fn write_edge_sweep(&self, s: &EdgeSweepShare) -> Result<()> {
        let mut t = Tensors::default();
        t.metrics("edge_sweep", &s.metrics);
        t.write(
            &Round::EdgeSweep.file(self.part, self.out),
            &self.meta(Round::EdgeSweep),
        )
    }

    /// Read round 3 (`None`: missing or stale) of `thresholds` edge thresholds.
    pub fn read_edge_sweep(&self, thresholds: usize) -> Result<Option<EdgeSweepShare>> {
        let Some(l) = self.load(Round::EdgeSweep)? else {
            return Ok(None);
        };
        let st = l.tensors()?;
        let metrics = l.metrics(&st, "edge_sweep", thresholds, self.batches.len())?;
        Ok(Some(EdgeSweepShare { metrics }))
    }
}
