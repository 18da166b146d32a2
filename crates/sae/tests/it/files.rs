//! SAELens file layout: keys, tensor names, shapes, dtypes; save → load round trips.
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use circuitry_core::HookPoint;
use circuitry_sae::{
    evaluate, log10_feature_density, save_training_outputs, train, Architecture, Sae, SaeConfig,
    TrainConfig, TrainingRecord, CFG_FILE, SPARSITY_FILE, TRAINING_FILE, WEIGHTS_FILE,
};
use serde_json::{json, Value};

use crate::common::{random_sae, sparse_sources};

/// Parse a safetensors header by hand (8-byte little-endian length, then JSON), so the
/// check does not depend on the crate that wrote the file.
fn header(path: &Path) -> BTreeMap<String, (String, Vec<usize>)> {
    let bytes = fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let h: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    h.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let shape = serde_json::from_value(v["shape"].clone()).unwrap();
            (k.clone(), (v["dtype"].as_str().unwrap().to_string(), shape))
        })
        .collect()
}

fn entry(dtype: &str, shape: &[usize]) -> (String, Vec<usize>) {
    (dtype.to_string(), shape.to_vec())
}

#[test]
fn saved_standard_sae_has_saelens_layout() {
    let dir = tempfile::tempdir().unwrap();
    let sae = random_sae(4, 8, Architecture::Standard, 1);
    sae.save(dir.path()).unwrap();

    let h = header(&dir.path().join(WEIGHTS_FILE));
    let want: BTreeMap<String, (String, Vec<usize>)> = [
        ("W_enc".to_string(), entry("F32", &[4, 8])),
        ("b_enc".to_string(), entry("F32", &[8])),
        ("W_dec".to_string(), entry("F32", &[8, 4])),
        ("b_dec".to_string(), entry("F32", &[4])),
    ]
    .into_iter()
    .collect();
    assert_eq!(h, want);

    let cfg: Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join(CFG_FILE)).unwrap()).unwrap();
    assert_eq!(cfg["d_in"], 4);
    assert_eq!(cfg["d_sae"], 8);
    assert_eq!(cfg["dtype"], "float32");
    assert_eq!(cfg["architecture"], "standard");
    assert_eq!(cfg["apply_b_dec_to_input"], true);
    assert_eq!(cfg["normalize_activations"], "none");
    assert_eq!(cfg["metadata"]["model_name"], "test-model");
    assert_eq!(cfg["metadata"]["hook_name"], "blocks.2.hook_resid_pre");
    assert_eq!(cfg["metadata"]["context_size"], 16);
    assert!(cfg.get("k").is_none());
    // Only temporary-free final files remain.
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [CFG_FILE, WEIGHTS_FILE]);
}

#[test]
fn topk_and_jumprelu_files_carry_k_and_threshold() {
    let dir = tempfile::tempdir().unwrap();
    random_sae(4, 8, Architecture::TopK { k: 2 }, 2)
        .save(dir.path())
        .unwrap();
    let cfg: Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join(CFG_FILE)).unwrap()).unwrap();
    assert_eq!(cfg["architecture"], "topk");
    assert_eq!(cfg["k"], 2);

    let dir = tempfile::tempdir().unwrap();
    random_sae(4, 8, Architecture::JumpRelu, 3)
        .save(dir.path())
        .unwrap();
    let h = header(&dir.path().join(WEIGHTS_FILE));
    assert_eq!(h["threshold"], entry("F32", &[8]));
}

#[test]
fn save_then_load_reproduces_encode_and_decode_exactly() {
    let (x, _) = sparse_sources(64, 4, 8, 0.3, 9);
    for (i, arch) in [
        Architecture::Standard,
        Architecture::TopK { k: 3 },
        Architecture::JumpRelu,
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let sae = random_sae(4, 8, arch, 10 + i as u64);
        sae.save(dir.path()).unwrap();
        let back = Sae::load(dir.path()).unwrap();
        assert_eq!(back, sae, "{arch}: loaded SAE differs");
        let (f, f_back) = (sae.encode(x.view()), back.encode(x.view()));
        assert_eq!(f, f_back, "{arch}: encode differs after loading");
        assert_eq!(
            sae.decode(f.view()),
            back.decode(f_back.view()),
            "{arch}: decode differs"
        );
    }
}

#[test]
fn loads_older_saelens_configs() {
    // A pre-v6 flat config (hook_point, activation_fn_str) with f64 weights.
    let dir = tempfile::tempdir().unwrap();
    let sae = random_sae(3, 5, Architecture::TopK { k: 2 }, 4);
    sae.save(dir.path()).unwrap();
    let old = json!({
        "model_name": "gpt2-small", "hook_point": "blocks.2.hook_resid_pre", "hook_point_layer": 2,
        "d_in": 3, "d_sae": 5, "dtype": "torch.float32", "context_size": 128,
        "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 2}, "apply_b_dec_to_input": true,
    });
    fs::write(dir.path().join(CFG_FILE), old.to_string()).unwrap();
    let back = Sae::load(dir.path()).unwrap();
    assert_eq!(back.cfg.architecture, Architecture::TopK { k: 2 });
    assert_eq!(back.cfg.hook_name, HookPoint::ResidPre { layer: 2 });
    assert_eq!(back.cfg.context_size, 128);
    assert_eq!(back.cfg.model_name, "gpt2-small");
    assert_eq!(back.w_dec, sae.w_dec);
}

#[test]
fn load_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    random_sae(4, 8, Architecture::Standard, 5)
        .save(dir.path())
        .unwrap();
    let cfg_path = dir.path().join(CFG_FILE);
    let mut cfg: Value = serde_json::from_str(&fs::read_to_string(&cfg_path).unwrap()).unwrap();

    cfg["architecture"] = json!("gated");
    fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = Sae::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("gated") && err.contains("supported"), "{err}");

    cfg["architecture"] = json!("standard");
    cfg["d_sae"] = json!(9);
    fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = Sae::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("W_enc") && err.contains("[4, 9]"), "{err}");

    cfg["d_sae"] = json!(8);
    cfg["metadata"]["hook_name"] = json!("blocks.0.attn.hook_z");
    fs::write(&cfg_path, cfg.to_string()).unwrap();
    let err = Sae::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("hook_name") && err.contains("cfg.json"),
        "{err}"
    );
}

#[test]
fn training_outputs_are_written() {
    let (x, _) = sparse_sources(512, 4, 8, 0.2, 6);
    let cfg = SaeConfig::new(4, 8, HookPoint::ToyHidden);
    let train_cfg = TrainConfig {
        steps: 200,
        lr_decay_steps: 40,
        ..TrainConfig::default()
    };
    let (sae, report) = train(cfg.clone(), &train_cfg, x.view()).unwrap();
    let (metrics, density) = circuitry_sae::evaluate_with_density(&sae, x.view());
    assert_eq!(metrics, evaluate(&sae, x.view()));
    let record = TrainingRecord::new(cfg, train_cfg, report, 512, 0, None);
    let dir = tempfile::tempdir().unwrap();
    save_training_outputs(
        dir.path(),
        &record,
        log10_feature_density(density.view()).view(),
    )
    .unwrap();
    assert_eq!(
        header(&dir.path().join(SPARSITY_FILE)),
        [("sparsity".to_string(), entry("F32", &[8]))]
            .into_iter()
            .collect()
    );
    // Compared through JSON: serde_json's float parsing may differ in the last bit.
    let back = TrainingRecord::read(dir.path()).unwrap();
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        serde_json::to_value(&record).unwrap()
    );
    let json: Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join(TRAINING_FILE)).unwrap()).unwrap();
    assert_eq!(json["sae"]["hook_name"], "toy.hook_hidden");
    assert!(json["history"].as_array().unwrap().len() >= 2);
}
