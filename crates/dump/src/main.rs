//! `circuitry-dump`: run a model and write its activations to an activation store.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use circuitry_core::binary;
use circuitry_core::params::{DumpToyOptions, StageOptions};
use circuitry_core::preflight::MemoryLimit;
use circuitry_dump::onnx::runtime::ORT_LIBRARY_ENV;
use circuitry_dump::onnx::{self, cli::OnnxArgs};
use circuitry_dump::toy::{self, NounSet, ToyDumpConfig};
use clap::{Parser, Subcommand};

/// Run a model over inputs and write activations at hook points to Parquet.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `circuitry-dump onnx`'s arguments and `--check-only`.
#[derive(Debug, clap::Args)]
struct OnnxCommand {
    #[command(flatten)]
    args: OnnxArgs,
    /// Only check the options, the sidecar, the tokenizer, the input (corpus or
    /// pairs, line by line), the memory estimate and that --out can be written; exit
    /// 0 or 2 (one line on stderr), writing nothing.
    #[arg(long)]
    check_only: bool,
    /// With --check-only: compare the memory estimate with BYTES instead of this
    /// machine's memory (`circuitry submit` passes the memory of the Slurm job).
    #[arg(long, value_name = "BYTES", requires = "check_only", hide = true)]
    memory_limit: Option<u64>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dump the toy agreement network (toy.hook_input, toy.hook_hidden, toy.hook_logits).
    Toy {
        /// Directory of a model written by circuitry-train-toy.
        #[arg(long)]
        model: PathBuf,
        /// Output store directory.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        options: DumpToyOptions,
        /// Only check the options, inputs that exist, the memory estimate and that
        /// --out can be written; exit 0 or 2 (one line on stderr), writing nothing.
        #[arg(long)]
        check_only: bool,
        /// With --check-only: compare the memory estimate with BYTES instead of this
        /// machine's memory (`circuitry submit` passes the memory of the Slurm job).
        #[arg(long, value_name = "BYTES", requires = "check_only", hide = true)]
        memory_limit: Option<u64>,
    },
    /// Dump a GPT-2 or Llama model exported by scripts/export_onnx.py, run with ONNX Runtime.
    Onnx(OnnxCommand),
    /// Benchmark reference: the `onnx` dump's inference without writing; prints JSON.
    #[command(hide = true)]
    BenchOrt(OnnxArgs),
}

/// Run `cli`'s command; `ort_library` is `$ORT_DYLIB_PATH`.
fn run(cli: Cli, ort_library: Option<PathBuf>) -> Result<()> {
    if let Command::BenchOrt(args) = cli.command {
        let cfg = args.into_config(ort_library).context("invalid arguments")?;
        let timing = onnx::bench::bare_ort(&cfg).context("running bare ONNX Runtime")?;
        println!("{}", serde_json::to_string(&timing)?);
        return Ok(());
    }
    let timer =
        circuitry_core::StageTimer::start("circuitry-dump", std::env::args().skip(1).collect());
    match cli.command {
        Command::Toy {
            model,
            out,
            options: o,
            check_only,
            memory_limit,
        } => {
            o.check()?;
            let cfg = ToyDumpConfig {
                model,
                out,
                n_examples: o.n_examples.unwrap_or(toy::DEFAULT_EXAMPLES),
                seed: o.seed.unwrap_or(toy::DEFAULT_SEED),
                noise: o.noise,
                nouns: o.nouns.unwrap_or(NounSet::All),
                shard_rows: o.shard_rows.unwrap_or(circuitry_dump::DEFAULT_SHARD_ROWS),
            }
            .check()
            .context("invalid arguments")?;
            if check_only {
                return Ok(toy::check_only(&cfg, MemoryLimit::from_flag(memory_limit))?);
            }
            let meta =
                toy::dump(&cfg).with_context(|| format!("dumping into {}", cfg.out.display()))?;
            let mut outputs = report(&meta, &cfg.out);
            outputs.push("meta.json");
            timer.finish(&cfg, &[&cfg.model], &cfg.out, &outputs)?;
        }
        Command::Onnx(OnnxCommand {
            args,
            check_only,
            memory_limit,
        }) => {
            let part = args.part;
            let cfg = args.into_config(ort_library).context("invalid arguments")?;
            if check_only {
                return Ok(onnx::check_only(
                    &cfg,
                    MemoryLimit::from_flag(memory_limit),
                )?);
            }
            if let Some(part) = part {
                // An array task: the plain command assembles the parts and records the stage.
                let meta = onnx::dump_part(&cfg, part)
                    .with_context(|| format!("dumping part {part} into {}", cfg.out.display()))?;
                report(&meta, &part.dir(&cfg.out));
                return Ok(());
            }
            let meta =
                onnx::dump(&cfg).with_context(|| format!("dumping into {}", cfg.out.display()))?;
            let mut outputs = report(&meta, &cfg.out);
            if meta.spec().paired {
                outputs.push(onnx::EXAMPLES_FILE);
            }
            outputs.push("meta.json");
            let inputs = [
                cfg.onnx_path(),
                cfg.tokenizer_path(),
                cfg.input.path().to_path_buf(),
            ];
            let inputs: Vec<&std::path::Path> = inputs.iter().map(|p| p.as_path()).collect();
            timer.finish(&cfg, &inputs, &cfg.out, &outputs)?;
        }
        Command::BenchOrt(_) => {}
    }
    Ok(())
}

fn main() -> ExitCode {
    binary::init_logging(
        std::env::var("RUST_LOG").ok().as_deref(),
        "warn,circuitry_core::progress=info",
    );
    let ort_library = std::env::var_os(ORT_LIBRARY_ENV).map(PathBuf::from);
    binary::exit(run(Cli::parse(), ort_library))
}

/// Print what a dump wrote and list its shard files (the stage's outputs so far).
fn report<'a>(meta: &'a circuitry_store::StoreMeta, out: &std::path::Path) -> Vec<&'a str> {
    eprintln!(
        "dumped {} rows in {} shard(s) into {}",
        meta.n_rows,
        meta.shards.len(),
        out.display()
    );
    meta.shards.iter().map(|s| s.file.as_str()).collect()
}
