//! Strongest paths on a hand-made graph with known answers.
use std::collections::BTreeMap;

use circuitry_circuit::paths::strongest_paths;
use circuitry_circuit::{
    Circuit, Described, Edge, Group, Node, NodeKind, Provenance, Stat, Thresholds,
    CIRCUIT_SCHEMA_VERSION,
};
use circuitry_core::HookPoint;

/// in0, in1 → h0, h1 → out; weights chosen so path strengths are known.
pub fn diamond() -> Circuit {
    let node = |kind, label: &str, hook, layer, index| {
        Node::new(kind, label, hook, layer, None, Some(index))
    };
    let nodes = vec![
        node(NodeKind::Input, "a", HookPoint::ToyInput, 0, 0),
        node(NodeKind::Input, "b", HookPoint::ToyInput, 0, 1),
        node(NodeKind::Hidden, "h0", HookPoint::ToyHidden, 1, 0),
        node(NodeKind::Hidden, "h1", HookPoint::ToyHidden, 1, 1),
        node(NodeKind::Output, "out", HookPoint::ToyLogits, 2, 0),
    ];
    let id = |i: usize| nodes[i].id.clone();
    let edge = |s: usize, t: usize, all: f64, g: f64| Edge {
        source: id(s),
        target: id(t),
        weight: Stat {
            all,
            by_group: [("out".to_string(), g)].into_iter().collect(),
        },
    };
    let edges = vec![
        edge(0, 2, 1.0, 1.0),
        edge(0, 3, 2.0, 0.1),
        edge(1, 2, -3.0, 0.5),
        edge(1, 3, 0.5, 0.5),
        edge(2, 4, 1.0, 2.0),
        edge(3, 4, -1.0, 1.0),
    ];
    Circuit {
        schema_version: CIRCUIT_SCHEMA_VERSION,
        title: "diamond".into(),
        method: Described {
            name: "hand".into(),
            description: "hand-made".into(),
        },
        metric: Described {
            name: "none".into(),
            description: "none".into(),
        },
        provenance: Provenance {
            tool_version: "test".into(),
            model: "m".into(),
            dataset: "d".into(),
            saes: BTreeMap::new(),
        },
        n_examples: 1,
        groups: vec![Group {
            name: "out".into(),
            description: "all".into(),
            n_examples: 1,
        }],
        thresholds: Thresholds::default(),
        scores: BTreeMap::new(),
        notes: vec![],
        positions: vec![],
        nodes,
        edges,
    }
}

#[test]
fn paths_are_ranked_by_absolute_product_of_weights() {
    let c = diamond();
    let target = c.nodes[4].id.clone();
    let all = strongest_paths(&c, &target, None, 10).unwrap();
    let got: Vec<(Vec<&str>, f64)> = all
        .iter()
        .map(|p| {
            (
                p.nodes.iter().map(|&i| c.nodes[i].label.as_str()).collect(),
                p.strength,
            )
        })
        .collect();
    // b→h0→out: -3·1 = -3; a→h1→out: 2·-1 = -2; a→h0→out: 1; b→h1→out: -0.5.
    assert_eq!(
        got,
        vec![
            (vec!["b", "h0", "out"], -3.0),
            (vec!["a", "h1", "out"], -2.0),
            (vec!["a", "h0", "out"], 1.0),
            (vec!["b", "h1", "out"], -0.5),
        ]
    );
    let in_group = strongest_paths(&c, &target, Some("out"), 1).unwrap();
    assert_eq!(in_group.len(), 1);
    assert_eq!(in_group[0].strength, 2.0); // a→h0→out: 1·2
    assert_eq!(in_group[0].weights, vec![1.0, 2.0]);
}

#[test]
fn unknown_target_is_an_error() {
    let err = strongest_paths(&diamond(), "output:nope", None, 3).unwrap_err();
    assert!(err.to_string().contains("output:nope"), "{err}");
}
