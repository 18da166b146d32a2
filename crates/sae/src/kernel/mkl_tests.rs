//! The MKL backend against an `f64` reference and against faer, and its bitwise
//! reproducibility across thread counts and array alignments. Each test prints why
//! it is skipped when MKL is not installed (`scripts/setup-mkl.sh`).
use ndarray::{Array2, ArrayView2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{loss_and_grads, AuxK, Backend, Gemm, GemmChoice, LossSpec, Mkl, Params};
use crate::Architecture;

fn mkl() -> Option<Backend> {
    match Backend::resolve(GemmChoice::Mkl, &super::MklSettings::default()) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("skipped: MKL is not installed ({e})");
            None
        }
    }
}

fn normal(shape: (usize, usize), seed: u64) -> Array2<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn(shape, |_| {
        let v: f32 = StandardNormal.sample(&mut r);
        v
    })
}

/// `a b` in `f64`, summed in order.
fn reference(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Array2<f64> {
    a.mapv(f64::from).dot(&b.mapv(f64::from))
}

fn max_rel_diff(got: &Array2<f32>, want: &Array2<f64>) -> f64 {
    let scale = want.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max)
        / scale
}

/// The same values in a buffer shifted by `offset` elements, so that the view's
/// start has another alignment.
fn shifted(a: &Array2<f32>, offset: usize) -> (Vec<f32>, (usize, usize)) {
    let mut buf = vec![0.0f32; offset];
    buf.extend(a.iter().copied());
    (buf, a.dim())
}

#[test]
fn mkl_products_match_an_f64_reference_and_faer() {
    let Some(mkl) = mkl() else { return };
    if let Backend::Mkl(m) = mkl {
        eprintln!(
            "MKL: {} (CNR {}) at {}",
            m.version,
            m.cbwr,
            m.path.display()
        );
    }
    // (m, k, n): one block, several blocks along rows and along columns, ragged ends,
    // the degenerate n = 1 of the centring gradient.
    for (m, k, n) in [
        (7, 5, 3),
        (1100, 40, 37),
        (33, 70, 1500),
        (600, 1, 9),
        (64, 300, 1),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a_own = if ta {
                normal((k, m), 1)
            } else {
                normal((m, k), 1)
            };
            let b_own = if tb {
                normal((n, k), 2)
            } else {
                normal((k, n), 2)
            };
            let a = if ta { a_own.t() } else { a_own.view() };
            let b = if tb { b_own.t() } else { b_own.view() };
            let want = reference(a, b) * 0.5;
            let mut got_mkl = Array2::<f32>::zeros((m, n));
            let mut got_faer = Array2::<f32>::zeros((m, n));
            f32::gemm(mkl, got_mkl.view_mut(), false, a, b, 0.5);
            f32::gemm(Backend::Faer, got_faer.view_mut(), false, a, b, 0.5);
            let (d_mkl, d_faer) = (
                max_rel_diff(&got_mkl, &want),
                max_rel_diff(&got_faer, &want),
            );
            eprintln!("({m}, {k}, {n}) transposed {ta}/{tb}: max relative diff mkl {d_mkl:.2e}, faer {d_faer:.2e}");
            assert!(d_mkl < 1e-5, "MKL product off by {d_mkl}");
            // Accumulating adds the product once more.
            f32::gemm(mkl, got_mkl.view_mut(), true, a, b, 0.5);
            let d_acc = max_rel_diff(&got_mkl, &(&want * 2.0));
            assert!(d_acc < 1e-5, "MKL accumulation off by {d_acc}");
        }
    }
    // f64 (the gradient checks run in it).
    let (a, b) = (normal((300, 200), 3), normal((200, 700), 4));
    let want = reference(a.view(), b.view());
    let mut got = Array2::<f64>::zeros((300, 700));
    f64::gemm(
        mkl,
        got.view_mut(),
        false,
        a.mapv(f64::from).view(),
        b.mapv(f64::from).view(),
        1.0,
    );
    let d = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    eprintln!("dgemm (300, 200, 700): max diff {d:.2e}");
    assert!(d < 1e-11, "MKL dgemm off by {d}");
}

#[test]
fn mkl_products_are_bitwise_reproducible_across_threads_and_alignment() {
    let Some(mkl) = mkl() else { return };
    // Shapes of a (scaled-down) training step: encoder, decoder and a weight gradient.
    let x = normal((1030, 96), 5); // (rows, d_in)
    let w = normal((96, 2100), 6); // (d_in, d_sae)
    let f = normal((1030, 2100), 7); // (rows, d_sae)
    let run = |threads: usize, offset: usize| -> Vec<Array2<f32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (xb, xd) = shifted(&x, offset);
        let (fb, fd) = shifted(&f, offset);
        let xv = ArrayView2::from_shape(xd, &xb[offset..]).unwrap();
        let fv = ArrayView2::from_shape(fd, &fb[offset..]).unwrap();
        pool.install(|| {
            let mut enc = Array2::<f32>::zeros((1030, 2100));
            f32::gemm(mkl, enc.view_mut(), false, xv, w.view(), 1.0);
            let mut dec = Array2::<f32>::zeros((1030, 96));
            f32::gemm(mkl, dec.view_mut(), false, fv, w.t(), 1.0);
            let mut g = Array2::<f32>::zeros((96, 2100));
            f32::gemm(mkl, g.view_mut(), false, xv.t(), fv, 1.0);
            vec![enc, dec, g]
        })
    };
    let first = run(1, 0);
    for (threads, offset) in [(1, 0), (2, 0), (3, 1), (2, 3), (4, 7)] {
        let again = run(threads, offset);
        for (i, (a, b)) in first.iter().zip(&again).enumerate() {
            let differing = a
                .iter()
                .zip(b)
                .filter(|(p, q)| p.to_bits() != q.to_bits())
                .count();
            eprintln!(
                "product {i}, {threads} threads, offset {offset}: {differing} elements differ"
            );
            assert_eq!(
                differing, 0,
                "MKL product {i} changed with {threads} threads / offset {offset}"
            );
        }
    }
}

#[test]
fn transformer_products_through_mkl_match_a_reference_for_any_thread_count() {
    use circuitry_models::gemm::Provider;
    let Some(Backend::Mkl(lib)) = mkl() else {
        return;
    };
    let provider = super::matmul::TransformerMkl(lib);
    assert!(
        provider.describe().starts_with("mkl ("),
        "{}",
        provider.describe()
    );
    // A transformer's products, scaled down: a batch of rows times a projection (wide
    // and narrow outputs), and the backward's product with a transposed weight.
    let x = normal((130, 96), 8); // (rows, d)
    let w_up = normal((96, 300), 9); // (d, d_mlp)
    let w_kv = normal((96, 40), 10); // (d, d_kv)
    let g = normal((130, 300), 11); // (rows, d_mlp)
    let run = |threads: usize| -> Vec<Array2<f32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut out = Vec::new();
            for (a, b) in [
                (x.view(), w_up.view()),
                (x.view(), w_kv.view()),
                (g.view(), w_up.t()),
            ] {
                let mut c = Array2::<f32>::zeros((a.nrows(), b.ncols()));
                assert!(provider.sgemm(c.view_mut(), false, a, b, 1.0));
                // accumulate: c += 0.5 a b
                assert!(provider.sgemm(c.view_mut(), true, a, b, 0.5));
                out.push(c);
            }
            out
        })
    };
    let first = run(1);
    let wants = [
        reference(x.view(), w_up.view()),
        reference(x.view(), w_kv.view()),
        reference(g.view(), w_up.t()),
    ];
    for (i, (got, want)) in first.iter().zip(&wants).enumerate() {
        let d = max_rel_diff(got, &(want * 1.5));
        eprintln!("transformer product {i}: max relative difference {d:.2e}");
        assert!(d < 1e-5, "transformer product {i} off by {d}");
    }
    for threads in [2, 3, 4] {
        assert_eq!(run(threads), first, "{threads} threads");
    }
}

#[test]
fn mkl_loss_and_gradients_match_faer() {
    let Some(mkl) = mkl() else { return };
    let (rows, d_in, d_sae) = (300, 24, 200);
    let w_enc = normal((d_in, d_sae), 8) * 0.3;
    let w_dec = normal((d_sae, d_in), 9) * 0.3;
    let b_enc = normal((1, d_sae), 10).row(0).to_owned() * 0.1;
    let b_dec = normal((1, d_in), 11).row(0).to_owned() * 0.1;
    let x = normal((rows, d_in), 12);
    let p = Params {
        w_enc: w_enc.view(),
        b_enc: b_enc.view(),
        w_dec: w_dec.view(),
        b_dec: b_dec.view(),
    };
    let dead: Vec<bool> = (0..d_sae).map(|i| i % 3 == 0).collect();
    for arch in [Architecture::Standard, Architecture::TopK { k: 8 }] {
        let spec = |backend| LossSpec {
            architecture: arch,
            apply_b_dec_to_input: true,
            l1_coefficient: 0.3,
            aux: Some(AuxK {
                dead: &dead,
                k_aux: 6,
                coefficient: 1.0 / 32.0,
            }),
            chunk_rows: 64,
            jump: None,
            backend,
            topk_prefilter: false,
        };
        let (t_f, g_f) = loss_and_grads(&p, x.view(), &spec(Backend::Faer)).unwrap();
        let (t_m, g_m) = loss_and_grads(&p, x.view(), &spec(mkl)).unwrap();
        let rel = |a: &Array2<f32>, b: &Array2<f32>| {
            let scale = b.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
            a.iter()
                .zip(b)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max)
                / scale
        };
        let (d_enc, d_dec) = (rel(&g_m.w_enc, &g_f.w_enc), rel(&g_m.w_dec, &g_f.w_dec));
        let d_loss = (t_m.total - t_f.total).abs() / t_f.total.abs();
        eprintln!(
            "{arch:?}: loss rel diff {d_loss:.2e}, W_enc grad {d_enc:.2e}, W_dec grad {d_dec:.2e}"
        );
        assert!(d_loss < 1e-5 && d_enc < 1e-4 && d_dec < 1e-4);
    }
    assert!(Mkl::available(&super::MklSettings::default()));
}

/// TopK with the bf16 prefilter (MKL's bf16 product, AMX or AVX512-BF16) against the
/// `f32` encoder: the same latents in every row, so the same loss and gradients up to
/// the `f32` rounding of the pre-activations (two summation orders).
#[test]
fn topk_prefilter_selects_what_the_f32_encoder_selects() {
    let Some(mkl) = mkl() else { return };
    let (rows, d_in, d_sae) = (700, 96, 3000);
    if !super::topk_prefilter_available(mkl, d_in, d_sae) {
        eprintln!("skipped: this CPU has no AVX512-BF16 (or this MKL no bf16 product)");
        return;
    }
    let w_enc = normal((d_in, d_sae), 21) * 0.1;
    let w_dec = normal((d_sae, d_in), 22) * 0.1;
    let b_enc = normal((1, d_sae), 23).row(0).to_owned() * 0.05;
    let b_dec = normal((1, d_in), 24).row(0).to_owned() * 0.1;
    let x = normal((rows, d_in), 25);
    let p = Params {
        w_enc: w_enc.view(),
        b_enc: b_enc.view(),
        w_dec: w_dec.view(),
        b_dec: b_dec.view(),
    };
    for dead in [
        vec![false; d_sae],
        (0..d_sae).map(|i| i % 11 == 4).collect(),
    ] {
        let spec = |topk_prefilter| LossSpec {
            architecture: Architecture::TopK { k: 24 },
            apply_b_dec_to_input: true,
            l1_coefficient: 0.0,
            aux: Some(AuxK {
                dead: &dead,
                k_aux: 48,
                coefficient: 1.0 / 32.0,
            }),
            chunk_rows: 128,
            jump: None,
            backend: mkl,
            topk_prefilter,
        };
        let (t_f, g_f) = loss_and_grads(&p, x.view(), &spec(false)).unwrap();
        let (t_p, g_p) = loss_and_grads(&p, x.view(), &spec(true)).unwrap();
        let max_diff = |a: &Array2<f32>, b: &Array2<f32>| {
            a.iter()
                .zip(b)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max)
        };
        let (d_enc, d_dec) = (
            max_diff(&g_p.w_enc, &g_f.w_enc),
            max_diff(&g_p.w_dec, &g_f.w_dec),
        );
        let d_loss = (t_p.total - t_f.total).abs() / t_f.total.abs();
        let n_dead = dead.iter().filter(|d| **d).count();
        eprintln!(
            "{n_dead} dead: l0 {} vs {}, fired {} vs {}; loss rel diff {d_loss:.2e}, max |ΔW_enc grad| {d_enc:.2e}, max |ΔW_dec grad| {d_dec:.2e}",
            t_p.l0,
            t_f.l0,
            t_p.fired.iter().filter(|f| **f).count(),
            t_f.fired.iter().filter(|f| **f).count(),
        );
        assert_eq!(t_p.l0, t_f.l0);
        assert_eq!(t_p.fired, t_f.fired, "the same latents fire");
        assert!(d_loss < 1e-6 && d_enc < 1e-5 && d_dec < 1e-5);
        // The pre-activations were summed in another order: the prefilter ran.
        assert!(d_loss > 0.0 || d_enc > 0.0, "the prefilter did not run");
    }
}

/// Training with the prefilter: the same seed gives the same bytes, and 40 steps stay
/// within rounding of training with the f32 encoder.
#[test]
fn topk_training_with_the_prefilter_is_deterministic_and_tracks_f32() {
    let Some(mkl) = mkl() else { return };
    let (rows, d_in, d_sae) = (256, 64, 1024);
    if !super::topk_prefilter_available(mkl, d_in, d_sae) {
        eprintln!("skipped: this CPU has no AVX512-BF16 (or this MKL no bf16 product)");
        return;
    }
    let x = normal((rows, d_in), 31);
    let train = |topk_prefilter: bool| {
        let mut cfg = crate::SaeConfig::new(
            d_in,
            d_sae,
            circuitry_core::HookPoint::ResidPre { layer: 0 },
        );
        cfg.architecture = Architecture::TopK { k: 16 };
        let tc = crate::TrainConfig {
            batch_size: rows,
            steps: 40,
            lr_warm_up_steps: 5,
            lr_decay_steps: 5,
            dead_feature_window: 10,
            b_dec_init: crate::BDecInit::Mean,
            gemm: GemmChoice::Mkl,
            topk_prefilter,
            ..crate::TrainConfig::default()
        };
        let mut t = crate::Trainer::new(cfg, &tc, x.view()).unwrap();
        for _ in 0..40 {
            t.step(x.view()).unwrap();
        }
        t.sae().w_enc.clone()
    };
    let (a, b, f) = (train(true), train(true), train(false));
    let bits = |w: &Array2<f32>| w.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b), "same seed, same bytes");
    let diff = a
        .iter()
        .zip(&f)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    let scale = f.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    eprintln!("W_enc after 40 steps: max |prefilter − f32| {diff:.2e} (max |W_enc| {scale:.2e})");
    assert!(diff <= 1e-3 * scale);
}

/// Every CNR mode `--mkl-cbwr` accepts prints back as written (the spelling recorded
/// in training.json), the default is `auto`, and `off+strict` or an unknown name is
/// refused with the list of modes. (No MKL needed.)
#[test]
fn cbwr_modes_round_trip_and_unknown_ones_are_refused() {
    use super::CbwrMode;
    for name in ["off", "auto", "compatible", "avx2", "avx512"] {
        for text in [name.to_string(), format!("{name}+strict")] {
            if text == "off+strict" {
                continue;
            }
            let mode: CbwrMode = text.parse().unwrap();
            assert_eq!(mode.to_string(), text);
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(serde_json::from_str::<CbwrMode>(&json).unwrap(), mode);
        }
    }
    assert_eq!(CbwrMode::default().to_string(), super::DEFAULT_CBWR);
    for bad in ["off+strict", "avx3", "", "AUTO", "auto+"] {
        let e = bad.parse::<CbwrMode>().unwrap_err();
        assert!(e.contains("off, auto, compatible, avx2 or avx512"), "{e}");
    }
}
