//! SAELens interop: `tests/saelens_fixture/` holds SAEs written by SAELens's own
//! classes (`SAE.save_model`) and SAELens's encode/decode values, made by
//! `scripts/saelens_make_fixture.py`. `Sae::load` must reproduce them.
use std::path::PathBuf;

use circuitry_sae::{ActivationNormalization, Architecture, Sae};
use ndarray::Array2;
use serde_json::Value;

use crate::common::max_diff;

/// Both sides compute in f32 (torch on CPU, ndarray here), in different orders.
const TOLERANCE: f32 = 1e-5;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/saelens_fixture")
}

fn matrix(v: &Value) -> Array2<f32> {
    let rows: Vec<Vec<f32>> = serde_json::from_value(v.clone()).unwrap();
    let (r, c) = (rows.len(), rows[0].len());
    Array2::from_shape_vec((r, c), rows.into_iter().flatten().collect()).unwrap()
}

#[test]
fn saelens_written_saes_load_and_reproduce_saelens_values() {
    let dir = fixture_dir();
    let values: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("values.json")).unwrap()).unwrap();
    let saes = values["saes"].as_object().unwrap();
    assert_eq!(saes.len(), 7, "every fixture SAE is checked");
    let mut worst = 0.0f32;
    for (name, v) in saes {
        let sae = Sae::load(&dir.join(name)).unwrap();
        let x = matrix(&v["x"]);
        let f = sae.encode(x.view());
        let x_hat = sae.reconstruct(x.view(), f.view());
        let (df, dx) = (
            max_diff(&f, &matrix(&v["feature_acts"])),
            max_diff(&x_hat, &matrix(&v["x_hat"])),
        );
        println!(
            "{name} (SAELens {}, ours {}): max |f − SAELens| = {df:.2e}, max |x̂ − SAELens| = {dx:.2e}",
            v["architecture"].as_str().unwrap(),
            sae.cfg.architecture
        );
        assert!(df <= TOLERANCE && dx <= TOLERANCE, "{name}: {df} / {dx}");
        worst = worst.max(df).max(dx);
        match name.as_str() {
            "jb_shaped" => {
                assert_eq!(
                    sae.cfg.normalize_activations,
                    ActivationNormalization::MeanCentre,
                    "center_writing_weights implies mean-centred inputs"
                );
                assert_eq!(sae.cfg.model_name, "gpt2-small");
                assert_eq!(sae.cfg.context_size, 128);
            }
            "topk" | "topk_rescale_norm" => {
                assert_eq!(sae.cfg.architecture, Architecture::TopK { k: 4 })
            }
            "jumprelu" => assert_eq!(sae.cfg.architecture, Architecture::JumpRelu),
            _ => assert_eq!(sae.cfg.architecture, Architecture::Standard),
        }
    }
    println!("max difference over the fixture: {worst:.2e} (tolerance {TOLERANCE:.0e})");
}

#[test]
fn a_mean_centred_sae_round_trips_through_the_saelens_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut sae = Sae::load(&fixture_dir().join("jb_shaped")).unwrap();
    sae.cfg.normalize_activations = ActivationNormalization::MeanCentre;
    sae.save(dir.path()).unwrap();
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cfg.json")).unwrap())
            .unwrap();
    assert_eq!(
        cfg["normalize_activations"], "none",
        "a value SAELens accepts"
    );
    assert_eq!(
        cfg["metadata"]["model_from_pretrained_kwargs"]["center_writing_weights"],
        true
    );
    assert_eq!(Sae::load(dir.path()).unwrap(), sae);
}

/// `tests/ours_fixture/` (for `scripts/saelens_load_ours.py`, which has SAELens load
/// it) is what this code writes and computes now: each SAE saved again gives the same
/// bytes, and encode/reconstruct give the recorded values.
#[test]
fn the_fixture_for_saelens_is_what_our_code_writes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ours_fixture");
    let values: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("values.json")).unwrap()).unwrap();
    let values = values.as_object().unwrap();
    assert_eq!(values.len(), 5);
    for (name, v) in values {
        let dir = root.join(name);
        let sae = Sae::load(&dir).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        sae.save(tmp.path()).unwrap();
        for file in ["cfg.json", "sae_weights.safetensors"] {
            assert_eq!(
                std::fs::read(dir.join(file)).unwrap(),
                std::fs::read(tmp.path().join(file)).unwrap(),
                "{name}/{file}: rerun `cargo run --release -p circuitry-sae --example saelens_ours_fixture`"
            );
        }
        let x = matrix(&v["x"]);
        let f = sae.encode(x.view());
        let x_hat = sae.reconstruct(x.view(), f.view());
        let (df, dx) = (
            max_diff(&f, &matrix(&v["feature_acts"])),
            max_diff(&x_hat, &matrix(&v["x_hat"])),
        );
        println!("{name}: max |f − recorded| = {df:.2e}, max |x̂ − recorded| = {dx:.2e}");
        assert!(df <= 1e-6 && dx <= 1e-6, "{name}");
    }
}
