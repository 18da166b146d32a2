//! Shared fixtures: a trained toy model, an SAE with non-zero biases, a store.
use std::path::{Path, PathBuf};

use circuitry_core::fingerprint::fingerprint_path;
use circuitry_core::HookPoint;
use circuitry_models::toy::{
    self, Lexicon, SubjectVerbAgreementNN, ToyConfig, ToyDataset, ToyTrainConfig,
};
use circuitry_sae::{Sae, SaeConfig};
use circuitry_store::{Dtype, HookMeta, RowBatch, StoreSpec, StoreWriter};
use ndarray::Array1;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A toy model trained as the pipeline does (small and seeded).
pub fn trained_model() -> (SubjectVerbAgreementNN, ToyConfig) {
    let cfg = ToyTrainConfig {
        seed: 7,
        n_train: 400,
        n_test: 100,
        epochs: 200,
        ..ToyTrainConfig::default()
    };
    let (model, config, _report) = toy::train(&cfg);
    (model, config)
}

/// Examples for the model, with labels (0 "runs", 1 "run").
pub fn dataset(config: &ToyConfig, n: usize, seed: u64) -> ToyDataset {
    let lexicon = Lexicon::new(config.lexicon_seed);
    let nouns = (0..lexicon.forms.len()).collect();
    ToyDataset::generate(&lexicon, nouns, n, config.noise as f32, seed)
}

/// A seeded random SAE d_hidden → d_sae on `hook`, with non-zero biases so that every
/// term of the decomposition is exercised.
pub fn random_sae(d_in: usize, d_sae: usize, hook: HookPoint, apply_b_dec: bool, seed: u64) -> Sae {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let cfg = SaeConfig {
        apply_b_dec_to_input: apply_b_dec,
        ..SaeConfig::new(d_in, d_sae, hook)
    };
    let mut sae = Sae::new_init(cfg, &mut rng);
    sae.b_enc = Array1::from_shape_fn(d_sae, |_| rng.random_range(-0.3..0.3));
    sae.b_dec = Array1::from_shape_fn(d_in, |_| rng.random_range(-0.2..0.2));
    sae
}

/// Paths of a complete set of stage inputs.
pub struct Inputs {
    pub _dir: tempfile::TempDir,
    pub model: PathBuf,
    pub sae: PathBuf,
    pub store: PathBuf,
    pub root: PathBuf,
}

/// Write a trained model, an SAE on toy.hook_hidden and a toy store of `n` examples.
pub fn stage_inputs(n: usize) -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (model, config) = trained_model();
    let model_dir = root.join("model");
    model.save(&model_dir, &config).unwrap();
    let sae_dir = root.join("sae");
    random_sae(model.d_hidden(), 8, HookPoint::ToyHidden, true, 3)
        .save(&sae_dir)
        .unwrap();
    let store_dir = root.join("store");
    write_store(&store_dir, &model_dir, &model, &config, n, true);
    Inputs {
        _dir: dir,
        model: model_dir,
        sae: sae_dir,
        store: store_dir,
        root,
    }
}

/// Write a toy store as the dump stage does (hooks input, hidden, logits when
/// `with_hidden`, else input only).
pub fn write_store(
    dir: &Path,
    model_dir: &Path,
    model: &SubjectVerbAgreementNN,
    config: &ToyConfig,
    n: usize,
    with_hidden: bool,
) {
    let data = dataset(config, n, 11);
    let fwd = model.forward(data.inputs.view());
    let mut hooks = vec![HookMeta {
        hook: HookPoint::ToyInput,
        width: 2,
    }];
    let mut acts = vec![(HookPoint::ToyInput, data.inputs.view())];
    if with_hidden {
        hooks.push(HookMeta {
            hook: HookPoint::ToyHidden,
            width: model.d_hidden(),
        });
        acts.push((HookPoint::ToyHidden, fwd.hidden.view()));
    }
    let spec = StoreSpec {
        hooks,
        dtype: Dtype::F32,
        model_fingerprint: fingerprint_path(&model_dir.join("model.safetensors")).unwrap(),
        tokenizer_fingerprint: None,
        context_size: 1,
        paired: false,
        shard_rows: 64,
        extra: serde_json::json!({ "source": "toy" }),
    };
    let seq: Vec<u64> = (0..n as u64).collect();
    let pos = vec![0u32; n];
    let mut writer = StoreWriter::create(dir, spec).unwrap();
    writer
        .write(RowBatch {
            seq: &seq,
            pos: &pos,
            token_id: &data.token_ids,
            example: None,
            side: None,
            acts,
        })
        .unwrap();
    writer.finish().unwrap();
}
