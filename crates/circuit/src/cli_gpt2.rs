//! Command-line arguments of `circuitry-circuit gpt2` (part of the binary, not the
//! library) and their conversion into the validated stage config.
use std::path::PathBuf;

use circuitry_circuit::gpt2::stage::Gpt2StageConfig;
use circuitry_circuit::gpt2::{Ablation, Aggregation, Method};
use circuitry_core::options::{CircuitAblation, CircuitAggregation, CircuitMethod, GemmLibrary};
use circuitry_core::params::{CircuitOptions, StageOptions};
use circuitry_sae::GemmChoice;

#[derive(Debug, clap::Args)]
pub struct Gpt2Args {
    /// Model directory, GPT-2 or Llama (config.json, model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// SAE directory, or a directory of SAE directories; repeat for more.
    #[arg(long = "sae", required = true)]
    saes: Vec<PathBuf>,
    /// Pairs dump (circuitry-dump onnx --pairs) with the SAEs' hooks.
    #[arg(long)]
    store: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    options: CircuitOptions,
    /// Compute only part I of N (0 <= I < N) of the pairs: each run does the next of
    /// its three rounds (node effects; edges and the node sweep; the edge sweep) into
    /// OUT/parts/I/, once every part has done the round before. The command without
    /// --part then finishes any round left and writes the circuit, the same as one
    /// run over all pairs. `circuitry submit` runs the rounds as three job arrays.
    #[arg(long, value_name = "I/N")]
    pub part: Option<circuitry_core::part::Part>,
    /// Only check the options, the inputs that exist (SAEs, store), the memory
    /// estimate and that --out can be written; exit 0 or 2 (one line on stderr),
    /// writing nothing.
    #[arg(long)]
    pub check_only: bool,
    /// With --check-only: compare the memory estimate with BYTES instead of this
    /// machine's memory (`circuitry submit` passes the memory of the Slurm job).
    #[arg(long, value_name = "BYTES", requires = "check_only", hide = true)]
    pub memory_limit: Option<u64>,
}

impl Gpt2Args {
    /// The library of the transformer's products (`--gemm`, default auto).
    pub fn gemm(&self) -> GemmChoice {
        self.options.gemm.unwrap_or(GemmLibrary::Auto).into()
    }

    pub fn into_config(self) -> anyhow::Result<Gpt2StageConfig> {
        let o = self.options;
        o.check()?;
        let seed = o.seed.unwrap_or(0);
        Ok(Gpt2StageConfig {
            model: self.model,
            saes: self.saes,
            store: self.store,
            out: self.out,
            method: match o.method.unwrap_or(CircuitMethod::Ig) {
                CircuitMethod::Attribution => Method::Attribution,
                CircuitMethod::Ig => Method::IntegratedGradients {
                    steps: o.ig_steps.unwrap_or(10),
                },
                CircuitMethod::Exact => Method::Exact,
            },
            aggregation: match o.aggregation.unwrap_or(CircuitAggregation::Sum) {
                CircuitAggregation::Sum => Aggregation::Sum,
                CircuitAggregation::PerPosition => Aggregation::PerPosition,
            },
            node_threshold: o.node_threshold.unwrap_or(0.05),
            edge_threshold: o.edge_threshold.unwrap_or(0.01),
            ablation: match o.ablation.unwrap_or(CircuitAblation::Mean) {
                CircuitAblation::Mean => Ablation::Mean,
                CircuitAblation::Zero => Ablation::Zero,
                CircuitAblation::Resample => Ablation::Resample { seed },
            },
            sweep: o.sweep.unwrap_or_else(Gpt2StageConfig::default_sweep),
            batch_size: o.batch_size.unwrap_or(64),
            max_examples: o.max_examples,
            exact_check: o.exact_check.unwrap_or(0),
            max_rows: o.max_rows.unwrap_or(4096),
            title: o.title,
        }
        .check()?)
    }
}
