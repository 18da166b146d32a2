//! The local runner, for real: `circuitry run` starts the fake stage binaries as
//! processes, and freshness is decided from the `stage.json` files they write.
use std::fs;
use std::process::Command;

use crate::util::{snapshot, toy_manifest, Fixture};

const TOY: &str = "pipelines/toy.toml";
const ALL: [&str; 4] = ["model", "acts", "sae", "circuit"];

/// A fixture with the shipped toy manifest, run once to completion.
fn toy_after_first_run() -> Fixture {
    let fx = Fixture::new();
    fx.manifest("toy.toml", &toy_manifest());
    let run = fx.circuitry(&["run", TOY]);
    assert_eq!(run.code, 0, "first run failed:\n{}", run.all());
    assert_eq!(fx.ran(), ALL);
    fx
}

fn edit_toy(fx: &Fixture, from: &str, to: &str) {
    let path = fx.path(TOY);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} not in the manifest");
    fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn first_run_runs_every_stage_in_order_and_streams_output() {
    let fx = toy_after_first_run();
    for stage in ALL {
        let dir = fx.path(&format!("runs/toy/{stage}"));
        assert!(
            dir.join("stage.json").is_file(),
            "{stage} has no stage.json"
        );
        let log = fs::read_to_string(fx.path(&format!("runs/toy/{stage}.log"))).unwrap();
        assert!(log.contains("progress on stderr"), "{stage}.log: {log}");
    }
    assert!(fx.path("runs/toy/sae/toy.hook_hidden/cfg.json").is_file());
}

#[test]
fn second_run_runs_nothing_and_says_so() {
    let fx = toy_after_first_run();
    let run = fx.circuitry(&["run", TOY]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr.contains("all 4 stages fresh, nothing to run"),
        "{}",
        run.stderr
    );
    assert!(fx.ran().is_empty());
    let plan = fx.circuitry(&["plan", TOY]);
    assert_eq!(plan.code, 0);
    assert!(plan.stdout.contains("4 fresh, 0 stale"), "{}", plan.stdout);
}

#[test]
fn changing_a_circuit_option_reruns_only_the_circuit_stage() {
    let fx = toy_after_first_run();
    edit_toy(&fx, "top_paths = 3", "top_paths = 5");
    let plan = fx.circuitry(&["plan", TOY]);
    assert!(plan.stdout.contains("3 fresh, 1 stale"), "{}", plan.stdout);
    assert!(
        plan.stdout
            .contains("circuit  stale: --top-paths changed: 3 → 5"),
        "{}",
        plan.stdout
    );
    let run = fx.circuitry(&["run", TOY]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fx.ran(), ["circuit"]);
    assert!(
        run.stderr.contains("ran 1 of 4 stages (circuit)"),
        "{}",
        run.stderr
    );
    assert!(fx
        .circuitry(&["run", TOY])
        .stderr
        .contains("nothing to run"));
}

#[test]
fn changing_an_sae_option_reruns_the_sae_and_the_circuit() {
    let fx = toy_after_first_run();
    edit_toy(&fx, "steps = 2000", "steps = 3000");
    let plan = fx.circuitry(&["plan", TOY]);
    assert!(
        plan.stdout
            .contains("sae      stale: --steps changed: 2000 → 3000"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("circuit  stale: upstream stage `sae` is stale"),
        "{}",
        plan.stdout
    );
    let run = fx.circuitry(&["run", TOY]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fx.ran(), ["sae", "circuit"]);
}

#[test]
fn failure_stops_dependents_and_leaves_the_stage_stale() {
    let fx = toy_after_first_run();
    let before = snapshot(&fx.path("runs/toy/sae"));
    edit_toy(&fx, "steps = 2000", "steps = 3000");
    let run = fx.circuitry_env(&["run", TOY], &[("CIRCUITRY_FAKE_FAIL", "sae")]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(fx.ran(), ["sae"], "the circuit stage must not run");
    for piece in [
        "error: stage `sae` failed: `circuitry-train-sae` ended with exit status: 3",
        "runs/toy/sae.log",
        "| circuitry-train-sae: fake failure in sae",
    ] {
        assert!(
            run.stderr.contains(piece),
            "want {piece:?} in:\n{}",
            run.stderr
        );
    }
    // The completed output the failed run replaced is back, whole (the failed run's
    // partial.txt is gone with its folder), and the stage is still stale.
    assert_eq!(snapshot(&fx.path("runs/toy/sae")), before);
    assert!(!fx.path("runs/toy/.sae.old").exists());
    let plan = fx.circuitry(&["plan", TOY]);
    assert!(
        plan.stdout
            .contains("sae      stale: --steps changed: 2000 → 3000"),
        "{}",
        plan.stdout
    );
    // Fixed: the failed stage and its dependents run, nothing else.
    let run = fx.circuitry(&["run", TOY]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fx.ran(), ["sae", "circuit"]);
}

#[test]
fn failure_on_a_first_run_runs_no_dependents() {
    let fx = Fixture::new();
    fx.manifest("toy.toml", &toy_manifest());
    let run = fx.circuitry_env(&["run", TOY], &[("CIRCUITRY_FAKE_FAIL", "acts")]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert_eq!(fx.ran(), ["model", "acts"]);
    assert!(!fx.path("runs/toy/sae").exists());
    assert!(!fx.path("runs/toy/circuit").exists());
}

#[test]
fn force_reruns_the_stage_and_dependents_only_when_its_outputs_change() {
    let fx = toy_after_first_run();
    // Same seeds, same bytes: the dependents' input fingerprints still match.
    let run = fx.circuitry(&["run", TOY, "--force", "model"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fx.ran(), ["model"]);
    assert!(
        run.stderr
            .contains("acts     fresh (upstream outputs unchanged)"),
        "{}",
        run.stderr
    );
    // Different bytes: every dependent re-runs.
    let run = fx.circuitry_env(
        &["run", TOY, "--force", "model"],
        &[("CIRCUITRY_FAKE_SALT", "1")],
    );
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fx.ran(), ALL);
}

#[test]
fn modified_output_makes_its_stage_stale() {
    let fx = toy_after_first_run();
    fs::write(fx.path("runs/toy/acts/result.txt"), "tampered").unwrap();
    let plan = fx.circuitry(&["plan", TOY]);
    assert!(
        plan.stdout
            .contains("acts     stale: output result.txt was modified after the stage wrote it"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("sae      stale: input ../runs/toy/acts changed"),
        "{}",
        plan.stdout
    );
    // Re-running acts restores the bytes the SAE was trained on: the SAE stays fresh.
    let run = fx.circuitry(&["run", TOY]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fx.ran(), ["acts"]);
}

#[test]
fn missing_output_makes_its_stage_stale() {
    let fx = toy_after_first_run();
    fs::remove_file(fx.path("runs/toy/circuit/result.txt")).unwrap();
    let plan = fx.circuitry(&["plan", TOY]);
    assert!(
        plan.stdout
            .contains("circuit  stale: output result.txt is missing"),
        "{}",
        plan.stdout
    );
    fx.circuitry(&["run", TOY]);
    assert_eq!(fx.ran(), ["circuit"]);
}

#[test]
fn changed_plain_input_file_makes_its_stage_stale() {
    let fx = Fixture::new();
    fs::create_dir_all(fx.path("models/pretrained")).unwrap();
    fs::write(fx.path("models/pretrained/weights.bin"), "v1").unwrap();
    let text = toy_manifest().replacen("model = \"@model\"", "model = \"../models/pretrained\"", 1);
    fx.manifest("toy.toml", &text);
    assert_eq!(fx.circuitry(&["run", TOY]).code, 0);
    assert_eq!(fx.ran(), ALL);
    fs::write(fx.path("models/pretrained/weights.bin"), "v2").unwrap();
    let plan = fx.circuitry(&["plan", TOY]);
    assert!(
        plan.stdout
            .contains("acts     stale: input ../models/pretrained changed"),
        "{}",
        plan.stdout
    );
    assert_eq!(fx.circuitry(&["run", TOY]).code, 0);
    assert_eq!(fx.ran(), ["acts", "sae", "circuit"]);
}

#[test]
fn missing_binary_is_reported_before_anything_runs() {
    let fx = Fixture::new();
    fx.manifest("toy.toml", &toy_manifest());
    fs::remove_file(fx.bin().join("circuitry-circuit")).unwrap();
    let run = fx.circuitry(&["run", TOY]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr
            .contains("stage `circuit` needs the binary `circuitry-circuit`"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("cargo build --release"),
        "{}",
        run.stderr
    );
    assert!(fx.ran().is_empty());
}

#[test]
fn stage_that_writes_no_record_is_an_error() {
    let fx = Fixture::new();
    fx.manifest("toy.toml", &toy_manifest());
    let run = fx.circuitry_env(&["run", TOY], &[("CIRCUITRY_FAKE_NO_RECORD", "model")]);
    assert_eq!(run.code, 1, "{}", run.all());
    assert!(run.stderr.contains("wrote no stage.json"), "{}", run.stderr);
    assert_eq!(fx.ran(), ["model"]);
}

#[test]
fn dry_run_prints_the_commands_and_writes_nothing() {
    let fx = Fixture::new();
    fx.manifest("toy.toml", &toy_manifest());
    let run = fx.circuitry(&["run", TOY, "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.stderr
            .contains("cd pipelines && circuitry-train-toy --out ../runs/toy/model --seed 7"),
        "{}",
        run.stderr
    );
    assert!(!fx.path("runs").exists());
    assert!(fx.ran().is_empty());
}

#[test]
fn unknown_forced_stage_is_bad_input() {
    let fx = toy_after_first_run();
    let run = fx.circuitry(&["run", TOY, "--force", "sea"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("--force sea: the pipeline has no stage `sea`; its stages are: model, acts, sae, circuit"),
        "{}",
        run.stderr
    );
    assert!(fx.ran().is_empty());
}

#[test]
fn the_printed_command_run_by_hand_gives_a_fresh_stage() {
    let fx = toy_after_first_run();
    let plan = fx.circuitry(&["plan", TOY, "--force", "circuit"]);
    let line = plan
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("$ "))
        .expect("plan prints the command of the forced stage")
        .to_string();
    assert!(
        line.starts_with("cd pipelines && circuitry-circuit toy "),
        "{line}"
    );
    fs::remove_dir_all(fx.path("runs/toy/circuit")).unwrap();
    let path = format!(
        "{}:{}",
        fx.bin().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .current_dir(fx.dir.path())
        .env("PATH", path)
        .env("CIRCUITRY_FAKE_LOG", fx.path("ran.log"))
        .env_remove("CIRCUITRY_FAKE_SALT")
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(fx.ran(), ["circuit"]);
    let run = fx.circuitry(&["run", TOY]);
    assert!(
        run.stderr.contains("all 4 stages fresh, nothing to run"),
        "{}",
        run.all()
    );
}
