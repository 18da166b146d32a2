//! The `circuitry-circuit gpt2` stage: model weights + SAEs + a pairs dump in, circuit
//! files out. Offline: nothing but those files is read. Everything is checked and
//! computed before anything is written; `stage.json` is written last.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use circuitry_core::fingerprint::fingerprint_path;
use circuitry_core::{atomic, StageTimer, TOOL_VERSION};
use circuitry_models::transformer::Transformer;
use circuitry_sae::{Sae, CFG_FILE};
use circuitry_store::ActivationStore;
use serde::Serialize;

use super::build::{build_graph, label, GraphMeta, GraphParts};
use super::discover::{edge_sweep_rows, log_thresholds, sweep_rows, Aggregation};
use super::edgeeval::all_edges;
use super::edges::EdgeSums;
use super::eval::{Ablation, EdgeEvalRow, Ends, EvalRow};
use super::nodes::Method;
use super::pairs::PairData;
use super::parts::{
    concat, edge_sweep_round, edges_round, mean_edges, nodes_round, split_key, EdgeShare,
    NodeTotals, Round, ShareFile, Split, Work, ROUNDS,
};
use super::splice::{Submodule, Submodules};
use super::{exactcheck, plot};
use crate::graph::{Described, Provenance, CIRCUIT_FILE};
use crate::render;
use crate::{Error, Result};
use circuitry_core::part::{Part, PARTS_DIR};

/// The files the stage writes, besides `stage.json`.
pub const OUTPUT_FILES: [&str; 9] = [
    CIRCUIT_FILE,
    "circuit.dot",
    "circuit.svg",
    "circuit.html",
    "neuronpedia.json",
    "summary.txt",
    "faithfulness.csv",
    "faithfulness.json",
    "faithfulness.svg",
];

/// Validated options of the GPT-2 circuit stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gpt2StageConfig {
    /// Model directory (`config.json`, `model.safetensors`).
    pub model: PathBuf,
    /// SAE directories, or directories holding SAE directories (one per hook).
    pub saes: Vec<PathBuf>,
    /// A pairs dump (`circuitry-dump onnx --pairs`).
    pub store: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Node-effect method.
    pub method: Method,
    /// Sum over positions or keep positions apart.
    pub aggregation: Aggregation,
    /// Nodes with |mean effect| above this are in the circuit.
    pub node_threshold: f64,
    /// Edges with |mean weight| below this are not drawn.
    pub edge_threshold: f64,
    /// How nodes outside the circuit are ablated in the evaluation.
    pub ablation: Ablation,
    /// Node thresholds of the faithfulness sweep (the default threshold is added).
    pub sweep: Vec<f64>,
    /// Pairs per batch.
    pub batch_size: usize,
    /// Use only the first pairs of the store.
    pub max_examples: Option<usize>,
    /// Compare the method's node effects with exact patching on this many pairs (0: off).
    pub exact_check: usize,
    /// Most batch·seq rows of one forward pass.
    pub max_rows: usize,
    /// Title of the drawings (default: from the store's directory name).
    pub title: Option<String>,
}

impl Gpt2StageConfig {
    /// The default sweep: 21 thresholds log-spaced from 1e-4 to 10.
    pub fn default_sweep() -> Vec<f64> {
        log_thresholds(-4.0, 1.0, 21)
    }

    /// Check option ranges; the returned config is the only one the stage accepts.
    pub fn check(mut self) -> Result<Self> {
        let bad = |option, reason: String| Err(Error::BadOption { option, reason });
        if let Method::IntegratedGradients { steps } = self.method {
            if steps == 0 {
                return bad("--ig-steps", "must be at least 1".into());
            }
        }
        for (option, v) in [
            ("--node-threshold", self.node_threshold),
            ("--edge-threshold", self.edge_threshold),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(option, format!("{v} is not a finite number ≥ 0"));
            }
        }
        if let Some(t) = self.sweep.iter().find(|t| !t.is_finite() || **t < 0.0) {
            return bad("--sweep", format!("{t} is not a finite number ≥ 0"));
        }
        if self.batch_size == 0 {
            return bad("--batch-size", "must be at least 1".into());
        }
        if self.max_rows == 0 {
            return bad("--max-rows", "must be at least 1".into());
        }
        if self.max_examples == Some(0) {
            return bad("--max-examples", "must be at least 1".into());
        }
        if self.saes.is_empty() {
            return bad("--sae", "give at least one SAE directory".into());
        }
        if !self.sweep.contains(&self.node_threshold) {
            self.sweep.push(self.node_threshold);
        }
        self.sweep.sort_by(f64::total_cmp);
        Ok(self)
    }
}

/// Everything the stage writes, rendered in memory.
#[derive(Debug, Clone)]
pub struct Gpt2Outputs {
    /// The circuit graph.
    pub circuit: crate::Circuit,
    /// File name → contents, for every file of [`OUTPUT_FILES`].
    pub files: BTreeMap<&'static str, Vec<u8>>,
    /// The sweep.
    pub rows: Vec<EvalRow>,
    /// The edge sweep at the default node threshold.
    pub edge_rows: Vec<EdgeEvalRow>,
}

/// The edge thresholds of the edge sweep: 0 (every edge kept: node ablation), 11
/// thresholds log-spaced from 1e-4 to 10, the default `edge_threshold`, and, when edges
/// are left at 10, the next power of ten above the largest |weight| (no edge kept).
pub fn edge_thresholds(edge_threshold: f64, sums: &EdgeSums) -> Vec<f64> {
    let mut t = vec![0.0, edge_threshold];
    t.extend(log_thresholds(-4.0, 1.0, 11));
    let max = sums.values().fold(0.0f64, |m, w| m.max(w.abs()));
    if max >= 10.0 {
        t.push(10f64.powf(max.log10().floor() + 1.0));
    }
    t.sort_by(f64::total_cmp);
    t.dedup();
    t
}

/// Load the SAEs: each path is an SAE directory (has `cfg.json`) or a directory whose
/// subdirectories are.
pub fn load_saes(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Sae)>> {
    let mut out = Vec::new();
    for p in paths {
        if p.join(CFG_FILE).is_file() {
            out.push((p.clone(), Sae::load(p)?));
            continue;
        }
        let entries = std::fs::read_dir(p).map_err(|e| Error::Missing {
            what: format!("SAE directory {}", p.display()),
            detail: format!("cannot read it ({e}); give a directory with {CFG_FILE} or one holding such directories"),
        })?;
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|d| d.join(CFG_FILE).is_file())
            .collect();
        dirs.sort();
        if dirs.is_empty() {
            return Err(Error::Missing {
                what: format!("SAEs in {}", p.display()),
                detail: format!("neither it nor any subdirectory has {CFG_FILE}; point --sae at a train-sae output"),
            });
        }
        for d in dirs {
            let sae = Sae::load(&d)?;
            out.push((d, sae));
        }
    }
    Ok(out)
}

/// Read and cross-check the inputs, find and evaluate the circuit, render it. Writes
/// nothing.
pub fn build_gpt2(cfg: &Gpt2StageConfig) -> Result<Gpt2Outputs> {
    let inputs = load_inputs(cfg)?;
    let found = find(cfg, &inputs)?;
    let (ends, rows, edge_rows) = (&found.ends, &found.rows, &found.edge_rows);
    let exact = match cfg.exact_check {
        0 => None,
        n => Some(exactcheck::compare(
            &inputs.model,
            &inputs.subs,
            &inputs.data.batches,
            cfg,
            n,
        )?),
    };
    let scores = Scores::new(cfg, &found, (rows, edge_rows, ends), exact);
    let circuit = circuit_graph(cfg, &inputs, &found, scores)?;
    let files = render_files(cfg, &inputs, &found, &circuit, (rows, edge_rows, ends))?;
    Ok(Gpt2Outputs {
        circuit,
        files,
        rows: found.rows,
        edge_rows: found.edge_rows,
    })
}

/// What the stage reads: the model, its spliced SAEs and the pairs.
struct Inputs {
    model: Transformer,
    subs: Submodules,
    /// SAE fingerprints and folders by hook name.
    sae_fps: BTreeMap<String, String>,
    sae_dirs: BTreeMap<String, PathBuf>,
    data: PairData,
    model_fp: String,
    /// The fingerprint of the model the store was dumped from.
    store_model_fp: String,
    /// The key of a split of this computation into parts ([`split_key`]), without the
    /// count: `key(count)`.
    key_inputs: (String, String),
}

impl Inputs {
    fn work<'a>(&'a self, cfg: &'a Gpt2StageConfig) -> Work<'a> {
        Work {
            cfg,
            model: &self.model,
            subs: &self.subs,
            data: &self.data,
            fingerprints: (&self.model_fp, &self.store_model_fp),
        }
    }

    /// The key of a split of `count` parts.
    fn key(&self, cfg: &Gpt2StageConfig, count: usize) -> String {
        let (model, store) = &self.key_inputs;
        split_key(cfg, (model, &self.sae_fps, store), count)
    }
}

/// Load the model and the SAEs, read the pairs, and check that the model reproduces
/// the cached activations (the right model for this store).
fn load_inputs(cfg: &Gpt2StageConfig) -> Result<Inputs> {
    let model: Transformer = Transformer::load(&cfg.model)?;
    let saes = load_saes(&cfg.saes)?;
    let mut sae_fps = BTreeMap::new();
    let mut sae_dirs = BTreeMap::new();
    let mut list = Vec::new();
    for (dir, sae) in saes {
        sae_fps.insert(sae.cfg.hook_name.to_string(), fingerprint_path(&dir)?);
        sae_dirs.insert(sae.cfg.hook_name.to_string(), dir.clone());
        list.push(Submodule::new(sae)?);
    }
    let c = model.config();
    let subs = Submodules::new(list, c.d_model, c.n_layer)?;
    let store = ActivationStore::open(&cfg.store)?;
    let have = store.hooks();
    let hooks: Vec<_> = subs
        .hooks()
        .into_iter()
        .filter(|h| have.contains(h))
        .collect();
    if hooks.is_empty() {
        return Err(Error::Missing {
            what: "cached activations at the SAEs' hooks".into(),
            detail: format!(
                "{} has none of {:?}; dump the pairs with these hooks so the forward can be checked",
                cfg.store.display(),
                subs.hooks().iter().map(ToString::to_string).collect::<Vec<_>>()
            ),
        });
    }
    let data = PairData::read(&store, &hooks, cfg.batch_size, cfg.max_examples)?;
    if cfg.aggregation == Aggregation::PerPosition {
        let lens: std::collections::BTreeSet<usize> =
            data.batches.iter().map(|b| b.seq()).collect();
        if lens.len() > 1 {
            return Err(Error::BadOption {
                option: "--aggregation",
                reason: format!("per-position nodes need prompts of one length; {} has lengths {lens:?}; use --aggregation sum", cfg.store.display()),
            });
        }
    }
    let model_fp = fingerprint_path(&cfg.model.join("model.safetensors"))?;
    let store_model_fp = store.meta().model_fingerprint.clone();
    let key_inputs = (model_fp.clone(), fingerprint_path(&cfg.store)?);
    Ok(Inputs {
        model,
        subs,
        sae_fps,
        sae_dirs,
        data,
        model_fp,
        store_model_fp,
        key_inputs,
    })
}

/// Node effects over all pairs, the circuit's nodes at the node threshold, the mean
/// edges between them and the sweeps.
struct Found {
    totals: NodeTotals,
    /// The circuit's nodes with their effects, in `totals.scored`'s order.
    in_circuit: Vec<super::discover::ScoredNode>,
    edges: EdgeSums,
    ends: Ends,
    rows: Vec<EvalRow>,
    edge_rows: Vec<EdgeEvalRow>,
}

/// The current split of `cfg.out` into parts, if any: its count.
fn current_split(cfg: &Gpt2StageConfig, i: &Inputs) -> Option<usize> {
    let split = Split::read(&cfg.out)?;
    if split.key == i.key(cfg, split.count) {
        return Some(split.count);
    }
    tracing::warn!(
        "ignoring {}: its parts were computed with other options or inputs",
        cfg.out.join(PARTS_DIR).display()
    );
    None
}

/// The whole computation: in one go, or, when `cfg.out` holds parts of it, by
/// finishing every part's rounds and adding them up.
fn find(cfg: &Gpt2StageConfig, i: &Inputs) -> Result<Found> {
    let work = i.work(cfg);
    if let Some(count) = current_split(cfg, i) {
        // Each round's totals are read once, for every part that still needs the next.
        let key = i.key(cfg, count);
        let files: Vec<ShareFile<'_>> = Part::all(count)
            .map(|p| share_file(cfg, i, &key, p))
            .collect();
        let missing = |round: Round| -> Result<Vec<&ShareFile<'_>>> {
            let mut left = Vec::new();
            for f in &files {
                if !f.done(round)? {
                    left.push(f);
                }
            }
            Ok(left)
        };
        for file in missing(Round::Nodes)? {
            nodes_part(&work, file)?;
        }
        let totals = node_totals(&work, &files)?;
        for file in missing(Round::Edges)? {
            edges_part(&work, file, &totals)?;
        }
        let edges = EdgeTotals::read(&work, &files, &totals)?;
        for file in missing(Round::EdgeSweep)? {
            edge_sweep_part(&work, file, &totals, &edges)?;
        }
        return assemble_parts(&work, &files, totals, edges);
    }
    let all = 0..i.data.batches.len();
    let (mut nodes, preps) = nodes_round(&work, all.clone())?;
    let totals = NodeTotals::new(cfg, &i.subs, &[&nodes]);
    let grads = std::mem::take(&mut nodes.grads);
    let edge_share = edges_round(&work, all.clone(), &preps, &grads, &totals)?;
    drop(grads);
    let edges = mean_edges(&[&edge_share], totals.analysis.n_examples);
    let thresholds = edge_thresholds(cfg.edge_threshold, &edges);
    let sweep_share = edge_sweep_round(&work, all, &preps, &totals, (&edges, &thresholds))?;
    Ok(assemble(
        &work,
        totals,
        &[&edge_share.sweep],
        &[&sweep_share.metrics],
        (edges, &thresholds),
    ))
}

/// The sweeps' rows from every share's metrics (in dataset order).
fn assemble(
    w: &Work<'_>,
    totals: NodeTotals,
    node_sweeps: &[&[Vec<ndarray::Array1<f32>>]],
    edge_sweeps: &[&[Vec<ndarray::Array1<f32>>]],
    (edges, thresholds): (EdgeSums, &[f64]),
) -> Found {
    let batches = &w.data.batches;
    let (ends, rows) = sweep_rows(batches, &totals.right, &totals.plan, &concat(node_sweeps));
    let all = all_edges(w.subs, &totals.nodes).len();
    let edge_rows = edge_sweep_rows(
        (batches, &totals.right),
        (totals.nodes.len(), all),
        &edges,
        thresholds,
        &concat(edge_sweeps),
        &ends,
    );
    let chosen: std::collections::HashSet<_> = totals.nodes.iter().copied().collect();
    let in_circuit = totals
        .scored
        .iter()
        .copied()
        .filter(|s| chosen.contains(&s.node))
        .collect();
    Found {
        totals,
        in_circuit,
        edges,
        ends,
        rows,
        edge_rows,
    }
}

fn share_file<'a>(cfg: &'a Gpt2StageConfig, i: &Inputs, key: &'a str, part: Part) -> ShareFile<'a> {
    ShareFile {
        out: &cfg.out,
        key,
        part,
        batches: part.rows(i.data.batches.len(), 1),
    }
}

/// The files of every part of `file`'s split.
fn all_files<'a>(w: &Work<'_>, file: &ShareFile<'a>) -> Vec<ShareFile<'a>> {
    Part::all(file.part.count)
        .map(|part| ShareFile {
            out: file.out,
            key: file.key,
            part,
            batches: part.rows(w.data.batches.len(), 1),
        })
        .collect()
}

/// A part whose file of `round` is missing: what to run.
fn not_done(w: &Work<'_>, part: Part, round: Round) -> Error {
    Error::Missing {
        what: format!("round {} ({}) of part {part}", round.number(), round.what()),
        detail: format!(
            "{} has no current {}; run `circuitry-circuit gpt2 ... --part {part}` until it has, or run without --part to finish every part in this process",
            w.cfg.out.display(),
            round.file(part, w.cfg.out.as_path()).display()
        ),
    }
}

/// The totals of round 1 over every part of the split.
fn node_totals(w: &Work<'_>, files: &[ShareFile<'_>]) -> Result<NodeTotals> {
    let shares = files
        .iter()
        .map(|f| {
            f.read_nodes(w.subs, false)?
                .ok_or_else(|| not_done(w, f.part, Round::Nodes))
        })
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<_> = shares.iter().collect();
    Ok(NodeTotals::new(w.cfg, w.subs, &refs))
}

/// Rounds 2 of every part added up: what round 3 and the assembly need.
struct EdgeTotals {
    /// Every part's round 2 (its node sweep's metrics), in part order.
    shares: Vec<EdgeShare>,
    /// The mean edge weights.
    edges: EdgeSums,
    /// The edge sweep's thresholds.
    thresholds: Vec<f64>,
}

impl EdgeTotals {
    /// Read round 2 of every part in `files` (round 1's totals are `totals`).
    fn read(w: &Work<'_>, files: &[ShareFile<'_>], totals: &NodeTotals) -> Result<EdgeTotals> {
        let shares = files
            .iter()
            .map(|f| {
                f.read_edges(totals.plan.keep.len())?
                    .ok_or_else(|| not_done(w, f.part, Round::Edges))
            })
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<_> = shares.iter().collect();
        let edges = mean_edges(&refs, totals.analysis.n_examples);
        let thresholds = edge_thresholds(w.cfg.edge_threshold, &edges);
        Ok(EdgeTotals {
            shares,
            edges,
            thresholds,
        })
    }
}

/// Round 1 of `file`'s part, written.
fn nodes_part(w: &Work<'_>, file: &ShareFile<'_>) -> Result<()> {
    let _span = tracing::info_span!("part", part = %file.part, round = 1).entered();
    file.write_nodes(&nodes_round(w, file.batches.clone())?.0)
}

/// Round 2 of `file`'s part, written (`totals`: round 1 of every part).
fn edges_part(w: &Work<'_>, file: &ShareFile<'_>, totals: &NodeTotals) -> Result<()> {
    let _span = tracing::info_span!("part", part = %file.part, round = 2).entered();
    let range = file.batches.clone();
    let own = file
        .read_nodes(w.subs, true)?
        .ok_or_else(|| not_done(w, file.part, Round::Nodes))?;
    let preps = w.prepare_range(range.clone())?;
    file.write_edges(&edges_round(w, range, &preps, &own.grads, totals)?)
}

/// Round 3 of `file`'s part, written (rounds 1 and 2 of every part added up).
fn edge_sweep_part(
    w: &Work<'_>,
    file: &ShareFile<'_>,
    totals: &NodeTotals,
    e: &EdgeTotals,
) -> Result<()> {
    let _span = tracing::info_span!("part", part = %file.part, round = 3).entered();
    let range = file.batches.clone();
    let preps = w.prepare_range(range.clone())?;
    let share = edge_sweep_round(w, range, &preps, totals, (&e.edges, &e.thresholds))?;
    file.write_edge_sweep(&share)
}

/// Every part's round 3 read back and added to the totals of rounds 1 and 2.
fn assemble_parts(
    w: &Work<'_>,
    files: &[ShareFile<'_>],
    totals: NodeTotals,
    e: EdgeTotals,
) -> Result<Found> {
    let sweeps = files
        .iter()
        .map(|f| {
            f.read_edge_sweep(e.thresholds.len())?
                .ok_or_else(|| not_done(w, f.part, Round::EdgeSweep))
        })
        .collect::<Result<Vec<_>>>()?;
    let node_sweeps: Vec<&[_]> = e.shares.iter().map(|s| s.sweep.as_slice()).collect();
    let edge_sweeps: Vec<&[_]> = sweeps.iter().map(|s| s.metrics.as_slice()).collect();
    Ok(assemble(
        w,
        totals,
        &node_sweeps,
        &edge_sweeps,
        (e.edges, &e.thresholds),
    ))
}

/// What one `--part I/N` run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartOutcome {
    /// It computed and wrote this round of the part.
    Wrote(Round, PathBuf),
    /// Every round of the part was already done.
    AllDone,
}

/// One array task: the next round of `part` that is not done (every part must have
/// done the rounds before it), written to `cfg.out/parts/I/`. `stage.json` and the
/// circuit files are not written: the command without `--part` assembles the parts.
pub fn run_gpt2_part(cfg: &Gpt2StageConfig, part: Part) -> Result<PartOutcome> {
    let inputs = load_inputs(cfg)?;
    let key = inputs.key(cfg, part.count);
    let split = Split {
        key: key.clone(),
        count: part.count,
    };
    if Split::read(&cfg.out).as_ref() != Some(&split) {
        split.write(&cfg.out)?;
    }
    let work = inputs.work(cfg);
    let file = share_file(cfg, &inputs, &key, part);
    for round in ROUNDS {
        if file.done(round)? {
            continue;
        }
        if round != Round::Nodes {
            let prev = ROUNDS[round.number() - 2];
            for other in all_files(&work, &file) {
                if !other.done(prev)? {
                    return Err(not_done(&work, other.part, prev));
                }
            }
        }
        let files = all_files(&work, &file);
        match round {
            Round::Nodes => nodes_part(&work, &file)?,
            Round::Edges => edges_part(&work, &file, &node_totals(&work, &files)?)?,
            Round::EdgeSweep => {
                let totals = node_totals(&work, &files)?;
                let edges = EdgeTotals::read(&work, &files, &totals)?;
                edge_sweep_part(&work, &file, &totals, &edges)?
            }
        }
        return Ok(PartOutcome::Wrote(round, round.file(part, &cfg.out)));
    }
    Ok(PartOutcome::AllDone)
}

/// The circuit's scores (`circuit.json`'s `scores`, by these names); counts as
/// numbers like the rest. Fields that do not apply (no sweep row at the node
/// threshold, no exact check) are left out.
#[derive(Debug, Clone, Default, Serialize)]
struct Scores {
    #[serde(skip_serializing_if = "Option::is_none")]
    edge_faithfulness: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    edge_faithfulness_min_case: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    edges_kept: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    faithfulness: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    faithfulness_min_case: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    complement_faithfulness: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_fraction: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    f_circuit: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    faithfulness_right_pairs: Option<f64>,
    pairs_right: f64,
    f_model: f64,
    f_empty: f64,
    all_nodes: f64,
    metric_clean: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pearson_r_vs_exact_nodes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pearson_r_vs_exact_entries: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exact_check_pairs: Option<f64>,
}

impl Scores {
    fn new(
        cfg: &Gpt2StageConfig,
        f: &Found,
        (rows, edge_rows, ends): Sweeps<'_>,
        exact: Option<exactcheck::ExactAgreement>,
    ) -> Scores {
        let totals = &f.totals;
        let mut s = Scores {
            pairs_right: ends.pairs_right as f64,
            f_model: ends.f_model,
            f_empty: ends.f_empty,
            all_nodes: totals.scored.len() as f64,
            metric_clean: totals
                .metric
                .iter()
                .flat_map(|m| m.iter().map(|&v| f64::from(v)))
                .sum::<f64>()
                / totals.analysis.n_examples.max(1) as f64,
            ..Scores::default()
        };
        if let Some(r) = edge_rows
            .iter()
            .find(|r| r.edge_threshold == cfg.edge_threshold)
        {
            s.edge_faithfulness = Some(r.faithfulness);
            s.edge_faithfulness_min_case = min_value(&r.faithfulness_by_case);
            s.edges_kept = Some(r.edges as f64);
        }
        if let Some(r) = rows.iter().find(|r| r.threshold == cfg.node_threshold) {
            s.faithfulness = Some(r.faithfulness);
            s.faithfulness_min_case = min_value(&r.faithfulness_by_case);
            s.complement_faithfulness = Some(r.complement_faithfulness);
            s.node_fraction = Some(r.node_fraction);
            s.nodes = Some(r.nodes as f64);
            s.f_circuit = Some(r.f_circuit);
            s.faithfulness_right_pairs = r.faithfulness_right;
        }
        if let Some(r) = exact {
            s.pearson_r_vs_exact_nodes = Some(r.nodes);
            s.pearson_r_vs_exact_entries = Some(r.entries);
            s.exact_check_pairs = Some(r.pairs as f64);
        }
        s
    }

    /// By name, as `circuit.json` stores them.
    fn into_map(self) -> BTreeMap<String, f64> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m
                .into_iter()
                .filter_map(|(k, v)| v.as_f64().map(|v| (k, v)))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

/// The circuit graph: the nodes at the threshold, their edges, the scores and the
/// provenance.
fn circuit_graph(
    cfg: &Gpt2StageConfig,
    i: &Inputs,
    f: &Found,
    scores: Scores,
) -> Result<crate::Circuit> {
    let metric_mean = scores.metric_clean;
    let meta = GraphMeta {
        title: title(cfg),
        method: describe_method(cfg),
        metric: Described {
            name: "logit_diff".into(),
            description: "m = logit(patch answer) − logit(clean answer) at the last position of the clean prompt; effects are changes of m when a node goes from its clean to its patch value".into(),
        },
        provenance: Provenance {
            tool_version: TOOL_VERSION.into(),
            model: i.model_fp.clone(),
            dataset: fingerprint_path(&cfg.store)?,
            saes: i.sae_fps.clone(),
        },
        n_examples: f.totals.analysis.n_examples as u64,
        scores: scores.into_map(),
        notes: notes(cfg),
        positions: match cfg.aggregation {
            Aggregation::Sum => Vec::new(),
            Aggregation::PerPosition => position_labels(&cfg.model, &i.data)?,
        },
    };
    let parts = GraphParts {
        subs: &i.subs,
        nodes: &f.in_circuit,
        edges: &f.edges,
        edge_threshold: cfg.edge_threshold,
        node_threshold: cfg.node_threshold,
        metric_mean,
    };
    build_graph(&parts, meta)
}

/// The tokens of the first pair's clean prompt, one per position, decoded with the
/// model folder's `tokenizer.json` (token ids as text when it has none): the column
/// labels of a per-position circuit, whose pairs all have one length.
fn position_labels(model: &Path, data: &PairData) -> Result<Vec<String>> {
    let Some(batch) = data.batches.first() else {
        return Ok(Vec::new());
    };
    let tokenizer = model.join("tokenizer.json");
    let decode = circuitry_sae::stats::decoder(tokenizer.is_file().then_some(tokenizer.as_path()))?;
    Ok(batch.clean.row(0).iter().map(|&id| decode(&[id])).collect())
}

/// The drawings' title: `--title`, or from the store's folder name.
fn title(cfg: &Gpt2StageConfig) -> String {
    cfg.title.clone().unwrap_or_else(|| {
        format!(
            "Feature circuit: {}",
            cfg.store
                .file_name()
                .map_or("pairs".into(), |n| n.to_string_lossy().to_string())
        )
    })
}

/// Every output file but `stage.json`, by name.
fn render_files(
    cfg: &Gpt2StageConfig,
    i: &Inputs,
    f: &Found,
    circuit: &crate::Circuit,
    (rows, edge_rows, ends): Sweeps<'_>,
) -> Result<BTreeMap<&'static str, Vec<u8>>> {
    let mut files: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    files.insert(CIRCUIT_FILE, circuit.to_json_bytes()?);
    files.insert(
        "circuit.dot",
        render::dot::render(circuit, None).into_bytes(),
    );
    let (features, feature_notes) = render::contexts::for_circuit(circuit, &i.sae_dirs)?;
    for note in feature_notes {
        tracing::info!("{note}");
    }
    files.insert(
        "circuit.svg",
        render::svg::render_annotated(
            circuit,
            None,
            &render::html::node_annotations(circuit, &features),
        )
        .into_bytes(),
    );
    let sweep: Vec<_> = edge_rows
        .iter()
        .map(|r| render::html::EdgeFaithfulness {
            edge_threshold: r.edge_threshold,
            edges: r.edges,
            faithfulness: r.faithfulness,
        })
        .collect();
    files.insert(
        "circuit.html",
        render::html::render_with_sweep(circuit, &features, &sweep)?.into_bytes(),
    );
    let slug = cfg
        .out
        .file_name()
        .map_or("circuit".into(), |n| n.to_string_lossy().to_string());
    let scan = cfg
        .model
        .file_name()
        .map_or("gpt2".into(), |n| n.to_string_lossy().to_string());
    let np = render::neuronpedia::export(
        circuit,
        &render::neuronpedia::NeuronpediaOptions {
            slug,
            scan,
            prompt_tokens: circuit.positions.clone(),
        },
    );
    files.insert("neuronpedia.json", pretty_json("neuronpedia.json", &np)?);
    files.insert(
        "summary.txt",
        summary(
            circuit,
            (rows, edge_rows, ends),
            (cfg.node_threshold, cfg.edge_threshold),
            &i.subs,
            &f.in_circuit,
        )
        .into_bytes(),
    );
    files.insert("faithfulness.csv", csv(rows, edge_rows).into_bytes());
    let faithfulness = serde_json::json!({
        "ablation": cfg.ablation,
        "aggregation": cfg.aggregation,
        "method": cfg.method,
        "gemm": circuitry_models::gemm::describe(),
        "f_model": ends.f_model,
        "f_empty": ends.f_empty,
        "f_model_by_case": ends.f_model_by_case,
        "f_empty_by_case": ends.f_empty_by_case,
        "pairs_by_case": ends.pairs_by_case,
        "pairs_right": ends.pairs_right,
        "f_model_right": ends.f_model_right,
        "f_empty_right": ends.f_empty_right,
        "node_threshold": cfg.node_threshold,
        "edge_threshold": cfg.edge_threshold,
        "all_nodes": f.totals.scored.len(),
        "rows": rows,
        "edge_rows": edge_rows,
    });
    files.insert(
        "faithfulness.json",
        pretty_json("faithfulness.json", &faithfulness)?,
    );
    files.insert(
        "faithfulness.svg",
        plot::render(
            &format!("{}: faithfulness", circuit.title),
            rows,
            cfg.node_threshold,
        )
        .into_bytes(),
    );
    Ok(files)
}

/// `value` as pretty JSON and a newline; `path` names it in an error.
fn pretty_json<T: Serialize>(path: &str, value: &T) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| {
        Error::Core(circuitry_core::Error::Json {
            path: path.into(),
            source,
        })
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn describe_method(cfg: &Gpt2StageConfig) -> Described {
    let nodes = match cfg.method {
        Method::Attribution => "attribution patching: effect = ∇m(clean) · (a_patch − a_clean)".to_string(),
        Method::IntegratedGradients { steps } => format!("integrated gradients, {steps} steps: effect = mean_k ∇m(a_clean + k/{steps} · Δa) · Δa over k = 0..{}, one submodule interpolated at a time", steps - 1),
        Method::Exact => "exact activation patching: effect = m(node at its patch value) − m(clean), per position".into(),
    };
    Described {
        name: format!("sfc_{}", cfg.method.name()),
        description: format!(
            "Sparse feature circuits (Marks et al. 2024). Node effects by {nodes}; features are leaves (∂m/∂f_i = ∇m · W_dec[i]); effects are means over pairs, {}. Edge u → d: mean over pairs of ∇_d m · ∂d/∂u · Δu (Jacobian at the clean prompt, other submodules detached); edges into the metric node: ∇m · Δu along the direct path.",
            match cfg.aggregation {
                Aggregation::Sum => "summed over positions",
                Aggregation::PerPosition => "per position",
            }
        ),
    }
}

fn notes(cfg: &Gpt2StageConfig) -> Vec<String> {
    vec![
        "Graph layers are the spliced submodules in forward order (resid_pre, attn_out, mlp_out of each block), then the metric node.".into(),
        format!(
            "Node threshold {} on |mean effect|; edges with |mean weight| < {} are not drawn.",
            cfg.node_threshold, cfg.edge_threshold
        ),
        format!(
            "Faithfulness (F(C) − F(∅)) / (F(M) − F(∅)) with {} ablation of the nodes outside the circuit; complement_faithfulness ablates the circuit's nodes instead (low = complete).",
            match cfg.ablation {
                Ablation::Mean => "mean (per position, over clean and patch prompts)",
                Ablation::Zero => "zero",
                Ablation::Resample { .. } => "resample",
            }
        ),
        "edge_faithfulness: the circuit's nodes with the edges below the edge threshold ablated too: a circuit node sees each upstream circuit node whose edge to it is not kept at that node's ablated value (its contribution to the residual stream replaced), every other consumer sees its actual value; with every edge kept it is the node faithfulness, with none F(∅).".into(),
        "*_by_case / *_min_case: each case of the pairs (e.g. singular or plural subject in the clean prompt) normalised by its own F(M) and F(∅); the pooled F(∅) can be near 0 only because the cases' F(∅) cancel.".into(),
    ]
}

/// The node sweep (`kind` = `node`, threshold = node threshold) and the edge sweep
/// (`kind` = `edge`, threshold = edge threshold, at the default node threshold).
fn csv(rows: &[EvalRow], edge_rows: &[EdgeEvalRow]) -> String {
    let mut s = String::from("kind,threshold,nodes,node_fraction,edges,edge_fraction,f_circuit,f_complement,faithfulness,complement_faithfulness,faithfulness_right,complement_faithfulness_right\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for r in rows {
        let _ = writeln!(
            s,
            "node,{},{},{},,,{},{},{},{},{},{}",
            r.threshold,
            r.nodes,
            r.node_fraction,
            r.f_circuit,
            r.f_complement,
            r.faithfulness,
            r.complement_faithfulness,
            opt(r.faithfulness_right),
            opt(r.complement_faithfulness_right),
        );
    }
    let node_fraction = |n: usize| {
        rows.iter()
            .find(|r| r.nodes == n)
            .map_or(String::new(), |r| r.node_fraction.to_string())
    };
    for r in edge_rows {
        let _ = writeln!(
            s,
            "edge,{},{},{},{},{},{},,{},,{},",
            r.edge_threshold,
            r.nodes,
            node_fraction(r.nodes),
            r.edges,
            r.edge_fraction,
            r.f_circuit,
            r.faithfulness,
            opt(r.faithfulness_right),
        );
    }
    s
}

/// The smallest value of a map (`None` when empty).
fn min_value(m: &BTreeMap<String, f64>) -> Option<f64> {
    m.values().copied().reduce(f64::min)
}

type Sweeps<'a> = (&'a [EvalRow], &'a [EdgeEvalRow], &'a Ends);

fn summary(
    c: &crate::Circuit,
    (rows, edge_rows, ends): Sweeps<'_>,
    (node_threshold, edge_threshold): (f64, f64),
    subs: &Submodules,
    nodes: &[super::discover::ScoredNode],
) -> String {
    let mut s = format!("{}\n\n", c.title);
    let _ = writeln!(s, "method: {}\n", c.method.name);
    for (k, v) in &c.scores {
        let _ = writeln!(s, "{k:>28}: {}", render::short(*v));
    }
    let opt = |v: Option<f64>| v.map_or("-".to_string(), render::short);
    let _ = writeln!(
        s,
        "\nsweep (node threshold → nodes, faithfulness, complement; the same over the {} of {} pairs the model gets right):",
        ends.pairs_right,
        ends.pairs_by_case.values().sum::<usize>()
    );
    for r in rows {
        let _ = writeln!(
            s,
            "  {:>10}  {:>6} ({:>6.2}%)  {:>8}  {:>8}  {:>8}  {:>8}",
            render::short(r.threshold),
            r.nodes,
            100.0 * r.node_fraction,
            render::short(r.faithfulness),
            render::short(r.complement_faithfulness),
            opt(r.faithfulness_right),
            opt(r.complement_faithfulness_right)
        );
    }
    let _ = writeln!(
        s,
        "\nedges ({} nodes; edges outside the circuit ablated too) → edges kept, faithfulness:",
        edge_rows.first().map_or(0, |r| r.nodes)
    );
    for r in edge_rows {
        let _ = writeln!(
            s,
            "  {:>10}  {:>6} ({:>6.2}%)  {:>8}",
            render::short(r.edge_threshold),
            r.edges,
            100.0 * r.edge_fraction,
            render::short(r.faithfulness)
        );
    }
    let row = rows.iter().find(|r| r.threshold == node_threshold);
    let edge_row = edge_rows
        .iter()
        .find(|r| r.edge_threshold == edge_threshold);
    let _ = writeln!(
        s,
        "\nper case (each normalised by its own F(M), F(∅)) at node threshold {}, edge threshold {}:\n  {:<20} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
        render::short(node_threshold),
        render::short(edge_threshold),
        "case",
        "pairs",
        "F(M)",
        "F(∅)",
        "faithful",
        "complemt",
        "edges"
    );
    for (case, n) in &ends.pairs_by_case {
        let get = |m: Option<&BTreeMap<String, f64>>| {
            m.and_then(|m| m.get(case))
                .map_or("-".to_string(), |v| render::short(*v))
        };
        let _ = writeln!(
            s,
            "  {:<20} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9}",
            case,
            n,
            get(Some(&ends.f_model_by_case)),
            get(Some(&ends.f_empty_by_case)),
            get(row.map(|r| &r.faithfulness_by_case)),
            get(row.map(|r| &r.complement_faithfulness_by_case)),
            get(edge_row.map(|r| &r.faithfulness_by_case)),
        );
    }
    let mut top: Vec<_> = nodes.to_vec();
    top.sort_by(|a, b| b.effect.abs().total_cmp(&a.effect.abs()));
    let _ = writeln!(s, "\nstrongest nodes ({} in the circuit):", nodes.len());
    for n in top.iter().take(20) {
        let _ = writeln!(
            s,
            "  {:<14} effect {}",
            label(subs, n.node),
            render::short(n.effect)
        );
    }
    let mut edges: Vec<_> = c.edges.iter().collect();
    edges.sort_by(|a, b| b.weight.all.abs().total_cmp(&a.weight.all.abs()));
    let _ = writeln!(s, "\nstrongest edges ({} drawn):", c.edges.len());
    for e in edges.iter().take(20) {
        let _ = writeln!(
            s,
            "  {} -> {}  {}",
            e.source,
            e.target,
            render::short(e.weight.all)
        );
    }
    s
}

/// Write the output files into `out`, each atomically.
pub fn write_outputs(out: &Path, o: &Gpt2Outputs) -> Result<()> {
    for (name, bytes) in &o.files {
        atomic::write_bytes(&out.join(name), bytes)?;
    }
    Ok(())
}

/// The whole stage: build, write the outputs, then `stage.json` last. Returns the
/// summary text.
pub fn run_gpt2_stage(cfg: &Gpt2StageConfig, timer: StageTimer) -> Result<String> {
    let outputs = build_gpt2(cfg)?;
    write_outputs(&cfg.out, &outputs)?;
    let mut inputs: Vec<&Path> = vec![&cfg.model, &cfg.store];
    inputs.extend(cfg.saes.iter().map(PathBuf::as_path));
    timer.finish(cfg, &inputs, &cfg.out, &OUTPUT_FILES)?;
    // The parts, if any, are summed into the outputs: no longer needed.
    let parts = cfg.out.join(PARTS_DIR);
    if parts.exists() {
        std::fs::remove_dir_all(&parts).map_err(|e| Error::Missing {
            what: format!("the finished parts {}", parts.display()),
            detail: format!(
                "cannot delete them ({e}); the circuit is complete, delete them by hand"
            ),
        })?;
    }
    Ok(String::from_utf8_lossy(&outputs.files["summary.txt"]).into_owned())
}
