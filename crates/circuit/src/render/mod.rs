//! Renderers of a [`Circuit`](crate::Circuit): Graphviz DOT, a self-made layered SVG,
//! the text summary of the strongest paths, the self-contained HTML viewer (with the
//! SAE features' top-activating contexts) and Neuronpedia's graph JSON.
pub mod contexts;
pub mod dot;
pub mod html;
pub mod neuronpedia;
pub mod summary;
pub mod svg;

use crate::graph::{Edge, NodeKind};

/// Colour of edges with a positive weight (blue).
pub const POSITIVE: &str = "#2166ac";
/// Colour of edges with a negative weight (red).
pub const NEGATIVE: &str = "#b2182b";

/// The colour of an edge of weight `w`.
pub fn edge_colour(w: f64) -> &'static str {
    if w < 0.0 {
        NEGATIVE
    } else {
        POSITIVE
    }
}

/// Fill and stroke colours of a node kind.
pub fn node_colours(kind: NodeKind) -> (&'static str, &'static str) {
    match kind {
        NodeKind::Input => ("#d9f0d3", "#1b7837"),
        NodeKind::Hidden => ("#e7e7e7", "#525252"),
        NodeKind::Feature => ("#fee8c8", "#b35806"),
        NodeKind::Error => ("#ffffff", "#7a0177"),
        NodeKind::Output => ("#deebf7", "#08519c"),
    }
}

/// A human name for a node kind, plural, for legends and column headers.
pub fn kind_plural(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::Input => "inputs",
        NodeKind::Hidden => "hidden units",
        NodeKind::Feature => "SAE features",
        NodeKind::Error => "SAE error",
        NodeKind::Output => "outputs",
    }
}

/// The weight of `edge` for `group` (all examples when `None`; 0 when the group has no
/// value).
pub fn edge_weight(edge: &Edge, group: Option<&str>) -> f64 {
    edge.weight.get(group).unwrap_or(0.0)
}

/// A number with 4 significant digits, for labels (`0.1235`, `-12.35`, `1.235e-5`).
pub fn short(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if (1e-3..1e4).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::short;

    #[test]
    fn short_numbers_have_four_significant_digits() {
        assert_eq!(short(0.123456), "0.1235");
        assert_eq!(short(-12.3456), "-12.35");
        assert_eq!(short(1234.4), "1234");
        assert_eq!(short(0.0000123456), "1.235e-5");
        assert_eq!(short(0.0), "0");
    }
}
