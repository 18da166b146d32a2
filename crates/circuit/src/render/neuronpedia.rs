//! Export to Neuronpedia's attribution-graph JSON (`{metadata, qParams, nodes, links}`,
//! the format its graph viewer and `circuit-tracer` use), so a circuit can be uploaded
//! and browsed there next to the features' dashboards.
//!
//! Mapping (one Neuronpedia node per circuit node, one link per edge):
//!
//! | circuit | Neuronpedia |
//! |---|---|
//! | `input` node | `feature_type: "embedding"`, `node_id: "E_{index}_{pos}"` |
//! | `feature` node | `feature_type: "cross layer transcoder"` (the type the viewer draws as a latent), `node_id: "{layer}_{index}_{pos}"` |
//! | `hidden` node | `feature_type: "cross layer transcoder"`, as a feature |
//! | `error` node | `feature_type: "mlp reconstruction error"`, `node_id: "{layer}_error_{pos}"` |
//! | `output` node | `feature_type: "logit"`, `is_target_logit: true`, `node_id: "{layer}_{index}_{pos}"` |
//! | edge weight (`all`) | `links[].weight` |
//!
//! `layer` is the circuit's graph layer (its drawing column), `pos` the token position
//! (0 when the circuit sums over positions). `influence` carries the node's effect on
//! the metric and `activation` its mean activation (over all examples); `clerp` names
//! the hook. Every node keeps its circuitry id in `circuitry_id`.
use serde_json::{json, Value};

use crate::graph::{Circuit, Node, NodeKind};

/// What Neuronpedia needs beyond the circuit itself.
#[derive(Debug, Clone, PartialEq)]
pub struct NeuronpediaOptions {
    /// The graph's slug (its name in URLs), e.g. `sva-tiny-simple`.
    pub slug: String,
    /// Neuronpedia's model id, e.g. `gpt2-small`.
    pub scan: String,
    /// A representative prompt's tokens (empty when the circuit aggregates many).
    pub prompt_tokens: Vec<String>,
}

/// The Neuronpedia node id of `n`.
pub fn node_id(n: &Node) -> String {
    let pos = n.position.unwrap_or(0);
    let index = n.index.unwrap_or(0);
    match n.kind {
        NodeKind::Input => format!("E_{index}_{pos}"),
        NodeKind::Error => format!("{}_error_{pos}", n.layer),
        NodeKind::Feature | NodeKind::Hidden | NodeKind::Output => {
            format!("{}_{index}_{pos}", n.layer)
        }
    }
}

fn feature_type(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Input => "embedding",
        NodeKind::Error => "mlp reconstruction error",
        NodeKind::Output => "logit",
        NodeKind::Feature | NodeKind::Hidden => "cross layer transcoder",
    }
}

/// The Neuronpedia graph JSON of `circuit`.
pub fn export(circuit: &Circuit, opts: &NeuronpediaOptions) -> Value {
    let ids: Vec<String> = circuit.nodes.iter().map(node_id).collect();
    let nodes: Vec<Value> = circuit
        .nodes
        .iter()
        .zip(&ids)
        .map(|(n, id)| {
            let mut clerp = format!("{} · {}", n.label, n.hook);
            if let Some(p) = n.position {
                clerp.push_str(&format!(" @ {p}"));
            }
            json!({
                "node_id": id,
                "feature": n.index.unwrap_or(0),
                "layer": n.layer.to_string(),
                "ctx_idx": n.position.unwrap_or(0),
                "feature_type": feature_type(n.kind),
                "token_prob": 0.0,
                "is_target_logit": n.kind == NodeKind::Output,
                "run_idx": 0,
                "reverse_ctx_idx": 0,
                "jsNodeId": id,
                "clerp": clerp,
                "influence": n.effect.as_ref().map_or(0.0, |s| s.all),
                "activation": n.activation.as_ref().map_or(0.0, |s| s.all),
                "circuitry_id": n.id,
            })
        })
        .collect();
    let links: Vec<Value> = circuit
        .edges
        .iter()
        .filter_map(|e| {
            let s = circuit.node_index(&e.source)?;
            let t = circuit.node_index(&e.target)?;
            Some(json!({ "source": ids[s], "target": ids[t], "weight": e.weight.all }))
        })
        .collect();
    json!({
        "metadata": {
            "slug": opts.slug,
            "scan": opts.scan,
            "prompt": opts.prompt_tokens.concat(),
            "prompt_tokens": opts.prompt_tokens,
            "schema_version": 1,
            "info": {
                "description": circuit.title,
                "generator": { "name": "circuitry", "version": circuit.provenance.tool_version },
                "metric": circuit.metric.name,
                "method": circuit.method.name,
                "scores": circuit.scores,
            },
        },
        "qParams": {
            "pinnedIds": [],
            "supernodes": [],
            "linkType": "both",
            "clickedId": "",
            "sparsityThreshold": circuit.thresholds.min_abs_weight,
        },
        "nodes": nodes,
        "links": links,
    })
}
