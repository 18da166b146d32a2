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
    let pruning = if circuit.thresholds.min_abs_weight > 0.0 {
        format!(
            "edges with |weight| < {} removed",
            circuit.thresholds.min_abs_weight
        )
    } else {
        "nothing pruned".to_string()
    };
    let _ = writeln!(
        s,
        "graph: {} nodes, {} edges ({pruning})",
        circuit.nodes.len(),
        circuit.edges.len()
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
        if let Some(line) = t.breakdown(circuit) {
            let _ = writeln!(s, "  {line}");
        }
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

impl PathTarget<'_> {
    /// "mean activation = Σ incoming edges + bias" for the target, in its group, with
    /// the largest incoming edges named.
    fn breakdown(&self, circuit: &Circuit) -> Option<String> {
        let node = &circuit.nodes[circuit.node_index(self.node_id)?];
        let activation = node.activation.as_ref()?.get(self.group)?;
        let mut incoming: Vec<(f64, &str)> = circuit
            .edges
            .iter()
            .filter(|e| e.target == node.id)
            .filter_map(|e| {
                let w = e.weight.get(self.group)?;
                let src = circuit.node_index(&e.source)?;
                Some((w, circuit.nodes[src].label.as_str()))
            })
            .collect();
        let total: f64 = incoming.iter().map(|(w, _)| w).sum();
        let bias = node
            .bias
            .as_ref()
            .and_then(|b| b.get(self.group))
            .unwrap_or(0.0);
        incoming.sort_by(|a, b| b.0.abs().total_cmp(&a.0.abs()));
        let top: Vec<String> = incoming
            .iter()
            .take(3)
            .map(|(w, l)| format!("{l} {}", signed(*w)))
            .collect();
        Some(format!(
            "mean {} = {}: incoming edges {} (largest: {}) + bias {}",
            node.label,
            short(activation),
            signed(total),
            top.join(", "),
            signed(bias)
        ))
    }
}
