//! The embedded default pipeline, `pipelines/demo.toml` (what `scripts/demo.sh` runs):
//! the toy recipe and one sparse feature circuit of the tiny GPT-2 end in real circuit
//! files, the GPT-2 circuit is faithful with a small share of the nodes, and a second
//! run does nothing.
use std::fs;
use std::process::Command;

use circuitry_tests::{bin, private_manifest, run_ok, text};

#[test]
fn demo_pipeline_ends_in_a_faithful_gpt2_circuit_and_reruns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = private_manifest("demo.toml", dir.path());
    let first = run_ok(Command::new(bin("circuitry")).arg("run").arg(&manifest));
    println!("{}", text(&first));
    let run = dir.path().join("run");

    for circuit in ["toy_circuit", "circuit_simple"] {
        for file in [
            "circuit.json",
            "circuit.svg",
            "circuit.html",
            "summary.txt",
            "stage.json",
        ] {
            let path = run.join(circuit).join(file);
            assert!(path.is_file(), "{} missing", path.display());
        }
    }
    let circuit: serde_json::Value =
        serde_json::from_slice(&fs::read(run.join("circuit_simple/circuit.json")).unwrap())
            .unwrap();
    let scores = &circuit["scores"];
    let faithfulness = scores["faithfulness"].as_f64().unwrap();
    let min_case = scores["faithfulness_min_case"].as_f64().unwrap();
    let node_fraction = scores["node_fraction"].as_f64().unwrap();
    println!(
        "circuit_simple: faithfulness {faithfulness:.4} (lowest case {min_case:.4}), \
         {} of {} nodes ({:.1}%)",
        scores["nodes"],
        scores["all_nodes"],
        100.0 * node_fraction
    );
    // A real circuit: SAEs at all 12 submodules, most of the behaviour kept by a few
    // percent of the nodes (measured: faithfulness 0.956, both cases 0.956, 134 of 3084
    // nodes, 4.3%). The floors leave room for other rounding, not for another method.
    assert_eq!(scores["all_nodes"].as_f64(), Some(3084.0), "{scores}");
    assert!(faithfulness > 0.85 && min_case > 0.8, "{scores}");
    assert!(node_fraction > 0.0 && node_fraction < 0.1, "{scores}");

    let second = run_ok(Command::new(bin("circuitry")).arg("run").arg(&manifest));
    let second = text(&second);
    assert!(
        second.contains("all 8 stages fresh, nothing to run"),
        "{second}"
    );
}
