//! `circuitry-train-toy`: train the seed recipe's toy agreement network.
//!
//! Writes `model.safetensors`, `config.json`, `metrics.json` and, last, `stage.json`
//! into `--out`.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use circuitry_core::params::{StageOptions, TrainToyOptions};
use circuitry_models::toy::{self, ToyTrainConfig};
use clap::Parser;

/// Train the toy subject–verb agreement network (2 → hidden ReLU → 2).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Output directory (created if missing).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    options: TrainToyOptions,
    /// Only check the options, the memory estimate and that --out can be written;
    /// exit 0 or 2 (one line on stderr), writing nothing.
    #[arg(long)]
    check_only: bool,
    /// With --check-only: compare the memory estimate with BYTES instead of this
    /// machine's memory (`circuitry submit` passes the memory of the Slurm job).
    #[arg(long, value_name = "BYTES", requires = "check_only", hide = true)]
    memory_limit: Option<u64>,
}

/// The training's memory: the train and test sets (2 inputs and a label per example),
/// the network's parameters with their gradients and two Adam moments, and the
/// full-batch hidden activations and their gradients (n_train, hidden).
fn memory_estimate(cfg: &ToyTrainConfig) -> circuitry_core::preflight::MemoryEstimate {
    let mut est = circuitry_core::preflight::MemoryEstimate::new();
    let (n, h) = (cfg.n_train as u128, cfg.hidden as u128);
    est.add("examples", n + cfg.n_test as u128, 3 * 8);
    est.add(
        "parameters, gradients and Adam moments",
        4 * (2 * h + h + 2 * h + 2),
        8,
    );
    est.add("hidden activations", n.saturating_mul(h), 4 * 8);
    est
}

fn run(args: Args) -> Result<()> {
    let timer = circuitry_core::StageTimer::start(
        "circuitry-train-toy",
        std::env::args().skip(1).collect(),
    );
    let o = &args.options;
    o.check()?;
    let d = ToyTrainConfig::default();
    let cfg = ToyTrainConfig {
        seed: o.seed.unwrap_or(d.seed),
        n_train: o.n_train.unwrap_or(d.n_train),
        n_test: o.n_test.unwrap_or(d.n_test),
        noise: o.noise.unwrap_or(d.noise),
        epochs: o.epochs.unwrap_or(d.epochs),
        lr: o.lr.unwrap_or(d.lr),
        hidden: o.hidden.unwrap_or(d.hidden),
    }
    .check()
    .context("invalid arguments")?;
    circuitry_core::preflight::check_writable(&args.out, "--out")?;
    memory_estimate(&cfg).check_within(
        "circuitry-train-toy",
        "lower --n-train, --n-test or --hidden",
        circuitry_core::preflight::MemoryLimit::from_flag(args.memory_limit),
    )?;
    if args.check_only {
        return Ok(());
    }
    let (model, config, report) = toy::train(&cfg);
    model
        .save(&args.out, &config)
        .with_context(|| format!("saving the model to {}", args.out.display()))?;
    circuitry_core::atomic::write_json(&args.out.join("metrics.json"), &report)?;
    eprintln!(
        "toy model: train accuracy {:.4}, held-out accuracy {:.4} (nouns {}), final loss {:.4}",
        report.train_accuracy,
        report.test_accuracy,
        report.test_nouns.join(", "),
        report.final_loss
    );
    timer.finish(
        &cfg,
        &[],
        &args.out,
        &["model.safetensors", "config.json", "metrics.json"],
    )?;
    Ok(())
}

fn main() -> ExitCode {
    // (The toy trainer logs nothing, so there is no logging to set up.)
    circuitry_core::binary::exit(run(Args::parse()))
}
