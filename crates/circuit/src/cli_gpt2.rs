//! Command-line arguments of `circuitry-circuit gpt2` (part of the binary, not the
//! library) and their conversion into the validated stage config.
use std::path::PathBuf;

use circuitry_circuit::gpt2::stage::Gpt2StageConfig;
use circuitry_circuit::gpt2::{Ablation, Aggregation, Method};
use circuitry_core::options::{CircuitAblation, CircuitAggregation, CircuitMethod};

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
    /// Node-effect method.
    #[arg(long, value_enum, default_value_t = CircuitMethod::Ig)]
    method: CircuitMethod,
    /// Integrated-gradient steps.
    #[arg(long, default_value_t = 10)]
    ig_steps: usize,
    /// Sum node effects over positions or keep positions apart.
    #[arg(long, value_enum, default_value_t = CircuitAggregation::Sum)]
    aggregation: CircuitAggregation,
    /// Nodes with |mean effect| above this are in the circuit.
    #[arg(long, default_value_t = 0.05)]
    node_threshold: f64,
    /// Edges with |mean weight| below this are not drawn.
    #[arg(long, default_value_t = 0.01)]
    edge_threshold: f64,
    /// Ablation of the nodes outside the circuit in the evaluation.
    #[arg(long, value_enum, default_value_t = CircuitAblation::Mean)]
    ablation: CircuitAblation,
    /// Seed of resample ablation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Node thresholds of the faithfulness sweep, comma separated (default: 21 from 1e-4 to 10, log-spaced).
    #[arg(long, value_delimiter = ',')]
    sweep: Option<Vec<f64>>,
    /// Pairs per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Use only the first N pairs.
    #[arg(long)]
    max_examples: Option<usize>,
    /// Compare node effects with exact patching on the first N pairs (0 = off).
    #[arg(long, default_value_t = 0)]
    exact_check: usize,
    /// Most batch × seq rows in one forward pass.
    #[arg(long, default_value_t = 4096)]
    max_rows: usize,
    /// Title of the drawings.
    #[arg(long)]
    title: Option<String>,
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
    pub fn into_config(self) -> circuitry_circuit::Result<Gpt2StageConfig> {
        Gpt2StageConfig {
            model: self.model,
            saes: self.saes,
            store: self.store,
            out: self.out,
            method: match self.method {
                CircuitMethod::Attribution => Method::Attribution,
                CircuitMethod::Ig => Method::IntegratedGradients {
                    steps: self.ig_steps,
                },
                CircuitMethod::Exact => Method::Exact,
            },
            aggregation: match self.aggregation {
                CircuitAggregation::Sum => Aggregation::Sum,
                CircuitAggregation::PerPosition => Aggregation::PerPosition,
            },
            node_threshold: self.node_threshold,
            edge_threshold: self.edge_threshold,
            ablation: match self.ablation {
                CircuitAblation::Mean => Ablation::Mean,
                CircuitAblation::Zero => Ablation::Zero,
                CircuitAblation::Resample => Ablation::Resample { seed: self.seed },
            },
            sweep: self.sweep.unwrap_or_else(Gpt2StageConfig::default_sweep),
            batch_size: self.batch_size,
            max_examples: self.max_examples,
            exact_check: self.exact_check,
            max_rows: self.max_rows,
            title: self.title,
        }
        .check()
    }
}
