//! `circuitry-train-sae`: train an SAE on one hook of an activation store.
//! Glue only: arguments → validated [`StageConfig`] → [`stage::run`].
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use circuitry_core::HookPoint;
use circuitry_sae::stage::{self, StageConfig};
use circuitry_sae::{Architecture, TrainConfig};
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ArchArg {
    Standard,
    Topk,
}

/// Train a sparse autoencoder on one hook's activations and write it in SAELens layout
/// to OUT/<hook name>/, then OUT/stage.json.
#[derive(Debug, Parser)]
#[command(name = "circuitry-train-sae", version)]
struct Args {
    /// Activation store directory (written by the dump stage).
    #[arg(long)]
    store: PathBuf,
    /// Hook to train on, as a TransformerLens name (e.g. toy.hook_hidden).
    #[arg(long)]
    hook: String,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Number of SAE latents.
    #[arg(long)]
    d_sae: usize,
    /// SAE architecture.
    #[arg(long, value_enum, default_value = "standard")]
    architecture: ArchArg,
    /// Active latents per row (TopK only).
    #[arg(long)]
    k: Option<usize>,
    /// Sparsity penalty λ (standard only).
    #[arg(long)]
    l1_coefficient: Option<f64>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Optimiser steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Rows per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of rows held out for the final evaluation.
    #[arg(long, default_value_t = 0.1)]
    eval_fraction: f64,
    /// Learning-rate warm-up steps (default: 100, capped at steps / 10).
    #[arg(long)]
    lr_warm_up_steps: Option<usize>,
    /// Steps of linear learning-rate decay to 0 at the end (default: steps / 5).
    #[arg(long)]
    lr_decay_steps: Option<usize>,
    /// Steps of linear L1 warm-up (default: steps / 10).
    #[arg(long)]
    l1_warm_up_steps: Option<usize>,
    /// Model name for cfg.json (default: the store's).
    #[arg(long)]
    model_name: Option<String>,
}

fn config(a: Args) -> anyhow::Result<StageConfig> {
    let hook: HookPoint = a.hook.parse().context("--hook")?;
    let architecture = match (a.architecture, a.k) {
        (ArchArg::Standard, None) => Architecture::Standard,
        (ArchArg::Standard, Some(_)) => bail!("--k is only meaningful with --architecture topk"),
        (ArchArg::Topk, Some(k)) => Architecture::TopK { k },
        (ArchArg::Topk, None) => bail!("--architecture topk needs --k N (active latents per row)"),
    };
    let d = TrainConfig::default();
    let steps = a.steps.unwrap_or(d.steps);
    let train = TrainConfig {
        lr: a.lr.unwrap_or(d.lr),
        l1_coefficient: a.l1_coefficient.unwrap_or(d.l1_coefficient),
        steps,
        batch_size: a.batch_size.unwrap_or(d.batch_size),
        seed: a.seed,
        lr_warm_up_steps: a
            .lr_warm_up_steps
            .unwrap_or(d.lr_warm_up_steps.min(steps / 10)),
        lr_decay_steps: a.lr_decay_steps.unwrap_or(steps / 5),
        l1_warm_up_steps: a.l1_warm_up_steps.unwrap_or(steps / 10),
        ..d
    };
    Ok(StageConfig {
        store: a.store,
        hook,
        out: a.out,
        d_sae: a.d_sae,
        architecture,
        model_name: a.model_name,
        eval_fraction: a.eval_fraction,
        train,
    })
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = config(Args::parse()).and_then(|cfg| {
        stage::run(&cfg).with_context(|| {
            format!(
                "training an SAE on {} from {}",
                cfg.hook,
                cfg.store.display()
            )
        })
    });
    match result {
        Ok(s) => {
            let m = s.eval_metrics.unwrap_or(s.train_metrics);
            let on = if s.eval_metrics.is_some() {
                "held-out"
            } else {
                "training"
            };
            println!(
                "wrote {}: {on} explained variance {:.4}, L0 {:.3}, dead fraction {:.3} ({} train rows, {} held out)",
                s.sae_dir.display(),
                m.explained_variance,
                m.l0,
                m.dead_fraction,
                s.train_rows,
                s.eval_rows
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
