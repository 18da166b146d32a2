//! The ONNX dump on a random tiny GPT-2 (tests/data/tiny_random, made by make_fixture.py)
//! with a real ONNX Runtime session: read-back through circuitry_store and pyarrow,
//! agreement with the Rust GPT-2 forward, pairs with left padding, resume after a crash,
//! and the one-line errors of the binary.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use circuitry_core::HookPoint;
use circuitry_dump::onnx::{self, DumpInput, OnnxDumpConfig};
use circuitry_models::transformer::Transformer;
use circuitry_store::{ActivationStore, Dtype, StoreMeta};
use ndarray::{s, Array2};

const TOL: f32 = 1e-4;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny_random")
}

fn config(out: &Path, hooks: &[&str], input: DumpInput) -> OnnxDumpConfig {
    OnnxDumpConfig {
        model: fixture(),
        out: out.to_path_buf(),
        hooks: hooks.iter().map(|h| h.to_string()).collect(),
        input,
        context_size: None,
        batch_size: 3,
        threads: 1,
        dtype: Dtype::F32,
        shard_rows: 50,
        max_tokens: None,
        // The library the binary would load: $ORT_DYLIB_PATH, else a search.
        ort_library: std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
    }
    .check()
    .unwrap()
}

fn corpus() -> DumpInput {
    DumpInput::Corpus(fixture().join("corpus.txt"))
}

fn pairs() -> DumpInput {
    DumpInput::Pairs(fixture().join("pairs.jsonl"))
}

/// Sequences of a store: seq → (token ids, first row), checking pos runs 0..len.
fn sequences(store: &ActivationStore) -> BTreeMap<u64, (Vec<u32>, usize)> {
    let tokens = store.read_tokens().unwrap();
    let mut seqs: BTreeMap<u64, (Vec<u32>, usize)> = BTreeMap::new();
    for (row, ((&seq, &pos), &tok)) in tokens
        .seq
        .iter()
        .zip(&tokens.pos)
        .zip(&tokens.token_id)
        .enumerate()
    {
        let entry = seqs.entry(seq).or_insert_with(|| (Vec::new(), row));
        assert_eq!(
            pos as usize,
            entry.0.len(),
            "pos of row {row} is not consecutive"
        );
        assert_eq!(
            entry.1 + entry.0.len(),
            row,
            "rows of seq {seq} are not contiguous"
        );
        entry.0.push(tok);
    }
    seqs
}

/// Max |store - Rust forward| over every hook of the store, each sequence run alone.
fn max_diff_vs_rust(store: &ActivationStore) -> f32 {
    let model: Transformer = Transformer::load(&fixture()).unwrap();
    let hooks = store.hooks();
    let stored: Vec<Array2<f32>> = hooks.iter().map(|&h| store.read_hook(h).unwrap()).collect(); // (rows, width)
    let mut max = 0f32;
    for (ids, first) in sequences(store).values() {
        let input = Array2::from_shape_vec((1, ids.len()), ids.clone()).unwrap(); // (1, len)
        let out = model.forward(input.view(), None, &hooks).unwrap();
        for (h, acts) in hooks.iter().zip(&stored) {
            let want = out.hooks[h].slice(s![0, .., ..]); // (len, width)
            let got = acts.slice(s![*first..first + ids.len(), ..]);
            for (a, b) in got.iter().zip(want.iter()) {
                max = max.max((a - b).abs());
            }
        }
    }
    max
}

#[test]
fn corpus_dump_reads_back_and_matches_rust_forward() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("store");
    let cfg = config(
        &out,
        &["blocks.*.hook_resid_pre", "blocks.1.hook_mlp_out"],
        corpus(),
    );
    let meta = onnx::dump(&cfg).unwrap();
    let store = ActivationStore::open(&out).unwrap();
    store.verify().unwrap();
    let want_hooks: Vec<HookPoint> = [
        "blocks.0.hook_resid_pre",
        "blocks.1.hook_resid_pre",
        "blocks.1.hook_mlp_out",
    ]
    .iter()
    .map(|h| h.parse().unwrap())
    .collect();
    assert_eq!(store.hooks(), want_hooks);
    assert_eq!(meta.context_size, 16);
    assert!(!meta.paired);
    let seqs = sequences(&store);
    let n_rows: usize = seqs.values().map(|(ids, _)| ids.len()).sum();
    assert_eq!(store.n_rows() as usize, n_rows);
    assert_eq!(meta.extra["n_tokens"], n_rows);
    assert!(n_rows > 100, "the corpus gives {n_rows} tokens");
    assert_eq!(meta.shards.len(), n_rows.div_ceil(50));
    for (seq, (ids, _)) in &seqs {
        assert_eq!(ids[0], 0, "window {seq} starts with BOS <|endoftext|> = 0");
        assert!(ids.len() <= 16);
    }
    // every window but the last is full
    let lens: Vec<usize> = seqs.values().map(|(ids, _)| ids.len()).collect();
    assert!(lens[..lens.len() - 1].iter().all(|&l| l == 16), "{lens:?}");
    for h in &want_hooks {
        assert_eq!(store.read_hook(*h).unwrap().dim(), (n_rows, 32));
    }
    let diff = max_diff_vs_rust(&store);
    println!("corpus: max |ORT - Rust GPT-2| over {n_rows} rows × 3 hooks = {diff:.3e}");
    assert!(diff <= TOL, "max diff {diff}");
    assert!(out.join("meta.json").is_file());

    // pyarrow reads it as it is (fails, not skips, without pyarrow)
    let script = r#"
import sys, glob, json, pyarrow.parquet as pq, pyarrow as pa
d = sys.argv[1]
meta = json.load(open(d + "/meta.json"))
rows = 0
for f in sorted(glob.glob(d + "/shard_*.parquet")):
    t = pq.read_table(f)
    assert t.schema.names == ["seq", "pos", "token_id", "blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre", "blocks.1.hook_mlp_out"], t.schema.names
    for h in t.schema.names[3:]:
        ty = t.schema.field(h).type
        assert pa.types.is_fixed_size_list(ty) and ty.list_size == 32 and ty.value_type == pa.float32(), ty
        assert t.column(h).combine_chunks().flatten().to_numpy().reshape(-1, 32).shape[0] == t.num_rows
    rows += t.num_rows
assert rows == meta["n_rows"], (rows, meta["n_rows"])
print(rows)
"#;
    let py = Command::new("python3")
        .args(["-c", script])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "pyarrow check failed: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        n_rows.to_string()
    );
}

#[test]
fn pairs_dump_with_left_padding_matches_unpadded_forward() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pairs");
    let mut cfg = config(
        &out,
        &["blocks.0.hook_attn_out", "blocks.1.hook_resid_post"],
        pairs(),
    );
    cfg.batch_size = 5; // odd: batches mix clean/patch sides of different lengths
    cfg.dtype = Dtype::F32;
    let meta = onnx::dump(&cfg).unwrap();
    assert!(meta.paired);
    let store = ActivationStore::open(&out).unwrap();
    let tokens = store.read_tokens().unwrap();
    let (example, side) = (
        tokens.example.clone().unwrap(),
        tokens.side.clone().unwrap(),
    );
    let examples: Vec<onnx::text::PairExample> =
        std::fs::read_to_string(out.join(onnx::EXAMPLES_FILE))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(examples.len(), 20);
    let lens: std::collections::BTreeSet<usize> =
        examples.iter().map(|e| e.clean_ids.len()).collect();
    assert!(
        lens.len() > 1,
        "prompts of several lengths, so padding is exercised: {lens:?}"
    );
    // rows: per example, clean then patch, exactly their tokens (no padded position)
    let mut row = 0;
    for ex in &examples {
        for (s, ids) in [(0u8, &ex.clean_ids), (1, &ex.patch_ids)] {
            assert_eq!(ids[0], 0, "BOS first");
            assert_eq!(&tokens.token_id[row..row + ids.len()], &ids[..]);
            assert!(example[row..row + ids.len()]
                .iter()
                .all(|&e| e == ex.example));
            assert!(side[row..row + ids.len()].iter().all(|&v| v == s));
            row += ids.len();
        }
        assert!(!ex.clean_answer_ids.is_empty() && !ex.patch_answer_ids.is_empty());
    }
    assert_eq!(row as u64, store.n_rows());
    let diff = max_diff_vs_rust(&store);
    println!("pairs (left-padded batches of 5): max |ORT - Rust GPT-2| = {diff:.3e}");
    assert!(diff <= TOL, "max diff {diff}");
}

#[test]
fn interrupted_dump_resumes_to_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let mut cfg = config(&full, &["blocks.*.hook_resid_pre"], corpus());
    cfg.shard_rows = 7; // shard edges fall inside batches and windows
    cfg.dtype = Dtype::F16;
    let whole = onnx::dump(&cfg).unwrap();
    assert!(whole.shards.len() > 6);

    // A crash after 4 shards were recorded: shard 5 renamed but not yet in meta.json,
    // and a temporary file of shard 6.
    let cut = dir.path().join("cut");
    std::fs::create_dir(&cut).unwrap();
    let mut meta: StoreMeta =
        serde_json::from_str(&std::fs::read_to_string(full.join("meta.json")).unwrap()).unwrap();
    for shard in &meta.shards[..5] {
        std::fs::copy(full.join(&shard.file), cut.join(&shard.file)).unwrap();
    }
    std::fs::write(
        cut.join(circuitry_core::atomic::temp_path(Path::new(
            "shard_00005.parquet",
        ))),
        b"partial",
    )
    .unwrap();
    meta.shards.truncate(4);
    meta.n_rows = 28;
    meta.complete = false;
    std::fs::write(cut.join("meta.json"), serde_json::to_string(&meta).unwrap()).unwrap();

    cfg.out = cut.clone();
    let resumed = onnx::dump(&cfg).unwrap();
    assert_eq!(
        resumed.shards, whole.shards,
        "same shard files, byte for byte (checksums)"
    );
    let (a, b) = (
        ActivationStore::open(&full).unwrap(),
        ActivationStore::open(&cut).unwrap(),
    );
    assert_eq!(a.read_tokens().unwrap(), b.read_tokens().unwrap());
    for h in a.hooks() {
        assert_eq!(a.read_hook(h).unwrap(), b.read_hook(h).unwrap());
    }
    let names: Vec<String> = std::fs::read_dir(&cut)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n == "meta.json" || n.starts_with("shard_")),
        "{names:?}"
    );
}

/// Run the binary; returns (exit code, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_circuitry-dump"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fail_case(extra: &[&str], env: &[(&str, &str)], model: &Path, corpus: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (m, c, o) = (
        model.to_str().unwrap(),
        corpus.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let mut args = vec!["onnx", "--model", m, "--out", o, "--corpus", c];
    args.extend_from_slice(extra);
    if !extra.contains(&"--hooks") {
        args.extend_from_slice(&["--hooks", "blocks.0.hook_resid_pre"]);
    }
    let (code, stderr) = run(&args, env);
    println!("{stderr}");
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!out.exists(), "nothing written on error");
    stderr
}

#[test]
fn binary_dumps_and_writes_stage_record() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (m, p) = (fixture(), fixture().join("pairs.jsonl"));
    let args = [
        "onnx",
        "--model",
        m.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--pairs",
        p.to_str().unwrap(),
        "--hooks",
        "blocks.1.*",
        "--max-tokens",
        "60",
    ];
    let (code, stderr) = run(&args, &[]);
    assert_eq!(code, 0, "{stderr}");
    let store = ActivationStore::open(&out).unwrap();
    assert!(store.n_rows() <= 60 && store.n_rows() > 30);
    assert_eq!(store.hooks().len(), 4);
    assert!(out.join("stage.json").is_file() && out.join(onnx::EXAMPLES_FILE).is_file());
}

#[test]
fn bad_hook_lists_the_models_hooks() {
    let err = fail_case(
        &["--hooks", "blocks.0.hook_resid_pre,blocks.9.hook_resid_pre"],
        &[],
        &fixture(),
        &fixture().join("corpus.txt"),
    );
    assert!(
        err.contains("\"blocks.9.hook_resid_pre\" is not an output"),
        "{err}"
    );
    assert!(
        err.contains("blocks.0.hook_resid_pre, blocks.0.hook_attn_out"),
        "{err}"
    );
}

#[test]
fn context_longer_than_the_model_errors() {
    let err = fail_case(
        &["--context-size", "17"],
        &[],
        &fixture(),
        &fixture().join("corpus.txt"),
    );
    assert!(
        err.contains("longer than the model's context of 16"),
        "{err}"
    );
}

#[test]
fn empty_corpus_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n  \n").unwrap();
    let err = fail_case(&[], &[], &fixture(), &empty);
    assert!(err.contains("empty corpus"), "{err}");
}

#[test]
fn tokenizer_larger_than_model_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["model.onnx", "tokenizer.json"] {
        std::fs::copy(fixture().join(f), model.join(f)).unwrap();
    }
    let sidecar = std::fs::read_to_string(fixture().join("model.onnx.json")).unwrap();
    std::fs::write(
        model.join("model.onnx.json"),
        sidecar.replace("\"vocab_size\": 320", "\"vocab_size\": 200"),
    )
    .unwrap();
    let err = fail_case(&[], &[], &model, &fixture().join("corpus.txt"));
    assert!(
        err.contains("has 300 tokens but the model's vocabulary is 200"),
        "{err}"
    );
}

#[test]
fn missing_ort_library_errors() {
    let err = fail_case(
        &[],
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
        &fixture(),
        &fixture().join("corpus.txt"),
    );
    assert!(
        err.contains("scripts/setup-ort.sh") && err.contains("ORT_DYLIB_PATH"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a library").unwrap();
    let err = fail_case(
        &[],
        &[("ORT_DYLIB_PATH", fake.to_str().unwrap())],
        &fixture(),
        &fixture().join("corpus.txt"),
    );
    assert!(err.contains("could not be used"), "{err}");
}

// Regression tests of issue 15 (cache integrity) on the dump's side.

/// A copy of the fixture's model folder in `dir`, with `edit` applied to its files.
fn model_copy(dir: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    let model = dir.join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["model.onnx", "model.onnx.json", "tokenizer.json"] {
        std::fs::copy(fixture().join(f), model.join(f)).unwrap();
    }
    edit(&model);
    model
}

/// Another model's tokenizer.json was dumped with, exit 0.
#[test]
fn a_tokenizer_other_than_the_models_is_refused_with_both_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_copy(dir.path(), |m| {
        // Still a valid tokenizer.json, but not the exported one.
        let mut text = std::fs::read_to_string(m.join("tokenizer.json")).unwrap();
        text.push('\n');
        std::fs::write(m.join("tokenizer.json"), text).unwrap();
    });
    let found =
        circuitry_core::fingerprint::fingerprint_path(&model.join("tokenizer.json")).unwrap();
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture().join("model.onnx.json")).unwrap()).unwrap();
    let expected = sidecar["tokenizer_fingerprint"]["hex"]
        .as_str()
        .unwrap()
        .to_string();
    for extra in [&[][..], &["--check-only"][..]] {
        let err = fail_case(extra, &[], &model, &fixture().join("corpus.txt"));
        for needle in [
            "tokenizer.json",
            "not the one the model was exported with",
            expected.as_str(),
            found.as_str(),
            "re-export",
        ] {
            assert!(
                err.contains(needle),
                "{extra:?}: expected {needle:?} in {err}"
            );
        }
    }
}

/// Pairs the circuit stage cannot use were dumped and refused only later.
#[test]
fn pairs_with_a_multi_token_answer_or_unequal_lengths_are_refused_naming_the_line() {
    let good = std::fs::read_to_string(fixture().join("pairs.jsonl")).unwrap();
    let first = good.lines().next().unwrap();
    let cases = [
        (
            // " runs" is two tokens under the fixture's tokenizer.
            r#"{"clean_prefix": "The cat", "patch_prefix": "The dog", "clean_answer": " runs", "patch_answer": " run", "case": "x"}"#,
            &[
                "pairs.jsonl:2",
                "clean_answer \" runs\" is 2 tokens",
                "one token",
            ][..],
        ),
        (
            // " cats" is two tokens, " dog" one.
            r#"{"clean_prefix": "The cats", "patch_prefix": "The dog", "clean_answer": " run", "patch_answer": " sleep", "case": "x"}"#,
            &[
                "pairs.jsonl:2",
                "is 4 tokens but patch_prefix",
                "same token length",
            ][..],
        ),
    ];
    for (line, needles) in cases {
        let dir = tempfile::tempdir().unwrap();
        let pairs = dir.path().join("pairs.jsonl");
        std::fs::write(&pairs, format!("{first}\n{line}\n")).unwrap();
        let out = dir.path().join("out");
        for check_only in [false, true] {
            let (m, p, o) = (
                fixture(),
                pairs.to_str().unwrap().to_string(),
                out.to_str().unwrap().to_string(),
            );
            let mut args = vec![
                "onnx",
                "--model",
                m.to_str().unwrap(),
                "--out",
                &o,
                "--pairs",
                &p,
                "--hooks",
                "blocks.0.hook_resid_pre",
            ];
            if check_only {
                args.push("--check-only");
            }
            let (code, stderr) = run(&args, &[]);
            println!("{stderr}");
            assert_eq!(code, 2, "{stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
            for n in needles {
                assert!(stderr.contains(n), "expected {n:?} in {stderr}");
            }
            assert!(!out.exists(), "nothing written");
        }
    }
}

#[test]
fn check_only_onnx_accepts_good_options_and_refuses_bad_ones_writing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (m, c, o) = (
        fixture(),
        fixture().join("corpus.txt"),
        out.to_str().unwrap().to_string(),
    );
    let base = [
        "onnx",
        "--model",
        m.to_str().unwrap(),
        "--out",
        &o,
        "--corpus",
        c.to_str().unwrap(),
        "--hooks",
        "blocks.*.hook_resid_pre",
        "--check-only",
    ];
    let (code, stderr) = run(&base, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!out.exists(), "--check-only creates nothing");
    let bad: [(&[&str], &str); 3] = [
        (&["--batch-size", "0"], "batch-size"),
        (&["--context-size", "99"], "longer than the model's context"),
        (&["--batch-size", "1000000000000"], "needs about"),
    ];
    for (extra, needle) in bad {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let (code, stderr) = run(&args, &[]);
        println!("{stderr}");
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(needle),
            "{extra:?}: expected {needle:?} in {stderr}"
        );
        assert!(!out.exists(), "--check-only creates nothing");
    }
}

/// A toy model written by the library, as circuitry-train-toy writes it.
fn toy_model(dir: &Path) -> PathBuf {
    let cfg = circuitry_models::toy::ToyTrainConfig {
        epochs: 5,
        ..Default::default()
    };
    let (model, config, _) = circuitry_models::toy::train(&cfg);
    let path = dir.join("toy");
    model.save(&path, &config).unwrap();
    path
}

#[test]
fn check_only_toy_accepts_good_options_and_refuses_noise_5() {
    let dir = tempfile::tempdir().unwrap();
    let model = toy_model(dir.path());
    let out = dir.path().join("out");
    let (m, o) = (model.to_str().unwrap(), out.to_str().unwrap());
    let (code, stderr) = run(&["toy", "--model", m, "--out", o, "--check-only"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!out.exists(), "--check-only creates nothing");
    let (code, stderr) = run(
        &[
            "toy",
            "--model",
            m,
            "--out",
            o,
            "--noise",
            "5.0",
            "--check-only",
        ],
        &[],
    );
    println!("{stderr}");
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("noise") && stderr.contains("[0, 0.15]"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// "… (os error 17): … (os error 17)": errors that print their source were
/// printed again as causes.
#[test]
fn os_errors_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let model = toy_model(dir.path());
    // --out below a file: creating it fails (ENOTDIR) in the stage itself.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let out = file.join("acts");
    let (code, stderr) = run(
        &[
            "toy",
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    println!("{stderr}");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("os error"), "{stderr}");
    let code_text = stderr
        .split("(os error ")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .unwrap()
        .to_string();
    assert_eq!(
        stderr.matches(&format!("(os error {code_text})")).count(),
        1,
        "{stderr}"
    );
}
