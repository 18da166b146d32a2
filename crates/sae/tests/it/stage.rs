//! The `circuitry-train-sae` stage on small synthetic stores: streaming over
//! several hooks, `--only-hook`, skipping complete hooks, resuming after a kill,
//! feature statistics, and bad input.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use circuitry_core::HookPoint;
use circuitry_store::{Dtype, HookMeta, RowBatch, StoreSpec, StoreWriter};
use ndarray::Array2;

use crate::common::sparse_sources;

pub const HOOK_A: &str = "blocks.0.hook_resid_pre";
const HOOK_B: &str = "blocks.0.hook_mlp_out";

/// A store of `rows` rows in shards of 100: HOOK_A has width 8 (32 sparse sources),
/// HOOK_B width 6 (24 sources); windows of 10 tokens with token id = row % 50.
/// `poison` puts a NaN at (row, column) of HOOK_B.
pub fn make_store(dir: &Path, rows: usize, poison: Option<(usize, usize)>) {
    let (a, _) = sparse_sources(rows, 8, 32, 0.06, 11);
    let (b, _) = sparse_sources(rows, 6, 24, 0.08, 12);
    write_store(dir, &[(HOOK_A, a), (HOOK_B, b)]);
    if let Some((row, col)) = poison {
        // The writer refuses NaN, so rewrite a shard afterwards, as a foreign tool
        // would, and record its new checksum in meta.json (a shard that does not
        // match its checksum is refused before its values are read: integrity.rs).
        let script = r#"
import sys, pyarrow as pa, pyarrow.parquet as pq, numpy as np
path, hook, r, c = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t = pq.read_table(path)
col = t.column(hook).combine_chunks()
vals = col.values.to_numpy().copy().reshape(len(col), -1)
vals[r, c] = np.nan
field = t.schema.field(hook)
new = pa.FixedSizeListArray.from_arrays(pa.array(vals.reshape(-1), type=pa.float32()), type=field.type)
t = t.set_column(t.schema.get_field_index(hook), field, new)
pq.write_table(t, path, use_compliant_nested_type=False)
"#;
        let shard = dir.join(format!("shard_{:05}.parquet", row / 100));
        let o = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&shard)
            .arg(HOOK_B)
            .arg((row % 100).to_string())
            .arg(col.to_string())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        rechecksum(dir, &shard);
    }
}

/// Record `shard`'s current BLAKE3 in `store`'s meta.json.
pub fn rechecksum(store: &Path, shard: &Path) {
    let meta_path = store.join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    let name = shard.file_name().unwrap().to_str().unwrap();
    let sum = circuitry_core::fingerprint::fingerprint_path(shard).unwrap();
    for s in meta["shards"].as_array_mut().unwrap() {
        if s["file"] == name {
            s["checksum"] = serde_json::Value::String(sum.clone());
        }
    }
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
}

pub fn write_store(dir: &Path, hooks: &[(&str, Array2<f32>)]) {
    let rows = hooks[0].1.nrows();
    let spec = StoreSpec {
        hooks: hooks
            .iter()
            .map(|(h, a)| HookMeta {
                hook: h.parse().unwrap(),
                width: a.ncols(),
            })
            .collect(),
        dtype: Dtype::F32,
        model_fingerprint: "synthetic".into(),
        tokenizer_fingerprint: None,
        context_size: 10,
        paired: false,
        shard_rows: 100,
        extra: serde_json::json!({ "model_name": "synthetic" }),
    };
    let seq: Vec<u64> = (0..rows as u64).map(|r| r / 10).collect();
    let pos: Vec<u32> = (0..rows as u32).map(|r| r % 10).collect();
    let tok: Vec<u32> = (0..rows as u32).map(|r| r % 50).collect();
    let mut w = StoreWriter::create(dir, spec).unwrap();
    if rows > 0 {
        w.write(RowBatch {
            seq: &seq,
            pos: &pos,
            token_id: &tok,
            example: None,
            side: None,
            acts: hooks
                .iter()
                .map(|(h, a)| (h.parse::<HookPoint>().unwrap(), a.view()))
                .collect(),
        })
        .unwrap();
    }
    w.finish().unwrap();
}

pub fn train_sae(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_circuitry-train-sae"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

/// stdout and stderr, without the ANSI colour codes of the log lines.
pub fn text(o: &Output) -> String {
    let raw = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn ok(o: Output) -> String {
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    t
}

/// Common arguments for a small run on `store` into `out`.
fn args<'a>(store: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let base = [
        ("--d-sae", "64"),
        ("--steps", "400"),
        ("--batch-size", "32"),
        ("--buffer-rows", "256"),
        ("--lr", "0.01"),
        ("--architecture", "topk"),
        ("--k", "4"),
    ];
    let mut v = vec![
        "--store", store, "--out", out, "--hooks", HOOK_A, "--hooks", HOOK_B,
    ];
    for (flag, value) in base {
        if !extra.contains(&flag) {
            v.extend_from_slice(&[flag, value]);
        }
    }
    v.extend_from_slice(extra);
    v
}

fn bytes(p: PathBuf) -> Vec<u8> {
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn joint_run_equals_per_hook_runs_and_reruns_skip_complete_hooks() {
    // (also: `--keep-freed-memory false` changes no output byte)
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    make_store(&store, 1000, None);
    let joint = dir.path().join("joint");
    let split = dir.path().join("split");
    let out = ok(train_sae(&args(s(&store), s(&joint), &[])));
    println!("{out}");
    assert!(joint.join("stage.json").is_file());
    for hook in [HOOK_A, HOOK_B] {
        // The second hook also returns freed memory to the kernel: a speed setting,
        // the same bytes.
        let mut extra = vec!["--only-hook", hook];
        if hook == HOOK_B {
            extra.extend_from_slice(&["--keep-freed-memory", "false"]);
        }
        let t = ok(train_sae(&args(s(&store), s(&split), &extra)));
        assert!(t.contains(hook), "{t}");
        assert!(
            !split.join("stage.json").exists(),
            "--only-hook must not write stage.json"
        );
        for f in [
            "sae_weights.safetensors",
            "cfg.json",
            "sparsity.safetensors",
            "feature_stats.parquet",
            "training.json",
        ] {
            assert_eq!(
                bytes(joint.join(hook).join(f)),
                bytes(split.join(hook).join(f)),
                "{hook}/{f}: a per-hook run differs from the joint run"
            );
        }
    }
    // Quality: sparse sources are reconstructed well with few active latents.
    for hook in [HOOK_A, HOOK_B] {
        let rec: serde_json::Value =
            serde_json::from_slice(&bytes(joint.join(hook).join("training.json"))).unwrap();
        let ev = rec["eval_metrics"]["explained_variance"].as_f64().unwrap();
        let l0 = rec["eval_metrics"]["l0"].as_f64().unwrap();
        let d_in = rec["sae"]["d_in"].as_f64().unwrap();
        println!(
            "{hook}: held-out EV {ev:.4}, L0 {l0:.2}, eval rows {}",
            rec["eval_rows"]
        );
        assert!(ev > 0.8 && l0 < d_in, "{hook}: EV {ev}, L0 {l0}");
        assert!(rec["eval_rows"].as_u64().unwrap() > 50);
    }
    // A plain rerun over the split directory skips both hooks and writes stage.json.
    let t = ok(train_sae(&args(s(&store), s(&split), &[])));
    assert_eq!(t.matches("skipping: outputs complete").count(), 2, "{t}");
    assert!(split.join("stage.json").is_file());
    // A changed setting retrains.
    let t = ok(train_sae(&args(
        s(&store),
        s(&split),
        &["--only-hook", HOOK_A, "--seed", "1"],
    )));
    assert!(!t.contains("skipping"), "{t}");
}

#[test]
fn a_killed_run_resumes_to_byte_identical_weights_with_faer() {
    resumes_to_byte_identical_weights("faer");
}

#[test]
fn a_killed_run_resumes_to_byte_identical_weights_with_mkl() {
    let mkl = circuitry_sae::MklSettings::default();
    if let Err(e) = circuitry_sae::Backend::resolve(circuitry_sae::GemmChoice::Mkl, &mkl) {
        println!("skipped: MKL is not installed ({e})");
        return;
    }
    resumes_to_byte_identical_weights("mkl");
}

fn resumes_to_byte_identical_weights(gemm: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    make_store(&store, 1000, None);
    let whole = dir.path().join("whole");
    let killed = dir.path().join("killed");
    let extra = [
        "--steps",
        "3000",
        "--d-sae",
        "256",
        "--checkpoint-every",
        "100",
        "--gemm",
        gemm,
    ];
    let extra: Vec<&str> = extra.to_vec();
    ok(train_sae(&args(s(&store), s(&whole), &extra)));

    let a = args(s(&store), s(&killed), &extra);
    let mut child = Command::new(env!("CARGO_BIN_EXE_circuitry-train-sae"))
        .args(&a)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ck_dir = killed.join(".checkpoints");
    let start = Instant::now();
    let has_checkpoint = || {
        std::fs::read_dir(&ck_dir).is_ok_and(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        })
    };
    while !has_checkpoint() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(still_running, "the run finished before it could be killed");
    assert!(
        !killed.join(HOOK_A).join("training.json").exists(),
        "killed before the end"
    );

    let t = ok(train_sae(&a));
    let record = std::fs::read_to_string(killed.join(HOOK_A).join("training.json")).unwrap();
    assert!(
        record.contains(&format!("\"gemm\": \"{gemm}")),
        "training.json records the backend {gemm}"
    );
    let resumed_at: usize = t
        .lines()
        .find(|l| l.contains("resuming from checkpoint"))
        .and_then(|l| l.split("step=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the rerun did not resume: {t}"));
    println!("resumed at step {resumed_at}");
    assert!(resumed_at > 0 && resumed_at < 3000);
    for hook in [HOOK_A, HOOK_B] {
        for f in [
            "sae_weights.safetensors",
            "training.json",
            "feature_stats.parquet",
        ] {
            assert!(
                bytes(whole.join(hook).join(f)) == bytes(killed.join(hook).join(f)),
                "{hook}/{f}: the resumed run differs from the uninterrupted one"
            );
        }
    }
    assert!(
        !has_checkpoint(),
        "the checkpoint is removed after a complete run"
    );
}

#[test]
fn feature_stats_parquet_reads_in_pyarrow_with_the_viewers_columns() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    make_store(&store, 600, None);
    let out = dir.path().join("out");
    ok(train_sae(&args(
        s(&store),
        s(&out),
        &["--steps", "100", "--top-n", "5"],
    )));
    let script = r#"
import sys, pyarrow as pa, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
want = [("feature", pa.uint32()), ("density", pa.float64()), ("mean_activation", pa.float64()),
        ("max_activation", pa.float32()), ("top_activation", pa.list_(pa.float32())),
        ("top_row", pa.list_(pa.uint64())), ("top_left", pa.list_(pa.string())),
        ("top_token", pa.list_(pa.string())), ("top_right", pa.list_(pa.string()))]
got = [(f.name, f.type) for f in t.schema]
assert [n for n, _ in got] == [n for n, _ in want], got
for (n, ty), (_, w) in zip(got, want):
    assert ty.equals(w) or (hasattr(ty, "value_type") and ty.value_type == w.value_type), (n, ty, w)
assert t.num_rows == 64
d = t.to_pydict()
assert d["feature"] == list(range(64))
for i in range(64):
    acts = d["top_activation"][i]
    assert len(acts) <= 5 and acts == sorted(acts, reverse=True)
    assert len(d["top_row"][i]) == len(acts) == len(d["top_token"][i]) == len(d["top_left"][i])
    if acts:
        assert abs(acts[0] - d["max_activation"][i]) < 1e-6 and d["density"][i] > 0
        row = d["top_row"][i][0]
        assert d["top_token"][i][0] == str(row % 50)
        left = d["top_left"][i][0].split()
        assert len(left) == min(row % 10, 8) and (not left or left[-1] == str((row - 1) % 50))
        right = d["top_right"][i][0].split()
        assert len(right) == min(9 - row % 10, 3)
    else:
        assert d["density"][i] == 0
print("ok", t.num_rows, "features,", sum(1 for a in d["top_activation"] if a), "alive")
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(out.join(HOOK_A).join("feature_stats.parquet"))
        .output()
        .unwrap();
    println!("{}", ok(o));
}

/// Run with `extra` on `store` (made by `make`) and expect exit 2, a message
/// containing every one of `needles`, and nothing written.
fn refused(make: impl FnOnce(&Path), extra: &[&str], hooks: &[&str], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    make(&store);
    let out = dir.path().join("out");
    let mut a = vec![
        "--store",
        s(&store),
        "--out",
        s(&out),
        "--d-sae",
        "16",
        "--steps",
        "20",
    ];
    for h in hooks {
        a.extend_from_slice(&["--hooks", h]);
    }
    a.extend_from_slice(extra);
    let o = train_sae(&a);
    let t = text(&o);
    println!("{t}");
    assert_eq!(o.status.code(), Some(2), "{t}");
    for n in needles {
        assert!(t.contains(n), "expected {n:?} in: {t}");
    }
    assert!(!out.exists(), "nothing may be written on bad input");
}

#[test]
fn bad_input_d_in_not_matching_the_hook_width() {
    refused(
        |d| make_store(d, 300, None),
        &["--d-in", "7"],
        &[HOOK_A],
        &["d_in = 7", "width 8", HOOK_A],
    );
}

#[test]
fn bad_input_hook_missing_from_the_store_lists_its_hooks() {
    refused(
        |d| make_store(d, 300, None),
        &[],
        &["blocks.3.hook_attn_out"],
        &["blocks.3.hook_attn_out", HOOK_A, HOOK_B],
    );
}

#[test]
fn bad_input_nan_in_activations_names_row_and_hook() {
    refused(
        |d| make_store(d, 300, Some((257, 3))),
        &[],
        &[HOOK_A, HOOK_B],
        &["row 257", HOOK_B, "NaN"],
    );
}

#[test]
fn bad_input_k_not_below_d_sae() {
    refused(
        |d| make_store(d, 300, None),
        &["--architecture", "topk", "--k", "16"],
        &[HOOK_A],
        &["k = 16", "d_sae = 16"],
    );
}

#[test]
fn bad_input_empty_store() {
    refused(
        |d| write_store(d, &[(HOOK_A, Array2::zeros((0, 8)))]),
        &[],
        &[HOOK_A],
        &["holds no rows"],
    );
}

#[test]
fn bad_input_a_model_other_than_the_stores() {
    // The ce_loss_score reference model is not the model the synthetic store was
    // dumped from: its fingerprint differs from the store's.
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference/ce_model");
    refused(
        |d| make_store(d, 300, None),
        &["--model", s(&model)],
        &[HOOK_A],
        &["model", "ce_model", "are not those the store", "--model"],
    );
}

/// `--mkl-cbwr` (MKL's CNR mode, which changes its rounding) reaches the run key: the
/// default, given or not, keeps the key (so keys of earlier runs stay valid); another
/// mode retrains and training.json names it. No environment variable sets it (the
/// pipeline's freshness sees only flags).
#[test]
fn mkl_cbwr_mode_is_part_of_the_run_key() {
    let mkl = circuitry_sae::MklSettings::default();
    if let Err(e) = circuitry_sae::Backend::resolve(circuitry_sae::GemmChoice::Mkl, &mkl) {
        println!("skipped: MKL is not installed ({e})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    make_store(&store, 500, None);
    let out = dir.path().join("out");
    let run = |extra: &[&str]| {
        let mut a = vec!["--steps", "100", "--gemm", "mkl"];
        a.extend_from_slice(extra);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_circuitry-train-sae"));
        cmd.args(args(s(&store), s(&out), &a))
            .env("RUST_LOG", "info")
            .env("CIRCUITRY_MKL_CBWR", "compatible");
        let t = ok(cmd.output().unwrap());
        let record: serde_json::Value =
            serde_json::from_slice(&bytes(out.join(HOOK_A).join("training.json"))).unwrap();
        (t, record)
    };
    // A leftover environment variable of older versions changes nothing.
    let (_, first) = run(&[]);
    let gemm = first["gemm"].as_str().unwrap().to_string();
    println!("default: gemm {gemm:?}, run key {}", first["run_key"]);
    assert!(gemm.contains("CNR auto"), "{gemm}");
    assert!(
        first["train"].get("mkl").is_none(),
        "the default is not recorded"
    );

    let (t, same) = run(&["--mkl-cbwr", "auto"]);
    assert_eq!(t.matches("skipping: outputs complete").count(), 2, "{t}");
    assert_eq!(same["run_key"], first["run_key"]);

    let (t, other) = run(&["--mkl-cbwr", "compatible"]);
    println!(
        "compatible: gemm {}, run key {}",
        other["gemm"], other["run_key"]
    );
    assert!(!t.contains("skipping"), "another CNR mode retrains: {t}");
    assert_ne!(other["run_key"], first["run_key"]);
    assert!(other["gemm"].as_str().unwrap().contains("CNR compatible"));
    assert_eq!(other["train"]["mkl"]["cbwr"], "compatible");

    let (t, back) = run(&["--mkl-cbwr", "auto"]);
    assert!(!t.contains("skipping"), "{t}");
    assert_eq!(back["run_key"], first["run_key"]);
}

#[test]
fn bad_input_mkl_cbwr_names_the_modes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = train_sae(&args(
        s(&dir.path().join("store")),
        s(&out),
        &["--mkl-cbwr", "avx3"],
    ));
    let t = text(&o);
    println!("{t}");
    assert_eq!(o.status.code(), Some(2), "{t}");
    for n in ["avx3", "off, auto, compatible, avx2 or avx512", "+strict"] {
        assert!(t.contains(n), "expected {n:?} in: {t}");
    }
    assert!(!out.exists(), "nothing may be written on bad input");
}

#[test]
fn bad_input_gemm_mkl_without_mkl_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    make_store(&store, 300, None);
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_circuitry-train-sae"))
        .args([
            "--store",
            s(&store),
            "--out",
            s(&out),
            "--hooks",
            HOOK_A,
            "--d-sae",
            "16",
            "--steps",
            "20",
            "--gemm",
            "mkl",
        ])
        .env("CIRCUITRY_MKL", dir.path().join("no-mkl-here"))
        .output()
        .unwrap();
    let t = text(&o);
    println!("{t}");
    assert_eq!(o.status.code(), Some(2), "{t}");
    for n in [
        "libmkl_rt.so.3",
        "no-mkl-here",
        "scripts/setup-mkl.sh",
        "--gemm faer",
    ] {
        assert!(t.contains(n), "expected {n:?} in: {t}");
    }
    assert_eq!(t.matches("error").count(), 1, "one error: {t}");
    assert!(!out.exists(), "nothing may be written on bad input");
}

/// `--outlier-norm-ratio`: rows whose norm at a hook is far above the hook's median
/// (attention sinks) are left out of that hook's training and metrics only; a hook
/// without such rows trains exactly as without the flag; a ratio ≤ 1 is refused.
#[test]
fn outlier_rows_are_left_out_per_hook() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (mut a, _) = sparse_sources(1000, 8, 32, 0.06, 11);
    let (b, _) = sparse_sources(1000, 6, 24, 0.08, 12);
    let outliers: Vec<usize> = (0..1000).filter(|r| r % 37 == 5).collect();
    for &r in &outliers {
        a.row_mut(r).fill(300.0);
    }
    write_store(&store, &[(HOOK_A, a), (HOOK_B, b)]);
    let plain = dir.path().join("plain");
    let kept = dir.path().join("kept");
    ok(train_sae(&args(s(&store), s(&plain), &[])));
    ok(train_sae(&args(
        s(&store),
        s(&kept),
        &["--outlier-norm-ratio", "10"],
    )));
    let record = |out: &Path, hook: &str| -> serde_json::Value {
        serde_json::from_slice(&bytes(out.join(hook).join("training.json"))).unwrap()
    };
    let (ra, rb) = (record(&kept, HOOK_A), record(&kept, HOOK_B));
    let rows = |r: &serde_json::Value| {
        r["train_rows"].as_u64().unwrap() + r["eval_rows"].as_u64().unwrap()
    };
    assert_eq!(rows(&ra), (1000 - outliers.len()) as u64, "{ra}");
    assert_eq!(rows(&rb), 1000, "{rb}");
    assert_eq!(ra["outliers"]["ratio"], 10.0);
    let max_norm = ra["outliers"]["max_norm"].as_f64().unwrap();
    assert!(max_norm > 0.0 && max_norm < 300.0, "{max_norm}");
    // No row of HOOK_B is an outlier: its SAE is the one trained without the flag.
    assert_eq!(
        bytes(kept.join(HOOK_B).join("sae_weights.safetensors")),
        bytes(plain.join(HOOK_B).join("sae_weights.safetensors"))
    );
    // Without the outliers, HOOK_A's SAE reconstructs the ordinary rows better.
    let ev = |r: &serde_json::Value| r["eval_metrics"]["explained_variance"].as_f64().unwrap();
    let plain_a = record(&plain, HOOK_A);
    println!(
        "held-out EV of {HOOK_A}: {} with outliers left out, {} with them",
        ev(&ra),
        ev(&plain_a)
    );
    assert!(ev(&ra) > 0.5, "{ra}");

    let bad = train_sae(&args(
        s(&store),
        s(&dir.path().join("bad")),
        &["--outlier-norm-ratio", "0.5"],
    ));
    let t = text(&bad);
    assert_eq!(bad.status.code(), Some(2), "{t}");
    assert!(
        t.contains("outlier_norm_ratio") && t.contains("above 1"),
        "{t}"
    );
    assert!(!dir.path().join("bad").exists());
}
