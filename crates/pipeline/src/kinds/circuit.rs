//! `circuit`: a sparse feature circuit of a GPT-2 or Llama model on paired prompts
//! (`circuitry-circuit gpt2 --model DIR --store DIR --sae DIR... --out DIR [options]`;
//! the options are [`CircuitOptions`]).
use circuitry_core::params::CircuitOptions;
use serde::Deserialize;

use super::{ArgsBuilder, Invalid, ParamGuard, Split, StageParams};
use crate::Input;

pub use circuitry_core::options::{CircuitAblation, CircuitAggregation, CircuitMethod};

/// `circuit` inputs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitInputs {
    /// The model directory.
    pub model: Input,
    /// SAE directories or train-sae outputs, e.g. `["@sae_resid2", "@sae_mlp3"]`.
    pub saes: Vec<Input>,
    /// The pairs dump, e.g. `"@pairs_simple"`.
    pub store: Input,
}

/// Validated `circuit` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Circuit(CircuitInputs, CircuitOptions);

impl ParamGuard for Circuit {
    const KIND: &'static str = "circuit";
    const INPUT_KEYS: &'static [&'static str] = &["model", "saes", "store"];
    type Inputs = CircuitInputs;
    type Options = CircuitOptions;
    type Checked = Circuit;

    fn check(inputs: CircuitInputs, options: CircuitOptions) -> Result<Circuit, Invalid> {
        if inputs.saes.is_empty() {
            return Err(Invalid::new(
                "saes",
                "is empty",
                "list the SAE directories or train-sae stages, e.g. saes = [\"@sae_resid2\"]",
            ));
        }
        Ok(Circuit(inputs, options))
    }
}

impl StageParams for Circuit {
    fn kind(&self) -> &'static str {
        <Self as ParamGuard>::KIND
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
        args.out().options(&self.1);
    }

    /// Split by pairs: three rounds (node effects; edges and the node sweep; the edge
    /// sweep), each needing every part's previous round.
    fn split(&self) -> Option<Split> {
        Some(Split::Parts { rounds: 3 })
    }
}
