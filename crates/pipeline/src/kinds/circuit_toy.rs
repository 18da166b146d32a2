//! `circuit-toy`: the toy network's feature circuit (`circuitry-circuit toy --model DIR
//! --sae DIR --store DIR --out DIR [options]`; the options are [`CircuitToyOptions`]).
use circuitry_core::params::CircuitToyOptions;
use serde::Deserialize;

use super::{ArgsBuilder, Invalid, ParamGuard, StageParams};
use crate::Input;

/// `circuit-toy` inputs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitToyInputs {
    /// The toy model directory.
    pub model: Input,
    /// The SAE directory (SAELens layout), e.g. `"@sae/toy.hook_hidden"`.
    pub sae: Input,
    /// The activation store with `toy.hook_input` and `toy.hook_hidden`.
    pub store: Input,
}

/// Validated `circuit-toy` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitToy(CircuitToyInputs, CircuitToyOptions);

impl ParamGuard for CircuitToy {
    const KIND: &'static str = "circuit-toy";
    const INPUT_KEYS: &'static [&'static str] = &["model", "sae", "store"];
    type Inputs = CircuitToyInputs;
    type Options = CircuitToyOptions;
    type Checked = CircuitToy;

    fn check(inputs: CircuitToyInputs, options: CircuitToyOptions) -> Result<CircuitToy, Invalid> {
        Ok(CircuitToy(inputs, options))
    }
}

impl StageParams for CircuitToy {
    fn kind(&self) -> &'static str {
        <Self as ParamGuard>::KIND
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
            .options(&self.1);
    }
}
