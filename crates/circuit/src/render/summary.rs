//! `summary.txt`: the circuit's headline numbers and its strongest paths.
use std::fmt::Write;

use super::short;
use crate::graph::Circuit;
use crate::paths::strongest_paths;
use crate::Result;

/// A node to list the strongest paths into, with the example group whose edge weights
/// to use (all examples when `None`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathTarget<'a> {
    /// Id of the target node.
    pub node_id: &'a str,
    /// Group whose mean weights define path strength.
    pub group: Option<&'a str>,
}

/// Render the summary: title, method, metric, example counts, scores, notes, then for
/// each target the `top` strongest paths with their strength and edge weights.
pub fn render(circuit: &Circuit, targets: &[PathTarget<'_>], top: usize) -> Result<String> {
    let mut s = String::new();
    let _ = writeln!(s, "{}", circuit.title);
    let _ = writeln!(s, "{}", "=".repeat(circuit.title.chars().count()));
    let _ = writeln!(s, "method: {}", circuit.method.name);
    let _ = writeln!(
        s,
        "metric: {} — {}",
        circuit.metric.name, circuit.metric.description
    );
    let _ = writeln!(s, "examples: {}", circuit.n_examples);
    for g in &circuit.groups {
        let _ = writeln!(
            s,
            "  group {:?}: {} examples ({})",
            g.name, g.n_examples, g.description
        );
    }
    for (name, v) in &circuit.scores {
        let _ = writeln!(s, "{name}: {v:.4}");
    }
    let _ = writeln!(
        s,
        "graph: {} nodes, {} edges (edges with |weight| < {} removed)",
        circuit.nodes.len(),
        circuit.edges.len(),
        circuit.thresholds.min_abs_weight
    );
    for note in &circuit.notes {
        let _ = writeln!(s, "note: {note}");
    }
    for t in targets {
        let paths = strongest_paths(circuit, t.node_id, t.group, top)?;
        let label = circuit
            .node_index(t.node_id)
            .map(|i| circuit.nodes[i].label.as_str())
            .unwrap_or(t.node_id);
        let over = match t.group {
            Some(g) => format!("mean weights over the examples of group {g:?}"),
            None => "mean weights over all examples".to_string(),
        };
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "Strongest paths to {label:?} ({over}; strength = product of edge weights):"
        );
        if paths.is_empty() {
            let _ = writeln!(s, "  (no path from an input)");
        }
        for (k, p) in paths.iter().enumerate() {
            let names: Vec<&str> = p
                .nodes
                .iter()
                .map(|&i| circuit.nodes[i].label.as_str())
                .collect();
            let factors: Vec<String> = p.weights.iter().map(|&w| short(w)).collect();
            let _ = writeln!(
                s,
                "  {:>2}. {:>10}  {}   [{}]",
                k + 1,
                signed(p.strength),
                names.join(" → "),
                factors.join(" × ")
            );
        }
    }
    Ok(s)
}

/// [`short`] with an explicit `+` on non-negative numbers.
fn signed(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", short(v))
    } else {
        short(v)
    }
}
