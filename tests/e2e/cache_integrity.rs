//! Issue 15 with the real stage binaries: forced and stale stages re-run atomically,
//! concurrent runs of one manifest never corrupt the run directory, a SIGKILLed
//! runner takes its stage process along, and a stage option its binary refuses is
//! reported at its line in the manifest.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use circuitry_tests::{bin, bin_dir, private_manifest, text};
use rustix::process::{kill_process, Pid, Signal};

/// How long to wait for something that happens at once (a stage starting, a process
/// dying) before failing; a bound against hanging, not a speed assertion.
const PATIENCE: Duration = Duration::from_secs(120);

fn circuitry(args: &[&str], manifest: &Path) -> Output {
    Command::new(bin("circuitry"))
        .args(args)
        .arg(manifest)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// `circuitry run MANIFEST` in the background, its output discarded.
fn spawn_run(manifest: &Path) -> std::process::Child {
    Command::new(bin("circuitry"))
        .arg("run")
        .arg(manifest)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

/// Every file of a run directory, for byte-for-byte comparison: relative path and
/// content, sorted. Left out: `.lock` (its holder), the logs `RUN_DIR/*.log` (they
/// hold timestamps), and in each `stage.json` the measured fields `finished_unix`,
/// `wall_seconds` and `peak_rss_bytes` (set to null); everything else is compared as
/// written.
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
                    record["peak_rss_bytes"] = serde_json::Value::Null;
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

/// The toy pipeline with its SAE trained for 10000 steps instead of 2000 (a quarter
/// of a second on an idle machine, seconds under load; the other stages take less),
/// so that the test catches the `sae` stage while it trains. Returns the manifest.
fn toy_with_long_sae(dir: &Path) -> PathBuf {
    let manifest = private_manifest("toy.toml", dir);
    let text_in = fs::read_to_string(&manifest).unwrap();
    let edited = text_in.replacen("\nsteps = 2000\n", "\nsteps = 10000\n", 1);
    assert_ne!(
        edited, text_in,
        "toy.toml no longer sets the SAE's steps = 2000"
    );
    fs::write(&manifest, edited).unwrap();
    manifest
}

/// `/proc/PID/stat`'s parent pid, or None when the process is gone.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID ...": COMM may hold spaces, so split after the last ')'.
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

/// The pids of live processes (not zombies: those have no cwd) running one of the
/// workspace's binaries in `cwd`, where the runner starts the stages of a manifest
/// in `cwd`: the stage processes of that run.
fn stage_processes(cwd: &Path) -> Vec<i32> {
    let cwd = cwd.canonicalize().unwrap();
    let bins = bin_dir().canonicalize().unwrap();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let (Ok(exe), Ok(dir)) = (
            fs::read_link(entry.path().join("exe")),
            fs::read_link(entry.path().join("cwd")),
        ) else {
            continue;
        };
        let name = exe.file_name().map(|n| n.to_string_lossy().into_owned());
        let is_stage = exe.parent() == Some(bins.as_path())
            && name.is_some_and(|n| n.starts_with("circuitry-"));
        if is_stage && dir == cwd {
            pids.push(pid);
        }
    }
    pids
}

/// Issue 15, "done when": a SIGKILLed `circuitry run` left its stage binary running
/// as an orphan. Here the real toy pipeline runs until its real `circuitry-train-sae`
/// is training (the runner's child, its log says "training SAEs"); the test then
/// stops that stage with SIGSTOP, so that it cannot finish before the runner dies
/// whatever the machine's load, and SIGKILLs the runner. No stage process of the run
/// may survive (`PR_SET_PDEATHSIG` = SIGKILL ends even a stopped process), and the
/// rerun ends with the outputs of an uninterrupted run, byte for byte: every file of
/// the stages' folders, except in each `stage.json` the measured fields
/// `finished_unix`, `wall_seconds` and `peak_rss_bytes` (when the stage finished, how
/// long it took and its peak memory differ between any two runs); not `RUN_DIR/.lock` (its holder) nor the logs `RUN_DIR/*.log`
/// (their timestamps). See [`outputs`].
#[test]
fn killed_runner_takes_its_real_stage_along_and_the_rerun_matches_an_uninterrupted_run() {
    let ref_dir = tempfile::tempdir().unwrap();
    let reference = toy_with_long_sae(ref_dir.path());
    ok(circuitry(&["run"], &reference));
    let want = outputs(&ref_dir.path().join("run"));

    let dir = tempfile::tempdir().unwrap();
    let manifest = toy_with_long_sae(dir.path());
    let run = dir.path().join("run");
    let mut runner = spawn_run(&manifest);
    let runner_pid = runner.id() as i32;
    let start = Instant::now();
    let stage = loop {
        // The log first (cheap), then the process table.
        let training =
            fs::read_to_string(run.join("sae.log")).is_ok_and(|log| log.contains("training SAEs"));
        let child = training.then(|| {
            stage_processes(dir.path()).into_iter().find(|&pid| {
                parent_of(pid) == Some(runner_pid)
                    && fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| !c.windows(12).any(|w| w == b"--check-only"))
                    && fs::read_link(format!("/proc/{pid}/exe"))
                        .is_ok_and(|e| e.ends_with("circuitry-train-sae"))
            })
        });
        if let Some(Some(pid)) = child {
            break pid;
        }
        assert!(
            runner.try_wait().unwrap().is_none(),
            "the run ended before the test caught its sae stage training"
        );
        assert!(start.elapsed() < PATIENCE, "the sae stage never started");
        std::thread::sleep(Duration::from_millis(2));
    };
    let stage_pid = Pid::from_raw(stage).unwrap();
    kill_process(stage_pid, Signal::STOP).unwrap();
    assert!(
        !run.join("sae/stage.json").exists(),
        "the sae stage finished before it was stopped"
    );
    runner.kill().unwrap(); // SIGKILL: the runner gets no chance to clean up
    runner.wait().unwrap();
    let start = Instant::now();
    loop {
        let left = stage_processes(dir.path());
        if left.is_empty() {
            break;
        }
        if start.elapsed() > PATIENCE {
            for &pid in &left {
                let _ = kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL);
            }
            panic!("stage processes {left:?} survived their runner (pid {runner_pid})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !run.join("sae/stage.json").exists(),
        "the killed sae stage left a stage record"
    );

    let out = ok(circuitry(&["run"], &manifest));
    assert!(out.contains("[3/4] sae      done"), "{out}");
    assert_same(&outputs(&run), &want);
}

/// A pipeline whose corpus dump stops half-way (the runner SIGKILLed while the dump
/// writes its shards) must resume on the next `circuitry run`. It did not: the run
/// first checks every stale stage, and the SAE stage's check opened the dump's
/// unfinished store and refused it ("activation store … is incomplete … re-run the
/// dump"), so the dump that would have finished it never ran, however often the run
/// was repeated. Now a store no dump has finished counts as not produced yet; the
/// rerun resumes the dump and ends with the outputs of an uninterrupted run, byte for
/// byte (see [`outputs`]).
#[test]
fn run_killed_during_its_dump_resumes_it_and_matches_an_uninterrupted_run() {
    let write_manifest = |dir: &Path| -> PathBuf {
        let tiny = circuitry_tests::repo_root().join("datasets/tiny-gpt2");
        let text = format!(
            r#"[pipeline]
name = "resume"
run_dir = "run"

[[stage]]
name = "acts"
kind = "dump"
model = "{tiny}"
corpus = "{tiny}/corpus.txt"
hooks = ["blocks.0.hook_resid_pre", "blocks.3.hook_resid_pre"]
context_size = 32
batch_size = 8
threads = 1
shard_rows = 500
max_tokens = 40000

[[stage]]
name = "sae"
kind = "train-sae"
store = "@acts"
hooks = ["blocks.3.hook_resid_pre"]
d_in = 64
d_sae = 128
architecture = "topk"
k = 8
lr = 0.003
steps = 50
batch_size = 128
seed = 0
"#,
            tiny = tiny.display()
        );
        let path = dir.join("resume.toml");
        fs::write(&path, text).unwrap();
        path
    };
    let ref_dir = tempfile::tempdir().unwrap();
    ok(circuitry(&["run"], &write_manifest(ref_dir.path())));
    let want = outputs(&ref_dir.path().join("run"));
    let shards = want
        .iter()
        .filter(|(n, _)| n.starts_with("acts/shard_"))
        .count();
    assert!(
        shards >= 40,
        "want many shards to stop between, got {shards}"
    );

    let dir = tempfile::tempdir().unwrap();
    let manifest = write_manifest(dir.path());
    let acts = dir.path().join("run/acts");
    let written = || {
        fs::read_dir(&acts).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("shard_"))
                .count()
        })
    };
    let mut runner = spawn_run(&manifest);
    let start = Instant::now();
    while written() < 3 {
        assert!(
            runner.try_wait().unwrap().is_none(),
            "the run ended before the test could stop its dump"
        );
        assert!(start.elapsed() < PATIENCE, "the dump wrote no shards");
        std::thread::sleep(Duration::from_millis(2));
    }
    runner.kill().unwrap(); // SIGKILL; the dump dies with its runner
    runner.wait().unwrap();
    let start = Instant::now();
    while !stage_processes(dir.path()).is_empty() {
        assert!(start.elapsed() < PATIENCE, "the dump survived its runner");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped_at = written();
    println!("the dump stopped after {stopped_at} of {shards} shards");
    assert!(stopped_at < shards, "the kill came after the last shard");
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(acts.join("meta.json")).unwrap()).unwrap();
    assert_eq!(
        meta["complete"], false,
        "the store is not unfinished: {meta}"
    );
    assert!(!acts.join("stage.json").exists());

    let plan = ok(circuitry(&["plan"], &manifest));
    assert!(plan.contains("acts  stale"), "{plan}");
    assert!(plan.contains("0 fresh, 2 stale"), "{plan}");
    let out = ok(circuitry(&["run"], &manifest));
    assert!(out.contains("[1/2] acts  done"), "{out}");
    assert!(out.contains("[2/2] sae   done"), "{out}");
    assert_same(&outputs(&dir.path().join("run")), &want);
}
