//! Write `crates/sae/tests/ours_fixture/`: small SAEs trained and saved by this crate
//! (one per architecture, and a mean-centred one), with our encode/reconstruct
//! values on seeded inputs, for `scripts/saelens_load_ours.py` (SAELens loads them
//! and must reproduce the values). `tests/it/saelens.rs` checks the committed files
//! are what the code writes now.
//!
//!     cargo run --release -p circuitry-sae --example saelens_ours_fixture
use std::path::PathBuf;

use circuitry_core::HookPoint;
use circuitry_sae::{train, ActivationNormalization, Architecture, SaeConfig, TrainConfig};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

const D_IN: usize = 16;
const D_SAE: usize = 32;

/// Rows that are sparse non-negative mixtures of 24 random directions, plus an offset.
fn data(rows: usize, rng: &mut ChaCha8Rng) -> Array2<f32> {
    let dict = Array2::<f32>::from_shape_fn((24, D_IN), |_| StandardNormal.sample(&mut *rng));
    let mut x = Array2::<f32>::from_elem((rows, D_IN), 0.3); // (rows, d_in)
    for mut row in x.outer_iter_mut() {
        for d in dict.outer_iter() {
            if rng.random::<f64>() < 0.15 {
                row.scaled_add(0.5 + rng.random::<f32>(), &d);
            }
        }
    }
    x
}

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ours_fixture");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = data(2048, &mut rng); // (2048, d_in)
    let probe = data(8, &mut rng); // (8, d_in)
    let runs = [
        (
            "standard",
            Architecture::Standard,
            ActivationNormalization::None,
        ),
        (
            "topk",
            Architecture::TopK { k: 4 },
            ActivationNormalization::None,
        ),
        (
            "batchtopk",
            Architecture::BatchTopK { k: 4 },
            ActivationNormalization::None,
        ),
        (
            "jumprelu",
            Architecture::JumpRelu,
            ActivationNormalization::ConstantNormRescale,
        ),
        (
            "mean_centred",
            Architecture::TopK { k: 4 },
            ActivationNormalization::MeanCentre,
        ),
    ];
    let mut values = serde_json::Map::new();
    for (name, architecture, norm) in runs {
        let cfg = SaeConfig {
            architecture,
            normalize_activations: norm,
            model_name: "fixture-model".into(),
            context_size: 16,
            ..SaeConfig::new(D_IN, D_SAE, HookPoint::ResidPre { layer: 1 })
        };
        let tc = TrainConfig {
            steps: 300,
            batch_size: 64,
            lr: 3e-3,
            l1_coefficient: if architecture == Architecture::JumpRelu {
                0.02
            } else {
                1.0
            },
            lr_warm_up_steps: 30,
            lr_decay_steps: 60,
            l1_warm_up_steps: 30,
            ..TrainConfig::default()
        };
        let (sae, _) = train(cfg, &tc, x.view())?;
        sae.save(&out.join(name))?;
        let f = sae.encode(probe.view()); // (8, d_sae)
        let x_hat = sae.reconstruct(probe.view(), f.view()); // (8, d_in)
        let rows =
            |a: &Array2<f32>| -> Vec<Vec<f32>> { a.outer_iter().map(|r| r.to_vec()).collect() };
        values.insert(
            name.into(),
            serde_json::json!({
                "architecture": sae.cfg.architecture.saelens_name(),
                "x": rows(&probe),
                "feature_acts": rows(&f),
                "x_hat": rows(&x_hat),
            }),
        );
        println!("{name}: saved as {}", sae.cfg.architecture);
    }
    circuitry_core::atomic::write_json(&out.join("values.json"), &values)?;
    println!("wrote {}", out.display());
    Ok(())
}
