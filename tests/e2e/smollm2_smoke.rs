//! `pipelines/sva-smollm2-smoke.toml` end to end on SmolLM2-135M, a real pretrained Llama:
//! a corpus dump at four depths, TopK SAEs with the attention-sink rows left out, a pairs
//! dump and the simple family's circuit; then a second run does nothing.
//!
//! Needs `models/smollm2-135m` (`scripts/setup-model.sh smollm2-135m`) and the fortunes
//! corpus (`scripts/make_corpus.sh --only fortunes --out datasets/corpus/english-fortunes`),
//! both made by `scripts/test.sh`; skipped without them unless `CIRCUITRY_REQUIRE_SMOLLM2`
//! is set (CI), when it fails instead.
use std::fs;
use std::process::Command;

use circuitry_tests::{bin, private_manifest, repo_root, run_ok, text};

fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap()
}

#[test]
fn smollm2_smoke_pipeline_runs_every_stage_on_a_real_llama() {
    let root = repo_root();
    let needed = [
        root.join("models/smollm2-135m/model.onnx"),
        root.join("datasets/corpus/english-fortunes/corpus.jsonl"),
    ];
    if let Some(missing) = needed.iter().find(|p| !p.exists()) {
        let msg = format!(
            "{} missing: run scripts/setup-model.sh smollm2-135m and scripts/make_corpus.sh \
             --only fortunes --out datasets/corpus/english-fortunes (scripts/test.sh does both)",
            missing.display()
        );
        if std::env::var_os("CIRCUITRY_REQUIRE_SMOLLM2").is_some() {
            panic!("{msg}");
        }
        eprintln!("skipped: {msg}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let manifest = private_manifest("sva-smollm2-smoke.toml", dir.path());
    let first = run_ok(Command::new(bin("circuitry")).arg("run").arg(&manifest));
    println!("{}", text(&first));
    let run = dir.path().join("run");

    // SAEs: the outlier rule is recorded, and with the sink rows left out the
    // reconstruction keeps much of the next-token loss even after 60 steps (measured:
    // held-out EV 0.52-0.64, ce_loss_score 0.47-0.89).
    for layer in [3, 9, 15, 21] {
        let hook = format!("blocks.{layer}.hook_resid_pre");
        let rec = json(&run.join("saes").join(&hook).join("training.json"));
        let ratio = rec["outliers"]["ratio"].as_f64();
        let ev = rec["eval_metrics"]["explained_variance"].as_f64().unwrap();
        let ce = rec["ce_loss"]["ce_loss_score"].as_f64().unwrap();
        println!("{hook}: held-out EV {ev:.3}, ce_loss_score {ce:.3}");
        assert_eq!(ratio, Some(10.0), "{rec}");
        assert!(rec["outliers"]["max_norm"].as_f64().unwrap() > 0.0, "{rec}");
        assert!(ev > 0.3 && ce > 0.3, "{hook}: EV {ev}, ce_loss_score {ce}");
    }

    let circuit = json(&run.join("circuit_simple/circuit.json"));
    let scores = &circuit["scores"];
    println!("circuit_simple: {scores}");
    assert_eq!(circuit["n_examples"], 64);
    // 4 SAEs of 2304 latents plus their error nodes.
    assert_eq!(scores["all_nodes"].as_f64(), Some(4.0 * 2305.0), "{scores}");
    let f = scores["faithfulness"].as_f64().unwrap();
    let c = scores["complement_faithfulness"].as_f64().unwrap();
    let frac = scores["node_fraction"].as_f64().unwrap();
    // The model prefers the right verb: the clean metric logit(patch) − logit(clean) < 0.
    // Measured (integrated gradients, Intel Xeon): faithfulness 0.89 with 58 of 9220
    // nodes, complement 0.01; IG vs exact patching on 16 pairs r 0.98 over nodes.
    assert!(scores["metric_clean"].as_f64().unwrap() < -1.0, "{scores}");
    assert!(f > 0.75 && c < 0.2 && frac < 0.05, "{scores}");
    let r = scores["pearson_r_vs_exact_nodes"].as_f64().unwrap();
    assert!(
        r >= 0.9,
        "IG vs exact patching: r {r} (issue 14 asks >= 0.9)"
    );
    for file in [
        "circuit.html",
        "circuit.svg",
        "summary.txt",
        "faithfulness.csv",
    ] {
        assert!(run.join("circuit_simple").join(file).is_file(), "{file}");
    }

    let second = run_ok(Command::new(bin("circuitry")).arg("run").arg(&manifest));
    let second = text(&second);
    assert!(
        second.contains("all 4 stages fresh, nothing to run"),
        "{second}"
    );
}
