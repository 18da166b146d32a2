//! DOT, SVG and the layout: valid documents with every node and edge, fewer crossings.
use circuitry_circuit::layout::layered;
use circuitry_circuit::render::{dot, summary, svg};
use circuitry_circuit::toy::{build_circuit, contributions};
use circuitry_circuit::{Circuit, NodeKind, Provenance};
use circuitry_core::HookPoint;

use crate::fixtures::{dataset, random_sae, trained_model};
use crate::paths::diamond;

fn toy() -> Circuit {
    let (model, config) = trained_model();
    let data = dataset(&config, 100, 1);
    let sae = random_sae(model.d_hidden(), 8, HookPoint::ToyHidden, true, 5);
    let c = contributions(&model, &sae, data.inputs.view()).unwrap();
    let provenance = Provenance {
        tool_version: "test".into(),
        model: "m".into(),
        dataset: "d".into(),
        saes: Default::default(),
    };
    let mut circuit = build_circuit(&c, &sae, Some(&data.labels), provenance).unwrap();
    circuit.title = "Toy <circuit> & \"friends\"".into(); // needs escaping
    circuit
}

#[test]
fn svg_is_valid_xml_with_every_node_and_edge() {
    let c = toy();
    let text = svg::render(&c, None);
    let doc = roxmltree::Document::parse(&text).expect("valid XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    let with_class = |tag: &str, class: &str| {
        doc.descendants()
            .filter(|n| n.has_tag_name(tag) && n.attribute("class") == Some(class))
            .collect::<Vec<_>>()
    };
    let nodes = with_class("g", "node");
    let edges = with_class("path", "edge");
    println!("{} nodes, {} edges drawn", nodes.len(), edges.len());
    assert_eq!(nodes.len(), c.nodes.len());
    assert_eq!(edges.len(), c.edges.len());
    let ids: Vec<&str> = nodes
        .iter()
        .map(|n| n.attribute("data-id").unwrap())
        .collect();
    for e in &edges {
        assert!(ids.contains(&e.attribute("data-source").unwrap()));
        assert!(ids.contains(&e.attribute("data-target").unwrap()));
        let width: f64 = e.attribute("stroke-width").unwrap().parse().unwrap();
        assert!(width > 0.0);
    }
    // The error node is the one dashed diamond.
    let dashed: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polygon") && n.attribute("stroke-dasharray").is_some())
        .filter(|n| n.parent().and_then(|p| p.attribute("class")) == Some("node"))
        .collect();
    assert_eq!(dashed.len(), 1);
    let texts: String = doc.descendants().filter_map(|n| n.text()).collect();
    assert!(
        texts.contains("Toy <circuit> & \"friends\""),
        "title unescaped round trip"
    );
    assert!(doc
        .descendants()
        .any(|n| n.attribute("class") == Some("legend")));
    for label in ["singular", "plural", "H1", "F8", "runs", "run"] {
        assert!(texts.contains(label), "{label}");
    }
}

#[test]
fn edge_width_grows_with_weight_and_colour_follows_sign() {
    let c = diamond();
    let doc_text = svg::render(&c, None);
    let doc = roxmltree::Document::parse(&doc_text).unwrap();
    let mut seen = Vec::new();
    for e in doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("edge"))
    {
        let src = e.attribute("data-source").unwrap();
        let dst = e.attribute("data-target").unwrap();
        let w = c
            .edges
            .iter()
            .find(|x| x.source == src && x.target == dst)
            .unwrap()
            .weight
            .all;
        let width: f64 = e.attribute("stroke-width").unwrap().parse().unwrap();
        let colour = e.attribute("stroke").unwrap();
        assert_eq!(colour, if w < 0.0 { "#b2182b" } else { "#2166ac" });
        seen.push((w.abs(), width));
    }
    seen.sort_by(|a, b| a.0.total_cmp(&b.0));
    for pair in seen.windows(2) {
        assert!(pair[0].1 <= pair[1].1, "{seen:?}");
    }
    assert_eq!(
        seen.last().unwrap().1,
        8.0,
        "the strongest edge has the widest stroke"
    );
}

#[test]
fn dot_has_one_rank_per_layer_and_every_edge() {
    let c = toy();
    let text = dot::render(&c, None);
    assert!(text.starts_with("digraph circuit {"));
    assert_eq!(text.matches("rank=same;").count(), 4);
    assert_eq!(
        text.lines().filter(|l| l.contains(" -> ")).count(),
        c.edges.len()
    );
    assert_eq!(text.matches('{').count(), text.matches('}').count());
    assert!(
        text.contains("label=\"Toy <circuit> & \\\"friends\\\"\""),
        "quotes escaped"
    );
    assert!(text.contains("shape=diamond"), "error node is a diamond");
}

#[test]
fn barycentre_ordering_removes_avoidable_crossings() {
    // a → h1 and b → h0 cross in the canonical order (h0 above h1); swapping the
    // hidden column removes the crossing.
    let mut c = diamond();
    c.edges
        .retain(|e| e.target.starts_with("output") || e.weight.all.abs() > 1.5);
    assert_eq!(c.edges.len(), 4);
    c.validate().unwrap();
    let layout = layered(&c);
    assert_eq!(layout.crossings, 0, "{layout:?}");
    let hidden: Vec<&str> = layout.columns[1]
        .iter()
        .map(|&i| c.nodes[i].label.as_str())
        .collect();
    assert_eq!(hidden, vec!["h1", "h0"]);
    assert_eq!(layered(&c), layout, "deterministic");
}

#[test]
fn layout_keeps_error_nodes_last_in_their_column() {
    let c = toy();
    let layout = layered(&c);
    let features = &layout.columns[2];
    assert_eq!(c.nodes[*features.last().unwrap()].kind, NodeKind::Error);
    assert_eq!(
        layout.columns.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 4, 9, 2]
    );
}

#[test]
fn summary_lists_paths_per_output_with_numbers() {
    let c = toy();
    let runs = c
        .nodes
        .iter()
        .find(|n| n.label == "runs")
        .unwrap()
        .id
        .clone();
    let run = c
        .nodes
        .iter()
        .find(|n| n.label == "run")
        .unwrap()
        .id
        .clone();
    let text = summary::render(
        &c,
        &[
            summary::PathTarget {
                node_id: &runs,
                group: Some("runs"),
            },
            summary::PathTarget {
                node_id: &run,
                group: Some("run"),
            },
        ],
        3,
    )
    .unwrap();
    println!("{text}");
    assert!(text.contains("Strongest paths to \"runs\""));
    assert!(text.contains("Strongest paths to \"run\""));
    assert!(text.contains("accuracy: "));
    let path_lines = text
        .lines()
        .filter(|l| l.contains(" → ") && l.contains(" × "))
        .count();
    assert_eq!(path_lines, 6);
}

/// A per-position circuit of a three-token template: features and an error node of
/// layer 0's resid, attention and MLP at positions 1 and 2, and the metric.
pub fn per_position_circuit() -> Circuit {
    use circuitry_circuit::{Described, Edge, Node, Stat, Thresholds, CIRCUIT_SCHEMA_VERSION};
    let resid: HookPoint = "blocks.0.hook_resid_pre".parse().unwrap();
    let attn: HookPoint = "blocks.0.hook_attn_out".parse().unwrap();
    let mlp: HookPoint = "blocks.0.hook_mlp_out".parse().unwrap();
    let f = |label: &str, hook, layer, pos, index| {
        Node::new(
            NodeKind::Feature,
            label,
            hook,
            layer,
            Some(pos),
            Some(index),
        )
    };
    let mut nodes = vec![
        f("R0/5@1", resid, 0, 1, 5),
        f("R0/7@2", resid, 0, 2, 7),
        Node::new(NodeKind::Error, "R0 err@2", resid, 0, Some(2), None),
        f("A0/3@2", attn, 1, 2, 3),
        f("M0/2@1", mlp, 2, 1, 2),
        f("M0/9@2", mlp, 2, 2, 9),
        Node::new(
            NodeKind::Output,
            "logit diff",
            HookPoint::LnFinal,
            3,
            None,
            None,
        ),
    ];
    for (k, n) in nodes.iter_mut().enumerate() {
        n.effect = Some(Stat::new(0.1 * (k + 1) as f64));
        n.activation = Some(Stat::new(1.0));
    }
    let edge = |s: usize, t: usize, w: f64| Edge {
        source: nodes[s].id.clone(),
        target: nodes[t].id.clone(),
        weight: Stat::new(w),
    };
    let edges = vec![
        edge(0, 3, 0.8),
        edge(1, 3, -0.2),
        edge(0, 4, 0.3),
        edge(2, 5, 0.1),
        edge(3, 5, 0.6),
        edge(5, 6, 1.5),
        edge(4, 6, -0.4),
    ];
    let mut c = Circuit {
        schema_version: CIRCUIT_SCHEMA_VERSION,
        title: "per-position".into(),
        method: Described {
            name: "ig".into(),
            description: "d".into(),
        },
        metric: Described {
            name: "logit_diff".into(),
            description: "d".into(),
        },
        provenance: Provenance {
            tool_version: "test".into(),
            model: "m".into(),
            dataset: "d".into(),
            saes: Default::default(),
        },
        n_examples: 4,
        groups: vec![],
        thresholds: Thresholds::default(),
        scores: Default::default(),
        notes: vec![],
        positions: vec!["<|endoftext|>".into(), "The".into(), " keys".into()],
        nodes,
        edges,
    };
    c.canonicalize();
    c.validate().unwrap();
    c
}

/// The centre of each drawn node (from its label, drawn 4 px under the centre).
fn centres(doc: &roxmltree::Document<'_>) -> std::collections::BTreeMap<String, (f64, f64)> {
    doc.descendants()
        .filter(|n| n.has_tag_name("g") && n.attribute("class") == Some("node"))
        .map(|g| {
            let label = g.children().find(|c| c.has_tag_name("text")).unwrap();
            let num = |a: &str| label.attribute(a).unwrap().parse::<f64>().unwrap();
            (
                g.attribute("data-id").unwrap().to_string(),
                (num("x"), num("y") - 4.0),
            )
        })
        .collect()
}

#[test]
pub fn per_position_circuit_is_drawn_as_a_grid_of_positions_and_layers() {
    let c = per_position_circuit();
    assert!(svg::is_grid(&c));
    assert!(!svg::is_grid(&toy()), "the toy has no positions");
    let text = svg::render(&c, None);
    let doc = roxmltree::Document::parse(&text).expect("valid XML");
    // Columns labelled with the template's tokens, left to right.
    let labels: Vec<(&str, f64)> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("position"))
        .map(|n| {
            (
                n.text().unwrap(),
                n.attribute("x").unwrap().parse().unwrap(),
            )
        })
        .collect();
    println!("position labels {labels:?}");
    let names: Vec<&str> = labels.iter().map(|l| l.0).collect();
    assert_eq!(names, ["<|endoftext|>", "The", "keys"]);
    assert!(labels.windows(2).all(|w| w[0].1 < w[1].1));
    // Rows labelled with the hooks.
    let rows: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("row-header"))
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(
        rows,
        [
            "ln_final.hook_normalized",
            "blocks.0.hook_mlp_out",
            "blocks.0.hook_attn_out",
            "blocks.0.hook_resid_pre"
        ]
    );
    let at = centres(&doc);
    assert_eq!(at.len(), c.nodes.len());
    for a in &c.nodes {
        for b in &c.nodes {
            let (pa, pb) = (at[&a.id], at[&b.id]);
            // Higher layers above, one row per layer.
            if a.layer > b.layer {
                assert!(pa.1 < pb.1, "{} is not above {}", a.id, b.id);
            }
            if a.layer == b.layer {
                assert_eq!(pa.1, pb.1, "{} and {} share a row", a.id, b.id);
            }
            // Later positions to the right (the output sits at the last position).
            let pos = |n: &circuitry_circuit::Node| n.position.unwrap_or(2);
            if pos(a) < pos(b) {
                assert!(pa.0 < pb.0, "{} is not left of {}", a.id, b.id);
            }
        }
    }
    // Two nodes in one cell sit side by side.
    let (r7, err) = (
        at["feature:blocks.0.hook_resid_pre@2/7"],
        at["error:blocks.0.hook_resid_pre@2"],
    );
    assert!(r7.0 < err.0, "features before the error node in a cell");
    // Edges run upwards: each path starts below where it ends.
    let paths: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("edge"))
        .collect();
    assert_eq!(paths.len(), c.edges.len());
    for p in paths {
        let d: Vec<f64> = p
            .attribute("d")
            .unwrap()
            .split([' ', ','])
            .filter_map(|t| t.parse().ok())
            .collect();
        let (y_start, y_end) = (d[1], d[d.len() - 1]);
        assert!(
            y_start > y_end,
            "edge {:?} does not run upwards",
            p.attribute("d")
        );
    }
}

#[test]
fn a_node_past_the_last_position_label_is_refused() {
    let mut c = per_position_circuit();
    c.positions.truncate(2);
    let err = c.validate().unwrap_err().to_string();
    assert!(
        err.contains("position 2") && err.contains("2 labels"),
        "{err}"
    );
}

#[test]
fn a_crowded_grid_cell_wraps_onto_lines_within_its_row() {
    use circuitry_circuit::{Node, Stat};
    let mut c = per_position_circuit();
    let resid: HookPoint = "blocks.0.hook_resid_pre".parse().unwrap();
    for i in 100..110 {
        let mut n = Node::new(
            NodeKind::Feature,
            format!("R0/{i}@1"),
            resid,
            0,
            Some(1),
            Some(i),
        );
        n.effect = Some(Stat::new(1.0 / f64::from(i)));
        c.nodes.push(n);
    }
    c.canonicalize();
    c.validate().unwrap();
    let text = svg::render(&c, None);
    let doc = roxmltree::Document::parse(&text).unwrap();
    let at = centres(&doc);
    // 11 nodes in the cell (layer 0, position 1): 8 on the first line, 3 on the second.
    let cell: Vec<(f64, f64)> = c
        .nodes
        .iter()
        .filter(|n| n.layer == 0 && n.position == Some(1))
        .map(|n| at[&n.id])
        .collect();
    let mut ys: Vec<f64> = cell.iter().map(|p| p.1).collect();
    ys.sort_by(f64::total_cmp);
    ys.dedup();
    assert_eq!(ys.len(), 2, "two lines: {cell:?}");
    let first_line = cell.iter().filter(|p| p.1 == ys[0]).count();
    assert_eq!(first_line, 8);
    // The strongest feature leads the first line.
    assert_eq!(at["feature:blocks.0.hook_resid_pre@1/5"].1, ys[0]);
    // Both lines sit below every node of the next layer up.
    let attn_y = at["feature:blocks.0.hook_attn_out@2/3"].1;
    assert!(ys.iter().all(|&y| y > attn_y));
    // The other cells of the row keep the row's first line.
    assert_eq!(at["feature:blocks.0.hook_resid_pre@2/7"].1, ys[0]);
}
