//! Training quality on data with a known sparse dictionary, determinism, bad input.
use circuitry_core::HookPoint;
use circuitry_sae::{evaluate, train, Architecture, Metrics, SaeConfig, TrainConfig};
use ndarray::{Array2, Axis};

use crate::common::sparse_sources;

/// For each true source direction, the best cosine similarity with a decoder row.
fn recovered(dict: &Array2<f64>, w_dec: &Array2<f32>) -> Vec<f64> {
    dict.outer_iter()
        .map(|s| {
            w_dec
                .outer_iter()
                .map(|row| {
                    let row = row.mapv(f64::from);
                    s.dot(&row) / row.dot(&row).sqrt().max(1e-12)
                })
                .fold(f64::MIN, f64::max)
        })
        .collect()
}

fn report(label: &str, m: &Metrics) {
    println!(
        "{label}: EV {:.4}, L0 {:.3}, MSE {:.5}, dead {:.3}",
        m.explained_variance, m.l0, m.mse, m.dead_fraction
    );
}

#[test]
fn standard_sae_recovers_8_sparse_sources_in_4_dims() {
    let (x, dict) = sparse_sources(4096, 4, 8, 0.15, 1);
    let (train_x, eval_x) = x.view().split_at(Axis(0), 3584);
    let cfg = SaeConfig::new(4, 8, HookPoint::ToyHidden);
    let (sae, report_) = train(cfg, &TrainConfig::default(), train_x).unwrap();
    let m = evaluate(&sae, eval_x);
    report("standard 8-in-4 (held out)", &m);
    report("standard 8-in-4 (train)", &report_.final_metrics);
    let cos = recovered(&dict, &sae.w_dec);
    println!("best cosine per source: {cos:.3?}");
    // Sources are on with p = 0.15, so the true L0 is 8 × 0.15 = 1.2.
    // Measured (seed 0): EV 0.993, L0 2.7, 5 of 8 sources at cosine > 0.9.
    assert!(m.explained_variance > 0.95, "EV {}", m.explained_variance);
    assert!(m.l0 < 3.0, "L0 {}", m.l0);
    assert!(cos.iter().filter(|c| **c > 0.9).count() >= 4, "{cos:?}");
}

#[test]
fn standard_sae_recovers_16_sparse_sources_in_8_dims() {
    let (x, dict) = sparse_sources(8192, 8, 16, 0.1, 2);
    let (train_x, eval_x) = x.view().split_at(Axis(0), 7168);
    let cfg = SaeConfig::new(8, 32, HookPoint::ResidPre { layer: 0 });
    let train_cfg = TrainConfig {
        steps: 4000,
        lr_decay_steps: 800,
        l1_coefficient: 0.2,
        ..TrainConfig::default()
    };
    let (sae, _) = train(cfg, &train_cfg, train_x).unwrap();
    let m = evaluate(&sae, eval_x);
    report("standard 16-in-8, d_sae 32 (held out)", &m);
    let cos = recovered(&dict, &sae.w_dec);
    println!("best cosine per source: {cos:.3?}");
    // True L0 is 16 × 0.1 = 1.6.
    // Measured (seed 0): EV 0.962, L0 6.4 of 32 latents, 12 of 16 sources at cosine > 0.9.
    assert!(m.explained_variance > 0.94, "EV {}", m.explained_variance);
    assert!(m.l0 < 7.5, "L0 {}", m.l0);
    assert!(cos.iter().filter(|c| **c > 0.9).count() >= 10, "{cos:?}");
}

#[test]
fn topk_sae_trains_with_exactly_k_or_fewer_active() {
    let (x, _) = sparse_sources(4096, 4, 8, 0.15, 3);
    let (train_x, eval_x) = x.view().split_at(Axis(0), 3584);
    let cfg = SaeConfig {
        architecture: Architecture::TopK { k: 2 },
        ..SaeConfig::new(4, 8, HookPoint::ToyHidden)
    };
    let (sae, rep) = train(cfg, &TrainConfig::default(), train_x).unwrap();
    let m = evaluate(&sae, eval_x);
    report("topk k=2 8-in-4 (held out)", &m);
    assert!(m.l0 <= 2.0 + 1e-9);
    // Measured (seed 0): EV 0.933.
    assert!(m.explained_variance > 0.9, "EV {}", m.explained_variance);
    assert!(rep.history.iter().all(|e| e.sparsity_loss == 0.0));
}

/// Toy-like data: the ReLU hidden layer (4 units) of a 2-input network fed graded,
/// noisy singular/plural inputs, as the toy agreement model's `toy.hook_hidden`.
#[test]
fn standard_sae_on_toy_like_hidden_activations() {
    let w = [[1.5f32, -1.0], [-1.2, 1.4], [0.8, 0.9], [-0.7, -0.6]];
    let b = [0.1f32, 0.05, -0.2, 0.3];
    let mut rng = crate::common::rng(7);
    let inputs = crate::common::normal(&mut rng, (2048, 2), 0.1);
    let x = Array2::from_shape_fn((2048, 4), |(r, j)| {
        let plural = r % 2 == 1;
        let grade = 0.5 + (r % 5) as f32 / 8.0;
        let h = if plural { [0.0, grade] } else { [grade, 0.0] };
        let h = [h[0] + inputs[[r, 0]] as f32, h[1] + inputs[[r, 1]] as f32];
        (w[j][0] * h[0] + w[j][1] * h[1] + b[j]).max(0.0)
    });
    let cfg = SaeConfig::new(4, 8, HookPoint::ToyHidden);
    let (sae, _) = train(cfg, &TrainConfig::default(), x.view()).unwrap();
    let m = evaluate(&sae, x.view());
    report("standard on toy-like hidden layer", &m);
    // Measured (seed 0): EV 0.989, L0 3.6 of 8.
    assert!(m.explained_variance > 0.95, "EV {}", m.explained_variance);
    assert!(m.l0 < 4.0, "L0 {}", m.l0);
}

fn saved_bytes(cfg: &SaeConfig, tc: &TrainConfig, x: ndarray::ArrayView2<f32>) -> Vec<u8> {
    let (sae, _) = train(cfg.clone(), tc, x).unwrap();
    let dir = tempfile::tempdir().unwrap();
    sae.save(dir.path()).unwrap();
    std::fs::read(dir.path().join(circuitry_sae::WEIGHTS_FILE)).unwrap()
}

#[test]
fn same_seed_gives_byte_identical_weights_at_any_thread_count() {
    let (x, _) = sparse_sources(1000, 4, 8, 0.2, 4);
    let cfg = SaeConfig::new(4, 8, HookPoint::ToyHidden);
    let tc = TrainConfig {
        steps: 150,
        lr_decay_steps: 30,
        batch_size: 300,
        chunk_rows: 64,
        ..TrainConfig::default()
    };
    let first = saved_bytes(&cfg, &tc, x.view());
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let one_thread = pool(1).install(|| saved_bytes(&cfg, &tc, x.view()));
    let three_threads = pool(3).install(|| saved_bytes(&cfg, &tc, x.view()));
    assert_eq!(first, one_thread);
    assert_eq!(first, three_threads);
    let other_seed = saved_bytes(
        &cfg,
        &TrainConfig {
            seed: 1,
            ..tc.clone()
        },
        x.view(),
    );
    assert_ne!(first, other_seed);
    let topk = SaeConfig {
        architecture: Architecture::TopK { k: 2 },
        ..cfg
    };
    assert_eq!(
        saved_bytes(&topk, &tc, x.view()),
        saved_bytes(&topk, &tc, x.view())
    );
}

#[test]
fn bad_input_is_rejected_with_a_clear_error() {
    let (x, _) = sparse_sources(64, 4, 8, 0.2, 5);
    let tc = TrainConfig {
        steps: 10,
        lr_decay_steps: 0,
        lr_warm_up_steps: 0,
        ..TrainConfig::default()
    };
    let err = |cfg: SaeConfig, tc: &TrainConfig, x: ndarray::ArrayView2<f32>| {
        train(cfg, tc, x).unwrap_err().to_string()
    };
    let base = SaeConfig::new(4, 8, HookPoint::ToyHidden);

    let e = err(
        SaeConfig {
            d_sae: 0,
            ..base.clone()
        },
        &tc,
        x.view(),
    );
    assert!(e.contains("d_sae"), "{e}");
    let e = err(
        SaeConfig {
            architecture: Architecture::TopK { k: 8 },
            ..base.clone()
        },
        &tc,
        x.view(),
    );
    assert!(e.contains("k = 8") && e.contains("d_sae = 8"), "{e}");
    let mut bad = x.clone();
    bad[[5, 2]] = f32::INFINITY;
    let e = err(base.clone(), &tc, bad.view());
    assert!(e.contains("row 5, column 2"), "{e}");
    let e = err(base.clone(), &tc, x.slice(ndarray::s![0..0, ..]));
    assert!(e.contains("no activation rows"), "{e}");
    let e = err(base.clone(), &tc, x.slice(ndarray::s![.., 0..3]));
    assert!(e.contains("expected shape"), "{e}");
    let e = err(
        base.clone(),
        &TrainConfig {
            lr: -1.0,
            ..tc.clone()
        },
        x.view(),
    );
    assert!(e.contains("lr"), "{e}");
    let e = err(
        SaeConfig {
            architecture: Architecture::BatchTopK { k: 8 },
            ..base.clone()
        },
        &tc,
        x.view(),
    );
    assert!(e.contains("k = 8"), "{e}");
    let e = err(
        base,
        &TrainConfig {
            jumprelu_bandwidth: 0.0,
            ..tc.clone()
        },
        x.view(),
    );
    assert!(e.contains("jumprelu_bandwidth"), "{e}");
}
