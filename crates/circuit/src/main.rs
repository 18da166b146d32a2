//! `circuitry-circuit`: build, evaluate and draw feature circuits.
//!
//! `circuitry-circuit toy --model DIR --sae DIR --store DIR --out DIR` builds the seed's
//! toy circuit and writes circuit.json, circuit.dot, circuit.svg, summary.txt and, last,
//! stage.json. `circuitry-circuit gpt2 --model DIR --sae DIR... --store DIR --out DIR`
//! finds, evaluates and draws a sparse feature circuit of a GPT-2 or Llama model on paired prompts.
//! Bad input: one error line, exit code 2, nothing written.
mod cli_gpt2;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use circuitry_circuit::gpt2::parts::ROUNDS;
use circuitry_circuit::gpt2::stage::{load_saes, run_gpt2_part, run_gpt2_stage, PartOutcome};
use circuitry_circuit::stage::{run_toy_stage, ToyStageConfig};
use circuitry_core::binary;
use circuitry_core::params::{CircuitToyOptions, StageOptions};
use circuitry_core::preflight::{check_writable, MemoryEstimate, MemoryLimit};
use circuitry_core::StageTimer;
use circuitry_models::gemm::panels::{self, PANELS_ENV};
use circuitry_sae::kernel::{use_for_transformer, Backend, MklSettings, MKL_ENV};
use circuitry_store::ActivationStore;
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
    #[command(flatten)]
    options: CircuitToyOptions,
    /// Only check the options, the inputs that exist (SAE, store), the memory
    /// estimate and that --out can be written; exit 0 or 2 (one line on stderr),
    /// writing nothing.
    #[arg(long)]
    check_only: bool,
    /// With --check-only: compare the memory estimate with BYTES instead of this
    /// machine's memory (`circuitry submit` passes the memory of the Slurm job).
    #[arg(long, value_name = "BYTES", requires = "check_only", hide = true)]
    memory_limit: Option<u64>,
}

fn main() -> ExitCode {
    // Every IG step and edge chunk allocates and frees the same multi-MB activations;
    // glibc would hand them back to the kernel and fault them in again (about 7% of
    // IG on SmolLM2). Before any thread starts.
    circuitry_sae::keep_freed_memory();
    binary::init_logging(
        std::env::var("RUST_LOG").ok().as_deref(),
        "warn,circuitry_core::progress=info",
    );
    let cli = Cli::parse();
    let panels = std::env::var(PANELS_ENV).ok();
    if let Err(e) = panels::set_choice(panels.as_deref()) {
        return binary::exit(Err(anyhow::anyhow!(e)));
    }
    binary::exit(match cli.command {
        Command::Toy(args) => toy(args),
        Command::Gpt2(args) => gpt2(*args),
    })
}

fn toy(args: ToyArgs) -> anyhow::Result<()> {
    let timer = StageTimer::start("circuitry-circuit", std::env::args().skip(1).collect());
    let check_only = args.check_only;
    args.options.check()?;
    let cfg = ToyStageConfig {
        model: args.model,
        sae: args.sae,
        store: args.store,
        out: args.out,
        top_paths: args.options.top_paths.unwrap_or(5),
        min_weight: args.options.min_weight.unwrap_or(0.0),
    }
    .check()?;
    let limit = MemoryLimit::from_flag(args.memory_limit);
    preflight(
        &cfg.out,
        std::slice::from_ref(&cfg.sae),
        &cfg.store,
        None,
        limit,
    )?;
    if check_only {
        return Ok(());
    }
    let _span = tracing::info_span!("circuit_toy", out = %cfg.out.display()).entered();
    let summary = run_toy_stage(&cfg, timer)
        .with_context(|| format!("building the toy circuit into {}", cfg.out.display()))?;
    print!("{summary}");
    Ok(())
}

fn gpt2(args: cli_gpt2::Gpt2Args) -> anyhow::Result<()> {
    let timer = StageTimer::start("circuitry-circuit", std::env::args().skip(1).collect());
    let check_only = args.check_only;
    let limit = MemoryLimit::from_flag(args.memory_limit);
    let part = args.part;
    let gemm = args.gemm();
    let cfg = args.into_config()?;
    // The transformer's products: `--gemm mkl` without MKL fails here, writing nothing.
    let mkl = MklSettings::new(std::env::var_os(MKL_ENV), Default::default());
    let products = use_for_transformer(Backend::resolve(gemm, &mkl)?);
    tracing::info!(gemm = %products, "the transformer's products");
    preflight(
        &cfg.out,
        &cfg.saes,
        &cfg.store,
        Some((cfg.batch_size, cfg.max_rows)),
        limit,
    )?;
    if check_only {
        return Ok(());
    }
    let _span = tracing::info_span!("circuit_gpt2", out = %cfg.out.display()).entered();
    if let Some(part) = part {
        // An array task: one round of one part; the plain command assembles the parts.
        let outcome = run_gpt2_part(&cfg, part)
            .with_context(|| format!("computing part {part} into {}", cfg.out.display()))?;
        match outcome {
            PartOutcome::Wrote(round, file) => eprintln!(
                "part {part}: round {} of {} ({}) written to {}",
                round.number(),
                ROUNDS.len(),
                round.what(),
                file.display()
            ),
            PartOutcome::AllDone => eprintln!(
                "part {part}: all {} rounds done; run without --part to assemble the circuit",
                ROUNDS.len()
            ),
        }
        return Ok(());
    }
    let summary = run_gpt2_stage(&cfg, timer)
        .with_context(|| format!("building the circuit into {}", cfg.out.display()))?;
    print!("{summary}");
    Ok(())
}

/// The checks both subcommands make before their work (and all that
/// `--check-only` does): `--out` can be written; the SAEs that exist load (an
/// incomplete SAE folder is refused) and the store opens once a dump has finished it; for GPT-2, an
/// SAE whose hook the store lacks is reported (warning); and the memory estimate fits
/// `limit`.
/// `gpt2` is (pairs per batch, rows per forward pass) for the GPT-2 circuit.
fn preflight(
    out: &Path,
    saes: &[PathBuf],
    store: &Path,
    gpt2: Option<(usize, usize)>,
    limit: MemoryLimit,
) -> anyhow::Result<()> {
    check_writable(out, "--out")?;
    // A folder holding only hidden entries is an upstream train-sae stage still at
    // work (its checkpoints, a temporary SAE folder): not produced yet, as when absent.
    let produced = |p: &&PathBuf| {
        p.is_file()
            || std::fs::read_dir(p).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| !e.file_name().to_string_lossy().starts_with('.'))
            })
    };
    let existing: Vec<PathBuf> = saes.iter().filter(produced).cloned().collect();
    let saes = if existing.is_empty() {
        Vec::new()
    } else {
        load_saes(&existing)?
    };
    // None: written by an earlier stage that has not run yet, or has not finished
    // (a dump that stopped resumes first).
    let Some(store) = ActivationStore::open_if_finished(store)? else {
        return Ok(());
    };
    let have = store.hooks();
    // (The toy stage refuses such an SAE itself, with its own message.)
    for (dir, sae) in saes.iter().filter(|_| gpt2.is_some()) {
        if !have.contains(&sae.cfg.hook_name) {
            tracing::warn!(
                "SAE {} is for hook {}, which the activation store {} does not hold: it is loaded but has no cached activations to check against; dump that hook or leave the SAE out of --sae",
                dir.display(),
                sae.cfg.hook_name,
                store.dir().display()
            );
        }
    }
    let rows = u128::from(store.n_rows());
    let mut est = MemoryEstimate::new();
    let widths: u128 = store.meta().hooks.iter().map(|h| h.width as u128).sum();
    est.add("cached activations", rows.saturating_mul(widths), 4);
    let per_row: u128 = saes
        .iter()
        .map(|(_, s)| s.cfg.d_sae as u128 + s.cfg.d_in as u128)
        .sum();
    // Rows in flight: every row for the toy circuit; a batch's clean and patch
    // rows (at most --max-rows per pass) for GPT-2, each with codes, errors and
    // their gradients at every SAE (4 copies).
    let flight = match gpt2 {
        None => rows,
        Some((batch, max_rows)) => {
            let seq = store.meta().context_size as u128;
            (2 * batch as u128 * seq).max(max_rows as u128)
        }
    };
    est.add(
        "SAE codes and gradients",
        flight.saturating_mul(per_row),
        4 * 4,
    );
    est.check_within(
        "circuitry-circuit",
        "lower --batch-size or --max-rows, or give fewer SAEs",
        limit,
    )?;
    Ok(())
}
