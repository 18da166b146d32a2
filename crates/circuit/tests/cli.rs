//! The `circuitry-circuit toy` binary: outputs, determinism, and one-line errors with
//! exit code 2 that write nothing.
use std::path::Path;
use std::process::{Command, Output};

use circuitry_core::HookPoint;

use crate::fixtures::{random_sae, stage_inputs, trained_model, write_store, Inputs};

fn run(inputs: &Inputs, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_circuitry-circuit"))
        .arg("toy")
        .arg("--model")
        .arg(&inputs.model)
        .arg("--sae")
        .arg(&inputs.sae)
        .arg("--store")
        .arg(&inputs.store)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// Exit code 2, one stderr line containing every `needle`, and no output directory.
fn assert_refused(output: &Output, out: &Path, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stderr}");
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} missing in {stderr}");
    }
    assert!(!out.exists(), "nothing written");
}

#[test]
fn toy_stage_writes_all_outputs_and_stage_json_deterministically() {
    let inputs = stage_inputs(300);
    let out_a = inputs.root.join("out_a");
    let out_b = inputs.root.join("out_b");
    let a = run(&inputs, &out_a, &["--top-paths", "3"]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = run(&inputs, &out_b, &["--top-paths", "3"]);
    assert!(b.status.success());
    for file in circuitry_circuit::stage::OUTPUT_FILES
        .iter()
        .chain(&["stage.json"])
    {
        assert!(out_a.join(file).is_file(), "{file}");
    }
    for file in circuitry_circuit::stage::OUTPUT_FILES {
        assert_eq!(
            std::fs::read(out_a.join(file)).unwrap(),
            std::fs::read(out_b.join(file)).unwrap(),
            "{file} differs between two runs"
        );
    }
    let summary = std::fs::read_to_string(out_a.join("summary.txt")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&a.stdout),
        summary,
        "prints the summary"
    );
    println!("{summary}");
    assert!(summary.contains("accuracy: "));
    let record = circuitry_core::StageRecord::read(&out_a).unwrap().unwrap();
    assert_eq!(record.tool, "circuitry-circuit");
    assert_eq!(
        record.outputs.len(),
        circuitry_circuit::stage::OUTPUT_FILES.len()
    );
    let html = std::fs::read_to_string(out_a.join("circuit.html")).unwrap();
    assert!(html.contains("id=\"circuit-data\"") && html.contains("<svg"));
    let np: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_a.join("neuronpedia.json")).unwrap())
            .unwrap();
    assert_eq!(np["links"].as_array().unwrap().len(), circuit_edges(&out_a));
    assert_eq!(record.inputs.len(), 3);
    let circuit = circuitry_circuit::Circuit::read(&out_a.join("circuit.json")).unwrap();
    assert_eq!(circuit.n_examples, 300);
    let svg = std::fs::read_to_string(out_a.join("circuit.svg")).unwrap();
    roxmltree::Document::parse(&svg).unwrap();
}

#[test]
fn min_weight_prunes_edges() {
    let inputs = stage_inputs(100);
    let full = inputs.root.join("full");
    let pruned = inputs.root.join("pruned");
    assert!(run(&inputs, &full, &[]).status.success());
    assert!(run(&inputs, &pruned, &["--min-weight", "0.05"])
        .status
        .success());
    let full = circuitry_circuit::Circuit::read(&full.join("circuit.json")).unwrap();
    let pruned = circuitry_circuit::Circuit::read(&pruned.join("circuit.json")).unwrap();
    println!(
        "{} edges → {} with --min-weight 0.05",
        full.edges.len(),
        pruned.edges.len()
    );
    assert!(pruned.edges.len() < full.edges.len());
    assert_eq!(pruned.thresholds.min_abs_weight, 0.05);
}

#[test]
fn sae_on_another_hook_is_refused() {
    let inputs = stage_inputs(20);
    random_sae(4, 8, HookPoint::ResidPre { layer: 0 }, true, 1)
        .save(&inputs.sae)
        .unwrap();
    let out = inputs.root.join("out");
    assert_refused(
        &run(&inputs, &out, &[]),
        &out,
        &["blocks.0.hook_resid_pre", "toy.hook_hidden"],
    );
}

#[test]
fn sae_of_other_width_is_refused() {
    let inputs = stage_inputs(20);
    let sae = inputs.root.join("sae5");
    random_sae(5, 8, HookPoint::ToyHidden, true, 1)
        .save(&sae)
        .unwrap();
    let inputs = Inputs { sae, ..inputs };
    let out = inputs.root.join("out");
    assert_refused(&run(&inputs, &out, &[]), &out, &["d_in 5", "width 4"]);
}

#[test]
fn store_without_hidden_hook_is_refused() {
    let inputs = stage_inputs(20);
    let (model, config) = trained_model();
    let store = inputs.root.join("store_in_only");
    write_store(&store, &inputs.model, &model, &config, 20, false);
    let inputs = Inputs { store, ..inputs };
    let out = inputs.root.join("out");
    assert_refused(
        &run(&inputs, &out, &[]),
        &out,
        &["toy.hook_hidden", "circuitry-dump toy"],
    );
}

#[test]
fn store_from_another_model_is_refused() {
    let inputs = stage_inputs(20);
    let (mut model, config) = trained_model();
    model.fc1_weight[[0, 0]] += 0.5;
    let other = inputs.root.join("other_model");
    model.save(&other, &config).unwrap();
    let inputs = Inputs {
        model: other,
        ..inputs
    };
    let out = inputs.root.join("out");
    assert_refused(
        &run(&inputs, &out, &[]),
        &out,
        &["fingerprint", "re-run the dump"],
    );
}

#[test]
fn bad_options_and_missing_inputs_are_refused() {
    let inputs = stage_inputs(20);
    let out = inputs.root.join("out");
    assert_refused(
        &run(&inputs, &out, &["--top-paths", "0"]),
        &out,
        &["--top-paths"],
    );
    assert_refused(
        &run(&inputs, &out, &["--min-weight=-1"]),
        &out,
        &["--min-weight"],
    );
    let missing = Inputs {
        model: inputs.root.join("nope"),
        ..stage_inputs(5)
    };
    assert_refused(&run(&missing, &out, &[]), &out, &["nope"]);
}

fn circuit_edges(out: &Path) -> usize {
    circuitry_circuit::Circuit::read(&out.join("circuit.json"))
        .unwrap()
        .edges
        .len()
}

// Regression tests of issue 15 (cache integrity) on the circuit stage's side.

#[test]
fn check_only_toy_accepts_good_options_and_refuses_bad_ones_writing_nothing() {
    let inputs = stage_inputs(20);
    let out = inputs.root.join("out");
    let ok = run(&inputs, &out, &["--check-only"]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!out.exists(), "--check-only creates nothing");
    assert_refused(
        &run(&inputs, &out, &["--top-paths", "0", "--check-only"]),
        &out,
        &["--top-paths"],
    );
}

/// An SAE folder of the training stage without training.json (its run stopped, e.g.
/// on a full disk) was used by the circuit stage silently.
#[test]
fn a_half_written_sae_folder_is_refused() {
    let inputs = stage_inputs(20);
    random_sae(4, 8, HookPoint::ToyHidden, true, 3)
        .save_stage_output(&inputs.sae)
        .unwrap();
    assert!(!inputs.sae.join("training.json").exists());
    let out = inputs.root.join("out");
    for extra in [&[][..], &["--check-only"][..]] {
        assert_refused(
            &run(&inputs, &out, extra),
            &out,
            &["SAE folder", "incomplete", "training.json", "--force"],
        );
    }
}

fn gpt2(model: &Path, saes: &Path, store: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_circuitry-circuit"))
        .arg("gpt2")
        .arg("--model")
        .arg(model)
        .arg("--sae")
        .arg(saes)
        .arg("--store")
        .arg(store)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

/// `--check-only` of `gpt2`, and an --sae folder that also holds an SAE for a hook
/// the store lacks: it was used with no warning.
#[test]
fn check_only_gpt2_checks_options_and_warns_of_an_sae_whose_hook_the_store_lacks() {
    use circuitry_store::{Dtype, HookMeta, RowBatch, StoreSpec, StoreWriter};
    let dir = tempfile::tempdir().unwrap();
    let model = crate::gpt2_fixtures::model_dir();
    let saes = dir.path().join("saes");
    let (have, lacks) = (
        HookPoint::ResidPre { layer: 0 },
        HookPoint::MlpOut { layer: 1 },
    );
    for hook in [have, lacks] {
        crate::gpt2_fixtures::sae(hook, 32, 16, 5)
            .save(&saes.join(hook.to_string()))
            .unwrap();
    }
    let store = dir.path().join("store");
    let acts = ndarray::Array2::<f32>::zeros((4, 32)); // (rows, d_model)
    let mut w = StoreWriter::create(
        &store,
        StoreSpec {
            hooks: vec![HookMeta {
                hook: have,
                width: 32,
            }],
            dtype: Dtype::F32,
            model_fingerprint: "x".into(),
            tokenizer_fingerprint: None,
            context_size: 2,
            paired: true,
            shard_rows: 10,
            extra: serde_json::json!({}),
        },
    )
    .unwrap();
    w.write(RowBatch {
        seq: &[0, 0, 1, 1],
        pos: &[0, 1, 0, 1],
        token_id: &[1, 2, 1, 3],
        example: Some(&[0, 0, 0, 0]),
        side: Some(&[0, 0, 1, 1]),
        acts: vec![(have, acts.view())],
    })
    .unwrap();
    w.finish().unwrap();
    let out = dir.path().join("out");

    let o = gpt2(&model, &saes, &store, &out, &["--check-only"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!("{stderr}");
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("WARN"), "{stderr}");
    assert!(
        stderr.contains(&lacks.to_string()),
        "names the hook: {stderr}"
    );
    assert!(!stderr.contains(&format!("for hook {have}")), "{stderr}");
    assert!(!out.exists(), "--check-only creates nothing");

    let o = gpt2(
        &model,
        &saes,
        &store,
        &out,
        &["--batch-size", "0", "--check-only"],
    );
    assert_refused(&o, &out, &["--batch-size"]);
}

/// An --sae folder that holds only hidden entries (an upstream train-sae stage still
/// at work: its checkpoints) is not produced yet: `--check-only` passes, as for an
/// absent folder, so `circuitry run` can resume the upstream stage; the real run
/// still refuses it.
#[test]
fn check_only_gpt2_treats_an_sae_folder_in_progress_as_not_produced_yet() {
    let dir = tempfile::tempdir().unwrap();
    let model = crate::gpt2_fixtures::model_dir();
    let saes = dir.path().join("saes");
    std::fs::create_dir_all(saes.join(".checkpoints")).unwrap();
    std::fs::write(saes.join(".checkpoints/abc.safetensors"), b"partial").unwrap();
    let store = dir.path().join("store"); // not dumped yet either
    let out = dir.path().join("out");
    let o = gpt2(&model, &saes, &store, &out, &["--check-only"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(!out.exists(), "--check-only creates nothing");

    // A visible entry without cfg.json is a folder that is not an SAE: refused.
    std::fs::create_dir_all(saes.join("blocks.0.hook_resid_pre")).unwrap();
    let o = gpt2(&model, &saes, &store, &out, &["--check-only"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cfg.json"), "{stderr}");
}
