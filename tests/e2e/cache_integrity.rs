//! Issue 15 with the real stage binaries: forced and stale stages re-run atomically,
//! concurrent runs of one manifest never corrupt the run directory, and a stage
//! option its binary refuses is reported at its line in the manifest.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use circuitry_tests::{bin, private_manifest, text};

fn circuitry(args: &[&str], manifest: &Path) -> Output {
    Command::new(bin("circuitry"))
        .args(args)
        .arg(manifest)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

/// Every file of a run directory, for byte-for-byte comparison: relative path and
/// content, sorted. Left out: `.lock` (its holder), the logs `RUN_DIR/*.log` (they
/// hold timestamps), and in each `stage.json` the timing fields `finished_unix` and
/// `wall_seconds` (set to null); everything else is compared as written.
fn outputs(run: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                walk(root, &path, out);
            } else if rel.contains('/') || !(rel == ".lock" || rel.ends_with(".log")) {
                let mut bytes = fs::read(&path).unwrap();
                if rel.ends_with("/stage.json") {
                    let mut record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    record["finished_unix"] = serde_json::Value::Null;
                    record["wall_seconds"] = serde_json::Value::Null;
                    bytes = serde_json::to_vec_pretty(&record).unwrap();
                }
                out.push((rel, bytes));
            }
        }
    }
    let mut files = Vec::new();
    walk(run, run, &mut files);
    files.sort();
    files
}

fn assert_same(got: &[(String, Vec<u8>)], want: &[(String, Vec<u8>)]) {
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(got), names(want));
    for ((name, a), (_, b)) in got.iter().zip(want) {
        assert!(a == b, "{name} differs");
    }
}

/// A private copy of the toy pipeline, run once; returns (tempdir, manifest, run dir).
fn toy_run() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = private_manifest("toy.toml", dir.path());
    ok(circuitry(&["run"], &manifest));
    let run = dir.path().join("run");
    (dir, manifest, run)
}

/// Issue 15, item 1: `circuitry run M --force acts` made the dump refuse its own
/// complete store ("already complete (2000 rows)"), on that run and every later one.
#[test]
fn forced_dump_rerun_over_a_complete_store_rewrites_it() {
    let (_dir, manifest, run) = toy_run();
    let before = outputs(&run);
    let out = ok(circuitry(&["run", "--force", "acts"], &manifest));
    assert!(out.contains("[2/4] acts     done"), "{out}");
    assert!(
        out.contains("sae      fresh (upstream outputs unchanged)"),
        "{out}"
    );
    assert!(!run.join(".acts.old").exists());
    assert_same(&outputs(&run), &before);
    let out = ok(circuitry(&["run"], &manifest));
    assert!(out.contains("all 4 stages fresh, nothing to run"), "{out}");
}

/// Issue 15, item 1: a changed shard makes `acts` stale; the dump used to refuse the
/// (complete) store. Now it is dumped again into a fresh folder, and the shard's
/// bytes are back.
#[test]
fn changed_shard_reruns_the_dump_and_restores_the_shard() {
    let (_dir, manifest, run) = toy_run();
    let before = outputs(&run);
    let shard = run.join("acts/shard_00001.parquet");
    let mut bytes = fs::read(&shard).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 4] {
        *b ^= 0xff;
    }
    fs::write(&shard, &bytes).unwrap();
    let plan = ok(circuitry(&["plan"], &manifest));
    assert!(
        plan.contains("acts     stale: output shard_00001.parquet was modified"),
        "{plan}"
    );
    let out = ok(circuitry(&["run"], &manifest));
    assert!(out.contains("[2/4] acts     done"), "{out}");
    assert_same(&outputs(&run), &before);
}

/// Issue 15, item 2: two `circuitry run` of one manifest at once raced on the dump's
/// files; in one of four trials both failed and left a store with a shard missing.
/// Now whichever starts second either finds everything fresh or exits 2 naming the
/// holder; the outputs always equal a lone run's. Four trials.
#[test]
fn concurrent_runs_never_corrupt_the_run_directory() {
    let (_ref_dir, _, reference) = toy_run();
    let want = outputs(&reference);
    for trial in 0..4 {
        let dir = tempfile::tempdir().unwrap();
        let manifest = private_manifest("toy.toml", dir.path());
        let spawn = || {
            Command::new(bin("circuitry"))
                .arg("run")
                .arg(&manifest)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let runs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        let mut refused = 0;
        for out in &runs {
            let err = String::from_utf8_lossy(&out.stderr);
            match out.status.code() {
                Some(0) => {}
                Some(2) => {
                    refused += 1;
                    assert!(
                        err.starts_with("error: run directory "),
                        "trial {trial}: {err}"
                    );
                    assert!(err.contains(" is in use by pid "), "trial {trial}: {err}");
                }
                other => panic!("trial {trial}: exit {other:?}: {err}"),
            }
        }
        assert!(refused <= 1, "trial {trial}: both runs refused");
        let plan = ok(circuitry(&["plan"], &manifest));
        assert!(plan.contains("4 fresh, 0 stale"), "trial {trial}: {plan}");
        assert_same(&outputs(&dir.path().join("run")), &want);
    }
}

/// Issue 15, item 7: `noise = 5.0` on the toy model failed inside the stage with exit
/// 1 and no place in the manifest. Now: exit 2, `FILE:LINE:COL: stage model: ...`
/// at the value, and no stage after it runs.
#[test]
fn refused_stage_option_points_at_its_line_in_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = private_manifest("toy.toml", dir.path());
    let text_in = fs::read_to_string(&manifest).unwrap();
    let edited = text_in.replacen("noise = 0.1 ", "noise = 5.0 ", 1);
    assert_ne!(
        edited, text_in,
        "toy.toml no longer sets the model's noise = 0.1"
    );
    fs::write(&manifest, &edited).unwrap();
    let line = edited
        .lines()
        .position(|l| l.starts_with("noise = 5.0"))
        .unwrap()
        + 1;
    let out = circuitry(&["run"], &manifest);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("{}:{line}:9: stage model: ", manifest.display());
    assert!(err.contains(&want), "want {want:?} in:\n{err}");
    assert!(err.contains("noise"), "{err}");
    let run = dir.path().join("run");
    for stage in ["model", "acts", "sae", "circuit"] {
        assert!(!run.join(stage).join("stage.json").exists(), "{stage} ran");
    }
    assert!(!run.join("acts").exists());
}
