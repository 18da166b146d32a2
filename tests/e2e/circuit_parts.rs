//! A circuit split by pairs into parts (`circuitry-circuit gpt2 --part I/N`), run as
//! separate processes on one machine: three rounds of three concurrent processes, then
//! the plain command, give the same circuit as one process over all pairs (resample
//! ablation, whose permutations are seeded per batch, and per-position nodes included);
//! a round run before every part finished the previous one is refused; the plain
//! command finishes parts left undone and ignores parts of other options; a damaged
//! part file is refused with the fix.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use circuitry_tests::{bin, json_max_diff, repo_root, run_ok, text};

/// The tiny model's simple pairs (one token length: per-position nodes work) dumped at
/// two hooks, and an SAE for each.
fn inputs(dir: &Path) -> PathBuf {
    let d = repo_root().join("datasets/tiny-gpt2");
    let d = d.display();
    let manifest = dir.join("inputs.toml");
    fs::write(
        &manifest,
        format!(
            r#"[pipeline]
name = "circuit-parts"
run_dir = "run"

[[stage]]
name = "pairs"
kind = "dump"
model = "{d}"
pairs = "{d}/agreement/simple_test.jsonl"
hooks = ["blocks.2.hook_resid_pre", "blocks.3.hook_attn_out"]
batch_size = 64
max_tokens = 1200

[[stage]]
name = "saes"
kind = "train-sae"
store = "@pairs"
hooks = ["blocks.2.hook_resid_pre", "blocks.3.hook_attn_out"]
d_sae = 128
steps = 300
batch_size = 64
seed = 0
"#
        ),
    )
    .unwrap();
    run_ok(Command::new(bin("circuitry")).arg("run").arg(&manifest));
    dir.join("run")
}

/// `circuitry-circuit gpt2` on the inputs with `extra` flags, not checked.
fn circuit(run: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin("circuitry-circuit"));
    cmd.arg("gpt2")
        .arg("--model")
        .arg(repo_root().join("datasets/tiny-gpt2"))
        .arg("--store")
        .arg(run.join("pairs"))
        .arg("--sae")
        .arg(run.join("saes"))
        .arg("--out")
        .arg(out)
        // 8 pairs per batch: several batches per part.
        .args(["--batch-size", "8", "--max-examples", "72"])
        .args(extra);
    cmd
}

/// Every round of `parts` parts, each round's parts as concurrent processes.
fn run_rounds(run: &Path, out: &Path, extra: &[&str], parts: usize, rounds: usize) {
    for _ in 0..rounds {
        let children: Vec<_> = (0..parts)
            .map(|i| {
                let part = format!("{i}/{parts}");
                let mut args = extra.to_vec();
                args.extend(["--part", &part]);
                circuit(run, out, &args)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "a part failed: {}", text(&o));
        }
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Same circuit and sweeps, numbers within 1e-6.
fn assert_same_circuit(whole: &Path, split: &Path) {
    for file in ["circuit.json", "faithfulness.json"] {
        let d = json_max_diff(&json(&whole.join(file)), &json(&split.join(file)), file);
        println!("{file}: parts vs one process, max |diff| {d:e}");
        assert!(d <= 1e-6, "{file} differs by {d}");
    }
    assert!(split.join("stage.json").is_file());
    assert!(
        !split.join("parts").exists(),
        "the parts are deleted once the circuit is written"
    );
}

#[test]
fn a_circuit_split_into_parts_equals_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let run = inputs(tmp.path());
    let extra = ["--ablation", "resample", "--aggregation", "per-position"];
    let whole = tmp.path().join("whole");
    println!("{}", text(&run_ok(&mut circuit(&run, &whole, &extra))));

    let split = tmp.path().join("split");
    // Round 2 of a part before the others did round 1: refused, nothing written.
    run_ok(&mut circuit(
        &run,
        &split,
        &[&extra[..], &["--part", "1/3"]].concat(),
    ));
    let early = circuit(&run, &split, &[&extra[..], &["--part", "1/3"]].concat())
        .output()
        .unwrap();
    let says = text(&early);
    assert_eq!(early.status.code(), Some(2), "{says}");
    assert!(
        says.contains("round 1 (node effects) of part 0/3") && says.contains("--part 0/3"),
        "the error names the part to run first: {says}"
    );
    assert!(!split.join("parts/1/edges.safetensors").exists());
    for part in ["0/3", "2/3"] {
        run_ok(&mut circuit(
            &run,
            &split,
            &[&extra[..], &["--part", part]].concat(),
        ));
    }
    run_rounds(&run, &split, &extra, 3, 2);
    let done: Output = run_ok(&mut circuit(
        &run,
        &split,
        &[&extra[..], &["--part", "2/3"]].concat(),
    ));
    assert!(text(&done).contains("all 3 rounds done"), "{}", text(&done));
    assert!(
        !split.join("circuit.json").exists(),
        "a part writes no circuit"
    );
    run_ok(&mut circuit(&run, &split, &extra));
    assert_same_circuit(&whole, &split);
}

#[test]
fn the_plain_command_finishes_parts_left_undone_and_ignores_stale_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let run = inputs(tmp.path());
    let whole = tmp.path().join("whole");
    run_ok(&mut circuit(&run, &whole, &[]));

    // Two of four parts did round 1; the plain command does everything else.
    let partial = tmp.path().join("partial");
    for part in ["0/4", "3/4"] {
        run_ok(&mut circuit(&run, &partial, &["--part", part]));
    }
    let o = run_ok(&mut circuit(&run, &partial, &[]));
    println!("{}", text(&o));
    assert_same_circuit(&whole, &partial);

    // Parts of another node threshold do not belong to this circuit.
    let stale = tmp.path().join("stale");
    run_rounds(&run, &stale, &["--node-threshold", "0.3"], 2, 3);
    let o = run_ok(&mut circuit(&run, &stale, &[]));
    assert!(
        text(&o).contains("computed with other options or inputs"),
        "{}",
        text(&o)
    );
    assert_same_circuit(&whole, &stale);

    // A damaged part file (cut short): refused, naming the file and the fix, no
    // circuit written; once deleted, the plain command runs the part again.
    let damaged = tmp.path().join("damaged");
    run_ok(&mut circuit(&run, &damaged, &["--part", "0/2"]));
    let file = damaged.join("parts/0/nodes.safetensors");
    let bytes = fs::read(&file).unwrap();
    fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let o = circuit(&run, &damaged, &[]).output().unwrap();
    let says = text(&o);
    assert_eq!(o.status.code(), Some(2), "{says}");
    assert!(
        says.contains("parts/0/nodes.safetensors")
            && says.contains("delete it and run its part again"),
        "the error names the file and the fix: {says}"
    );
    assert!(!damaged.join("circuit.json").exists());
    fs::remove_file(&file).unwrap();
    run_ok(&mut circuit(&run, &damaged, &[]));
    assert_same_circuit(&whole, &damaged);

    // A part that is not one.
    let bad = circuit(&run, &stale, &["--part", "4/4"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).contains("is not a part"), "{}", text(&bad));
}
