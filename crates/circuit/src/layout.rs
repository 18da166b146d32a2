//! Layered layout: one column per graph layer, nodes ordered within a column to reduce
//! edge crossings (barycentre heuristic, Sugiyama style).
//!
//! Within a column, nodes are kept in bands: by token position first (so a GPT-2
//! circuit reads position by position), error nodes after the other nodes of their
//! position; the barycentre heuristic orders nodes inside a band only.
use std::collections::{BTreeMap, HashMap};

use crate::graph::{Circuit, NodeKind};

/// The order of the nodes in each column of a layered drawing.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The graph layer of each column, ascending.
    pub layers: Vec<u32>,
    /// Node indices (into `Circuit::nodes`) per column, top to bottom.
    pub columns: Vec<Vec<usize>>,
    /// Number of edge crossings between adjacent columns in this order.
    pub crossings: usize,
}

impl Layout {
    /// For each node index: (column, row).
    pub fn slots(&self) -> HashMap<usize, (usize, usize)> {
        let mut slots = HashMap::new();
        for (c, col) in self.columns.iter().enumerate() {
            for (r, &n) in col.iter().enumerate() {
                slots.insert(n, (c, r));
            }
        }
        slots
    }
}

/// Number of down-then-up barycentre sweeps.
const SWEEPS: usize = 12;

/// Lay out `circuit` in columns by layer, ordering nodes to reduce crossings.
///
/// Deterministic: the start order is the canonical node order (position, kind, index),
/// sweeps alternate downstream and upstream, ties keep the previous order, and the
/// order with the fewest crossings seen is returned (the earliest on ties).
pub fn layered(circuit: &Circuit) -> Layout {
    let mut by_layer: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, n) in circuit.nodes.iter().enumerate() {
        by_layer.entry(n.layer).or_default().push(i);
    }
    let layers: Vec<u32> = by_layer.keys().copied().collect();
    let mut columns: Vec<Vec<usize>> = by_layer.into_values().collect();
    for col in &mut columns {
        col.sort_by(|&a, &b| {
            let (na, nb) = (&circuit.nodes[a], &circuit.nodes[b]);
            (band(circuit, a), na.kind, na.index, &na.id).cmp(&(
                band(circuit, b),
                nb.kind,
                nb.index,
                &nb.id,
            ))
        });
    }
    let col_of: HashMap<usize, usize> = columns
        .iter()
        .enumerate()
        .flat_map(|(c, col)| col.iter().map(move |&n| (n, c)))
        .collect();
    let ids: HashMap<&str, usize> = circuit
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    // (source, target, |weight|) between node indices.
    let edges: Vec<(usize, usize, f64)> = circuit
        .edges
        .iter()
        .filter_map(|e| {
            Some((
                *ids.get(e.source.as_str())?,
                *ids.get(e.target.as_str())?,
                e.weight.all.abs(),
            ))
        })
        .collect();

    let mut best = columns.clone();
    let mut best_crossings = count_crossings(&columns, &col_of, &edges);
    for sweep in 0..SWEEPS {
        let downstream = sweep % 2 == 0;
        let order: Vec<usize> = if downstream {
            (1..columns.len()).collect()
        } else {
            (0..columns.len().saturating_sub(1)).rev().collect()
        };
        for c in order {
            let neighbour_col = if downstream { c - 1 } else { c + 1 };
            let rank: HashMap<usize, usize> = columns[neighbour_col]
                .iter()
                .enumerate()
                .map(|(r, &n)| (n, r))
                .collect();
            let mut sum: HashMap<usize, (f64, f64)> = HashMap::new();
            for &(s, t, w) in &edges {
                let (here, there) = if downstream { (t, s) } else { (s, t) };
                if col_of.get(&here) == Some(&c) {
                    if let Some(&r) = rank.get(&there) {
                        // Weight by |w| so strong edges pull harder; a floor keeps
                        // zero-weight edges counted.
                        let w = w + 1e-9;
                        let acc = sum.entry(here).or_insert((0.0, 0.0));
                        acc.0 += w * r as f64;
                        acc.1 += w;
                    }
                }
            }
            // Nodes without neighbours keep their scaled current row.
            let scale = columns[neighbour_col].len().max(1) as f64 / columns[c].len().max(1) as f64;
            let mut keyed: Vec<(usize, f64)> = columns[c]
                .iter()
                .enumerate()
                .map(|(r, &n)| {
                    let b = match sum.get(&n) {
                        Some(&(num, den)) if den > 0.0 => num / den,
                        _ => r as f64 * scale,
                    };
                    (n, b)
                })
                .collect();
            keyed.sort_by(|&(a, ka), &(b, kb)| {
                band(circuit, a)
                    .cmp(&band(circuit, b))
                    .then(ka.total_cmp(&kb))
            });
            columns[c] = keyed.into_iter().map(|(n, _)| n).collect();
        }
        let crossings = count_crossings(&columns, &col_of, &edges);
        if crossings < best_crossings {
            best_crossings = crossings;
            best = columns.clone();
        }
    }
    Layout {
        layers,
        columns: best,
        crossings: best_crossings,
    }
}

/// The band a node sits in within its column: (position, is-error).
fn band(circuit: &Circuit, node: usize) -> (Option<u32>, bool) {
    let n = &circuit.nodes[node];
    (n.position, n.kind == NodeKind::Error)
}

/// Edge crossings between adjacent columns (edges spanning more columns are counted
/// between their end columns as if adjacent).
fn count_crossings(
    columns: &[Vec<usize>],
    col_of: &HashMap<usize, usize>,
    edges: &[(usize, usize, f64)],
) -> usize {
    let mut row = HashMap::new();
    for col in columns {
        for (r, &n) in col.iter().enumerate() {
            row.insert(n, r);
        }
    }
    // Group edges by (source column, target column).
    let mut groups: BTreeMap<(usize, usize), Vec<(usize, usize)>> = BTreeMap::new();
    for &(s, t, _) in edges {
        if let (Some(&cs), Some(&ct), Some(&rs), Some(&rt)) =
            (col_of.get(&s), col_of.get(&t), row.get(&s), row.get(&t))
        {
            groups.entry((cs, ct)).or_default().push((rs, rt));
        }
    }
    let mut crossings = 0;
    for pairs in groups.values() {
        for (i, a) in pairs.iter().enumerate() {
            for b in &pairs[i + 1..] {
                if (a.0 < b.0 && a.1 > b.1) || (a.0 > b.0 && a.1 < b.1) {
                    crossings += 1;
                }
            }
        }
    }
    crossings
}
