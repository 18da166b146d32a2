//! `circuit.json`: canonical, byte-identical for the same inputs, round-trips.
use circuitry_circuit::toy::{build_circuit, contributions};
use circuitry_circuit::{Circuit, Error, Provenance, CIRCUIT_SCHEMA_VERSION};
use circuitry_core::HookPoint;

use crate::fixtures::{dataset, random_sae, trained_model};

fn toy_circuit(seed: u64) -> Circuit {
    let (model, config) = trained_model();
    let data = dataset(&config, 150, seed);
    let sae = random_sae(model.d_hidden(), 8, HookPoint::ToyHidden, true, 4);
    let c = contributions(&model, &sae, data.inputs.view()).unwrap();
    let provenance = Provenance {
        tool_version: "test".into(),
        model: "m".into(),
        dataset: "d".into(),
        saes: [("toy.hook_hidden".to_string(), "s".to_string())]
            .into_iter()
            .collect(),
    };
    build_circuit(&c, &sae, Some(&data.labels), provenance).unwrap()
}

#[test]
fn same_inputs_give_byte_identical_json() {
    let a = toy_circuit(3).to_json_bytes().unwrap();
    let b = toy_circuit(3).to_json_bytes().unwrap();
    assert_eq!(a, b);
    let other = toy_circuit(4).to_json_bytes().unwrap();
    assert_ne!(a, other, "different examples, different circuit");
}

#[test]
fn node_and_edge_order_do_not_change_the_bytes() {
    let c = toy_circuit(3);
    let mut shuffled = c.clone();
    shuffled.nodes.reverse();
    shuffled.edges.reverse();
    shuffled.edges.swap(0, 7);
    assert_eq!(
        c.to_json_bytes().unwrap(),
        shuffled.to_json_bytes().unwrap()
    );
}

#[test]
fn written_file_reads_back_equal_and_rewrites_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("circuit.json");
    let mut c = toy_circuit(3);
    c.write(&path).unwrap();
    let back = Circuit::read(&path).unwrap();
    c.canonicalize();
    assert_eq!(back, c);
    let first = std::fs::read(&path).unwrap();
    back.write(&path).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        first,
        "float formatting is stable"
    );
    let text = String::from_utf8(first).unwrap();
    assert!(
        text.starts_with("{\n  \"schema_version\": 1,"),
        "{}",
        &text[..60]
    );
    assert!(!text.contains("null") && !text.contains("NaN"));
}

#[test]
fn other_schema_version_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("circuit.json");
    let mut c = toy_circuit(3);
    c.schema_version = CIRCUIT_SCHEMA_VERSION + 1;
    std::fs::write(&path, serde_json::to_vec(&c).unwrap()).unwrap();
    let err = Circuit::read(&path).unwrap_err();
    assert!(
        matches!(err, Error::SchemaVersion { found: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("rebuild the circuit"), "{err}");
}
