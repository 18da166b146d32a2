//! Forward pass against numpy: `tests/reference/forward_reference.json` is written by
//! `tests/reference/make_forward_reference.py` (numpy, float64, SAELens v6
//! definitions); our f32 encode/decode must match within 1e-5.
use circuitry_core::HookPoint;
use circuitry_sae::{Architecture, Sae, SaeConfig};
use ndarray::{Array1, Array2};
use serde_json::Value;

use crate::common::max_diff;

const TOLERANCE: f32 = 1e-5;

fn matrix(v: &Value) -> Array2<f32> {
    let rows: Vec<Vec<f32>> = serde_json::from_value(v.clone()).unwrap();
    let (r, c) = (rows.len(), rows[0].len());
    Array2::from_shape_vec((r, c), rows.into_iter().flatten().collect()).unwrap()
}

fn vector(v: &Value) -> Array1<f32> {
    Array1::from(serde_json::from_value::<Vec<f32>>(v.clone()).unwrap())
}

#[test]
fn encode_and_decode_match_numpy() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/forward_reference.json"
    );
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (d_in, d_sae) = (
        fixture["d_in"].as_u64().unwrap() as usize,
        fixture["d_sae"].as_u64().unwrap() as usize,
    );
    let k = fixture["k"].as_u64().unwrap() as usize;
    let p = &fixture["params"];
    let x = matrix(&fixture["x"]);
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["architecture"].as_str().unwrap();
        let architecture = match name {
            "standard" => Architecture::Standard,
            "topk" => Architecture::TopK { k },
            "jumprelu" => Architecture::JumpRelu,
            other => panic!("unknown architecture {other}"),
        };
        let apply = case["apply_b_dec_to_input"].as_bool().unwrap();
        let sae = Sae {
            cfg: SaeConfig {
                architecture,
                apply_b_dec_to_input: apply,
                ..SaeConfig::new(d_in, d_sae, HookPoint::ResidPre { layer: 0 })
            },
            w_enc: matrix(&p["W_enc"]),
            b_enc: vector(&p["b_enc"]),
            w_dec: matrix(&p["W_dec"]),
            b_dec: vector(&p["b_dec"]),
            threshold: (architecture == Architecture::JumpRelu).then(|| vector(&p["threshold"])),
        };
        let pre = sae.encode_pre(x.view());
        let f = sae.encode(x.view());
        let x_hat = sae.decode(f.view());
        let diffs = [
            ("encode_pre", max_diff(&pre, &matrix(&case["encode_pre"]))),
            ("encode", max_diff(&f, &matrix(&case["encode"]))),
            ("decode", max_diff(&x_hat, &matrix(&case["decode"]))),
        ];
        for (what, d) in diffs {
            println!("{name} (apply_b_dec_to_input={apply}) {what}: max |rust − numpy| = {d:.2e}");
            assert!(d < TOLERANCE, "{name} {what} differs from numpy by {d}");
        }
        // Same sparsity pattern as numpy (no value sits near a threshold here).
        let want = matrix(&case["encode"]);
        assert!(
            f.iter().zip(&want).all(|(a, b)| (*a == 0.0) == (*b == 0.0)),
            "{name}: active set differs"
        );
    }
}
