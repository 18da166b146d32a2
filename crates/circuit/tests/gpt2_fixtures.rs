//! Fixtures of the circuit tests: the tiny random GPT-2 and Llama of the models crate
//! (`crates/models/tests/data/{gpt2,llama}_tiny_random`, 2 blocks, d_model 32, vocab
//! 100; the Llama has 4 query heads over 2 key/value heads), random SAEs on every
//! resid_pre / attn_out / mlp_out, and a batch of pairs.
use std::path::{Path, PathBuf};

use circuitry_circuit::gpt2::{PairBatch, Submodule, Submodules};
use circuitry_core::HookPoint;
use circuitry_models::transformer::Transformer;
use circuitry_sae::{Sae, SaeConfig};
use ndarray::{Array2, Array3, ArrayView3};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/data/gpt2_tiny_random")
}

pub fn model() -> Transformer {
    Transformer::load(&model_dir()).unwrap()
}

pub fn llama_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/data/llama_tiny_random")
}

/// The tiny random Llama (`scripts/llama_golden.py`).
pub fn llama_model() -> Transformer {
    Transformer::load(&llama_model_dir()).unwrap()
}

pub fn hooks(n_layer: usize) -> Vec<HookPoint> {
    (0..n_layer)
        .flat_map(|layer| {
            [
                HookPoint::ResidPre { layer },
                HookPoint::AttnOut { layer },
                HookPoint::MlpOut { layer },
            ]
        })
        .collect()
}

/// A random SAE at `hook`; encoder = decoderᵀ scaled so that about half the latents fire.
pub fn sae(hook: HookPoint, d_in: usize, d_sae: usize, seed: u64) -> Sae {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sae = Sae::new_init(SaeConfig::new(d_in, d_sae, hook), &mut rng);
    sae.w_enc.mapv_inplace(|v| v * 4.0);
    sae.b_enc.mapv_inplace(|_| rng.random_range(-0.05..0.05));
    sae.b_dec.mapv_inplace(|_| rng.random_range(-0.02..0.02));
    sae
}

pub fn submodules(model: &Transformer, d_sae: usize) -> Submodules {
    let c = model.config();
    let list = hooks(c.n_layer)
        .into_iter()
        .enumerate()
        .map(|(k, h)| Submodule::new(sae(h, c.d_model, d_sae, 100 + k as u64)).unwrap())
        .collect();
    Submodules::new(list, c.d_model, c.n_layer).unwrap()
}

/// `n` pairs of length 5 whose prompts differ at positions 2 and 3.
pub fn batch(n: usize, seed: u64) -> PairBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let clean = Array2::from_shape_fn((n, 5), |_| rng.random_range(1..100u32));
    let mut patch = clean.clone();
    for b in 0..n {
        for p in [2, 3] {
            patch[[b, p]] = (clean[[b, p]] + rng.random_range(1..99u32)) % 100;
        }
    }
    PairBatch {
        examples: (0..n as u32).collect(),
        clean,
        patch,
        clean_answer: (0..n).map(|_| rng.random_range(0..50u32)).collect(),
        patch_answer: (0..n).map(|_| rng.random_range(50..100u32)).collect(),
        cases: vec!["singular".into(); n],
    }
}

/// `(batch, seq, w)` f32 → f64.
pub fn f64s(a: ArrayView3<'_, f32>) -> Array3<f64> {
    a.mapv(f64::from)
}

/// Assert `|got − want| ≤ tol · max(|want|) + abs` for every pair; print the max diff.
pub fn assert_close(name: &str, pairs: &[(f64, f64)], rel: f64, abs: f64) {
    let scale = pairs.iter().fold(0.0f64, |m, (_, w)| m.max(w.abs()));
    let max = pairs.iter().fold(0.0f64, |m, (g, w)| m.max((g - w).abs()));
    println!(
        "{name}: {} values, max |diff| {max:.3e}, scale {scale:.3e}, tolerance {:.3e}",
        pairs.len(),
        rel * scale + abs
    );
    assert!(
        max <= rel * scale + abs,
        "{name}: max |diff| {max:.3e} > {:.3e}",
        rel * scale + abs
    );
}
