//! `circuitry submit` against a real single-node Slurm (slurmctld + slurmd + munge on
//! 127.0.0.1), started once for this test binary by `scripts/slurm-local.sh` with its
//! own state directory under `target/` and stopped by its watchdog when the binary
//! exits. Skipped, loudly, only when Slurm is not installed (CI installs it).
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use circuitry_tests::{
    bin, bin_dir, json_max_diff, private_manifest, python, repo_root, run_ok, text,
};

/// The cluster's `SLURM_CONF`, starting the cluster on first use; `None` (after a
/// loud message) when Slurm is not installed.
fn cluster() -> Option<&'static Path> {
    static CONF: OnceLock<Option<PathBuf>> = OnceLock::new();
    CONF.get_or_init(|| {
        let installed = ["sbatch", "slurmctld", "slurmd", "munged"].iter().all(|c| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {c}"))
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if !installed {
            eprintln!(
                "\n*** SKIPPING the Slurm tests: Slurm is not installed (no sbatch/slurmctld/slurmd/munged).\n\
                 *** Install it with: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge\n"
            );
            return None;
        }
        let dir = bin_dir()
            .parent()
            .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
            .join("slurm-local-e2e");
        let out = run_ok(
            Command::new(repo_root().join("scripts/slurm-local.sh"))
                .args(["start", "--stop-with", &std::process::id().to_string()])
                .env("SLURM_LOCAL_DIR", &dir)
                .env("SLURM_LOCAL_CTLD_PORT", "6917")
                .env("SLURM_LOCAL_SLURMD_PORT", "6918"),
        );
        eprintln!("{}", text(&out));
        Some(dir.join("slurm.conf"))
    })
    .as_deref()
}

/// `circuitry ARGS MANIFEST` with the cluster's configuration.
fn circuitry(conf: &Path, args: &[&str], manifest: &Path) -> Output {
    Command::new(bin("circuitry"))
        .args(args)
        .arg(manifest)
        .env("SLURM_CONF", conf)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "failed: {}", text(&out));
    text(&out)
}

/// Poll `circuitry status` until no job is pending or running; returns the last report.
fn wait_for_jobs(conf: &Path, manifest: &Path) -> String {
    let start = Instant::now();
    loop {
        let status = ok(circuitry(conf, &["status"], manifest));
        if !status.contains("pending") && !status.contains("running") {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "jobs still not finished after 900 s:\n{status}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A directory whose path has a space and a single quote, for the manifest and run.
fn awkward_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join("it's a run");
    fs::create_dir(&dir).unwrap();
    dir
}

fn jobs_stages(run: &Path) -> Vec<String> {
    let jobs: serde_json::Value =
        serde_json::from_slice(&fs::read(run.join("slurm/jobs.json")).unwrap()).unwrap();
    jobs["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect()
}

fn record(stage_dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(stage_dir.join("stage.json")).unwrap()).unwrap()
}

/// The toy pipeline through Slurm in a directory named `it's a run`: every stage
/// done, outputs byte-identical to a local run, argv identical, and a local run then
/// finds every stage fresh.
#[test]
fn toy_pipeline_through_slurm_equals_a_local_run() {
    let Some(conf) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = awkward_dir(tmp.path());
    let manifest = private_manifest("toy.toml", &dir);
    let submitted = ok(circuitry(conf, &["submit"], &manifest));
    println!("{submitted}");
    let status = wait_for_jobs(conf, &manifest);
    println!("{status}");
    for stage in ["model", "acts", "sae", "circuit"] {
        assert!(
            status
                .lines()
                .any(|l| l.trim_start().starts_with(stage) && l.contains(" done")),
            "{stage} not done:\n{status}"
        );
    }
    let run = dir.join("run");
    for stage in ["model", "acts", "sae", "circuit"] {
        assert!(run.join("slurm").join(format!("{stage}.sbatch")).is_file());
    }
    let local_dir = tmp.path().join("local");
    fs::create_dir(&local_dir).unwrap();
    let local_manifest = private_manifest("toy.toml", &local_dir);
    run_ok(
        Command::new(bin("circuitry"))
            .arg("run")
            .arg(&local_manifest),
    );
    let local = local_dir.join("run");
    for f in [
        "model/model.safetensors",
        "acts/shard_00000.parquet",
        "acts/shard_00001.parquet",
        "sae/toy.hook_hidden/sae_weights.safetensors",
        "circuit/circuit.json",
        "circuit/circuit.svg",
    ] {
        let (a, b) = (
            fs::read(run.join(f)).unwrap(),
            fs::read(local.join(f)).unwrap(),
        );
        assert!(
            a == b,
            "{f} differs between the Slurm run and the local run"
        );
    }
    for stage in ["model", "acts", "sae", "circuit"] {
        assert_eq!(
            record(&run.join(stage))["argv"],
            record(&local.join(stage))["argv"],
            "{stage}: argv differs"
        );
    }
    let again = ok(circuitry(conf, &["run"], &manifest));
    assert!(again.contains("nothing to run"), "{again}");
    let resubmit = ok(circuitry(conf, &["submit"], &manifest));
    assert!(resubmit.contains("nothing to submit"), "{resubmit}");
}

/// A stage that fails at run time (its model path does not exist) stops its
/// dependents (Slurm cancels them: kill-on-invalid-dep), `circuitry status` names it
/// and its log; after the fix, resubmission runs only the stale stages.
#[test]
fn failed_stage_cancels_dependents_and_resubmission_runs_only_stale_stages() {
    let Some(conf) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = awkward_dir(tmp.path());
    let manifest = private_manifest("toy.toml", &dir);
    let good = fs::read_to_string(&manifest).unwrap();
    let bad = good.replacen("model = \"@model\"", "model = \"@model/missing\"", 1);
    assert_ne!(good, bad, "toy.toml no longer has model = \"@model\"");
    fs::write(&manifest, &bad).unwrap();
    ok(circuitry(conf, &["submit"], &manifest));
    let status = wait_for_jobs(conf, &manifest);
    println!("{status}");
    let line = |stage: &str| {
        status
            .lines()
            .find(|l| l.trim_start().starts_with(stage))
            .unwrap_or_else(|| panic!("no line for {stage}:\n{status}"))
            .to_string()
    };
    assert!(line("model").contains(" done"), "{status}");
    assert!(line("acts").contains("failed"), "{status}");
    for stage in ["sae", "circuit"] {
        assert!(
            line(stage).contains("cancelled (a stage it depends on failed)"),
            "{stage}:\n{status}"
        );
    }
    let log_line = status
        .lines()
        .find(|l| l.contains("log:"))
        .unwrap_or_else(|| panic!("no log line:\n{status}"));
    let log = PathBuf::from(log_line.split("log:").nth(1).unwrap().trim());
    assert!(
        log.to_string_lossy().contains("slurm/logs/acts-"),
        "{log_line}"
    );
    let log_text = fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("missing"),
        "log of the failed stage:\n{log_text}"
    );
    assert!(!dir.join("run/sae/stage.json").exists());

    let model_before = record(&dir.join("run/model"))["finished_unix"].clone();
    fs::write(&manifest, &good).unwrap();
    let plan = ok(circuitry(conf, &["plan"], &manifest));
    println!("{plan}");
    ok(circuitry(conf, &["submit"], &manifest));
    assert_eq!(jobs_stages(&dir.join("run")), ["acts", "sae", "circuit"]);
    let status = wait_for_jobs(conf, &manifest);
    println!("{status}");
    assert!(
        !status.contains("failed") && !status.contains("cancelled"),
        "{status}"
    );
    assert_eq!(
        record(&dir.join("run/model"))["finished_unix"],
        model_before,
        "model must not re-run"
    );
    let again = ok(circuitry(conf, &["run"], &manifest));
    assert!(again.contains("nothing to run"), "{again}");
}

/// Issue 15, item 1, through Slurm: a forced resubmission of a complete dump used to
/// delete its stage.json and have the job refuse the complete store. Now `submit`
/// moves the output aside and the job replaces it; a job that fails puts the
/// previous output back, whole.
#[test]
fn forced_resubmission_replaces_a_complete_stage_and_a_failed_job_restores_it() {
    let Some(conf) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = awkward_dir(tmp.path());
    let manifest = private_manifest("toy.toml", &dir);
    let mut local = Command::new(bin("circuitry"));
    run_ok(local.arg("run").arg(&manifest));
    let acts = dir.join("run/acts");
    let shards = |d: &Path| -> Vec<Vec<u8>> {
        [
            "shard_00000.parquet",
            "shard_00001.parquet",
            "meta.json",
            "stage.json",
        ]
        .iter()
        .map(|f| fs::read(d.join(f)).unwrap())
        .collect()
    };
    let before = shards(&acts);

    ok(circuitry(conf, &["submit", "--force", "acts"], &manifest));
    let status = wait_for_jobs(conf, &manifest);
    assert!(!status.contains("failed"), "{status}");
    assert!(!dir.join("run/.acts.old").exists());
    assert_eq!(
        shards(&acts)[..3],
        before[..3],
        "the re-dumped store differs"
    );
    let again = ok(circuitry(conf, &["run"], &manifest));
    assert!(again.contains("nothing to run"), "{again}");

    let before = shards(&acts);
    let good = fs::read_to_string(&manifest).unwrap();
    let bad = good.replacen("model = \"@model\"", "model = \"@model/missing\"", 1);
    fs::write(&manifest, &bad).unwrap();
    ok(circuitry(conf, &["submit"], &manifest));
    let status = wait_for_jobs(conf, &manifest);
    assert!(status.contains("failed"), "{status}");
    assert!(!dir.join("run/.acts.old").exists());
    assert_eq!(
        shards(&acts),
        before,
        "the failed job did not put acts back"
    );
    fs::write(&manifest, &good).unwrap();
    let again = ok(circuitry(conf, &["run"], &manifest));
    assert!(again.contains("nothing to run"), "{again}");
}

/// The tiny GPT-2 pipeline as shipped (4000-row shards; its circuits on their first
/// 64 pairs in batches of 8, without the exact-patching check) through Slurm, with the
/// corpus dump split into a 3-task job array, the SAE stage into one array task per
/// hook when it trains several, and every circuit into 4 parts (three rounds of job
/// arrays): all stages done, the corpus activations equal a local single-process dump
/// row for row (read in the store's shard order), every other Parquet and safetensors
/// output (the paired dump, the SAEs, trained through the store reader on the
/// assembled parts) byte-identical to the local run's, and every circuit's
/// `circuit.json` and `faithfulness.json` equal to the local run's within 1e-6.
#[test]
fn sva_tiny_through_slurm_with_dump_parts_equals_a_local_run() {
    let Some(conf) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // The circuits on 64 pairs in batches of 8 (8 batches, 2 per part), without the
    // exact-patching check, which runs in the plain job, not in the parts.
    let shorten = |manifest: &Path, slurm: &str| {
        let text = fs::read_to_string(manifest)
            .unwrap()
            .replace("shard_rows = 20000", "shard_rows = 4000");
        let blocks: Vec<String> = text
            .split("\n[[stage]]")
            .map(|block| {
                if block.contains("kind = \"circuit\"") {
                    let kept: Vec<&str> = block
                        .lines()
                        .filter(|l| !l.starts_with("exact_check"))
                        .collect();
                    format!("{}\nmax_examples = 64\nbatch_size = 8\n", kept.join("\n"))
                } else {
                    block.to_string()
                }
            })
            .collect();
        fs::write(manifest, format!("{}\n{slurm}", blocks.join("\n[[stage]]"))).unwrap();
    };
    let circuits: Vec<String> = fs::read_to_string(repo_root().join("pipelines/sva-tiny.toml"))
        .unwrap()
        .split("\n[[stage]]")
        .filter(|b| b.contains("kind = \"circuit\""))
        .filter_map(|b| {
            b.lines()
                .find_map(|l| l.strip_prefix("name = \""))
                .map(|n| n.trim_end_matches('"').to_string())
        })
        .collect();
    assert!(
        circuits.len() >= 2,
        "sva-tiny has circuit stages: {circuits:?}"
    );
    let dir = awkward_dir(tmp.path());
    let manifest = private_manifest("sva-tiny.toml", &dir);
    let shipped = fs::read_to_string(&manifest).unwrap();
    let mut slurm = String::from("[slurm]\ntime = \"00:20:00\"\n\n[slurm.stage.acts]\nparts = 3\n");
    let per_hook = shipped.contains("name = \"saes\"") && shipped.contains("\nhooks = [");
    if per_hook {
        slurm.push_str("\n[slurm.stage.saes]\nper_hook = true\n");
    }
    for c in &circuits {
        slurm.push_str(&format!("\n[slurm.stage.{c}]\nparts = 4\n"));
    }
    shorten(&manifest, &slurm);
    let submitted = ok(circuitry(conf, &["submit"], &manifest));
    println!("{submitted}");
    let status = wait_for_jobs(conf, &manifest);
    println!("{status}");
    assert!(
        !status.contains("failed") && !status.contains("cancelled"),
        "{status}"
    );
    for i in 0..3 {
        assert!(
            status.contains(&format!("task {i} (part {i}/3): done")),
            "{status}"
        );
    }
    if per_hook {
        assert!(
            status.contains("(--only-hook blocks.0.hook_resid_pre): done"),
            "{status}"
        );
    }
    for round in 1..=3 {
        let task = format!("task 3 (part 3/4, round {round}/3): done");
        assert!(status.contains(&task), "{task} not in:\n{status}");
    }
    let local_dir = tmp.path().join("local");
    fs::create_dir(&local_dir).unwrap();
    let local_manifest = private_manifest("sva-tiny.toml", &local_dir);
    shorten(&local_manifest, "");
    run_ok(
        Command::new(bin("circuitry"))
            .arg("run")
            .arg(&local_manifest),
    );
    let (run, local) = (dir.join("run"), local_dir.join("run"));
    assert!(run.join("acts/parts/2/meta.json").is_file());
    let report = python(
        r#"
import sys, json
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
def load(d):
    meta = json.load(open(d + "/meta.json"))
    assert meta["complete"], d
    return meta, pa.concat_tables([pq.read_table(d + "/" + s["file"]) for s in meta["shards"]])
(ma, a), (mb, b) = load(sys.argv[1]), load(sys.argv[2])
assert ma["n_rows"] == mb["n_rows"] == a.num_rows == b.num_rows, (ma["n_rows"], mb["n_rows"])
assert a.schema.equals(b.schema)
worst = 0.0
for c in a.column_names:
    x, y = a.column(c).to_numpy(zero_copy_only=False), b.column(c).to_numpy(zero_copy_only=False)
    if c.startswith("blocks."):
        x, y = np.stack(x), np.stack(y)
        worst = max(worst, float(np.abs(x - y).max()))
    else:
        assert (x == y).all(), c
print(f"{a.num_rows} rows in {len(ma['shards'])} shards (slurm parts) vs {len(mb['shards'])}; max |diff| {worst}")
assert worst == 0.0, worst
"#,
        &[&run.join("acts"), &local.join("acts")],
    );
    println!("{report}");
    // Parts are ranges of whole shards: the assembled store has the same shards.
    let shards = |store: &Path| -> Vec<(serde_json::Value, serde_json::Value)> {
        let meta: serde_json::Value =
            serde_json::from_slice(&fs::read(store.join("meta.json")).unwrap()).unwrap();
        let list = meta["shards"].as_array().unwrap();
        list.iter()
            .map(|s| (s["rows"].clone(), s["checksum"].clone()))
            .collect()
    };
    assert_eq!(shards(&run.join("acts")), shards(&local.join("acts")));
    let outputs = data_files(&local, &local);
    assert!(
        outputs.iter().any(|f| f.ends_with(".safetensors")),
        "no SAE weights in the local run: {outputs:?}"
    );
    assert_eq!(
        data_files(&run, &run),
        outputs,
        "the two runs wrote different files"
    );
    for f in &outputs {
        let (a, b) = (
            fs::read(run.join(f)).unwrap(),
            fs::read(local.join(f)).unwrap(),
        );
        assert!(
            a == b,
            "{f} differs between the Slurm run and the local run"
        );
    }
    for c in &circuits {
        assert!(
            !run.join(c).join("parts").exists(),
            "{c}: parts left behind"
        );
        for file in ["circuit.json", "faithfulness.json"] {
            // Not the provenance: the SAE folders' fingerprints cover their training
            // records, whose timings differ between the two runs.
            let read = |dir: &Path| -> serde_json::Value {
                let mut v: serde_json::Value =
                    serde_json::from_slice(&fs::read(dir.join(c).join(file)).unwrap()).unwrap();
                v.as_object_mut().map(|o| o.remove("provenance"));
                v
            };
            let d = json_max_diff(&read(&run), &read(&local), &format!("{c}/{file}"));
            println!("{c}/{file}: 4 parts on Slurm vs one local process, max |diff| {d:e}");
            assert!(d <= 1e-6, "{c}/{file} differs by {d}");
        }
    }
    let again = ok(circuitry(conf, &["run"], &manifest));
    assert!(again.contains("nothing to run"), "{again}");
}

/// The `.parquet` and `.safetensors` files under `dir` outside the corpus dump
/// (`acts/`, compared row for row), relative to `root`, sorted.
fn data_files(root: &Path, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "acts" || rel == "slurm" {
            continue;
        }
        if path.is_dir() {
            out.extend(data_files(root, &path));
        } else if rel.ends_with(".parquet") || rel.ends_with(".safetensors") {
            out.push(rel);
        }
    }
    out.sort();
    out
}
