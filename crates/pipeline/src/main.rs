//! `circuitry`: run and inspect pipeline manifests.
use std::path::PathBuf;
use std::process::ExitCode;

use circuitry_core::binary;
use circuitry_pipeline::slurm::{self, SubmitOptions};
use circuitry_pipeline::{
    catch_stop_signals, check_stages, run_local, BinDirs, CheckOutcome, Pipeline, Plan, RunOptions,
    BIN_DIR_ENV,
};
use clap::{Parser, Subcommand};

/// Run circuitry pipelines: each stage of a manifest runs as its own process, and
/// only stages whose inputs, options or outputs changed run again.
#[derive(Debug, Parser)]
#[command(name = "circuitry", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the stale stages of a manifest, in dependency order.
    ///
    /// Stage binaries are taken from $CIRCUITRY_BIN_DIR when set, otherwise from
    /// the directory of this executable, then PATH.
    Run {
        /// The manifest, e.g. pipelines/toy.toml.
        manifest: PathBuf,
        /// Re-run STAGE even if it is fresh (repeatable). Its dependents re-run only
        /// if its outputs change.
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Print what would run, run nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print each stage as fresh or stale, and why.
    Plan {
        /// The manifest.
        manifest: PathBuf,
        /// Show the plan as if these stages were forced.
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
    },
    /// Submit the stale stages to Slurm as jobs chained by their dependencies.
    ///
    /// Writes RUN_DIR/slurm/<stage>.sbatch (kept), submits each with
    /// `sbatch --parsable --dependency=afterok:… --kill-on-invalid-dep=yes`, and
    /// records the job ids in RUN_DIR/slurm/jobs.json. Logs go to
    /// RUN_DIR/slurm/logs/. Resources come from the manifest's [slurm] table.
    Submit {
        /// The manifest.
        manifest: PathBuf,
        /// Submit STAGE even if it is fresh (repeatable).
        #[arg(long, value_name = "STAGE")]
        force: Vec<String>,
        /// Print the scripts and sbatch commands; write and submit nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show each stage and array task of the latest submission: pending, running,
    /// done, failed (with its log) or cancelled.
    Status {
        /// The manifest.
        manifest: PathBuf,
    },
    /// Cancel every job of the latest submission (scancel).
    Cancel {
        /// The manifest.
        manifest: PathBuf,
    },
}

fn main() -> ExitCode {
    binary::init_logging(std::env::var("RUST_LOG").ok().as_deref(), "warn");
    // Stage binaries: $CIRCUITRY_BIN_DIR alone, else beside this executable, then PATH;
    // Slurm's client tools: PATH.
    let bins = BinDirs::locate(
        std::env::var_os(BIN_DIR_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default(),
    );
    let cli = Cli::parse();
    // Only `run` waits on stage processes; `submit` and the others keep the default
    // (a signal ends them at once).
    if matches!(cli.command, Cmd::Run { dry_run: false, .. }) {
        // Stopped by a signal, the runner stops its stage and puts its previous
        // output back before exiting.
        if let Err(e) = catch_stop_signals() {
            eprintln!("warning: cannot catch stop signals ({e}); a stopped run may leave a stage's previous output in RUN_DIR/.STAGE.old");
        }
    }
    let result = match &cli.command {
        Cmd::Run {
            manifest,
            force,
            dry_run,
        } => Pipeline::load(manifest).and_then(|pipeline| {
            let options = RunOptions {
                force: force.clone(),
                dry_run: *dry_run,
            };
            run_local(&pipeline, &options, &bins).map(|_| ())
        }),
        Cmd::Plan { manifest, force } => Pipeline::load(manifest).and_then(|pipeline| {
            let plan = Plan::new(&pipeline, force)?;
            println!(
                "pipeline `{}` ({}), run directory {}",
                pipeline.name(),
                manifest.display(),
                pipeline.display_path(pipeline.run_dir()).display()
            );
            println!("{plan}");
            let checks = check_stages(&pipeline, &plan, &bins, true);
            for stage in plan.stale() {
                println!("  $ {}", stage.command);
                let outcome = checks.as_ref().ok().and_then(|c| {
                    c.iter()
                        .find(|(name, _)| *name == stage.name)
                        .map(|(_, o)| o)
                });
                match outcome {
                    Some(CheckOutcome::Accepted(Some(info))) => println!("    check: {info}"),
                    Some(CheckOutcome::Unavailable) => {
                        println!("    check: not available (the binary has no --check-only)")
                    }
                    Some(CheckOutcome::NoBinary) => {
                        println!("    check: skipped (`{}` not found)", stage.command.program)
                    }
                    _ => {}
                }
            }
            checks.map(|_| ())
        }),
        Cmd::Submit {
            manifest,
            force,
            dry_run,
        } => Pipeline::load(manifest).and_then(|pipeline| {
            let options = SubmitOptions {
                force: force.clone(),
                dry_run: *dry_run,
            };
            slurm::submit(&pipeline, &options, &bins).map(|_| ())
        }),
        Cmd::Status { manifest } => Pipeline::load(manifest).and_then(|pipeline| {
            let stages = slurm::status(&pipeline, &bins)?;
            println!("pipeline `{}` ({})", pipeline.name(), manifest.display());
            slurm::print_status(&pipeline, &stages);
            Ok(())
        }),
        Cmd::Cancel { manifest } => Pipeline::load(manifest).and_then(|pipeline| {
            let ids = slurm::cancel(&pipeline, &bins)?;
            println!("cancelled jobs {}", ids.join(" "));
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => binary::fail(&e, e.exit_code()),
    }
}
