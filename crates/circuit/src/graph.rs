//! The circuit graph and its `circuit.json` form.
//!
//! A [`Circuit`] is a layered directed graph: every [`Node`] has a graph `layer` (the
//! column of the drawing) and every [`Edge`] runs from a lower layer to a higher one.
//! Values are [`Stat`]s: a mean over all examples plus, optionally, means over named
//! [`Group`]s of examples (for the toy: the examples the model predicts as "runs" and
//! as "run"). The JSON schema is documented in [`crate::schema`].
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use circuitry_core::{atomic, HookPoint};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Version of the `circuit.json` schema written by [`Circuit::write`].
pub const CIRCUIT_SCHEMA_VERSION: u32 = 1;

/// File name of the circuit graph inside a circuit stage's output directory.
pub const CIRCUIT_FILE: &str = "circuit.json";

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// A model input unit (the toy's `singular` and `plural` inputs).
    Input,
    /// A hidden unit of the model (the toy's H1..H4).
    Hidden,
    /// An SAE feature (latent) at a hook.
    Feature,
    /// The SAE error term at a hook: activation minus the SAE's reconstruction.
    Error,
    /// A model output unit (the toy's `runs` and `run` logits).
    Output,
}

impl NodeKind {
    /// The name used in node ids and in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeKind::Input => "input",
            NodeKind::Hidden => "hidden",
            NodeKind::Feature => "feature",
            NodeKind::Error => "error",
            NodeKind::Output => "output",
        }
    }

    /// True for the kinds that are kept when pruning leaves them without edges.
    pub fn is_endpoint(&self) -> bool {
        matches!(self, NodeKind::Input | NodeKind::Output)
    }
}

/// A value measured over examples: the mean over all of them and, optionally, the mean
/// over each named group of examples (see [`Circuit::groups`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stat {
    /// Mean over all examples.
    pub all: f64,
    /// Mean over the examples of each group, by group name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_group: BTreeMap<String, f64>,
}

impl Stat {
    /// A value with no per-group breakdown.
    pub fn new(all: f64) -> Self {
        Stat {
            all,
            by_group: BTreeMap::new(),
        }
    }

    /// The mean over `group`, or over all examples when `group` is `None`.
    pub fn get(&self, group: Option<&str>) -> Option<f64> {
        match group {
            None => Some(self.all),
            Some(g) => self.by_group.get(g).copied(),
        }
    }

    /// The largest magnitude over all examples and every group.
    pub fn max_abs(&self) -> f64 {
        self.by_group
            .values()
            .fold(self.all.abs(), |m, v| m.max(v.abs()))
    }
}

/// A node of the circuit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Unique id, made by [`Node::make_id`]: `KIND:HOOK[@POSITION][/INDEX]`.
    pub id: String,
    /// What the node stands for.
    pub kind: NodeKind,
    /// Short display label (`H1`, `F3`, `runs`).
    pub label: String,
    /// The hook the node lives at (the SAE's hook for features and error nodes).
    pub hook: HookPoint,
    /// Graph layer: the column of the layered drawing. Edges run from lower to higher
    /// layers. The toy uses 0 inputs, 1 hidden, 2 SAE features and error, 3 outputs.
    pub layer: u32,
    /// Token position, when the graph keeps positions apart; `None` when the node
    /// stands for one position only (the toy) or is summed over positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// 0-based index of the unit at its hook: input, neuron, feature or output index.
    /// `None` for error nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The node's activation (for error nodes: the norm of the error vector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<Stat>,
    /// The part of `activation` that comes from constants (biases) rather than from
    /// any node of the graph, so that activation = Σ incoming edge weights + bias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<Stat>,
    /// The node's effect on the circuit's metric (see [`Circuit::metric`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<Stat>,
}

impl Node {
    /// A node with no measured values; its id is made by [`Node::make_id`].
    pub fn new(
        kind: NodeKind,
        label: impl Into<String>,
        hook: HookPoint,
        layer: u32,
        position: Option<u32>,
        index: Option<u32>,
    ) -> Self {
        Node {
            id: Node::make_id(kind, hook, position, index),
            kind,
            label: label.into(),
            hook,
            layer,
            position,
            index,
            activation: None,
            bias: None,
            effect: None,
        }
    }

    /// The id of a node: `KIND:HOOK[@POSITION][/INDEX]`, e.g. `feature:toy.hook_hidden/3`,
    /// `error:blocks.2.hook_resid_pre@5`.
    pub fn make_id(
        kind: NodeKind,
        hook: HookPoint,
        position: Option<u32>,
        index: Option<u32>,
    ) -> String {
        let mut id = format!("{}:{hook}", kind.as_str());
        if let Some(p) = position {
            id.push_str(&format!("@{p}"));
        }
        if let Some(i) = index {
            id.push_str(&format!("/{i}"));
        }
        id
    }

    fn order_key(&self) -> (u32, Option<u32>, NodeKind, Option<u32>, &str) {
        (
            self.layer,
            self.position,
            self.kind,
            self.index,
            self.id.as_str(),
        )
    }
}

/// A directed, weighted edge between two nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// Id of the upstream node.
    pub source: String,
    /// Id of the downstream node.
    pub target: String,
    /// The edge's weight (its meaning is given by [`Circuit::method`]).
    pub weight: Stat,
}

/// A named subset of the examples over which [`Stat::by_group`] means are taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Name used as key in `by_group`.
    pub name: String,
    /// Which examples belong to it.
    pub description: String,
    /// How many examples it holds.
    pub n_examples: u64,
}

/// A name with a precise description (the method and the metric).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Described {
    /// Short machine-friendly name, e.g. `mean_contribution`.
    pub name: String,
    /// Exact definition in words and formulas.
    pub description: String,
}

/// Where the circuit's inputs came from, by content fingerprint (BLAKE3 hex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// Version of the tool that built the circuit.
    pub tool_version: String,
    /// Fingerprint of the model weights.
    pub model: String,
    /// Fingerprint of the dataset (the activation store directory).
    pub dataset: String,
    /// Fingerprint of each SAE directory, by hook name.
    pub saes: BTreeMap<String, String>,
}

/// Pruning thresholds applied to the graph.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Edges whose |weight| is below this over all examples and in every group were
    /// removed (0 = nothing removed).
    pub min_abs_weight: f64,
    /// Nodes whose |effect| is at most this were left out (GPT-2 circuits; absent for
    /// graphs that select nodes otherwise, like the toy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_threshold: Option<f64>,
}

/// A feature circuit: the whole `circuit.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Circuit {
    /// Schema version ([`CIRCUIT_SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Title shown on drawings and summaries.
    pub title: String,
    /// How node values and edge weights were computed.
    pub method: Described,
    /// The quantity node effects refer to.
    pub metric: Described,
    /// Fingerprints of the inputs.
    pub provenance: Provenance,
    /// Number of examples the means are over.
    pub n_examples: u64,
    /// Example groups used in `by_group` breakdowns.
    pub groups: Vec<Group>,
    /// Pruning thresholds applied.
    pub thresholds: Thresholds,
    /// Named scores (accuracy, faithfulness, ...).
    pub scores: BTreeMap<String, f64>,
    /// Free-text remarks a reader needs (e.g. constants not drawn as nodes).
    pub notes: Vec<String>,
    /// Token labels of the positions of a per-position circuit (template-aligned
    /// pairs): `positions[p]` is the token at position `p` of the first pair's clean
    /// prompt, decoded. Empty (and omitted from the JSON) otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub positions: Vec<String>,
    /// The nodes, in canonical order (layer, position, kind, index, id).
    pub nodes: Vec<Node>,
    /// The edges, in canonical order (source's then target's node order).
    pub edges: Vec<Edge>,
}

impl Circuit {
    /// Index of the node with `id`.
    pub fn node_index(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// Check the schema's rules: unique node ids, edges between existing nodes from a
    /// lower to a higher layer and without duplicates, group names declared, all
    /// numbers finite.
    pub fn validate(&self) -> Result<()> {
        let mut index = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if index.insert(n.id.as_str(), i).is_some() {
                return Err(Error::graph(format!("duplicate node id {:?}", n.id)));
            }
        }
        let groups: BTreeSet<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();
        if groups.len() != self.groups.len() {
            return Err(Error::graph("duplicate group name"));
        }
        let check_stat = |stat: &Stat, field: String| -> Result<()> {
            check_finite(stat.all, &field)?;
            for (g, v) in &stat.by_group {
                if !groups.contains(g.as_str()) {
                    return Err(Error::graph(format!(
                        "{field} has a value for group {g:?}, which is not declared in groups"
                    )));
                }
                check_finite(*v, &format!("{field}.by_group.{g}"))?;
            }
            Ok(())
        };
        for n in &self.nodes {
            if let Some(p) = n.position.filter(|_| !self.positions.is_empty()) {
                if p as usize >= self.positions.len() {
                    return Err(Error::graph(format!(
                        "node {} is at position {p} but positions has {} labels",
                        n.id,
                        self.positions.len()
                    )));
                }
            }
            for (name, stat) in [
                ("activation", &n.activation),
                ("bias", &n.bias),
                ("effect", &n.effect),
            ] {
                if let Some(s) = stat {
                    check_stat(s, format!("node {}.{name}", n.id))?;
                }
            }
        }
        let mut seen = BTreeSet::new();
        for e in &self.edges {
            let find = |id: &str| {
                index.get(id).copied().ok_or_else(|| {
                    Error::graph(format!(
                        "edge {} -> {} names unknown node {id:?}",
                        e.source, e.target
                    ))
                })
            };
            let (s, t) = (find(&e.source)?, find(&e.target)?);
            if self.nodes[s].layer >= self.nodes[t].layer {
                return Err(Error::graph(format!(
                    "edge {} -> {} does not go from a lower to a higher layer ({} -> {})",
                    e.source, e.target, self.nodes[s].layer, self.nodes[t].layer
                )));
            }
            if !seen.insert((s, t)) {
                return Err(Error::graph(format!(
                    "duplicate edge {} -> {}",
                    e.source, e.target
                )));
            }
            check_stat(&e.weight, format!("edge {} -> {}", e.source, e.target))?;
        }
        for (name, v) in &self.scores {
            check_finite(*v, &format!("scores.{name}"))?;
        }
        if let Some(t) = self.thresholds.node_threshold {
            check_finite(t, "thresholds.node_threshold")?;
        }
        check_finite(self.thresholds.min_abs_weight, "thresholds.min_abs_weight")
    }

    /// Put nodes and edges in canonical order and turn `-0.0` into `0.0`, so the same
    /// graph always serialises to the same bytes.
    pub fn canonicalize(&mut self) {
        self.nodes.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        let order: HashMap<String, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        let key = |e: &Edge| {
            (
                order.get(&e.source).copied().unwrap_or(usize::MAX),
                order.get(&e.target).copied().unwrap_or(usize::MAX),
            )
        };
        self.edges.sort_by(|a, b| match key(a).cmp(&key(b)) {
            Ordering::Equal => (&a.source, &a.target).cmp(&(&b.source, &b.target)),
            o => o,
        });
        for n in &mut self.nodes {
            for s in [&mut n.activation, &mut n.bias, &mut n.effect]
                .into_iter()
                .flatten()
            {
                positive_zero(s);
            }
        }
        for e in &mut self.edges {
            positive_zero(&mut e.weight);
        }
    }

    /// Remove edges whose |weight| is below `min_abs_weight` over all examples and in
    /// every group, then nodes other than inputs and outputs left without any edge.
    /// Records the threshold in [`Circuit::thresholds`].
    pub fn prune(&mut self, min_abs_weight: f64) {
        self.thresholds.min_abs_weight = min_abs_weight;
        if min_abs_weight <= 0.0 {
            return;
        }
        self.edges.retain(|e| e.weight.max_abs() >= min_abs_weight);
        let touched: BTreeSet<&str> = self
            .edges
            .iter()
            .flat_map(|e| [e.source.as_str(), e.target.as_str()])
            .collect();
        let keep: Vec<bool> = self
            .nodes
            .iter()
            .map(|n| n.kind.is_endpoint() || touched.contains(n.id.as_str()))
            .collect();
        let mut keep = keep.into_iter();
        self.nodes.retain(|_| keep.next().unwrap_or(true));
    }

    /// The canonical JSON bytes of the circuit (validated, canonical order, pretty,
    /// final newline). Same graph → same bytes.
    pub fn to_json_bytes(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let mut c = self.clone();
        c.canonicalize();
        let mut bytes = serde_json::to_vec_pretty(&c).map_err(|source| {
            Error::Core(circuitry_core::Error::Json {
                path: CIRCUIT_FILE.into(),
                source,
            })
        })?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Write the circuit as canonical JSON to `path`, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let bytes = self.to_json_bytes()?;
        Ok(atomic::write_bytes(path, &bytes)?)
    }

    /// Read and validate a `circuit.json`.
    pub fn read(path: &Path) -> Result<Circuit> {
        #[derive(Deserialize)]
        struct VersionOnly {
            schema_version: u32,
        }
        let v: VersionOnly = atomic::read_json(path)?;
        if v.schema_version != CIRCUIT_SCHEMA_VERSION {
            return Err(Error::SchemaVersion {
                path: path.to_path_buf(),
                found: v.schema_version,
                expected: CIRCUIT_SCHEMA_VERSION,
            });
        }
        let c: Circuit = atomic::read_json(path)?;
        c.validate()?;
        Ok(c)
    }
}

fn check_finite(v: f64, field: &str) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFinite {
            field: field.to_string(),
            value: v,
        })
    }
}

fn positive_zero(s: &mut Stat) {
    // `-0.0 + 0.0` is `+0.0`; every other value is unchanged.
    s.all += 0.0;
    for v in s.by_group.values_mut() {
        *v += 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Circuit {
        let a = Node::new(NodeKind::Input, "a", HookPoint::ToyInput, 0, None, Some(0));
        let b = Node::new(
            NodeKind::Output,
            "b",
            HookPoint::ToyLogits,
            1,
            None,
            Some(0),
        );
        Circuit {
            schema_version: CIRCUIT_SCHEMA_VERSION,
            title: "t".into(),
            method: Described {
                name: "m".into(),
                description: "d".into(),
            },
            metric: Described {
                name: "m".into(),
                description: "d".into(),
            },
            provenance: Provenance {
                tool_version: "0".into(),
                model: "x".into(),
                dataset: "y".into(),
                saes: BTreeMap::new(),
            },
            n_examples: 1,
            groups: vec![],
            thresholds: Thresholds::default(),
            scores: BTreeMap::new(),
            notes: vec![],
            positions: vec![],
            edges: vec![Edge {
                source: a.id.clone(),
                target: b.id.clone(),
                weight: Stat::new(-0.0),
            }],
            nodes: vec![b, a],
        }
    }

    #[test]
    fn ids_name_kind_hook_position_and_index() {
        assert_eq!(
            Node::make_id(NodeKind::Feature, HookPoint::ToyHidden, None, Some(3)),
            "feature:toy.hook_hidden/3"
        );
        assert_eq!(
            Node::make_id(
                NodeKind::Error,
                HookPoint::ResidPre { layer: 2 },
                Some(5),
                None
            ),
            "error:blocks.2.hook_resid_pre@5"
        );
    }

    #[test]
    fn edges_must_go_up_the_layers() {
        let mut c = tiny();
        c.validate().unwrap();
        c.edges[0] = Edge {
            source: c.edges[0].target.clone(),
            target: c.edges[0].source.clone(),
            weight: Stat::new(1.0),
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("lower to a higher layer"), "{err}");
    }

    #[test]
    fn undeclared_group_and_nan_are_rejected() {
        let mut c = tiny();
        c.edges[0].weight.by_group.insert("runs".into(), 1.0);
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not declared"));
        let mut c = tiny();
        c.edges[0].weight.all = f64::NAN;
        assert!(matches!(c.validate(), Err(Error::NonFinite { .. })));
    }

    #[test]
    fn canonical_json_sorts_and_drops_negative_zero() {
        let c = tiny();
        let text = String::from_utf8(c.to_json_bytes().unwrap()).unwrap();
        assert!(text.find("input:toy.hook_input/0").unwrap() < text.find("\"output:").unwrap());
        assert!(!text.contains("-0.0"), "{text}");
    }
}
