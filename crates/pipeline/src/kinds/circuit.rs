//! `circuit`: a GPT-2 sparse feature circuit on paired prompts
//! (`circuitry-circuit gpt2 --model DIR --sae DIR... --store DIR --out DIR [...]`).
use serde::Deserialize;

use super::{non_negative_real, positive, ArgsBuilder, Invalid, ParamGuard, StageParams};
use crate::Input;

pub use circuitry_core::options::{CircuitAblation, CircuitAggregation, CircuitMethod};

/// `circuit` parameters as written in the manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitParams {
    /// The GPT-2 model directory.
    pub model: Input,
    /// SAE directories or train-sae outputs, e.g. `["@sae_resid2", "@sae_mlp3"]`.
    pub saes: Vec<Input>,
    /// The pairs dump, e.g. `"@pairs_simple"`.
    pub store: Input,
    /// `attribution`, `ig` (default) or `exact`.
    pub method: Option<CircuitMethod>,
    /// Integrated-gradient steps (default 10).
    pub ig_steps: Option<usize>,
    /// `sum` (default) or `per-position`.
    pub aggregation: Option<CircuitAggregation>,
    /// Node threshold (default 0.1).
    pub node_threshold: Option<f64>,
    /// Edge threshold (default 0.01).
    pub edge_threshold: Option<f64>,
    /// `mean` (default), `zero` or `resample`.
    pub ablation: Option<CircuitAblation>,
    /// Seed of resample ablation.
    pub seed: Option<u64>,
    /// Pairs per batch.
    pub batch_size: Option<usize>,
    /// Use only the first pairs.
    pub max_examples: Option<usize>,
    /// Compare with exact patching on this many pairs.
    pub exact_check: Option<usize>,
    /// Node thresholds of the faithfulness sweep (default: 21 log-spaced from 1e-4 to 10).
    pub sweep: Option<Vec<f64>>,
    /// Most batch × sequence rows in one forward pass.
    pub max_rows: Option<usize>,
    /// Title of the drawings.
    pub title: Option<String>,
}

/// Validated `circuit` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Circuit(CircuitParams);

impl ParamGuard for CircuitParams {
    const KIND: &'static str = "circuit";
    type Checked = Circuit;

    fn check(self) -> Result<Circuit, Invalid> {
        if self.saes.is_empty() {
            return Err(Invalid::new(
                "saes",
                "is empty",
                "list the SAE directories or train-sae stages, e.g. saes = [\"@sae_resid2\"]",
            ));
        }
        positive("ig_steps", self.ig_steps)?;
        positive("batch_size", self.batch_size)?;
        positive("max_examples", self.max_examples)?;
        positive("max_rows", self.max_rows)?;
        if let Some(sweep) = &self.sweep {
            if sweep.is_empty() {
                return Err(Invalid::new(
                    "sweep",
                    "is empty",
                    "list node thresholds, e.g. sweep = [0.01, 0.1, 1.0], or leave `sweep` out",
                ));
            }
            for &t in sweep {
                non_negative_real("sweep", Some(t))?;
            }
        }
        non_negative_real("node_threshold", self.node_threshold)?;
        non_negative_real("edge_threshold", self.edge_threshold)?;
        Ok(Circuit(self))
    }
}

impl StageParams for Circuit {
    fn kind(&self) -> &'static str {
        CircuitParams::KIND
    }

    fn program(&self) -> &'static str {
        "circuitry-circuit"
    }

    fn inputs(&self) -> Vec<(&'static str, &Input)> {
        let p = &self.0;
        let mut v = vec![("model", &p.model), ("store", &p.store)];
        v.extend(p.saes.iter().map(|s| ("saes", s)));
        v
    }

    fn write_args(&self, args: &mut ArgsBuilder<'_>) {
        let p = &self.0;
        args.word("gpt2")
            .input("--model", &p.model)
            .input("--store", &p.store);
        for s in &p.saes {
            args.input("--sae", s);
        }
        args.out()
            .opt("--method", p.method)
            .opt("--ig-steps", p.ig_steps)
            .opt("--aggregation", p.aggregation)
            .opt("--node-threshold", p.node_threshold)
            .opt("--edge-threshold", p.edge_threshold)
            .opt("--ablation", p.ablation)
            .opt("--seed", p.seed)
            .opt("--batch-size", p.batch_size)
            .opt("--max-examples", p.max_examples)
            .opt("--exact-check", p.exact_check)
            .opt(
                "--sweep",
                p.sweep
                    .as_ref()
                    .map(|v| v.iter().map(f64::to_string).collect::<Vec<_>>().join(",")),
            )
            .opt("--max-rows", p.max_rows)
            .opt("--title", p.title.as_ref());
    }
}
