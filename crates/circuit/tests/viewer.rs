//! The HTML viewer in headless Chromium, feature statistics read from a Parquet file
//! written by pyarrow, and the Neuronpedia export.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use circuitry_circuit::render::contexts::{for_circuit, read_feature_stats, FEATURE_STATS_FILE};
use circuitry_circuit::render::html::{
    self, feature_key, Context, EdgeFaithfulness, FeatureInfo, FeatureTable, FIRST_SCREEN_EDGES,
};
use circuitry_circuit::render::neuronpedia::{self, NeuronpediaOptions};
use circuitry_circuit::{
    Circuit, Described, Edge, Error, Group, Node, NodeKind, Provenance, Stat, Thresholds,
    CIRCUIT_SCHEMA_VERSION,
};
use circuitry_core::HookPoint;

fn stat(all: f64, runs: f64, run: f64) -> Stat {
    let mut s = Stat::new(all);
    s.by_group.insert("runs".into(), runs);
    s.by_group.insert("run".into(), run);
    s
}

/// A GPT-2-shaped circuit: embeddings at two positions → resid features and an error
/// node of blocks.1 → mlp_out features → the two logits, with a title and notes that
/// need escaping.
fn gpt2_like_circuit() -> Circuit {
    let resid: HookPoint = "blocks.1.hook_resid_pre".parse().unwrap();
    let mlp: HookPoint = "blocks.1.hook_mlp_out".parse().unwrap();
    let embed: HookPoint = "hook_embed".parse().unwrap();
    let mut nodes = vec![
        Node::new(NodeKind::Input, "keys", embed, 0, Some(1), Some(7)),
        Node::new(NodeKind::Input, "the", embed, 0, Some(0), Some(3)),
        Node::new(NodeKind::Feature, "F12", resid, 1, Some(1), Some(12)),
        Node::new(NodeKind::Feature, "F3", resid, 1, Some(0), Some(3)),
        Node::new(NodeKind::Error, "error", resid, 1, Some(1), None),
        Node::new(NodeKind::Feature, "F40", mlp, 2, Some(1), Some(40)),
        Node::new(
            NodeKind::Output,
            "are",
            HookPoint::LnFinal,
            3,
            None,
            Some(0),
        ),
        Node::new(NodeKind::Output, "is", HookPoint::LnFinal, 3, None, Some(1)),
    ];
    for (k, n) in nodes.iter_mut().enumerate() {
        n.activation = Some(stat(1.0 + k as f64, 2.0, 0.5));
        n.effect = Some(stat(0.5 - k as f64 * 0.1, 0.7, -0.2));
    }
    let edge = |s: &Node, t: &Node, w: f64| Edge {
        source: s.id.clone(),
        target: t.id.clone(),
        weight: stat(w, w * 1.5, w * 0.5),
    };
    let edges = vec![
        edge(&nodes[0], &nodes[2], 0.9),
        edge(&nodes[1], &nodes[3], -0.3),
        edge(&nodes[2], &nodes[5], 1.2),
        edge(&nodes[3], &nodes[5], 0.2),
        edge(&nodes[4], &nodes[5], -0.1),
        edge(&nodes[5], &nodes[6], 2.0),
        edge(&nodes[5], &nodes[7], -1.4),
        edge(&nodes[2], &nodes[7], -0.05),
    ];
    let mut c = Circuit {
        schema_version: CIRCUIT_SCHEMA_VERSION,
        title: "Test circuit <script>alert('x')</script> & \"quotes\"".into(),
        method: Described {
            name: "attribution".into(),
            description: "∇m · Δa".into(),
        },
        metric: Described {
            name: "logit_diff".into(),
            description: "logit(are) − logit(is)".into(),
        },
        provenance: Provenance {
            tool_version: "0.1.0".into(),
            model: "ab".repeat(32),
            dataset: "cd".repeat(32),
            saes: BTreeMap::new(),
        },
        n_examples: 10,
        groups: vec![
            Group {
                name: "runs".into(),
                description: "r".into(),
                n_examples: 6,
            },
            Group {
                name: "run".into(),
                description: "r".into(),
                n_examples: 4,
            },
        ],
        thresholds: Thresholds::default(),
        scores: BTreeMap::from([("faithfulness".to_string(), 0.83)]),
        notes: vec!["a note with </footer> in it".into()],
        positions: vec![],
        nodes,
        edges,
    };
    c.canonicalize();
    c.validate().unwrap();
    c
}

fn contexts_table() -> FeatureTable {
    let ctx = |a: f32, token: &str| Context {
        activation: a,
        left: "the keys to the </script><b>".into(),
        token: token.into(),
        right: " are".into(),
    };
    FeatureTable::from([
        (
            feature_key("blocks.1.hook_resid_pre", 12),
            FeatureInfo {
                density: 0.01,
                mean_activation: 1.5,
                max_activation: 4.0,
                contexts: vec![ctx(4.0, " cabinet"), ctx(3.5, " keys"), ctx(2.0, " doors")],
            },
        ),
        (
            feature_key("blocks.1.hook_mlp_out", 40),
            FeatureInfo {
                density: 0.2,
                mean_activation: 0.5,
                max_activation: 1.0,
                contexts: vec![],
            },
        ),
    ])
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            let out = Command::new("which").arg(name).output().ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
}

/// Open `page` + `fragment` (e.g. `#selftest`) in headless Chromium and return the DOM
/// after its scripts ran, with Chromium's log.
fn dump_dom(browser: &Path, page: &Path, fragment: &str) -> (String, String) {
    let url = format!("file://{}{fragment}", page.display());
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {log}");
    (dom, log)
}

#[test]
fn html_viewer_runs_without_script_errors_in_headless_chromium() {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED: no chromium on PATH (CI installs Debian's `chromium`; `apt-get install chromium`)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The toy-shaped circuit with no statistics and the GPT-2-shaped one with them.
    for (name, features) in [
        ("plain.html", FeatureTable::new()),
        ("with stats.html", contexts_table()),
    ] {
        let page = dir.path().join(name);
        let text = html::render(&gpt2_like_circuit(), &features).unwrap();
        assert!(!text.contains("<script>alert"), "title must be escaped");
        std::fs::write(&page, text).unwrap();
        let (dom, log) = dump_dom(&browser, &page, "#selftest");
        let script_errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Uncaught") || (l.contains("CONSOLE") && l.contains("rror")))
            .collect();
        assert!(
            script_errors.is_empty(),
            "{name}: script errors: {script_errors:?}"
        );
        assert!(
            dom.contains(r#"data-ready="ok""#),
            "{name}: the viewer did not finish starting; DOM head: {}",
            &dom[..dom.len().min(2000)]
        );
        assert!(
            !dom.contains("data-errors="),
            "{name}: errors reported on the page"
        );
        let verdict = dom
            .split("data-selftest=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("missing");
        println!("{name}: self-test {verdict}");
        assert_eq!(verdict, "pass", "{name}: self-test said {verdict}");
    }
}

/// Write a `feature_stats.parquet` with pyarrow (the format the SAE stage writes).
fn write_stats_with_pyarrow(path: &Path) -> bool {
    let script = r#"
import sys, pyarrow as pa, pyarrow.parquet as pq
t = pa.table({
    "feature": pa.array([0, 12, 40], pa.uint32()),
    "density": pa.array([0.5, 0.01, 0.2], pa.float64()),
    "mean_activation": pa.array([0.1, 1.5, 0.5], pa.float64()),
    "max_activation": pa.array([0.3, 4.0, 1.0], pa.float32()),
    "top_activation": pa.array([[0.3], [4.0, 3.5], []], pa.list_(pa.float32())),
    "top_row": pa.array([[5], [17, 3], []], pa.list_(pa.uint64())),
    "top_left": pa.array([["a"], ["the keys to the", "some"], []], pa.list_(pa.string())),
    "top_token": pa.array([["b"], [" cabinet", " keys"], []], pa.list_(pa.string())),
    "top_right": pa.array([["c"], [" are", " were"], []], pa.list_(pa.string())),
})
pq.write_table(t, sys.argv[1])
"#;
    match Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .status()
    {
        Ok(s) if s.success() => true,
        other => {
            eprintln!("SKIPPED: python3 with pyarrow unavailable ({other:?}); scripts/setup.sh installs it");
            false
        }
    }
}

#[test]
fn feature_stats_written_by_pyarrow_are_read_for_the_circuits_features() {
    let dir = tempfile::tempdir().unwrap();
    let sae_dir = dir.path().join("blocks.1.hook_resid_pre");
    std::fs::create_dir_all(&sae_dir).unwrap();
    if !write_stats_with_pyarrow(&sae_dir.join(FEATURE_STATS_FILE)) {
        return;
    }
    let all = read_feature_stats(&sae_dir.join(FEATURE_STATS_FILE), None).unwrap();
    assert_eq!(all.keys().copied().collect::<Vec<_>>(), vec![0, 12, 40]);
    let f12 = &all[&12];
    assert_eq!(f12.density, 0.01);
    assert_eq!(f12.max_activation, 4.0);
    assert_eq!(f12.contexts.len(), 2);
    assert_eq!(f12.contexts[0].token, " cabinet");
    assert_eq!(f12.contexts[1].activation, 3.5);
    assert!(all[&40].contexts.is_empty());

    let wanted = BTreeSet::from([12]);
    let some = read_feature_stats(&sae_dir.join(FEATURE_STATS_FILE), Some(&wanted)).unwrap();
    assert_eq!(some.len(), 1);

    // For a circuit: features of blocks.1.hook_resid_pre come from the file (F3 is not
    // in it, F12 is); the mlp_out SAE has no directory and is named in the notes.
    let circuit = gpt2_like_circuit();
    let dirs = BTreeMap::from([("blocks.1.hook_resid_pre".to_string(), sae_dir.clone())]);
    let (table, notes) = for_circuit(&circuit, &dirs).unwrap();
    assert_eq!(
        table.keys().cloned().collect::<Vec<_>>(),
        vec!["blocks.1.hook_resid_pre/12".to_string()]
    );
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("blocks.1.hook_mlp_out"), "{notes:?}");
}

#[test]
fn unreadable_feature_stats_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FEATURE_STATS_FILE);
    std::fs::write(&path, b"not parquet").unwrap();
    let err = read_feature_stats(&path, None).unwrap_err();
    assert!(matches!(err, Error::FeatureStats { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(FEATURE_STATS_FILE) && text.contains("Parquet"),
        "{text}"
    );
}

#[test]
fn neuronpedia_export_has_the_graph_format_and_every_edge() {
    let circuit = gpt2_like_circuit();
    let opts = NeuronpediaOptions {
        slug: "test-graph".into(),
        scan: "gpt2-small".into(),
        prompt_tokens: vec!["the".into(), " keys".into()],
    };
    let v = neuronpedia::export(&circuit, &opts);
    let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["metadata", "qParams", "nodes", "links"])
    );
    assert_eq!(v["metadata"]["slug"], "test-graph");
    assert_eq!(v["metadata"]["scan"], "gpt2-small");
    assert_eq!(v["metadata"]["prompt"], "the keys");
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), circuit.nodes.len());
    let ids: BTreeSet<&str> = nodes
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), nodes.len(), "node ids must be unique: {ids:?}");
    let links = v["links"].as_array().unwrap();
    assert_eq!(links.len(), circuit.edges.len());
    for l in links {
        assert!(ids.contains(l["source"].as_str().unwrap()), "{l}");
        assert!(ids.contains(l["target"].as_str().unwrap()), "{l}");
    }
    let by_type = |t: &str| nodes.iter().filter(|n| n["feature_type"] == t).count();
    assert_eq!(by_type("embedding"), 2);
    assert_eq!(by_type("logit"), 2);
    assert_eq!(by_type("mlp reconstruction error"), 1);
    assert_eq!(by_type("cross layer transcoder"), 3);
    let f12 = nodes
        .iter()
        .find(|n| n["circuitry_id"] == "feature:blocks.1.hook_resid_pre@1/12")
        .unwrap();
    assert_eq!(f12["node_id"], "1_12_1");
    assert_eq!(f12["layer"], "1");
    assert_eq!(f12["ctx_idx"], 1);
    assert_eq!(f12["feature"], 12);
    // The weight of F12 → F40 is carried over.
    let w = links
        .iter()
        .find(|l| l["source"] == "1_12_1" && l["target"] == "2_40_1")
        .unwrap();
    assert_eq!(w["weight"], 1.2);
}

/// A circuit with far more edges than the first screen shows: 12 embeddings → 24
/// resid_pre features → 24 mlp_out features (one of them an error node) → 2 logits,
/// 912 edges with |weight| spread log-uniformly over [1e-3, 1]; and an edge sweep at
/// |weight| ≥ 0, 1e-3, 1e-2, 0.1, 1 with the edge counts of this circuit.
fn hairball() -> (Circuit, Vec<EdgeFaithfulness>) {
    let resid: HookPoint = "blocks.1.hook_resid_pre".parse().unwrap();
    let mlp: HookPoint = "blocks.1.hook_mlp_out".parse().unwrap();
    let embed: HookPoint = "hook_embed".parse().unwrap();
    let mut c = gpt2_like_circuit();
    let mut layers: Vec<Vec<Node>> = vec![
        (0..12)
            .map(|p| Node::new(NodeKind::Input, format!("t{p}"), embed, 0, Some(p), Some(p)))
            .collect(),
        (0..24)
            .map(|i| {
                Node::new(
                    NodeKind::Feature,
                    format!("R1/{i}"),
                    resid,
                    1,
                    Some(1),
                    Some(i),
                )
            })
            .collect(),
        (0..23)
            .map(|i| {
                Node::new(
                    NodeKind::Feature,
                    format!("M1/{i}"),
                    mlp,
                    2,
                    Some(1),
                    Some(i),
                )
            })
            .collect(),
        ["are", "is"]
            .iter()
            .enumerate()
            .map(|(k, l)| {
                Node::new(
                    NodeKind::Output,
                    *l,
                    HookPoint::LnFinal,
                    3,
                    None,
                    Some(k as u32),
                )
            })
            .collect(),
    ];
    layers[2].push(Node::new(NodeKind::Error, "M1 err", mlp, 2, Some(1), None));
    let mut edges = Vec::new();
    for pair in layers.windows(2) {
        for s in &pair[0] {
            for t in &pair[1] {
                let k = edges.len();
                let magnitude = 10f64.powf(-3.0 * ((k * 7919) % 912) as f64 / 911.0);
                let w = if k % 3 == 0 { -magnitude } else { magnitude };
                edges.push(Edge {
                    source: s.id.clone(),
                    target: t.id.clone(),
                    weight: Stat::new(w),
                });
            }
        }
    }
    assert_eq!(edges.len(), 912);
    c.nodes = layers.into_iter().flatten().collect();
    c.edges = edges;
    c.canonicalize();
    c.validate().unwrap();
    let sweep = [
        (0.0, 1.0),
        (1e-3, 0.98),
        (1e-2, 0.9),
        (0.1, 0.7),
        (1.0, 0.2),
    ]
    .iter()
    .map(|&(t, f)| EdgeFaithfulness {
        edge_threshold: t,
        edges: c.edges.iter().filter(|e| e.weight.all.abs() >= t).count(),
        faithfulness: f,
    })
    .collect();
    (c, sweep)
}

/// The edges drawn (not hidden by the slider) in a DOM dumped by Chromium.
fn edges_drawn(dom: &str) -> usize {
    dom.split("<path class=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|class| {
            let words: Vec<&str> = class.split(' ').collect();
            words.contains(&"edge") && !words.contains(&"weak")
        })
        .count()
}

/// The value of the attribute `name` on `<body>`.
fn body_attribute(dom: &str, name: &str) -> Option<String> {
    let body = dom.split("<body").nth(1)?.split('>').next()?;
    let rest = body.split(&format!("{name}=\"")).nth(1)?;
    Some(rest.split('"').next()?.to_string())
}

/// The text of the edge-faithfulness note.
fn edge_note(dom: &str) -> String {
    let p = dom
        .split("id=\"edge-note\"")
        .nth(1)
        .expect("the page has an edge-faithfulness note");
    let text = p.split_once('>').map_or("", |(_, t)| t);
    text.split("</p>").next().unwrap_or("").to_string()
}

/// The label of node `id` in a DOM as a reader sees it: its id label, then its
/// annotation (the top token) when it has one.
fn node_label(dom: &str, id: &str) -> String {
    let g = dom
        .split(&format!("data-id=\"{id}\""))
        .nth(1)
        .unwrap_or_else(|| panic!("node {id} is not drawn"));
    let g = g.split("</g>").next().unwrap_or("");
    let text_of = |start: &str| {
        let t = g.split(start).nth(1)?;
        let t = t.split_once('>')?.1;
        Some(t.split("</text>").next()?.replace("&quot;", "\""))
    };
    let label = text_of("<text ").expect("a node has a label");
    match text_of("<text class=\"annotation\"") {
        Some(note) => format!("{label} {note}"),
        None => label,
    }
}

/// Where the viewer tests keep their screenshots: `target/tmp/viewer` (kept after the
/// test, to look at).
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("viewer");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Screenshot `url` in a `size` ("W,H") window to `png`; checks a PNG was written.
fn screenshot(browser: &Path, url: &str, size: &str, png: &Path) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={size}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(png).expect("chromium wrote the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG"),
        "{} is not a PNG",
        png.display()
    );
    println!("screenshot: {}", png.display());
}

#[test]
fn first_screen_shows_the_strongest_edges_top_tokens_and_the_edge_note() {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED: no chromium on PATH (CI installs Debian's `chromium`; `apt-get install chromium`)"
        );
        return;
    };
    let (circuit, sweep) = hairball();
    let mut features = FeatureTable::new();
    let ctx = |token: &str, a: f32| Context {
        activation: a,
        left: "the".into(),
        token: token.into(),
        right: " are".into(),
    };
    for i in 0..24 {
        features.insert(
            feature_key("blocks.1.hook_resid_pre", i),
            FeatureInfo {
                density: 0.01,
                mean_activation: 1.0,
                max_activation: 3.0,
                contexts: vec![
                    ctx(" keys", 3.0),
                    ctx(&format!(" word{i}"), 2.0),
                    ctx(&format!(" word{i}"), 1.0),
                ],
            },
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("hairball.html");
    std::fs::write(
        &page,
        html::render_with_sweep(&circuit, &features, &sweep).unwrap(),
    )
    .unwrap();

    // The first screen: at most FIRST_SCREEN_EDGES edges, the strongest ones.
    let (dom, _) = dump_dom(&browser, &page, "");
    assert_eq!(body_attribute(&dom, "data-ready").as_deref(), Some("ok"));
    assert_eq!(
        body_attribute(&dom, "data-errors"),
        None,
        "errors on the page"
    );
    let first = edges_drawn(&dom);
    println!(
        "first screen: {first} of {} edges drawn",
        circuit.edges.len()
    );
    assert!(
        (FIRST_SCREEN_EDGES / 2..=FIRST_SCREEN_EDGES).contains(&first),
        "the first screen draws {first} edges; expected at most {FIRST_SCREEN_EDGES} (and not far fewer)"
    );
    assert_eq!(
        body_attribute(&dom, "data-edges-shown"),
        Some(first.to_string())
    );
    assert_eq!(body_attribute(&dom, "data-zoom").as_deref(), Some("fit"));
    let first_note = edge_note(&dom);
    println!("first screen note: {first_note}");
    // The threshold lies between the sweep's 0.1 and 1: the note says it is not measured
    // for the shown edges and gives the 0.1 row instead of inventing a number.
    let row = &sweep[3];
    assert!(first_note.contains("not measured"), "{first_note}");
    assert!(
        first_note.contains(&format!(
            "the {} edges with |weight| ≥ 0.1000 keep 70%",
            row.edges
        )),
        "{first_note}"
    );

    // Feature labels carry their most frequent top token; error nodes keep their label.
    assert_eq!(
        node_label(&dom, "feature:blocks.1.hook_resid_pre@1/7"),
        "R1/7 \"word7\""
    );
    assert_eq!(node_label(&dom, "error:blocks.1.hook_mlp_out@1"), "M1 err");
    assert_eq!(
        node_label(&dom, "feature:blocks.1.hook_mlp_out@1/3"),
        "M1/3"
    );

    // The slider at 0 draws every edge, and the note changes to the sweep's row at 0.
    let (dom0, _) = dump_dom(&browser, &page, "#threshold=0");
    assert_eq!(edges_drawn(&dom0), circuit.edges.len());
    let note0 = edge_note(&dom0);
    println!("slider at 0: {note0}");
    assert_ne!(note0, first_note);
    assert!(
        note0.contains("the 912 edges with |weight| ≥ 0 keep 100% of the behaviour"),
        "{note0}"
    );
    assert!(!note0.contains("not measured"), "{note0}");

    // The slider at 100 %: only the strongest edge, the sweep's row at 1 matches it.
    let (dom100, _) = dump_dom(&browser, &page, "#threshold=100");
    assert_eq!(edges_drawn(&dom100), 1);
    assert!(
        edge_note(&dom100).contains("the 1 edge with |weight| ≥ 1.000 keeps 20%"),
        "{}",
        edge_note(&dom100)
    );

    // Without a sweep the note says so.
    let plain = dir.path().join("no sweep.html");
    std::fs::write(&plain, html::render(&circuit, &features).unwrap()).unwrap();
    let (dom_plain, _) = dump_dom(&browser, &plain, "");
    assert!(
        edge_note(&dom_plain).contains("not measured for this circuit"),
        "{}",
        edge_note(&dom_plain)
    );

    // The page's own self-test moves the slider by input events, checks the fit and labels.
    let (dom_test, _) = dump_dom(&browser, &page, "#selftest");
    assert_eq!(
        body_attribute(&dom_test, "data-selftest").as_deref(),
        Some("pass")
    );

    let shots = screenshot_dir();
    let url = format!("file://{}", page.display());
    screenshot(&browser, &url, "1400,900", &shots.join("first_screen.png"));
    screenshot(
        &browser,
        &format!("{url}#threshold=0"),
        "1400,900",
        &shots.join("all_edges.png"),
    );
}

#[test]
fn gpt2_like_circuit_labels_features_with_their_top_token() {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED: no chromium on PATH (CI installs Debian's `chromium`; `apt-get install chromium`)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("labels.html");
    let text = html::render(&gpt2_like_circuit(), &contexts_table()).unwrap();
    std::fs::write(&page, text).unwrap();
    let (dom, _) = dump_dom(&browser, &page, "#selftest");
    assert_eq!(
        body_attribute(&dom, "data-selftest").as_deref(),
        Some("pass")
    );
    // F12's strongest context is " cabinet" (each token once); F40 has no contexts.
    assert_eq!(
        node_label(&dom, "feature:blocks.1.hook_resid_pre@1/12"),
        "F12 \"cabinet\""
    );
    assert_eq!(
        node_label(&dom, "feature:blocks.1.hook_mlp_out@1/40"),
        "F40"
    );
    assert_eq!(node_label(&dom, "error:blocks.1.hook_resid_pre@1"), "error");
    // Every one of its 8 edges fits the first screen.
    assert_eq!(edges_drawn(&dom), 8);
    screenshot(
        &browser,
        &format!("file://{}", page.display()),
        "1200,800",
        &screenshot_dir().join("gpt2_like.png"),
    );
}

/// The per-position grid in the viewer: its self-test passes, position labels and every
/// node are drawn, and screenshots of the grid and of the same circuit in columns
/// (without position labels) are saved in `target/tmp/viewer`.
#[test]
fn per_position_grid_runs_in_the_viewer_and_both_views_are_screenshotted() {
    let Some(browser) = chromium() else {
        eprintln!(
            "SKIPPED: no chromium on PATH (CI installs Debian's `chromium`; `apt-get install chromium`)"
        );
        return;
    };
    let grid = crate::render::per_position_circuit();
    let features = FeatureTable::from([(
        feature_key("blocks.0.hook_resid_pre", 5),
        FeatureInfo {
            density: 0.02,
            mean_activation: 1.0,
            max_activation: 2.0,
            contexts: vec![Context {
                activation: 2.0,
                left: "The".into(),
                token: " keys".into(),
                right: " are".into(),
            }],
        },
    )]);
    let mut columns = grid.clone();
    columns.positions.clear();
    let shots = screenshot_dir();
    for (name, circuit) in [("per_position", &grid), ("columns", &columns)] {
        let page = shots.join(format!("{name}.html"));
        std::fs::write(&page, html::render(circuit, &features).unwrap()).unwrap();
        let (dom, _) = dump_dom(&browser, &page, "#selftest");
        assert_eq!(body_attribute(&dom, "data-ready").as_deref(), Some("ok"));
        assert_eq!(
            body_attribute(&dom, "data-errors"),
            None,
            "{name}: errors on the page"
        );
        assert_eq!(
            body_attribute(&dom, "data-selftest").as_deref(),
            Some("pass"),
            "{name}"
        );
        let drawn = dom.matches("<g class=\"node\"").count();
        assert_eq!(drawn, circuit.nodes.len(), "{name}: every node is drawn");
        let positions = dom.matches("class=\"position\"").count();
        assert_eq!(
            positions,
            circuit.positions.len(),
            "{name}: one label per position"
        );
        assert_eq!(
            node_label(&dom, "feature:blocks.0.hook_resid_pre@1/5"),
            "R0/5@1 \"keys\""
        );
        screenshot(
            &browser,
            &format!("file://{}", page.display()),
            "1200,800",
            &shots.join(format!("{name}.png")),
        );
    }
}
