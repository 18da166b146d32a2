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
//! - a slider hides edges weaker than a fraction of the largest |weight|; it opens at
//!   the smallest step that shows at most [`FIRST_SCREEN_EDGES`] edges, so a circuit of
//!   thousands of edges starts readable, and the drawing opens fitted to the window
//!   (a "1:1" button shows it at full size); a search box marks nodes by label, top
//!   token or id;
//! - SAE feature nodes are labelled with their feature's top token beside the id
//!   (`R1/12 "cabinet"`, see [`top_token`]);
//! - a note under the controls tells what fraction of the behaviour the shown edges
//!   keep: the edge-faithfulness sweep's row (`faithfulness.json`'s `edge_rows`) at the
//!   largest threshold at or below the slider's, or that the sweep has no such row.
//!
//! The URL fragment `#threshold=P` opens the page with the slider at `P` % instead.
//!
//! Opened with the fragment `#selftest`, the page drives these interactions itself and
//! writes the outcome to `<body data-selftest="pass">` (or `fail: …`); script errors
//! are listed on the page and counted in `<body data-errors>`. The project's test opens
//! it in headless Chromium and reads both.
use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::short;
use super::svg::{self, esc, Annotations};
use crate::graph::{Circuit, NodeKind};
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

/// The most edges the viewer's first screen shows: the slider opens at the smallest
/// threshold that hides all but at most this many of the strongest edges.
pub const FIRST_SCREEN_EDGES: usize = 100;

/// Longest top token (in characters) shown in a node label; longer ones are cut with `…`.
const TOKEN_CHARS: usize = 14;

/// One row of an edge-faithfulness sweep, as the viewer shows it: the circuit's nodes
/// with only the edges of |weight| ≥ `edge_threshold` kept (the `edge_rows` of the GPT-2
/// stage's `faithfulness.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeFaithfulness {
    /// Edge threshold on |mean weight| (the same scale as the circuit's edge weights).
    pub edge_threshold: f64,
    /// Edges kept at this threshold.
    pub edges: usize,
    /// `(F(C, E) − F(∅)) / (F(M) − F(∅))`: the fraction of the behaviour kept.
    pub faithfulness: f64,
}

/// What the page's script reads besides the circuit and the feature statistics.
#[derive(Serialize)]
struct ViewerData<'a> {
    first_screen_edges: usize,
    edge_sweep: &'a [EdgeFaithfulness],
    annotations: &'a Annotations,
}

/// The token a feature's label shows: the most frequent token among its top-activating
/// contexts (ties go to the stronger context), compared and shown trimmed of surrounding
/// whitespace and cut to 14 characters; a whitespace-only token is shown as `⏎` (it holds
/// a line break) or `␣`. `None` when the feature has no contexts.
pub fn top_token(info: &FeatureInfo) -> Option<String> {
    // Counts in order of first appearance, which is strongest first.
    let mut counts: Vec<(String, usize)> = Vec::new();
    for c in &info.contexts {
        let shown = display_token(&c.token);
        match counts.iter_mut().find(|(t, _)| *t == shown) {
            Some((_, n)) => *n += 1,
            None => counts.push((shown, 1)),
        }
    }
    let best = counts.into_iter().fold(None, |best, (t, n)| match best {
        Some((_, m)) if m >= n => best,
        _ => Some((t, n)),
    });
    best.map(|(t, _)| t)
}

/// A decoded token as a label shows it (see [`top_token`]).
pub(crate) fn display_token(token: &str) -> String {
    let trimmed = token.trim();
    if trimmed.is_empty() {
        if token.contains('\n') { "⏎" } else { "␣" }.to_string()
    } else if trimmed.chars().count() > TOKEN_CHARS {
        let mut cut: String = trimmed.chars().take(TOKEN_CHARS - 1).collect();
        cut.push('…');
        cut
    } else {
        trimmed.to_string()
    }
}

/// Node id → `"top token"` (quoted) for every feature node of `circuit` whose feature has
/// contexts in `features`; error, input and output nodes have none.
pub fn node_annotations(circuit: &Circuit, features: &FeatureTable) -> Annotations {
    circuit
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Feature)
        .filter_map(|n| {
            let info = features.get(&feature_key(&n.hook.to_string(), n.index?))?;
            Some((n.id.clone(), format!("\"{}\"", top_token(info)?)))
        })
        .collect()
}

/// The key of feature `index` at `hook` in a [`FeatureTable`].
pub fn feature_key(hook: &str, index: u32) -> String {
    format!("{hook}/{index}")
}

/// Render `circuit` as a self-contained HTML page, with `features`' statistics shown on
/// hover (features missing from the table get a note instead) and no edge-faithfulness
/// sweep (the note says so).
pub fn render(circuit: &Circuit, features: &FeatureTable) -> Result<String> {
    render_with_sweep(circuit, features, &[])
}

/// [`render`], with the edge-faithfulness sweep `edge_sweep` (any order) behind the
/// note on what fraction of the behaviour the shown edges keep.
pub fn render_with_sweep(
    circuit: &Circuit,
    features: &FeatureTable,
    edge_sweep: &[EdgeFaithfulness],
) -> Result<String> {
    let circuit_json = script_json(circuit)?;
    let features_json = script_json(features)?;
    let annotations = node_annotations(circuit, features);
    let mut sweep = edge_sweep.to_vec();
    sweep.sort_by(|a, b| a.edge_threshold.total_cmp(&b.edge_threshold));
    let viewer_json = script_json(&ViewerData {
        first_screen_edges: FIRST_SCREEN_EDGES,
        edge_sweep: &sweep,
        annotations: &annotations,
    })?;
    let drawing = svg::render_annotated(circuit, None, &annotations);
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
        "<label>hide edges below <input id=\"threshold\" type=\"range\" min=\"0\" max=\"100\" step=\"0.1\" value=\"0\"> <span id=\"threshold-percent\">0</span> % of max |weight| = <span id=\"threshold-value\">0</span></label> <span id=\"edges-shown\"></span>"
    );
    let _ = writeln!(
        s,
        "<span class=\"zoom\"><button id=\"zoom-fit\" type=\"button\">fit</button><button id=\"zoom-full\" type=\"button\">1:1</button></span>"
    );
    let _ = writeln!(
        s,
        "<label>find <input id=\"search\" type=\"search\" placeholder=\"label or id, e.g. F12 or resid_pre@5\"></label> <span id=\"search-hits\"></span>"
    );
    let _ = writeln!(
        s,
        "</div>\n<p id=\"edge-note\">edge faithfulness: –</p>\n<ul id=\"errors\" hidden></ul>"
    );
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
    let _ = writeln!(
        s,
        "<script type=\"application/json\" id=\"viewer-data\">{viewer_json}</script>"
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
    use super::{script_json, top_token, Context, FeatureInfo};

    fn info(tokens: &[&str]) -> FeatureInfo {
        FeatureInfo {
            density: 0.1,
            mean_activation: 1.0,
            max_activation: 2.0,
            contexts: tokens
                .iter()
                .enumerate()
                .map(|(i, t)| Context {
                    activation: 2.0 - i as f32 * 0.1,
                    left: "a".into(),
                    token: (*t).into(),
                    right: "b".into(),
                })
                .collect(),
        }
    }

    #[test]
    fn top_token_is_the_most_frequent_then_the_strongest() {
        assert_eq!(
            top_token(&info(&[" cat", " dog", " dog"])).as_deref(),
            Some("dog")
        );
        assert_eq!(top_token(&info(&[" cat", " dog"])).as_deref(), Some("cat"));
        // " dog" and "dog" are one token once trimmed.
        assert_eq!(
            top_token(&info(&[" cat", " dog", "dog"])).as_deref(),
            Some("dog")
        );
        assert_eq!(top_token(&info(&[])), None);
    }

    #[test]
    fn top_token_shows_whitespace_and_cuts_long_tokens() {
        assert_eq!(top_token(&info(&["\n"])).as_deref(), Some("⏎"));
        assert_eq!(top_token(&info(&["  "])).as_deref(), Some("␣"));
        assert_eq!(
            top_token(&info(&[" programmerprogrammer"])).as_deref(),
            Some("programmerpro…")
        );
    }

    #[test]
    fn script_json_cannot_close_the_script_element() {
        let text = script_json(&vec!["</script><!-- & >"]).unwrap();
        assert!(!text.contains('<') && !text.contains('>') && !text.contains('&'));
        let back: Vec<String> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, vec!["</script><!-- & >".to_string()]);
    }
}
