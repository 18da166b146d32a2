//! The [`Circuit`] graph of a GPT-2 circuit: one graph layer per submodule in forward
//! order, then the metric node; feature and error nodes with their mean effects; edges
//! with their mean weights.
use std::collections::{BTreeMap, BTreeSet};

use circuitry_core::HookPoint;

use super::discover::ScoredNode;
use super::edges::{EdgeSums, NodeRef};
use super::splice::{SubmoduleKind, Submodules};
use crate::graph::{
    Circuit, Described, Edge, Node, NodeKind, Provenance, Stat, Thresholds, CIRCUIT_SCHEMA_VERSION,
};
use crate::Result;

/// The hook the metric (output) node is drawn at.
pub const METRIC_HOOK: HookPoint = HookPoint::LnFinal;

/// Everything the graph is made of.
#[derive(Debug, Clone)]
pub struct GraphParts<'a> {
    /// The spliced submodules.
    pub subs: &'a Submodules,
    /// The circuit's nodes with their mean effects and activations.
    pub nodes: &'a [ScoredNode],
    /// Mean edge weights between them.
    pub edges: &'a EdgeSums,
    /// Edges with |weight| below this are left out.
    pub edge_threshold: f64,
    /// The node threshold the nodes were selected with.
    pub node_threshold: f64,
    /// Mean clean metric (the output node's activation).
    pub metric_mean: f64,
}

/// The graph's metadata.
#[derive(Debug, Clone)]
pub struct GraphMeta {
    /// Title.
    pub title: String,
    /// How node effects and edges were computed.
    pub method: Described,
    /// The metric.
    pub metric: Described,
    /// Input fingerprints.
    pub provenance: Provenance,
    /// Number of pairs.
    pub n_examples: u64,
    /// Named scores.
    pub scores: BTreeMap<String, f64>,
    /// Remarks.
    pub notes: Vec<String>,
    /// Token labels of the positions (per-position circuits; empty otherwise).
    pub positions: Vec<String>,
}

/// A short label: `R2`, `A1`, `M3` for the submodule, then `/123` or ` err`, and
/// `@p` for a position.
pub fn label(subs: &Submodules, n: NodeRef) -> String {
    let Some(sub) = subs.all().get(n.sub) else {
        return "logit diff".into();
    };
    let layer = match sub.hook {
        HookPoint::ResidPost { layer } => layer + 1,
        h => h.layer().unwrap_or(0),
    };
    let k = match sub.kind {
        SubmoduleKind::Resid => "R",
        SubmoduleKind::Attn => "A",
        SubmoduleKind::Mlp => "M",
    };
    let mut s = match n.feature {
        Some(i) => format!("{k}{layer}/{i}"),
        None => format!("{k}{layer} err"),
    };
    if let Some(p) = n.position {
        s.push_str(&format!("@{p}"));
    }
    s
}

fn node_of(subs: &Submodules, n: NodeRef) -> Node {
    let pos = n.position.map(|p| p as u32);
    match subs.all().get(n.sub) {
        Some(sub) => Node::new(
            if n.feature.is_some() {
                NodeKind::Feature
            } else {
                NodeKind::Error
            },
            label(subs, n),
            sub.hook,
            n.sub as u32,
            pos,
            n.feature.map(|i| i as u32),
        ),
        None => Node::new(
            NodeKind::Output,
            "logit diff",
            METRIC_HOOK,
            subs.len() as u32,
            None,
            None,
        ),
    }
}

/// Build the circuit graph.
pub fn build_graph(parts: &GraphParts<'_>, meta: GraphMeta) -> Result<Circuit> {
    let subs = parts.subs;
    let metric = NodeRef {
        sub: subs.len(),
        position: None,
        feature: None,
    };
    let mut nodes: Vec<Node> = Vec::new();
    let mut ids: BTreeMap<NodeRef, String> = BTreeMap::new();
    for sn in parts.nodes {
        let mut node = node_of(subs, sn.node);
        node.effect = Some(Stat::new(sn.effect));
        node.activation = Some(Stat::new(sn.activation));
        ids.insert(sn.node, node.id.clone());
        nodes.push(node);
    }
    let mut out = node_of(subs, metric);
    out.activation = Some(Stat::new(parts.metric_mean));
    ids.insert(metric, out.id.clone());
    nodes.push(out);
    let mut edges = Vec::new();
    let mut seen = BTreeSet::new();
    for (&(u, d), &w) in parts.edges {
        if w.abs() < parts.edge_threshold || !seen.insert((u, d)) {
            continue;
        }
        if let (Some(s), Some(t)) = (ids.get(&u), ids.get(&d)) {
            edges.push(Edge {
                source: s.clone(),
                target: t.clone(),
                weight: Stat::new(w),
            });
        }
    }
    let mut c = Circuit {
        schema_version: CIRCUIT_SCHEMA_VERSION,
        title: meta.title,
        method: meta.method,
        metric: meta.metric,
        provenance: meta.provenance,
        n_examples: meta.n_examples,
        groups: Vec::new(),
        thresholds: Thresholds {
            min_abs_weight: parts.edge_threshold,
            node_threshold: Some(parts.node_threshold),
        },
        scores: meta.scores,
        notes: meta.notes,
        positions: meta.positions,
        nodes,
        edges,
    };
    c.canonicalize();
    c.validate()?;
    Ok(c)
}
