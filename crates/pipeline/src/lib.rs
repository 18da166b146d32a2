//! # circuitry-pipeline
//!
//! Pipeline manifests, the stage graph, freshness, and the local runner behind the
//! `circuitry` binary (`circuitry run MANIFEST`, `circuitry plan MANIFEST`).
//!
//! - [`Pipeline`]: a manifest parsed with unknown keys denied, checked rule by rule
//!   (each failure is one [`Error::Manifest`] naming file, line:column and the fix),
//!   with its stages in dependency order;
//! - [`kinds`]: the stage kinds (`train-toy`, `dump-toy`, `dump`, `train-sae`, `circuit-toy`, `circuit`):
//!   raw parameters, their checks, and the command line of each stage binary;
//! - [`StageCommand`]: what to run for a stage: binary, arguments, directory;
//! - [`Plan`], [`Freshness`]: which stages are stale and why, from their `stage.json`;
//! - [`run_local`]: runs the stale stages as processes, in order, holding the run
//!   directory's lock ([`RunDirLock`]), after each stale stage's binary accepted its
//!   options ([`check_stages`], `--check-only`);
//! - [`slurm`]: submits the stale stages to Slurm as chained jobs (`circuitry submit`),
//!   with their state (`circuitry status`) and cancellation (`circuitry cancel`);
//!   resources come from the manifest's `[slurm]` table ([`SlurmConfig`]).
//!
//! ## Manifest format
//!
//! ```toml
//! [pipeline]
//! name = "toy"
//! run_dir = "../runs/toy"   # relative to the manifest's directory
//!
//! [[stage]]
//! name = "model"            # a simple identifier; output in run_dir/model/
//! kind = "train-toy"        # runs circuitry-train-toy
//! seed = 7                  # keys are the binary's flags in snake_case
//!
//! [[stage]]
//! name = "acts"
//! kind = "dump-toy"
//! model = "@model"          # "@name[/path]": stage name's output (a dependency)
//! ```
//!
//! A key left out is not passed, so the binary's default applies. Plain paths
//! (`corpus = "../datasets/x.txt"`) are relative to the manifest's directory and must
//! exist when the manifest is validated. Stages run in the manifest's directory with
//! paths relative to it, so the command `circuitry plan` shows can be run by hand.
//!
//! The full reference (CLI, every key of every kind, validation rules, freshness
//! rules, adding a kind) is this crate's README.md.
//!
//! ## Freshness
//!
//! See [`Freshness`] and [`StaleReason`]. A stage named with `--force` re-runs; its dependents
//! then re-run only if its outputs changed (they compare the fingerprints their
//! `stage.json` recorded for their inputs with the new content).
//!
//! ## Guarantees
//!
//! - **Atomic stage outputs on re-run.** A stage whose folder holds a completed
//!   output (`stage.json`) is run into a fresh folder while the old one waits in
//!   `RUN_DIR/.<stage>.old`; the old one is deleted when the stage succeeds and put
//!   back when it fails or the runner is stopped by SIGINT/SIGTERM/SIGHUP. A folder
//!   without `stage.json` (an interrupted run) is resumed in place.
//! - **One writer per run directory**: `run` and `submit` hold `flock(RUN_DIR/.lock)`;
//!   a second one exits 2 naming the holder.
//! - **Stage processes die with the runner** (`PR_SET_PDEATHSIG`), SIGKILL included.
//! - **Options checked before anything runs**: every stale stage's binary is asked
//!   with `--check-only` first; a refusal is reported at the stage in the manifest.
//!
//! ```
//! use circuitry_pipeline::Pipeline;
//! let text = r#"
//! [pipeline]
//! name = "toy"
//! run_dir = "runs"
//! [[stage]]
//! name = "model"
//! kind = "train-toy"
//! epochs = 300
//! "#;
//! let pipeline = Pipeline::parse("toy.toml".as_ref(), text).unwrap();
//! let cmd = pipeline.command(&pipeline.stages()[0]);
//! assert_eq!(cmd.to_string(), "circuitry-train-toy --out runs/model --epochs 300");
//! ```
#![deny(missing_docs)]

mod check;
mod command;
mod error;
mod freshness;
pub mod kinds;
mod local;
mod lock;
mod manifest;
mod outputs;
mod plan;
mod process;
pub mod slurm;

pub use check::{check_jobs, check_stages, CheckOutcome, JobCheck, CHECK_ONLY_FLAG};
pub use command::{shell_quote, StageCommand};
pub use error::{Error, Location, ManifestError, Problem, Result};
pub use freshness::{diff_args, ArgChange, Freshness, StaleReason};
pub use local::{run_local, BinDirs, RunOptions, RunReport, BIN_DIR_ENV};
pub use lock::{RunDirLock, LOCK_FILE};
pub use manifest::{ArrayPlan, Input, JobMemory, Pipeline, SlurmConfig, SlurmResources, Stage};
pub use plan::{Plan, PlannedStage};
pub use process::catch_stop_signals;
