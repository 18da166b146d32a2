//! Paths through the circuit and their strength.
//!
//! The strength of a path is the product of its edges' weights (for one example
//! group, or over all examples). For the toy's mean-contribution weights, a path
//! input → H → F → output multiplies how much the input drives the hidden unit, the
//! hidden unit the feature, and the feature the output logit.
use std::collections::HashMap;

use crate::graph::{Circuit, NodeKind};
use crate::render::edge_weight;
use crate::{Error, Result};

/// Most paths [`strongest_paths`] will enumerate before giving up.
pub const MAX_PATHS: usize = 1_000_000;

/// One path from an input node to a target node.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedPath {
    /// Node indices (into `Circuit::nodes`), from the input to the target.
    pub nodes: Vec<usize>,
    /// The weight of each edge along the path (`nodes.len() - 1` of them).
    pub weights: Vec<f64>,
    /// The product of `weights`.
    pub strength: f64,
}

/// The `top` paths from any input node to the node `target` with the largest
/// |strength|, using edge weights of `group` (all examples when `None`). Ties keep
/// the canonical node order, so the result is deterministic.
pub fn strongest_paths(
    circuit: &Circuit,
    target: &str,
    group: Option<&str>,
    top: usize,
) -> Result<Vec<WeightedPath>> {
    let t = circuit
        .node_index(target)
        .ok_or_else(|| Error::graph(format!("no node {target:?} to trace paths to")))?;
    let ids: HashMap<&str, usize> = circuit
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    // Incoming edges of each node: (source node, weight).
    let mut incoming: Vec<Vec<(usize, f64)>> = vec![Vec::new(); circuit.nodes.len()];
    for e in &circuit.edges {
        if let (Some(&s), Some(&d)) = (ids.get(e.source.as_str()), ids.get(e.target.as_str())) {
            incoming[d].push((s, edge_weight(e, group)));
        }
    }
    for list in &mut incoming {
        list.sort_by_key(|&(s, _)| s);
    }
    let mut paths = Vec::new();
    // Depth-first, backwards from the target; the graph is layered, so it is acyclic.
    let mut stack: Vec<(Vec<usize>, Vec<f64>)> = vec![(vec![t], Vec::new())];
    while let Some((nodes, weights)) = stack.pop() {
        let head = nodes[nodes.len() - 1];
        if circuit.nodes[head].kind == NodeKind::Input {
            let mut nodes = nodes;
            nodes.reverse();
            let mut weights = weights;
            weights.reverse();
            let strength = weights.iter().product();
            paths.push(WeightedPath {
                nodes,
                weights,
                strength,
            });
            if paths.len() > MAX_PATHS {
                return Err(Error::graph(format!(
                    "more than {MAX_PATHS} paths lead to {target:?}; prune the circuit with a higher --min-weight"
                )));
            }
            continue;
        }
        for &(s, w) in incoming[head].iter().rev() {
            let mut n = nodes.clone();
            n.push(s);
            let mut ws = weights.clone();
            ws.push(w);
            stack.push((n, ws));
        }
    }
    paths.sort_by(|a, b| {
        b.strength
            .abs()
            .total_cmp(&a.strength.abs())
            .then_with(|| a.nodes.cmp(&b.nodes))
    });
    paths.truncate(top);
    Ok(paths)
}
