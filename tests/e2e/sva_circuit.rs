//! A GPT-2 circuit stage in a pipeline: the tiny agreement model's simple pairs dumped
//! with ONNX Runtime, two small SAEs trained on them, then `circuit`; changing the node
//! threshold re-runs only the circuit stage.
use std::fs;
use std::path::Path;
use std::process::Command;

use circuitry_tests::{bin, repo_root, run_ok, text};

fn circuitry(args: &[&str], manifest: &Path) -> std::process::Output {
    let mut cmd = Command::new(bin("circuitry"));
    cmd.args(args).arg(manifest);
    run_ok(&mut cmd)
}

fn finished(stage_dir: &Path) -> String {
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(stage_dir.join("stage.json")).unwrap()).unwrap();
    format!("{}|{}", record["finished_unix"], record["wall_seconds"])
}

fn manifest(node_threshold: &str) -> String {
    let data = repo_root().join("datasets/tiny-gpt2");
    let d = data.display();
    format!(
        r#"[pipeline]
name = "sva-circuit"
run_dir = "run"

[[stage]]
name = "pairs"
kind = "dump"
model = "{d}"
pairs = "{d}/agreement/simple_test.jsonl"
hooks = ["blocks.2.hook_resid_pre", "blocks.2.hook_mlp_out", "blocks.3.hook_attn_out"]
batch_size = 64
max_tokens = 1200

[[stage]]
name = "sae_r2"
kind = "train-sae"
store = "@pairs"
hooks = ["blocks.2.hook_resid_pre"]
d_sae = 128
steps = 300
batch_size = 64
seed = 0

[[stage]]
name = "sae_m2"
kind = "train-sae"
store = "@pairs"
hooks = ["blocks.2.hook_mlp_out"]
d_sae = 128
steps = 300
batch_size = 64
seed = 0

[[stage]]
name = "circuit"
kind = "circuit"
model = "{d}"
saes = ["@sae_r2", "@sae_m2"]
store = "@pairs"
method = "ig"
node_threshold = {node_threshold}
exact_check = 8
"#
    )
}

#[test]
fn circuit_stage_runs_in_a_pipeline_and_reruns_alone_when_its_threshold_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sva-circuit.toml");
    fs::write(&path, manifest("0.1")).unwrap();
    let first = circuitry(&["run"], &path);
    println!("{}", text(&first));
    let run = dir.path().join("run");
    for f in [
        "circuit.json",
        "circuit.dot",
        "circuit.svg",
        "summary.txt",
        "faithfulness.csv",
        "faithfulness.json",
        "faithfulness.svg",
        "stage.json",
    ] {
        assert!(run.join("circuit").join(f).is_file(), "missing circuit/{f}");
    }
    let c: serde_json::Value =
        serde_json::from_slice(&fs::read(run.join("circuit/circuit.json")).unwrap()).unwrap();
    let scores = &c["scores"];
    println!("scores {scores}");
    for k in [
        "faithfulness",
        "f_model",
        "f_empty",
        "pearson_r_vs_exact_nodes",
    ] {
        assert!(
            scores[k].is_number(),
            "circuit.json lacks scores.{k}: {scores}"
        );
    }
    // The clean metric is logit(patch answer) − logit(clean answer): the model agrees.
    assert!(scores["metric_clean"].as_f64().unwrap() < 0.0, "{scores}");
    // The transformer's products ran on MKL where it is installed (auto), and the
    // record says which library it was.
    let faith: serde_json::Value =
        serde_json::from_slice(&fs::read(run.join("circuit/faithfulness.json")).unwrap()).unwrap();
    let gemm = faith["gemm"].as_str().unwrap_or_default();
    let mkl = repo_root().join(".mkl/libmkl_rt.so.3").is_file();
    println!("gemm: {gemm} (MKL installed: {mkl})");
    assert!(
        if mkl {
            gemm.starts_with("mkl (")
        } else {
            gemm == "faer"
        },
        "faithfulness.json's gemm {gemm:?}, MKL installed: {mkl}"
    );
    let before: Vec<String> = ["pairs", "sae_r2", "sae_m2"]
        .iter()
        .map(|s| finished(&run.join(s)))
        .collect();
    fs::write(&path, manifest("0.05")).unwrap();
    let plan = text(&circuitry(&["plan"], &path));
    assert!(plan.contains("--node-threshold"), "plan: {plan}");
    let second = circuitry(&["run"], &path);
    let after: Vec<String> = ["pairs", "sae_r2", "sae_m2"]
        .iter()
        .map(|s| finished(&run.join(s)))
        .collect();
    assert_eq!(
        before,
        after,
        "only the circuit may re-run: {}",
        text(&second)
    );
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(run.join("circuit/stage.json")).unwrap()).unwrap();
    assert!(record["argv"].to_string().contains("\"0.05\""), "{record}");
}

/// `aggregation = "per-position"` on template-aligned pairs: the circuit's nodes carry
/// positions, `circuit.json` labels the positions with the first pair's tokens (the
/// dump's `<|endoftext|>` first, then "The cousin" of the first line of
/// simple_test.jsonl), the drawing is the grid, and Neuronpedia gets the same tokens.
#[test]
fn per_position_circuit_labels_its_positions_with_the_first_pairs_tokens() {
    let data = repo_root().join("datasets/tiny-gpt2");
    let d = data.display();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("per-position.toml");
    fs::write(
        &path,
        format!(
            r#"[pipeline]
name = "per-position"
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

[[stage]]
name = "circuit"
kind = "circuit"
model = "{d}"
saes = ["@saes"]
store = "@pairs"
aggregation = "per-position"
node_threshold = 0.05
"#
        ),
    )
    .unwrap();
    println!("{}", text(&circuitry(&["run"], &path)));
    let out = dir.path().join("run/circuit");
    let c: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("circuit.json")).unwrap()).unwrap();
    let positions: Vec<&str> = c["positions"]
        .as_array()
        .expect("circuit.json has positions")
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    println!("positions {positions:?}");
    assert_eq!(positions, ["<|endoftext|>", "The", " cousin"]);
    let nodes = c["nodes"].as_array().unwrap();
    assert!(nodes.len() > 1, "the circuit has nodes: {nodes:?}");
    for n in nodes {
        if n["kind"] != "output" {
            let p = n["position"]
                .as_u64()
                .expect("per-position nodes have a position");
            assert!((p as usize) < positions.len(), "{n}");
        }
    }
    let svg = fs::read_to_string(out.join("circuit.svg")).unwrap();
    assert_eq!(
        svg.matches("class=\"position\"").count(),
        3,
        "the grid's labels"
    );
    let np: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("neuronpedia.json")).unwrap()).unwrap();
    assert_eq!(np["metadata"]["prompt_tokens"], c["positions"]);
}
