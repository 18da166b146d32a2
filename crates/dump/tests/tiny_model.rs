//! The dump on the committed tiny agreement GPT-2 (datasets/tiny-gpt2) with a real ONNX
//! Runtime session: ORT equals the Rust forward at every hook the model exports; a dump
//! killed mid-way (SIGKILL to the real process) resumes to the same dataset as an
//! uninterrupted one; a `.parquet` corpus gives the same dataset as the same lines in
//! a `.txt`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use circuitry_core::HookPoint;
use circuitry_dump::onnx::{self, DumpInput, OnnxDumpConfig};
use circuitry_models::transformer::Transformer;
use circuitry_store::{ActivationStore, Dtype};
use ndarray::{s, Array2};

const TOL: f32 = 1e-4;

fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/tiny-gpt2")
}

fn config(out: &Path, input: DumpInput, max_tokens: Option<usize>) -> OnnxDumpConfig {
    OnnxDumpConfig {
        model: model_dir(),
        out: out.to_path_buf(),
        hooks: vec!["*".to_string()],
        input,
        context_size: Some(32),
        batch_size: 8,
        threads: 1,
        dtype: Dtype::F32,
        shard_rows: 512,
        max_tokens,
        // The library the binary would load: $ORT_DYLIB_PATH, else a search.
        ort_library: std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from),
    }
    .check()
    .unwrap()
}

/// Per hook, max |store − Rust forward|, each sequence run alone without padding.
fn diffs_vs_rust(store: &ActivationStore) -> BTreeMap<HookPoint, f32> {
    let model: Transformer = Transformer::load(&model_dir()).unwrap();
    let hooks = store.hooks();
    let stored: Vec<Array2<f32>> = hooks.iter().map(|&h| store.read_hook(h).unwrap()).collect(); // (rows, width)
    let tokens = store.read_tokens().unwrap();
    // seq → (first row, token ids); rows of a sequence are contiguous, pos 0, 1, ...
    let mut seqs: BTreeMap<u64, (usize, Vec<u32>)> = BTreeMap::new();
    for (row, (&seq, &tok)) in tokens.seq.iter().zip(&tokens.token_id).enumerate() {
        seqs.entry(seq).or_insert((row, Vec::new())).1.push(tok);
    }
    let mut max: BTreeMap<HookPoint, f32> = hooks.iter().map(|&h| (h, 0.0)).collect();
    for (first, ids) in seqs.values() {
        let input = Array2::from_shape_vec((1, ids.len()), ids.clone()).unwrap(); // (1, len)
        let out = model.forward(input.view(), None, &hooks).unwrap();
        for (h, acts) in hooks.iter().zip(&stored) {
            let want = out.hooks[h].slice(s![0, .., ..]); // (len, width)
            let got = acts.slice(s![*first..first + ids.len(), ..]);
            let m = max.get_mut(h).unwrap();
            for (a, b) in got.iter().zip(want.iter()) {
                *m = m.max((a - b).abs());
            }
        }
    }
    max
}

fn assert_same_data(a: &Path, b: &Path) {
    let (a, b) = (
        ActivationStore::open(a).unwrap(),
        ActivationStore::open(b).unwrap(),
    );
    assert_eq!(a.n_rows(), b.n_rows());
    assert_eq!(a.read_tokens().unwrap(), b.read_tokens().unwrap());
    assert_eq!(a.hooks(), b.hooks());
    for h in a.hooks() {
        assert_eq!(a.read_hook(h).unwrap(), b.read_hook(h).unwrap(), "{h}");
    }
}

#[test]
fn ort_matches_the_rust_forward_at_every_hook_of_the_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    // Corpus windows (no padding) and agreement pairs (left-padded batches).
    let pairs = model_dir().join("agreement/across_rc_test.jsonl");
    for (name, input) in [
        ("corpus", DumpInput::Corpus(model_dir().join("corpus.txt"))),
        ("pairs", DumpInput::Pairs(pairs)),
    ] {
        let out = dir.path().join(name);
        onnx::dump(&config(&out, input, Some(3000))).unwrap();
        let store = ActivationStore::open(&out).unwrap();
        assert_eq!(
            store.hooks().len(),
            13,
            "every exported hook: {:?}",
            store.hooks()
        );
        let diffs = diffs_vs_rust(&store);
        for (h, d) in &diffs {
            println!("{name}: {h}: max |ORT − Rust| = {d:.3e}");
        }
        let worst = diffs.values().fold(0f32, |m, &d| m.max(d));
        println!(
            "{name}: {} rows, worst {worst:.3e} (tolerance {TOL:e})",
            store.n_rows()
        );
        assert!(worst <= TOL, "{name}: {diffs:?}");
    }
}

fn dump_command(out: &Path, corpus: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_circuitry-dump"));
    cmd.arg("onnx")
        .arg("--model")
        .arg(model_dir())
        .arg("--out")
        .arg(out)
        .arg("--corpus")
        .arg(corpus)
        .args([
            "--hooks",
            "blocks.*.hook_resid_pre,blocks.3.hook_resid_post",
        ])
        .args([
            "--context-size",
            "32",
            "--batch-size",
            "1",
            "--threads",
            "1",
        ])
        .args([
            "--shard-rows",
            "300",
            "--dtype",
            "f16",
            "--max-tokens",
            "12000",
        ]);
    cmd
}

fn shard_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("shard_") && n.ends_with(".parquet")
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn dump_killed_mid_way_resumes_to_the_uninterrupted_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = model_dir().join("corpus.txt");
    let whole = dir.path().join("whole");
    let st = dump_command(&whole, &corpus).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let total = shard_count(&whole);
    assert!(total >= 10, "want many shards to stop between, got {total}");

    // Start again elsewhere and SIGKILL the process once a few shards are on disk.
    let cut = dir.path().join("cut");
    let mut child = dump_command(&cut, &corpus)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while shard_count(&cut) < 3 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the dump finished before it could be killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no shards appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished: {status:?}");
    let written = shard_count(&cut);
    println!(
        "killed after {written} of {total} shards ({:?})",
        start.elapsed()
    );
    assert!(written < total, "the kill came after the last shard");
    assert!(
        !cut.join("stage.json").exists(),
        "an unfinished dump has no stage.json"
    );

    let st = dump_command(&cut, &corpus).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert_same_data(&whole, &cut);
    for i in 0..total {
        let name = format!("shard_{i:05}.parquet");
        assert_eq!(
            std::fs::read(whole.join(&name)).unwrap(),
            std::fs::read(cut.join(&name)).unwrap(),
            "{name} differs"
        );
    }
}

#[test]
fn parquet_corpus_gives_the_same_dataset_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = std::fs::read_to_string(model_dir().join("corpus.txt"))
        .unwrap()
        .lines()
        .take(300)
        .map(str::to_string)
        .collect();
    let txt = dir.path().join("corpus.txt");
    std::fs::write(&txt, lines.join("\n") + "\n").unwrap();
    let pq = dir.path().join("corpus.parquet");
    let script = "import sys, pyarrow as pa, pyarrow.parquet as pq\n\
                  lines = open(sys.argv[1]).read().splitlines()\n\
                  pq.write_table(pa.table({'id': list(range(len(lines))), 'text': lines}), sys.argv[2], row_group_size=100)\n";
    let st = Command::new("python3")
        .args(["-c", script])
        .arg(&txt)
        .arg(&pq)
        .status();
    if !matches!(st, Ok(s) if s.success()) {
        eprintln!(
            "SKIPPED: python3 with pyarrow unavailable ({st:?}); scripts/setup.sh installs it"
        );
        return;
    }
    let (a, b) = (dir.path().join("from_txt"), dir.path().join("from_parquet"));
    onnx::dump(&config(&a, DumpInput::Corpus(txt), None)).unwrap();
    onnx::dump(&config(&b, DumpInput::Corpus(pq), None)).unwrap();
    assert!(ActivationStore::open(&a).unwrap().n_rows() > 1000);
    assert_same_data(&a, &b);
}

/// `--threads` is a speed-only flag for the pipeline's freshness (a changed value does not
/// re-run a dump): ONNX Runtime's intra-op thread count must not change a single byte of
/// the shards, for corpus windows and left-padded pairs.
#[test]
fn the_thread_count_does_not_change_the_shards() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = model_dir().join("agreement/across_rc_test.jsonl");
    for (name, input) in [
        ("corpus", DumpInput::Corpus(model_dir().join("corpus.txt"))),
        ("pairs", DumpInput::Pairs(pairs)),
    ] {
        let mut shards: Vec<Vec<Vec<u8>>> = Vec::new();
        for threads in [1, 2, 3] {
            let out = dir.path().join(format!("{name}-{threads}"));
            let mut cfg = config(&out, input.clone(), Some(3000));
            cfg.threads = threads;
            onnx::dump(&cfg).unwrap();
            let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
                .collect();
            files.sort();
            assert!(!files.is_empty());
            shards.push(files.iter().map(|f| std::fs::read(f).unwrap()).collect());
        }
        assert!(
            shards.iter().all(|s| *s == shards[0]),
            "{name}: shards differ with the thread count"
        );
    }
}
