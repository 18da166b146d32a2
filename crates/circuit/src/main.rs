//! `circuitry-circuit`: build, evaluate and draw feature circuits.
//!
//! `circuitry-circuit toy --model DIR --sae DIR --store DIR --out DIR` builds the seed's
//! toy circuit and writes circuit.json, circuit.dot, circuit.svg, summary.txt and, last,
//! stage.json. `circuitry-circuit gpt2 --model DIR --sae DIR... --store DIR --out DIR`
//! finds, evaluates and draws a sparse feature circuit of a GPT-2 or Llama model on paired prompts.
//! Bad input: one error line, exit code 2, nothing written.
mod cli_gpt2;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use circuitry_circuit::gpt2::stage::run_gpt2_stage;
use circuitry_circuit::stage::{run_toy_stage, ToyStageConfig};
use circuitry_core::StageTimer;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "circuitry-circuit",
    version,
    about = "Build and draw feature circuits"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The toy agreement network's circuit: inputs → hidden → SAE features → outputs.
    Toy(ToyArgs),
    /// A sparse feature circuit of a GPT-2 or Llama model on paired prompts (Marks et al. 2024).
    #[command(visible_alias = "lm")]
    Gpt2(Box<cli_gpt2::Gpt2Args>),
}

#[derive(Debug, clap::Args)]
struct ToyArgs {
    /// Toy model directory (config.json, model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// SAE directory containing cfg.json (trained on toy.hook_hidden).
    #[arg(long)]
    sae: PathBuf,
    /// Activation store directory with toy.hook_input and toy.hook_hidden.
    #[arg(long)]
    store: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Strongest paths listed per output in the summary.
    #[arg(long, default_value_t = 5)]
    top_paths: usize,
    /// Prune edges whose |mean weight| is below this over all examples and in each group.
    #[arg(long, default_value_t = 0.0)]
    min_weight: f64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Toy(args) => toy(args),
        Command::Gpt2(args) => gpt2(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("circuitry-circuit: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn toy(args: ToyArgs) -> anyhow::Result<()> {
    let timer = StageTimer::start("circuitry-circuit");
    let cfg = ToyStageConfig {
        model: args.model,
        sae: args.sae,
        store: args.store,
        out: args.out,
        top_paths: args.top_paths,
        min_weight: args.min_weight,
    }
    .check()?;
    let _span = tracing::info_span!("circuit_toy", out = %cfg.out.display()).entered();
    let summary = run_toy_stage(&cfg, timer)
        .with_context(|| format!("building the toy circuit into {}", cfg.out.display()))?;
    print!("{summary}");
    Ok(())
}

fn gpt2(args: cli_gpt2::Gpt2Args) -> anyhow::Result<()> {
    let timer = StageTimer::start("circuitry-circuit");
    let cfg = args.into_config()?;
    let _span = tracing::info_span!("circuit_gpt2", out = %cfg.out.display()).entered();
    let summary = run_gpt2_stage(&cfg, timer)
        .with_context(|| format!("building the circuit into {}", cfg.out.display()))?;
    print!("{summary}");
    Ok(())
}
