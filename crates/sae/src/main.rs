//! `circuitry-train-sae`: train one SAE per hook of an activation store.
//! Glue only: arguments (`cli.rs`) → validated `StageConfig` → [`stage::run`].
use std::process::ExitCode;

use anyhow::Context;
use circuitry_core::preflight::MemoryLimit;
use circuitry_core::{binary, StageTimer};
use circuitry_models::gemm::panels::{self, PANELS_ENV};
use circuitry_sae::kernel::{use_for_transformer, Backend, MKL_ENV};
use circuitry_sae::stage;
use clap::Parser;

mod cli;
use cli::{config, Args};

fn main() -> ExitCode {
    let args = Args::parse();
    // Spares each step's page faults (alloc.rs); before any thread starts.
    if args.keep_freed_memory() {
        circuitry_sae::keep_freed_memory();
    }
    binary::init_logging(std::env::var("RUST_LOG").ok().as_deref(), "info");
    let mkl_library = std::env::var_os(MKL_ENV);
    // The panel products of ce_loss_score's model runs with few rows.
    let panels = std::env::var(PANELS_ENV).ok();
    if let Err(e) = panels::set_choice(panels.as_deref()) {
        return binary::exit(Err(anyhow::anyhow!(e)));
    }
    let limit = MemoryLimit::from_flag(args.memory_limit);
    if args.check_only {
        return binary::exit(
            config(args, mkl_library).and_then(|cfg| Ok(stage::check_only(&cfg, limit)?)),
        );
    }
    let timer = StageTimer::start(stage::TOOL, std::env::args().skip(1).collect());
    let result = config(args, mkl_library).and_then(|cfg| {
        // The trainer's library runs the model for ce_loss_score too (`--gemm mkl`
        // without MKL: `stage::run` says so).
        if let Ok(backend) = Backend::resolve(cfg.train.gemm, &cfg.train.mkl) {
            use_for_transformer(backend);
        }
        stage::run(&cfg, limit, timer)
            .with_context(|| format!("training SAEs from {}", cfg.store.display()))
    });
    match result {
        Ok(summaries) => {
            for s in summaries {
                let (on, m) = stage::headline(&s.record);
                let what = if s.skipped { "kept" } else { "wrote" };
                let ce = s.record.ce_loss.map_or(String::new(), |c| {
                    format!(", ce_loss_score {:.4}", c.ce_loss_score)
                });
                println!(
                    "{what} {}: {on} explained variance {:.4}, L0 {:.3}, dead fraction {:.3}{ce} ({} train rows, {} held out)",
                    s.sae_dir.display(),
                    m.explained_variance,
                    m.l0,
                    m.dead_fraction,
                    s.record.train_rows,
                    s.record.eval_rows
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => binary::fail(e.as_ref(), binary::EXIT_FAILURE),
    }
}
