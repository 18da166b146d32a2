//! Products with few rows: the panel kernel (`circuitry_models::gemm::panels`) against
//! the general product (MKL where it loads, else faer) on the same operands, in one run,
//! alternating, medians; prints the CPU and the ratio per row count. Not a test.
//!
//!     cargo run --release -p circuitry-sae --example bench_panels -- [K=768] [N=3072] [REPS=7] [avx2]
//!
//! `avx2` runs the AVX2 kernel (the one AMD EPYCs without AVX-512 get) on a CPU that also
//! has AVX-512; with `MKL_ENABLE_INSTRUCTIONS=AVX2` MKL does the same, which stands in
//! for such a CPU on an Intel one.
//!
//! Each measurement multiplies by 48 distinct weights of `K × N` (441 MB at the default,
//! more than this machine's last-level cache, as a model's weights are), so both sides
//! stream their weights from memory as a circuit's attribution pass does.
use std::time::Instant;

use circuitry_models::gemm::{matmul, panels};
use circuitry_sae::kernel::{use_for_transformer, Backend, GemmChoice, MklSettings, MKL_ENV};
use ndarray::Array2;
use rand::{Rng, SeedableRng};

const WEIGHTS: usize = 48;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let isa = if args.last().is_some_and(|a| a == "avx2") {
        args.pop();
        panels::Isa::Avx2
    } else {
        panels::Isa::detect().ok_or_else(|| anyhow::anyhow!("no AVX-512 or AVX2 on this CPU"))?
    };
    anyhow::ensure!(isa.available(), "this CPU lacks {isa:?}");
    let args: Vec<usize> = args.iter().map(|a| a.parse()).collect::<Result<_, _>>()?;
    let (k, n, reps) = (
        args.first().copied().unwrap_or(768),
        args.get(1).copied().unwrap_or(3072),
        args.get(2).copied().unwrap_or(7),
    );
    // As the circuit stage does: freed arrays stay in the heap, not unmapped.
    circuitry_sae::keep_freed_memory();
    // CIRCUITRY_PANELS as the stage binaries read it (auto, avx2 or off).
    let panels_env = std::env::var(circuitry_models::gemm::panels::PANELS_ENV).ok();
    circuitry_models::gemm::panels::set_choice(panels_env.as_deref())
        .map_err(anyhow::Error::msg)?;
    let mkl = MklSettings::new(std::env::var_os(MKL_ENV), Default::default());
    let general = use_for_transformer(Backend::resolve(GemmChoice::Auto, &mkl)?);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "cpu: {cpu}; threads {}; {WEIGHTS} weights of {k} × {n}; panels: {isa:?}; general product: {general}",
        rayon::current_num_threads()
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let weights: Vec<Array2<f32>> = (0..WEIGHTS)
        .map(|_| Array2::from_shape_fn((k, n), |_| rng.random_range(-1.0f32..1.0)))
        .collect();
    let caches: Vec<panels::Panels> = (0..WEIGHTS).map(|_| Default::default()).collect();
    println!("rows | panels (ms per product) | general (ms) | general / panels | max |diff|");
    for rows in [2, 3, 5, 10, 20, panels::MAX_ROWS] {
        let x = Array2::from_shape_fn((rows, k), |_| rng.random_range(-1.0f32..1.0));
        let (mut ours, mut theirs, mut diff) = (Vec::new(), Vec::new(), 0.0f32);
        for _ in 0..reps {
            let t = Instant::now();
            let mut got = Vec::with_capacity(WEIGHTS);
            for (w, c) in weights.iter().zip(&caches) {
                got.push(panels::product_with(isa, x.view(), w.view(), c));
            }
            ours.push(t.elapsed().as_secs_f64() / WEIGHTS as f64);
            let t = Instant::now();
            let mut want = Vec::with_capacity(WEIGHTS);
            for w in &weights {
                want.push(matmul(x.view(), w.view()));
            }
            theirs.push(t.elapsed().as_secs_f64() / WEIGHTS as f64);
            for (g, w) in got.iter().zip(&want) {
                let Some(g) = g else {
                    anyhow::bail!("the panel product declined {rows} rows");
                };
                diff = g.iter().zip(w).fold(diff, |m, (a, b)| m.max((a - b).abs()));
            }
        }
        // The first repetition builds the panels: medians leave it out.
        let (o, t) = (median(ours), median(theirs));
        println!(
            "{rows:4} | {:.3} | {:.3} | {:.2}x | {diff:.1e}",
            o * 1e3,
            t * 1e3,
            t / o
        );
    }
    Ok(())
}
