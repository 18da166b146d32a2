//! A layered SVG drawing, laid out here (no Graphviz needed): one column per graph
//! layer, left to right, nodes in the order of [`crate::layout::layered`]; edges are
//! Bézier curves with width ∝ |weight| and colour by sign; nodes are shaped and coloured by kind (error nodes
//! are dashed diamonds); a title, column headers and a legend frame the graph.
//!
//! A per-position circuit with token labels is drawn as a grid instead ([`is_grid`]):
//! token positions left to right, submodules bottom to top, as in Marks et al.'s
//! figures.
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
use super::html::display_token;
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
/// Grid: room left of the grid for the row (hook) labels.
const ROW_LABEL_W: f64 = 190.0;
/// Grid: horizontal distance between the nodes of one cell.
const CELL_W: f64 = 96.0;
/// Grid: most nodes side by side in a cell; more wrap onto further lines.
const GRID_LINE_NODES: usize = 8;
/// Grid: distance between the lines of a row (room for a label, activation and
/// annotation per node).
const GRID_LINE: f64 = 76.0;
/// Grid: extra space between rows.
const GRID_ROW_GAP: f64 = 16.0;
/// Grid: gap between position columns.
const COL_PAD: f64 = 24.0;
/// Grid: room under the grid for the position labels.
const POSITION_LABEL_H: f64 = 48.0;

/// Text shown beside a node's label, by node id.
pub type Annotations = BTreeMap<String, String>;

/// Render `circuit` as a standalone SVG document. Edge widths and colours use the
/// weights of `group` (all examples when `None`).
pub fn render(circuit: &Circuit, group: Option<&str>) -> String {
    render_annotated(circuit, group, &Annotations::new())
}

/// [`render`], with `annotations` (node id → text) written beside those nodes in a
/// `<text class="annotation">` (right of the node in the layered drawing, under it in
/// the grid).
///
/// A per-position circuit with position labels ([`Circuit::positions`]) is drawn as a
/// grid (see [`is_grid`]); any other circuit as layered columns.
pub fn render_annotated(
    circuit: &Circuit,
    group: Option<&str>,
    annotations: &Annotations,
) -> String {
    let frame = if is_grid(circuit) {
        grid_frame(circuit)
    } else {
        column_frame(circuit)
    };
    let Frame {
        width,
        height,
        ref centre,
        ref guides,
        legend_y,
        flow,
    } = frame;

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
    s.push_str(guides);

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
        let (source, target) = (&circuit.nodes[si], &circuit.nodes[ti]);
        let path = flow.path(centre[si], source, centre[ti], target);
        let w = edge_weight(e, group);
        let stroke = if max > 0.0 {
            MIN_STROKE + (MAX_STROKE - MIN_STROKE) * w.abs() / max
        } else {
            MIN_STROKE
        };
        let mut tip = format!(
            "{} → {}: {}",
            source.label,
            target.label,
            short(e.weight.all)
        );
        for (g, v) in &e.weight.by_group {
            let _ = write!(tip, "; {g}: {}", short(*v));
        }
        let _ = writeln!(
            s,
            r#"<path class="edge" data-source="{}" data-target="{}" d="{path}" stroke="{}" stroke-width="{stroke:.2}"><title>{}</title></path>"#,
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
            // A white halo keeps it legible over the edges.
            let (nx, ny, anchor) = match flow {
                Flow::Right => (x + half_width(n) + 3.0, y + 4.0, "start"),
                Flow::Up => (x, y + RADIUS + 25.0, "middle"),
            };
            let _ = writeln!(
                s,
                r##"<text class="annotation" x="{nx:.1}" y="{ny:.1}" font-size="12" font-style="italic" fill="#8c2d04" stroke="white" stroke-width="3" stroke-linejoin="round" paint-order="stroke" text-anchor="{anchor}">{}</text>"##,
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

    legend(&mut s, circuit, legend_y, max);
    let _ = writeln!(s, "</svg>");
    s
}

/// Which way edges run in a drawing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Left to right: the layered columns.
    Right,
    /// Bottom to top: the per-position grid.
    Up,
}

impl Flow {
    /// The SVG path of an edge from a node at `from` to one at `to`: a Bézier curve
    /// between the facing sides of the two shapes.
    fn path(self, from: (f64, f64), source: &Node, to: (f64, f64), target: &Node) -> String {
        let ((x1, y1), (x2, y2)) = (from, to);
        match self {
            Flow::Right => {
                let (x1, x2) = (x1 + half_width(source), x2 - half_width(target));
                let mid = (x1 + x2) / 2.0;
                format!("M {x1:.1} {y1:.1} C {mid:.1} {y1:.1}, {mid:.1} {y2:.1}, {x2:.1} {y2:.1}")
            }
            Flow::Up => {
                let (y1, y2) = (y1 - half_height(source), y2 + half_height(target));
                let mid = (y1 + y2) / 2.0;
                format!("M {x1:.1} {y1:.1} C {x1:.1} {mid:.1}, {x2:.1} {mid:.1}, {x2:.1} {y2:.1}")
            }
        }
    }
}

/// Where a drawing puts its nodes, and the drawing's size and guides.
struct Frame {
    width: f64,
    height: f64,
    /// Node centres, by node index.
    centre: Vec<(f64, f64)>,
    /// SVG elements under the graph: column or row headers, grid rules.
    guides: String,
    /// Top of the legend.
    legend_y: f64,
    flow: Flow,
}

/// The layered drawing: one column per graph layer, left to right, nodes in the order
/// of [`layered`], headed by their kinds and hook.
fn column_frame(circuit: &Circuit) -> Frame {
    let layout = layered(circuit);
    let n_cols = layout.columns.len();
    let max_rows = layout.columns.iter().map(Vec::len).max().unwrap_or(0);
    let width = (2.0 * MARGIN_X + n_cols.saturating_sub(1) as f64 * COL_GAP).max(MIN_WIDTH);
    let graph_w = n_cols.saturating_sub(1) as f64 * COL_GAP;
    let left = (width - graph_w) / 2.0;
    let graph_h = max_rows.saturating_sub(1) as f64 * ROW_GAP + 2.0 * RADIUS + 24.0;
    let top = TITLE_H + HEADER_H + RADIUS;

    let mut centre = vec![(0.0, 0.0); circuit.nodes.len()];
    for (c, column) in layout.columns.iter().enumerate() {
        let offset = (max_rows - column.len()) as f64 * ROW_GAP / 2.0;
        for (r, &i) in column.iter().enumerate() {
            if let Some(slot) = centre.get_mut(i) {
                *slot = (left + c as f64 * COL_GAP, top + offset + r as f64 * ROW_GAP);
            }
        }
    }

    // Column headers: the kinds and hooks of the nodes in each column.
    let mut guides = String::new();
    for (c, column) in layout.columns.iter().enumerate() {
        let kinds: BTreeSet<NodeKind> = column.iter().map(|&i| circuit.nodes[i].kind).collect();
        let hooks: BTreeSet<String> = column
            .iter()
            .map(|&i| circuit.nodes[i].hook.to_string())
            .collect();
        let name: Vec<&str> = kinds.iter().map(|&k| kind_plural(k)).collect();
        let x = left + c as f64 * COL_GAP;
        let _ = writeln!(
            guides,
            r#"<text class="header" x="{x:.1}" y="{:.1}" font-size="13" font-weight="bold" text-anchor="middle">{}</text>"#,
            TITLE_H + 14.0,
            esc(&name.join(" + "))
        );
        if hooks.len() == 1 {
            let hook: Vec<&str> = hooks.iter().map(String::as_str).collect();
            let _ = writeln!(
                guides,
                r##"<text class="header" x="{x:.1}" y="{:.1}" font-size="11" fill="#666" text-anchor="middle">{}</text>"##,
                TITLE_H + 30.0,
                esc(hook[0])
            );
        }
    }
    Frame {
        width,
        height: TITLE_H + HEADER_H + graph_h + LEGEND_H,
        centre,
        guides,
        legend_y: TITLE_H + HEADER_H + graph_h,
        flow: Flow::Right,
    }
}

/// True when `circuit` is drawn as a per-position grid: it has position labels and
/// every node but the outputs has a position (a per-position GPT-2 or Llama circuit
/// of template-aligned pairs).
pub fn is_grid(circuit: &Circuit) -> bool {
    !circuit.positions.is_empty()
        && circuit
            .nodes
            .iter()
            .all(|n| n.kind == NodeKind::Output || n.position.is_some())
}

/// The per-position grid, read as in Marks et al.'s figures: one column per token
/// position, labelled under the grid with the first pair's token there; one row per
/// graph layer (submodule), the first at the bottom and the output on top, labelled
/// at the left with its hook; edges run upwards. The nodes of one cell sit side by
/// side, features before error nodes, the strongest |effect| first, wrapping onto
/// further lines of the row after [`GRID_LINE_NODES`]. Output nodes sit at the last
/// position.
fn grid_frame(circuit: &Circuit) -> Frame {
    let n_pos = circuit.positions.len();
    let column_of = |n: &Node| {
        n.position
            .map_or(n_pos - 1, |p| (p as usize).min(n_pos - 1))
    };
    let layers: Vec<u32> = circuit
        .nodes
        .iter()
        .map(|n| n.layer)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .rev()
        .collect();
    let row_of: BTreeMap<u32, usize> = layers.iter().enumerate().map(|(r, &l)| (l, r)).collect();
    // Cells (row, column) → node indices in drawing order.
    let mut cells: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (i, n) in circuit.nodes.iter().enumerate() {
        cells
            .entry((row_of[&n.layer], column_of(n)))
            .or_default()
            .push(i);
    }
    let strength = |i: usize| {
        circuit.nodes[i]
            .effect
            .as_ref()
            .map_or(0.0, |e| e.all.abs())
    };
    for cell in cells.values_mut() {
        cell.sort_by(|&a, &b| {
            let (na, nb) = (&circuit.nodes[a], &circuit.nodes[b]);
            na.kind
                .cmp(&nb.kind)
                .then(strength(b).total_cmp(&strength(a)))
                .then(na.id.cmp(&nb.id))
        });
    }
    // Nodes per column line: the widest cell of the column, wrapped at GRID_LINE_NODES.
    let mut slots = vec![1usize; n_pos];
    // Lines per row: the tallest cell of the row.
    let mut lines = vec![1usize; layers.len()];
    for (&(r, c), cell) in &cells {
        slots[c] = slots[c].max(cell.len().min(GRID_LINE_NODES));
        lines[r] = lines[r].max(cell.len().div_ceil(GRID_LINE_NODES));
    }
    let left = MARGIN_X / 2.0 + ROW_LABEL_W;
    let mut col_left = Vec::with_capacity(n_pos);
    let mut x = left;
    for &k in &slots {
        col_left.push(x);
        x += k as f64 * CELL_W + COL_PAD;
    }
    let graph_w = x - left;
    let width = (left + graph_w + MARGIN_X / 2.0).max(MIN_WIDTH);
    let top = TITLE_H + HEADER_H / 2.0 + RADIUS;
    // The y of each row's first line.
    let mut row_y = Vec::with_capacity(layers.len());
    let mut y = top;
    for &n in &lines {
        row_y.push(y);
        y += n as f64 * GRID_LINE + GRID_ROW_GAP;
    }
    let graph_bottom = y - GRID_ROW_GAP - GRID_LINE + RADIUS + 36.0;

    let mut centre = vec![(0.0, 0.0); circuit.nodes.len()];
    for (&(r, c), cell) in &cells {
        let mid = col_left[c] + slots[c] as f64 * CELL_W / 2.0;
        for (l, line) in cell.chunks(GRID_LINE_NODES).enumerate() {
            let first = mid - (line.len() as f64 - 1.0) * CELL_W / 2.0;
            for (j, &i) in line.iter().enumerate() {
                centre[i] = (first + j as f64 * CELL_W, row_y[r] + l as f64 * GRID_LINE);
            }
        }
    }

    let mut guides = String::from(r##"<g class="grid" font-size="11" fill="#666">"##);
    guides.push('\n');
    for (r, &layer) in layers.iter().enumerate() {
        let hooks: BTreeSet<String> = circuit
            .nodes
            .iter()
            .filter(|n| n.layer == layer)
            .map(|n| n.hook.to_string())
            .collect();
        let name = hooks.into_iter().collect::<Vec<_>>().join(", ");
        let y = row_y[r];
        let _ = writeln!(
            guides,
            r##"<line x1="{left:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text class="row-header" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + graph_w,
            left - 12.0,
            y + 4.0,
            esc(&name)
        );
    }
    for (c, label) in circuit.positions.iter().enumerate() {
        let x = col_left[c] + slots[c] as f64 * CELL_W / 2.0;
        if c > 0 {
            let rule = col_left[c] - COL_PAD / 2.0;
            let _ = writeln!(
                guides,
                r##"<line x1="{rule:.1}" y1="{:.1}" x2="{rule:.1}" y2="{graph_bottom:.1}" stroke="#ddd" stroke-dasharray="2 3"/>"##,
                top - RADIUS
            );
        }
        let _ = writeln!(
            guides,
            r##"<text class="position" x="{x:.1}" y="{:.1}" font-size="14" font-weight="bold" fill="#222" text-anchor="middle">{}</text><text x="{x:.1}" y="{:.1}" text-anchor="middle">position {c}</text>"##,
            graph_bottom + 18.0,
            esc(&display_token(label)),
            graph_bottom + 34.0
        );
    }
    guides.push_str("</g>\n");
    let legend_y = graph_bottom + POSITION_LABEL_H;
    Frame {
        width,
        height: legend_y + LEGEND_H,
        centre,
        guides,
        legend_y,
        flow: Flow::Up,
    }
}

fn half_width(n: &Node) -> f64 {
    match n.kind {
        NodeKind::Input | NodeKind::Output => BOX_W / 2.0,
        _ => RADIUS,
    }
}

fn half_height(n: &Node) -> f64 {
    match n.kind {
        NodeKind::Input | NodeKind::Output => BOX_H / 2.0,
        NodeKind::Error => RADIUS + 4.0,
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
