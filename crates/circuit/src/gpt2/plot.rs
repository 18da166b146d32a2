//! The faithfulness plot: nodes in the circuit (log scale) against faithfulness and the
//! complement's faithfulness, one point per threshold of the sweep. Plain SVG.
use std::fmt::Write;

use super::eval::EvalRow;
use crate::render::short;

const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 56.0;

/// Render the sweep as an SVG document titled `title`; `marked` is the default
/// threshold (its points are drawn larger).
pub fn render(title: &str, rows: &[EvalRow], marked: f64) -> String {
    let pts: Vec<&EvalRow> = rows.iter().filter(|r| r.nodes > 0).collect();
    let max_nodes = pts.iter().map(|r| r.nodes).max().unwrap_or(1).max(2) as f64;
    let (x_lo, x_hi) = (0.0, max_nodes.log10().ceil().max(1.0));
    let y_lo = pts
        .iter()
        .flat_map(|r| [r.faithfulness, r.complement_faithfulness])
        .fold(0.0f64, f64::min)
        .floor();
    let y_hi = pts
        .iter()
        .flat_map(|r| [r.faithfulness, r.complement_faithfulness])
        .fold(1.0f64, f64::max)
        .ceil();
    let x = |n: usize| LEFT + ((n as f64).log10() - x_lo) / (x_hi - x_lo) * (W - LEFT - RIGHT);
    let y = |v: f64| TOP + (y_hi - v) / (y_hi - y_lo) * (H - TOP - BOTTOM);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="14">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Axes, grid and ticks.
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let _ = writeln!(
        s,
        r##"<path d="M{x0} {y0} V{y1} H{x1}" stroke="#333" fill="none"/>"##
    );
    for k in 0..=(x_hi as i32) {
        let px = LEFT + (k as f64 - x_lo) / (x_hi - x_lo) * (x1 - x0);
        let _ = writeln!(
            s,
            r##"<line x1="{px}" y1="{y0}" x2="{px}" y2="{y1}" stroke="#eee"/><text x="{px}" y="{}" text-anchor="middle">{}</text>"##,
            y1 + 16.0,
            10u64.pow(k as u32)
        );
    }
    let steps = ((y_hi - y_lo) / 0.25).round() as i32;
    for k in 0..=steps {
        let v = y_lo + 0.25 * k as f64;
        let py = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{py}" x2="{x1}" y2="{py}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{v}</text>"##,
            x0 - 6.0,
            py + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">nodes in the circuit (log scale)</text>"#,
        (x0 + x1) / 2.0,
        H - 16.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">score</text>"#,
        (y0 + y1) / 2.0
    );
    for (name, colour, get) in [
        (
            "faithfulness F(C)",
            "#2166ac",
            (|r: &EvalRow| r.faithfulness) as fn(&EvalRow) -> f64,
        ),
        ("complement F(M∖C)", "#b2182b", |r: &EvalRow| {
            r.complement_faithfulness
        }),
    ] {
        let mut sorted = pts.clone();
        sorted.sort_by_key(|r| r.nodes);
        let line: Vec<String> = sorted
            .iter()
            .map(|r| format!("{:.1},{:.1}", x(r.nodes), y(get(r))))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline class="series" data-name="{name}" points="{}" stroke="{colour}" fill="none" stroke-width="2"/>"#,
            line.join(" ")
        );
        for r in &sorted {
            let rad = if r.threshold == marked { 6 } else { 3 };
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="{rad}" fill="{colour}"><title>{name}: {} at threshold {} ({} nodes, {:.2}% of all)</title></circle>"#,
                x(r.nodes),
                y(get(r)),
                short(get(r)),
                short(r.threshold),
                r.nodes,
                100.0 * r.node_fraction
            );
        }
    }
    let lx = x1 - 170.0;
    let _ = writeln!(
        s,
        r##"<rect x="{lx}" y="{}" width="160" height="44" fill="white" stroke="#ccc"/><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#2166ac" stroke-width="2"/><text x="{}" y="{}">faithfulness</text><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#b2182b" stroke-width="2"/><text x="{}" y="{}">complement</text>"##,
        y0 + 4.0,
        lx + 8.0,
        y0 + 18.0,
        lx + 32.0,
        y0 + 18.0,
        lx + 40.0,
        y0 + 22.0,
        lx + 8.0,
        y0 + 36.0,
        lx + 32.0,
        y0 + 36.0,
        lx + 40.0,
        y0 + 40.0
    );
    s.push_str("</svg>\n");
    s
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
