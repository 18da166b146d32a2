//! A layered SVG drawing, laid out here (no Graphviz needed): one column per graph
//! layer, left to right, nodes in the order of [`crate::layout::layered`]; edges are
//! Bézier curves with width ∝ |weight| and colour by sign; nodes are shaped and coloured by kind (error nodes
//! are dashed diamonds); a title, column headers and a legend frame the graph.
//!
//! [`render_annotated`] adds a short text beside chosen nodes' labels (the viewer puts
//! a feature's top token there: `R1/12 "cabinet"`), drawn with a white halo so it
//! stays readable over the edges.
//!
//! Every node is a `<g class="node" data-id="…">` and every edge a
//! `<path class="edge" data-source="…" data-target="…">`, each with a `<title>`
//! tooltip, so viewers and tests can find them.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::dot::max_abs_weight;
use super::{edge_colour, edge_weight, kind_plural, node_colours, short, NEGATIVE, POSITIVE};
use crate::graph::{Circuit, Node, NodeKind};
use crate::layout::layered;

const COL_GAP: f64 = 220.0;
const ROW_GAP: f64 = 64.0;
const MARGIN_X: f64 = 90.0;
const TITLE_H: f64 = 64.0;
const HEADER_H: f64 = 44.0;
const LEGEND_H: f64 = 110.0;
const RADIUS: f64 = 20.0;
const BOX_W: f64 = 72.0;
const BOX_H: f64 = 30.0;
const MIN_STROKE: f64 = 0.6;
const MAX_STROKE: f64 = 8.0;
const MIN_WIDTH: f64 = 720.0;
const LEGEND_KINDS_X: f64 = 300.0;
const LEGEND_KIND_COL: f64 = 150.0;

/// Text shown beside a node's label, by node id.
pub type Annotations = BTreeMap<String, String>;

/// Render `circuit` as a standalone SVG document. Edge widths and colours use the
/// weights of `group` (all examples when `None`).
pub fn render(circuit: &Circuit, group: Option<&str>) -> String {
    render_annotated(circuit, group, &Annotations::new())
}

/// [`render`], with `annotations` (node id → text) written right of those nodes in a
/// `<text class="annotation">`.
pub fn render_annotated(
    circuit: &Circuit,
    group: Option<&str>,
    annotations: &Annotations,
) -> String {
    let layout = layered(circuit);
    let n_cols = layout.columns.len();
    let max_rows = layout.columns.iter().map(Vec::len).max().unwrap_or(0);
    let width = (2.0 * MARGIN_X + n_cols.saturating_sub(1) as f64 * COL_GAP).max(MIN_WIDTH);
    let graph_w = n_cols.saturating_sub(1) as f64 * COL_GAP;
    let left = (width - graph_w) / 2.0;
    let graph_h = max_rows.saturating_sub(1) as f64 * ROW_GAP + 2.0 * RADIUS + 24.0;
    let top = TITLE_H + HEADER_H + RADIUS;
    let height = TITLE_H + HEADER_H + graph_h + LEGEND_H;

    // Node centres, by node index.
    let mut centre = vec![(0.0, 0.0); circuit.nodes.len()];
    for (c, column) in layout.columns.iter().enumerate() {
        let offset = (max_rows - column.len()) as f64 * ROW_GAP / 2.0;
        for (r, &i) in column.iter().enumerate() {
            if let Some(slot) = centre.get_mut(i) {
                *slot = (left + c as f64 * COL_GAP, top + offset + r as f64 * ROW_GAP);
            }
        }
    }

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="28" font-size="18" font-weight="bold" text-anchor="middle">{}</text>"#,
        width / 2.0,
        esc(&circuit.title)
    );
    let over = match group {
        Some(g) => format!("examples of group \"{g}\""),
        None => format!("all {} examples", circuit.n_examples),
    };
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="50" font-size="12" fill="#444" text-anchor="middle">{}: edge width ∝ |weight| over {}; blue positive, red negative</text>"##,
        width / 2.0,
        esc(&circuit.method.name),
        esc(&over)
    );

    // Column headers: the kinds and hooks of the nodes in each column.
    for (c, column) in layout.columns.iter().enumerate() {
        let kinds: BTreeSet<NodeKind> = column.iter().map(|&i| circuit.nodes[i].kind).collect();
        let hooks: BTreeSet<String> = column
            .iter()
            .map(|&i| circuit.nodes[i].hook.to_string())
            .collect();
        let name: Vec<&str> = kinds.iter().map(|&k| kind_plural(k)).collect();
        let x = left + c as f64 * COL_GAP;
        let _ = writeln!(
            s,
            r#"<text class="header" x="{x:.1}" y="{:.1}" font-size="13" font-weight="bold" text-anchor="middle">{}</text>"#,
            TITLE_H + 14.0,
            esc(&name.join(" + "))
        );
        if hooks.len() == 1 {
            let hook: Vec<&str> = hooks.iter().map(String::as_str).collect();
            let _ = writeln!(
                s,
                r##"<text class="header" x="{x:.1}" y="{:.1}" font-size="11" fill="#666" text-anchor="middle">{}</text>"##,
                TITLE_H + 30.0,
                esc(hook[0])
            );
        }
    }

    // Edges, weakest first so strong edges are drawn on top.
    let max = max_abs_weight(circuit, group);
    let mut order: Vec<usize> = (0..circuit.edges.len()).collect();
    order.sort_by(|&a, &b| {
        edge_weight(&circuit.edges[a], group)
            .abs()
            .total_cmp(&edge_weight(&circuit.edges[b], group).abs())
            .then(a.cmp(&b))
    });
    let _ = writeln!(s, r#"<g class="edges" fill="none" stroke-opacity="0.8">"#);
    for i in order {
        let e = &circuit.edges[i];
        let (Some(si), Some(ti)) = (circuit.node_index(&e.source), circuit.node_index(&e.target))
        else {
            continue;
        };
        let (x1, y1) = centre[si];
        let (x2, y2) = centre[ti];
        let (x1, x2) = (
            x1 + half_width(&circuit.nodes[si]),
            x2 - half_width(&circuit.nodes[ti]),
        );
        let mid = (x1 + x2) / 2.0;
        let w = edge_weight(e, group);
        let stroke = if max > 0.0 {
            MIN_STROKE + (MAX_STROKE - MIN_STROKE) * w.abs() / max
        } else {
            MIN_STROKE
        };
        let mut tip = format!(
            "{} → {}: {}",
            circuit.nodes[si].label,
            circuit.nodes[ti].label,
            short(e.weight.all)
        );
        for (g, v) in &e.weight.by_group {
            let _ = write!(tip, "; {g}: {}", short(*v));
        }
        let _ = writeln!(
            s,
            r#"<path class="edge" data-source="{}" data-target="{}" d="M {x1:.1} {y1:.1} C {mid:.1} {y1:.1}, {mid:.1} {y2:.1}, {x2:.1} {y2:.1}" stroke="{}" stroke-width="{stroke:.2}"><title>{}</title></path>"#,
            esc(&e.source),
            esc(&e.target),
            edge_colour(w),
            esc(&tip)
        );
    }
    let _ = writeln!(s, "</g>");

    let _ = writeln!(s, r#"<g class="nodes">"#);
    for (i, n) in circuit.nodes.iter().enumerate() {
        let (x, y) = centre[i];
        let _ = writeln!(s, r#"<g class="node" data-id="{}">"#, esc(&n.id));
        let _ = writeln!(s, "<title>{}</title>", esc(&tooltip(n)));
        let _ = writeln!(s, "{}", shape(n.kind, x, y));
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            y + 4.0,
            esc(&n.label)
        );
        if let Some(note) = annotations.get(&n.id) {
            // Right of the node, over its outgoing edges: a white halo keeps it legible.
            let _ = writeln!(
                s,
                r##"<text class="annotation" x="{:.1}" y="{:.1}" font-size="12" font-style="italic" fill="#8c2d04" stroke="white" stroke-width="3" stroke-linejoin="round" paint-order="stroke">{}</text>"##,
                x + half_width(n) + 3.0,
                y + 4.0,
                esc(note)
            );
        }
        if let Some(a) = n.activation.as_ref().and_then(|a| a.get(group)) {
            let _ = writeln!(
                s,
                r##"<text x="{x:.1}" y="{:.1}" font-size="10" fill="#555" text-anchor="middle">{}</text>"##,
                y + RADIUS + 12.0,
                esc(&short(a))
            );
        }
        let _ = writeln!(s, "</g>");
    }
    let _ = writeln!(s, "</g>");

    legend(&mut s, circuit, TITLE_H + HEADER_H + graph_h, max);
    let _ = writeln!(s, "</svg>");
    s
}

fn half_width(n: &Node) -> f64 {
    match n.kind {
        NodeKind::Input | NodeKind::Output => BOX_W / 2.0,
        _ => RADIUS,
    }
}

/// The SVG element drawing a node of `kind` centred at (x, y).
fn shape(kind: NodeKind, x: f64, y: f64) -> String {
    let (fill, stroke) = node_colours(kind);
    match kind {
        NodeKind::Input | NodeKind::Output => format!(
            r#"<rect x="{:.1}" y="{:.1}" width="{BOX_W:.0}" height="{BOX_H:.0}" rx="6" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>"#,
            x - BOX_W / 2.0,
            y - BOX_H / 2.0
        ),
        NodeKind::Hidden | NodeKind::Feature => format!(
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="{RADIUS:.0}" fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>"#
        ),
        NodeKind::Error => format!(
            r#"<polygon points="{:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1}" fill="{fill}" stroke="{stroke}" stroke-width="1.5" stroke-dasharray="4 2"/>"#,
            x - RADIUS - 4.0,
            y - RADIUS - 4.0,
            x + RADIUS + 4.0,
            y + RADIUS + 4.0
        ),
    }
}

fn tooltip(n: &Node) -> String {
    let mut t = format!("{} — {} at {}", n.label, n.kind.as_str(), n.hook);
    if let Some(p) = n.position {
        let _ = write!(t, ", position {p}");
    }
    for (name, stat) in [
        ("activation", &n.activation),
        ("bias", &n.bias),
        ("effect", &n.effect),
    ] {
        if let Some(v) = stat {
            let _ = write!(t, "\n{name}: {}", short(v.all));
            for (g, x) in &v.by_group {
                let _ = write!(t, "; {g}: {}", short(*x));
            }
        }
    }
    t
}

fn legend(s: &mut String, circuit: &Circuit, y0: f64, max: f64) {
    let _ = writeln!(s, r#"<g class="legend" font-size="11">"#);
    let x = 30.0;
    let y = y0 + 22.0;
    let lines = [
        (
            POSITIVE,
            MAX_STROKE,
            format!("positive, |weight| = {}", short(max)),
        ),
        (
            NEGATIVE,
            MAX_STROKE,
            format!("negative, |weight| = {}", short(max)),
        ),
        (POSITIVE, MIN_STROKE, "|weight| ≈ 0".to_string()),
    ];
    for (k, (colour, stroke, text)) in lines.iter().enumerate() {
        let ly = y + k as f64 * 22.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="{stroke:.1}"/>"#,
            x + 40.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            x + 50.0,
            ly + 4.0,
            esc(text)
        );
    }
    let kinds: BTreeSet<NodeKind> = circuit.nodes.iter().map(|n| n.kind).collect();
    // Node kinds in a grid of three rows, right of the edge samples.
    for (slot, kind) in kinds.into_iter().enumerate() {
        let kx = LEGEND_KINDS_X + (slot / 3) as f64 * LEGEND_KIND_COL;
        let y = y + (slot % 3) as f64 * 22.0;
        let (fill, stroke) = node_colours(kind);
        let sample = match kind {
            NodeKind::Input | NodeKind::Output => format!(
                r#"<rect x="{:.1}" y="{:.1}" width="20" height="14" rx="3" fill="{fill}" stroke="{stroke}"/>"#,
                kx,
                y - 7.0
            ),
            NodeKind::Hidden | NodeKind::Feature => format!(
                r#"<circle cx="{:.1}" cy="{y:.1}" r="8" fill="{fill}" stroke="{stroke}"/>"#,
                kx + 10.0
            ),
            NodeKind::Error => format!(
                r#"<polygon points="{:.1},{y:.1} {:.1},{:.1} {:.1},{y:.1} {:.1},{:.1}" fill="{fill}" stroke="{stroke}" stroke-dasharray="3 1"/>"#,
                kx,
                kx + 10.0,
                y - 9.0,
                kx + 20.0,
                kx + 10.0,
                y + 9.0
            ),
        };
        let _ = writeln!(s, "{sample}");
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            kx + 26.0,
            y + 4.0,
            esc(kind_plural(kind))
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{x:.1}" y="{:.1}" fill="#555">numbers under nodes: mean activation; hover a node or edge for details</text>"##,
        y + 3.0 * 22.0 + 4.0
    );
    let _ = writeln!(s, "</g>");
}

/// Escape text for XML content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
