//! pyarrow reads the shards without help: `scripts/check_store.py` checks column
//! names and order, `FixedSizeList<float|halffloat, width>` types, shapes and values
//! against what the writer was given. Needs `python3` with `pyarrow` and `numpy`
//! (`pip install pyarrow numpy`); without them this test fails, it does not skip.
use std::path::{Path, PathBuf};
use std::process::Command;

use circuitry_store::Dtype;
use half::f16;
use ndarray::Array2;

use crate::common::*;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check_store.py")
}

fn rows(a: &Array2<f32>) -> Vec<Vec<f32>> {
    a.outer_iter().map(|r| r.to_vec()).collect()
}

fn check_with_pyarrow(dtype: Dtype, paired: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let d = data(77, 11);
    write_store(&store, spec(dtype, paired, 30), &d, 13);

    // What pyarrow must see: f16 stores hold the f16 rounding of each value.
    let stored = |a: &Array2<f32>| match dtype {
        Dtype::F32 => a.clone(),
        Dtype::F16 => a.mapv(|x| f16::from_f32(x).to_f32()),
    };
    let mut expect = serde_json::json!({
        "seq": d.seq, "pos": d.pos, "token_id": d.token_id,
        "hooks": {
            A.to_string(): rows(&stored(&d.a)),
            B.to_string(): rows(&stored(&d.b)),
        },
        "rtol": 0.0,
    });
    if paired {
        expect["example"] = serde_json::json!(d.example);
        expect["side"] = serde_json::json!(d.side);
    }
    let expect_path = dir.path().join("expected.json");
    std::fs::write(&expect_path, serde_json::to_vec(&expect).unwrap()).unwrap();

    let out = Command::new("python3")
        .arg(script())
        .arg(&store)
        .arg("--expect")
        .arg(&expect_path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); install Python 3 with `pip install pyarrow numpy`")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "check_store.py failed ({}); if pyarrow is missing: pip install pyarrow numpy\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    println!("{dtype}, paired {paired}: {stdout}");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(summary["n_rows"], 77);
    assert_eq!(summary["n_shards"], 3);
    let mut columns = vec!["seq", "pos", "token_id"];
    if paired {
        columns.extend(["example", "side"]);
    }
    columns.extend(["blocks.0.hook_resid_pre", "blocks.1.hook_mlp_out"]);
    assert_eq!(summary["columns"], serde_json::json!(columns));
    assert_eq!(
        summary["hooks"][A.to_string()]["shape"],
        serde_json::json!([77, WIDTH_A])
    );
    assert_eq!(summary["hooks"][B.to_string()]["max_abs_diff"], 0.0);
}

#[test]
fn pyarrow_reads_f32_paired_store() {
    check_with_pyarrow(Dtype::F32, true);
}

#[test]
fn pyarrow_reads_f16_store() {
    check_with_pyarrow(Dtype::F16, false);
}
