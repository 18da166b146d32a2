//! `dump-toy`: dump the toy network's hooks over generated examples
//! (`circuitry-dump toy --model DIR --out DIR [options]`; the options are
//! [`DumpToyOptions`]).
use circuitry_core::params::DumpToyOptions;
use serde::Deserialize;

use super::{ArgsBuilder, Invalid, ParamGuard, StageParams};
use crate::Input;

/// `dump-toy` inputs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpToyInputs {
    /// The trained toy model, e.g. `"@model"`.
    pub model: Input,
}

/// Validated `dump-toy` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct DumpToy(DumpToyInputs, DumpToyOptions);

impl ParamGuard for DumpToy {
    const KIND: &'static str = "dump-toy";
    const INPUT_KEYS: &'static [&'static str] = &["model"];
    type Inputs = DumpToyInputs;
    type Options = DumpToyOptions;
    type Checked = DumpToy;

    fn check(inputs: DumpToyInputs, options: DumpToyOptions) -> Result<DumpToy, Invalid> {
        Ok(DumpToy(inputs, options))
    }
}

impl StageParams for DumpToy {
    fn kind(&self) -> &'static str {
        <Self as ParamGuard>::KIND
    }

    fn program(&self) -> &'static str {
        "circuitry-dump"
    }

    fn inputs(&self) -> Vec<(&'static str, &Input)> {
        vec![("model", &self.0.model)]
    }

    fn write_args(&self, args: &mut ArgsBuilder<'_>) {
        args.word("toy")
            .input("--model", &self.0.model)
            .out()
            .options(&self.1);
    }
}
