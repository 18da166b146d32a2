//! `circuit-toy`: build and draw the toy network's feature circuit
//! (`circuitry-circuit toy --model DIR --sae DIR --store DIR --out DIR [--top-paths N] [--min-weight F]`).
use serde::Deserialize;

use super::{non_negative_real, positive, ArgsBuilder, Invalid, ParamGuard, StageParams};
use crate::Input;

/// `circuit-toy` parameters as written in the manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitToyParams {
    /// The trained toy model, e.g. `"@model"`.
    pub model: Input,
    /// The SAE directory (SAELens layout), e.g. `"@sae/toy.hook_hidden"`.
    pub sae: Input,
    /// The activation store, e.g. `"@acts"`.
    pub store: Input,
    /// How many strongest paths to each output the summary lists.
    pub top_paths: Option<usize>,
    /// Prune edges whose |mean weight| is below this over all examples and in each
    /// group (default 0).
    pub min_weight: Option<f64>,
}

/// Validated `circuit-toy` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitToy(CircuitToyParams);

impl ParamGuard for CircuitToyParams {
    const KIND: &'static str = "circuit-toy";
    type Checked = CircuitToy;

    fn check(self) -> Result<CircuitToy, Invalid> {
        positive("top_paths", self.top_paths)?;
        non_negative_real("min_weight", self.min_weight)?;
        Ok(CircuitToy(self))
    }
}

impl StageParams for CircuitToy {
    fn kind(&self) -> &'static str {
        CircuitToyParams::KIND
    }

    fn program(&self) -> &'static str {
        "circuitry-circuit"
    }

    fn inputs(&self) -> Vec<(&'static str, &Input)> {
        let p = &self.0;
        vec![("model", &p.model), ("sae", &p.sae), ("store", &p.store)]
    }

    fn write_args(&self, args: &mut ArgsBuilder<'_>) {
        let p = &self.0;
        args.word("toy")
            .input("--model", &p.model)
            .input("--sae", &p.sae)
            .input("--store", &p.store)
            .out()
            .opt("--top-paths", p.top_paths)
            .opt("--min-weight", p.min_weight);
    }
}
