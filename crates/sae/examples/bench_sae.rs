//! Training throughput of one SAE step (encode, activation, decode, loss, backward,
//! Adam) through the public `Trainer`, and the dense products it rests on; driven by
//! `scripts/bench_sae.sh`, which runs the PyTorch peer in the same run.
//!
//! `cargo run --release -p circuitry-sae --example bench_sae -- [ARCH] [STEPS]
//! [THREADS] [BATCH] [D_IN] [D_SAE] [K] [GEMM]`, ARCH `standard`, `topk` or `gemm`,
//! GEMM `faer` (default), `mkl`, `mkl-prefilter` (TopK's exact bf16 prefilter) or
//! `auto`; prints one JSON line of medians.
use std::time::Instant;

use circuitry_core::HookPoint;
use circuitry_sae::kernel::{
    pre_activations_with, Backend, Gemm, GemmChoice, MklSettings, MKL_ENV,
};
use circuitry_sae::{Architecture, SaeConfig, TrainConfig, Trainer};
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // As circuitry-train-sae does.
    circuitry_sae::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: usize| -> anyhow::Result<usize> {
        Ok(args.get(i).map_or(Ok(default), |s| s.parse())?)
    };
    let arch = args.get(1).map_or("topk", String::as_str).to_string();
    let (steps, threads) = (arg(2, 5)?, arg(3, 2)?);
    let (batch, d_in, d_sae, k) = (arg(4, 4096)?, arg(5, 768)?, arg(6, 24576)?, arg(7, 32)?);
    let gemm_arg = args.get(8).map_or("faer", String::as_str);
    let (gemm, prefilter) = match gemm_arg {
        "faer" => (GemmChoice::Faer, false),
        "mkl" => (GemmChoice::Mkl, false),
        "mkl-prefilter" => (GemmChoice::Mkl, true),
        "auto" => (GemmChoice::Auto, false),
        other => anyhow::bail!("unknown GEMM {other:?}: use faer, mkl, mkl-prefilter or auto"),
    };
    // MKL as circuitry-train-sae finds it ($CIRCUITRY_MKL), in the default CNR mode.
    let mkl = MklSettings::new(std::env::var_os(MKL_ENV), Default::default());
    let backend = Backend::resolve(gemm, &mkl)?;
    if prefilter && !circuitry_sae::kernel::topk_prefilter_available(backend, d_in, d_sae) {
        anyhow::bail!("the TopK bf16 prefilter does not run here (needs MKL and AVX512-BF16)");
    }
    let side = if prefilter {
        "mkl-prefilter"
    } else {
        backend.name()
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let x = Array2::from_shape_fn((batch, d_in), |_| {
        let v: f32 = StandardNormal.sample(&mut rng);
        v
    }); // (batch, d_in)
    let flop_gemm = 2.0 * (batch * d_in * d_sae) as f64;

    if arch == "gemm" {
        // The encoder's product alone: this backend's sgemm at this shape.
        let w = Array2::from_shape_fn((d_in, d_sae), |(i, j)| ((i * 7 + j) % 13) as f32 * 0.01); // (d_in, d_sae)
        let mut c = Array2::<f32>::zeros((batch, d_sae)); // (batch, d_sae)
        let mut times = Vec::new();
        for _ in 0..steps + 1 {
            let t = Instant::now();
            f32::gemm(backend, c.view_mut(), false, x.view(), w.view(), 1.0);
            times.push(t.elapsed().as_secs_f64());
        }
        times.remove(0);
        let s = median(times);
        println!(
            "{{\"side\":\"{side}\",\"what\":\"sgemm\",\"seconds\":{s},\"gflops\":{}}}",
            flop_gemm / s / 1e9
        );
        return Ok(());
    }

    let mut cfg = SaeConfig::new(d_in, d_sae, HookPoint::ResidPre { layer: 0 });
    cfg.architecture = match arch.as_str() {
        "standard" => Architecture::Standard,
        "topk" => Architecture::TopK { k },
        other => anyhow::bail!("unknown ARCH {other:?}: use standard, topk or gemm"),
    };
    let train_cfg = TrainConfig {
        batch_size: batch,
        steps: 1000,
        lr: 1e-4,
        l1_coefficient: 1.0,
        b_dec_init: circuitry_sae::BDecInit::Zeros,
        gemm,
        topk_prefilter: prefilter,
        mkl,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(cfg, &train_cfg, x.view())?;
    let mut step_times = Vec::new();
    for _ in 0..steps + 1 {
        let t = Instant::now();
        trainer.step(x.view())?;
        step_times.push(t.elapsed().as_secs_f64());
    }
    step_times.remove(0); // warm-up
    let step = median(step_times);
    // The encoder (dense) inside a step.
    let mut enc_times = Vec::new();
    for _ in 0..steps.min(3) {
        let t = Instant::now();
        let pre = pre_activations_with(backend, &trainer.sae().params(), x.view(), true);
        enc_times.push(t.elapsed().as_secs_f64());
        drop(pre);
    }
    let enc = median(enc_times);
    // Standard: five products of 2·B·d_in·d_sae FLOP (encode, decode, three backward).
    let dense_flop = if arch == "standard" {
        5.0 * flop_gemm
    } else {
        flop_gemm
    };
    println!(
        "{{\"side\":\"{side}\",\"what\":\"{arch}\",\"step_s\":{step},\"tokens_per_s\":{},\"encoder_s\":{enc},\"encoder_gflops\":{},\"step_dense_gflops\":{}}}",
        batch as f64 / step,
        flop_gemm / enc / 1e9,
        dense_flop / step / 1e9
    );
    Ok(())
}
