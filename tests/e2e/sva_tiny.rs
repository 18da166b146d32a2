//! The tiny agreement GPT-2 through ONNX Runtime: `circuitry run pipelines/sva-tiny.toml`
//! dumps corpus windows and agreement pairs, and trains SAEs on them.
use std::process::Command;

use circuitry_tests::{bin, private_manifest, python, run_ok, text};

#[test]
fn sva_tiny_pipeline_dumps_with_ort_and_trains_saes() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = private_manifest("sva-tiny.toml", dir.path());
    let out = run_ok(Command::new(bin("circuitry")).arg("run").arg(&manifest));
    println!("{}", text(&out));
    let run = dir.path().join("run");
    let report = python(
        r#"
import sys, glob, json
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
run = sys.argv[1]
acts = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(run + "/acts/shard_*.parquet"))])
meta = json.load(open(run + "/acts/meta.json"))
assert meta["complete"] and acts.num_rows == meta["n_rows"] > 10000, meta["n_rows"]
names = [f.name for f in acts.schema]
for L in range(4):
    for h in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out"):
        ty = acts.schema.field(f"blocks.{L}.{h}").type
        assert ty.list_size == 64 and ty.value_type == pa.float32(), ty
assert int(acts.column("pos").to_numpy().max()) == 31
x = np.stack(acts.column("blocks.0.hook_resid_pre").to_numpy(zero_copy_only=False))
assert x.shape == (acts.num_rows, 64) and np.isfinite(x).all()
pairs = pq.read_table(sorted(glob.glob(run + "/pairs_simple/shard_*.parquet"))[0])
assert "example" in pairs.column_names and "side" in pairs.column_names
assert set(pairs.column("side").to_pylist()) == {0, 1}
for L in range(4):
    for h in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out"):
        d = f"{run}/saes/blocks.{L}.{h}"
        cfg = json.load(open(d + "/cfg.json"))
        assert cfg["d_in"] == 64 and cfg["d_sae"] == 256 and cfg["architecture"] == "topk", cfg
        tr = json.load(open(d + "/training.json"))
        ev = tr["eval_metrics"]["explained_variance"]
        print(f"blocks.{L}.{h}: held-out EV {ev:.3f}, L0 {tr['eval_metrics']['l0']:.2f}, dead {tr['eval_metrics']['dead_fraction']:.3f}")
        fs = pq.read_table(d + "/feature_stats.parquet")
        assert fs.num_rows == 256 and "top_left" in fs.column_names
assert json.load(open(run + "/saes/stage.json"))
print("corpus rows", acts.num_rows, "pair rows", pairs.num_rows)
"#,
        &[&run],
    );
    println!("{report}");
}
