//! The toy recipe through `circuitry run pipelines/toy.toml`.
use std::fs;
use std::path::Path;
use std::process::Command;

use circuitry_tests::{bin, private_manifest, python, run_ok, text};

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

#[test]
fn toy_pipeline_runs_then_is_fresh_then_reruns_only_the_changed_circuit() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = private_manifest("toy.toml", dir.path());
    let run = dir.path().join("run");

    let first = circuitry(&["run"], &manifest);
    println!("{}", text(&first));
    for f in [
        "circuit.json",
        "circuit.dot",
        "circuit.svg",
        "summary.txt",
        "stage.json",
    ] {
        assert!(run.join("circuit").join(f).is_file(), "missing circuit/{f}");
    }
    for stage in ["model", "acts", "sae", "circuit"] {
        assert!(
            run.join(stage).join("stage.json").is_file(),
            "{stage} wrote no stage.json"
        );
    }

    let second = circuitry(&["run"], &manifest);
    assert!(
        text(&second).contains("nothing to run"),
        "second run: {}",
        text(&second)
    );

    let before: Vec<String> = ["model", "acts", "sae"]
        .iter()
        .map(|s| finished(&run.join(s)))
        .collect();
    let edited = fs::read_to_string(&manifest)
        .unwrap()
        .replace("top_paths = 3", "top_paths = 5");
    assert!(
        edited.contains("top_paths = 5"),
        "toy.toml no longer sets top_paths = 3"
    );
    fs::write(&manifest, edited).unwrap();
    let plan = text(&circuitry(&["plan"], &manifest));
    assert!(
        plan.contains("--top-paths"),
        "plan does not say why the circuit is stale: {plan}"
    );
    let third = circuitry(&["run"], &manifest);
    let after: Vec<String> = ["model", "acts", "sae"]
        .iter()
        .map(|s| finished(&run.join(s)))
        .collect();
    assert_eq!(
        before,
        after,
        "only the circuit stage may re-run: {}",
        text(&third)
    );
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(run.join("circuit/stage.json")).unwrap()).unwrap();
    assert!(
        record["argv"].to_string().contains("--top-paths"),
        "{record}"
    );
    assert!(record["argv"].to_string().contains("\"5\""), "{record}");
}

#[test]
fn same_seeds_give_byte_identical_outputs() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for d in [&a, &b] {
        circuitry(&["run"], &private_manifest("toy.toml", d.path()));
    }
    for f in [
        "model/model.safetensors",
        "acts/shard_00000.parquet",
        "sae/toy.hook_hidden/sae_weights.safetensors",
        "circuit/circuit.json",
        "circuit/circuit.svg",
    ] {
        let x = fs::read(a.path().join("run").join(f)).unwrap();
        let y = fs::read(b.path().join("run").join(f)).unwrap();
        assert!(x == y, "{f} differs between two runs with the same seeds");
    }
}

/// pyarrow reads the toy activations back; the hidden layer equals
/// relu(input · fc1ᵀ + b) recomputed in numpy from the saved weights.
#[test]
fn pyarrow_reads_toy_activations_and_values_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    circuitry(&["run"], &private_manifest("toy.toml", dir.path()));
    let run = dir.path().join("run");
    let out = python(
        r#"
import sys, glob, json
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
from safetensors.numpy import load_file
acts, model = sys.argv[1], sys.argv[2]
t = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(acts + "/shard_*.parquet"))])
meta = json.load(open(acts + "/meta.json"))
assert meta["complete"] is True
assert t.num_rows == 2000 == meta["n_rows"], t.num_rows
for name, width in [("toy.hook_input", 2), ("toy.hook_hidden", 4), ("toy.hook_logits", 2)]:
    ty = t.schema.field(name).type
    assert pa.types.is_fixed_size_list(ty) and ty.list_size == width and ty.value_type == pa.float32(), (name, ty)
assert t.schema.field("seq").type == pa.uint64() and t.schema.field("token_id").type == pa.uint32()
x = np.stack(t.column("toy.hook_input").to_numpy(zero_copy_only=False))
h = np.stack(t.column("toy.hook_hidden").to_numpy(zero_copy_only=False))
z = np.stack(t.column("toy.hook_logits").to_numpy(zero_copy_only=False))
assert x.shape == (2000, 2) and h.shape == (2000, 4) and z.shape == (2000, 2)
w = load_file(model + "/model.safetensors")
h_ref = np.maximum(x @ w["fc1.weight"].T + w["fc1.bias"], 0)
z_ref = h_ref @ w["fc2.weight"].T + w["fc2.bias"]
d = max(np.abs(h - h_ref).max(), np.abs(z - z_ref).max())
print(f"max |pyarrow - numpy reference| = {d:.2e}")
assert d < 1e-5, d
labels = t.column("token_id").to_numpy() % 2
acc = ((z[:, 1] > z[:, 0]).astype(int) == labels).mean()
print(f"toy accuracy on the dumped examples = {acc:.4f}")
assert acc == 1.0, acc
"#,
        &[&run.join("acts"), &run.join("model")],
    );
    println!("{out}");
}

/// The SAE is written in SAELens layout: cfg.json fields, tensor names, shapes, dtypes.
#[test]
fn sae_files_have_saelens_layout() {
    let dir = tempfile::tempdir().unwrap();
    circuitry(&["run"], &private_manifest("toy.toml", dir.path()));
    let sae = dir.path().join("run/sae/toy.hook_hidden");
    let out = python(
        r#"
import sys, json
from safetensors.numpy import load_file
d = sys.argv[1]
cfg = json.load(open(d + "/cfg.json"))
assert cfg["d_in"] == 4 and cfg["d_sae"] == 8, cfg
assert cfg["architecture"] == "standard" and cfg["dtype"] == "float32", cfg
assert cfg["metadata"]["hook_name"] == "toy.hook_hidden", cfg
w = load_file(d + "/sae_weights.safetensors")
shapes = {k: v.shape for k, v in w.items()}
assert shapes == {"W_enc": (4, 8), "b_enc": (8,), "W_dec": (8, 4), "b_dec": (4,)}, shapes
assert all(str(v.dtype) == "float32" for v in w.values())
s = load_file(d + "/sparsity.safetensors")
assert s["sparsity"].shape == (8,), s
print("SAELens layout ok:", shapes)
"#,
        &[&sae],
    );
    println!("{out}");
}
