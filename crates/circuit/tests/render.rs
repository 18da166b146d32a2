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
