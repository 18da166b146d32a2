//! `train-toy`: train the toy agreement network (`circuitry-train-toy --out DIR
//! [options]`; the options are [`TrainToyOptions`]).
use circuitry_core::params::TrainToyOptions;
use serde::Deserialize;

use super::{ArgsBuilder, Invalid, ParamGuard, StageParams};
use crate::Input;

/// `train-toy` has no inputs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainToyInputs {}

/// Validated `train-toy` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainToy(TrainToyOptions);

impl ParamGuard for TrainToy {
    const KIND: &'static str = "train-toy";
    const INPUT_KEYS: &'static [&'static str] = &[];
    type Inputs = TrainToyInputs;
    type Options = TrainToyOptions;
    type Checked = TrainToy;

    fn check(_: TrainToyInputs, options: TrainToyOptions) -> Result<TrainToy, Invalid> {
        Ok(TrainToy(options))
    }
}

impl StageParams for TrainToy {
    fn kind(&self) -> &'static str {
        <Self as ParamGuard>::KIND
    }

    fn program(&self) -> &'static str {
        "circuitry-train-toy"
    }

    fn inputs(&self) -> Vec<(&'static str, &Input)> {
        Vec::new()
    }

    fn write_args(&self, args: &mut ArgsBuilder<'_>) {
        args.out().options(&self.0);
    }
}
