//! Graphviz DOT: one `rank=same` subgraph per graph layer, edges coloured by sign with
//! pen width ∝ |weight|.
use std::fmt::Write;

use super::{edge_colour, edge_weight, node_colours, short};
use crate::graph::{Circuit, NodeKind};
use crate::layout::layered;

/// Largest pen width, given to the edge of largest |weight|.
const MAX_PEN: f64 = 6.0;
/// Smallest pen width, so zero-weight edges stay visible.
const MIN_PEN: f64 = 0.5;

/// Render `circuit` as a DOT digraph (left to right, one rank per layer, nodes in
/// [`layered`] order). Edge widths use the weights of `group` (all examples when `None`).
pub fn render(circuit: &Circuit, group: Option<&str>) -> String {
    let layout = layered(circuit);
    let mut out = String::new();
    let max = max_abs_weight(circuit, group);
    let _ = writeln!(out, "digraph circuit {{");
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  ordering=out;");
    let _ = writeln!(out, "  labelloc=t;");
    let _ = writeln!(out, "  label={};", quote(&circuit.title));
    let _ = writeln!(out, "  node [fontname=\"Helvetica\", style=filled];");
    let _ = writeln!(out, "  edge [arrowsize=0.6];");
    for (layer, column) in layout.layers.iter().zip(&layout.columns) {
        let _ = writeln!(out, "  subgraph layer_{layer} {{");
        let _ = writeln!(out, "    rank=same;");
        for &i in column {
            let n = &circuit.nodes[i];
            let (fill, stroke) = node_colours(n.kind);
            let shape = match n.kind {
                NodeKind::Input | NodeKind::Output => "box",
                NodeKind::Hidden | NodeKind::Feature => "circle",
                NodeKind::Error => "diamond",
            };
            let style = if n.kind == NodeKind::Error {
                "\"filled,dashed\""
            } else {
                "filled"
            };
            let mut tooltip = format!("{} ({}) at {}", n.label, n.kind.as_str(), n.hook);
            if let Some(a) = &n.activation {
                let _ = write!(tooltip, "; activation {}", short(a.all));
            }
            if let Some(e) = &n.effect {
                let _ = write!(tooltip, "; effect {}", short(e.all));
            }
            let _ = writeln!(
                out,
                "    {} [label={}, shape={shape}, style={style}, fillcolor=\"{fill}\", color=\"{stroke}\", tooltip={}];",
                quote(&n.id),
                quote(&n.label),
                quote(&tooltip)
            );
        }
        let _ = writeln!(out, "  }}");
    }
    for e in &circuit.edges {
        let w = edge_weight(e, group);
        let pen = pen_width(w, max);
        let _ = writeln!(
            out,
            "  {} -> {} [color=\"{}\", penwidth={pen:.2}, label={}];",
            quote(&e.source),
            quote(&e.target),
            edge_colour(w),
            quote(&short(w))
        );
    }
    let _ = writeln!(out, "}}");
    out
}

/// The largest |weight| of any edge for `group`.
pub(crate) fn max_abs_weight(circuit: &Circuit, group: Option<&str>) -> f64 {
    circuit
        .edges
        .iter()
        .map(|e| edge_weight(e, group).abs())
        .fold(0.0, f64::max)
}

fn pen_width(w: f64, max: f64) -> f64 {
    if max > 0.0 {
        MIN_PEN + (MAX_PEN - MIN_PEN) * w.abs() / max
    } else {
        MIN_PEN
    }
}

/// A DOT double-quoted string.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for ch in s.chars() {
        match ch {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}
