//! `circuit.html`: one self-contained page (no network, no external files) with the
//! layered SVG drawing of [`super::svg`], the circuit's JSON and its features'
//! statistics embedded, and a small script (`assets/viewer.js`) that makes it
//! explorable:
//!
//! - hover a node: its hook, position, index, activation, bias and effect (over all
//!   examples or one group), its strongest incoming and outgoing edges and — for SAE
//!   features — density, mean activation and the top-activating contexts from the SAE's
//!   `feature_stats.parquet` (see [`super::contexts`]);
//! - click a node: every path through it stays lit, the rest is dimmed (Escape or a
//!   click on the background clears);
//! - a slider hides edges weaker than a fraction of the largest |weight|; a search box
//!   marks nodes by label or id.
//!
//! Opened with the fragment `#selftest`, the page drives these interactions itself and
//! writes the outcome to `<body data-selftest="pass">` (or `fail: …`); script errors
//! are listed on the page and counted in `<body data-errors>`. The project's test opens
//! it in headless Chromium and reads both.
use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::short;
use super::svg::{self, esc};
use crate::graph::Circuit;
use crate::{Error, Result};

const SCRIPT: &str = include_str!("../../assets/viewer.js");
const STYLE: &str = include_str!("../../assets/viewer.css");

/// One top-activating context of a feature: decoded text around the token where the
/// feature fired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Context {
    /// The feature's activation at `token`.
    pub activation: f32,
    /// Decoded text before the token.
    pub left: String,
    /// The decoded token.
    pub token: String,
    /// Decoded text after the token.
    pub right: String,
}

/// What the viewer shows of one SAE feature beyond the circuit's own numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureInfo {
    /// Fraction of the SAE's training rows where the feature is active.
    pub density: f64,
    /// Mean activation over the rows where it is active.
    pub mean_activation: f64,
    /// Largest activation seen.
    pub max_activation: f32,
    /// Top-activating contexts, strongest first.
    pub contexts: Vec<Context>,
}

/// Feature statistics by `"HOOK/INDEX"` (e.g. `"blocks.2.hook_resid_pre/17"`), the key
/// the viewer looks features up by. Made by [`super::contexts::for_circuit`].
pub type FeatureTable = BTreeMap<String, FeatureInfo>;

/// The key of feature `index` at `hook` in a [`FeatureTable`].
pub fn feature_key(hook: &str, index: u32) -> String {
    format!("{hook}/{index}")
}

/// Render `circuit` as a self-contained HTML page, with `features`' statistics shown on
/// hover (features missing from the table get a note instead).
pub fn render(circuit: &Circuit, features: &FeatureTable) -> Result<String> {
    let circuit_json = script_json(circuit)?;
    let features_json = script_json(features)?;
    let drawing = svg::render(circuit, None);
    let mut s = String::with_capacity(drawing.len() + circuit_json.len() + SCRIPT.len() + 4096);
    let _ = writeln!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">"
    );
    let _ = writeln!(s, "<title>{}</title>", esc(&circuit.title));
    let _ = writeln!(s, "<style>\n{STYLE}</style>\n</head>\n<body>");

    let _ = writeln!(s, "<header>\n<h1>{}</h1>", esc(&circuit.title));
    let _ = writeln!(
        s,
        "<p><b>metric</b> {}: {}</p>",
        esc(&circuit.metric.name),
        esc(&circuit.metric.description)
    );
    let _ = writeln!(
        s,
        "<p><b>method</b> {}: {}</p>",
        esc(&circuit.method.name),
        esc(&circuit.method.description)
    );
    let mut scores = String::new();
    for (name, value) in &circuit.scores {
        let _ = write!(
            scores,
            "<span><b>{}</b> {}</span>",
            esc(name),
            short(*value)
        );
    }
    let _ = writeln!(
        s,
        "<p class=\"scores\"><span><b>examples</b> {}</span><span><b>nodes</b> {}</span><span><b>edges</b> {}</span>{scores}</p>",
        circuit.n_examples,
        circuit.nodes.len(),
        circuit.edges.len()
    );
    let _ = writeln!(
        s,
        "<p class=\"hint\">circuitry {} · model {} · dataset {}</p>\n</header>",
        esc(&circuit.provenance.tool_version),
        esc(abbrev(&circuit.provenance.model)),
        esc(abbrev(&circuit.provenance.dataset))
    );

    let _ = writeln!(s, "<div id=\"controls\">");
    let _ = writeln!(
        s,
        "<label>values over <select id=\"group\"><option value=\"\">all {} examples</option>",
        circuit.n_examples
    );
    for g in &circuit.groups {
        let _ = writeln!(
            s,
            "<option value=\"{}\">{} ({} examples)</option>",
            esc(&g.name),
            esc(&g.name),
            g.n_examples
        );
    }
    let _ = writeln!(s, "</select></label>");
    let _ = writeln!(
        s,
        "<label>hide edges below <input id=\"threshold\" type=\"range\" min=\"0\" max=\"100\" value=\"0\"> % of max |weight| = <span id=\"threshold-value\">0</span></label>"
    );
    let _ = writeln!(
        s,
        "<label>find <input id=\"search\" type=\"search\" placeholder=\"label or id, e.g. F12 or resid_pre@5\"></label> <span id=\"search-hits\"></span>"
    );
    let _ = writeln!(s, "</div>\n<ul id=\"errors\" hidden></ul>");
    let _ = writeln!(s, "<main>\n<div id=\"graph\">\n{drawing}</div>");
    let _ = writeln!(
        s,
        "<aside id=\"panel\"><p class=\"hint\">Hover a node for its details and top-activating contexts; click it to highlight every path through it (Escape clears).</p></aside>\n</main>"
    );
    if !circuit.notes.is_empty() {
        let _ = writeln!(s, "<footer><ul>");
        for note in &circuit.notes {
            let _ = writeln!(s, "<li>{}</li>", esc(note));
        }
        let _ = writeln!(s, "</ul></footer>");
    }
    let _ = writeln!(
        s,
        "<script type=\"application/json\" id=\"circuit-data\">{circuit_json}</script>"
    );
    let _ = writeln!(
        s,
        "<script type=\"application/json\" id=\"feature-data\">{features_json}</script>"
    );
    let _ = writeln!(s, "<script>\n{SCRIPT}</script>\n</body>\n</html>");
    Ok(s)
}

/// JSON safe to place inside a `<script>` element: `<`, `>` and `&` (which JSON can only
/// hold inside strings) are written as `\u003c`, `\u003e`, `\u0026`, so no `</script>`
/// or `<!--` can end the element early.
fn script_json<T: Serialize>(value: &T) -> Result<String> {
    let text = serde_json::to_string(value).map_err(|e| Error::InvalidGraph {
        reason: format!("cannot serialise the viewer's data: {e}"),
    })?;
    Ok(text
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026"))
}

/// The first 12 hex digits of a fingerprint, for display.
fn abbrev(fingerprint: &str) -> &str {
    fingerprint.get(..12).unwrap_or(fingerprint)
}

#[cfg(test)]
mod tests {
    use super::script_json;

    #[test]
    fn script_json_cannot_close_the_script_element() {
        let text = script_json(&vec!["</script><!-- & >"]).unwrap();
        assert!(!text.contains('<') && !text.contains('>') && !text.contains('&'));
        let back: Vec<String> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, vec!["</script><!-- & >".to_string()]);
    }
}
