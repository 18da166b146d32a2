//! `train-sae`: train one sparse autoencoder per hook of an activation store, all
//! from one stream over it (`circuitry-train-sae --store DIR --out DIR --hooks H[,H…]
//! --d-sae N [options] [--tokenizer FILE] [--model DIR]`; the options are
//! [`TrainSaeOptions`]). Each SAE is written to `OUT/<hook name>/`; with `model` (the
//! model directory the store was dumped from) its `training.json` gains
//! `ce_loss_score`. With several hooks the stage splits into one Slurm array task per
//! hook (`--only-hook H`).
use circuitry_core::params::TrainSaeOptions;
use circuitry_core::HookPoint;
use serde::Deserialize;

use super::{ArgsBuilder, Invalid, ParamGuard, Split, StageParams};
use crate::Input;

pub use circuitry_core::options::{GemmLibrary, SaeArchitecture, SaeNormalization};

/// `train-sae` inputs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSaeInputs {
    /// The activation store, e.g. `"@acts"`.
    pub store: Input,
    /// `tokenizer.json` to decode the top contexts with.
    pub tokenizer: Option<Input>,
    /// The model directory the store was dumped from: adds `ce_loss_score` (the SAE
    /// spliced into the model) to each SAE's `training.json`.
    pub model: Option<Input>,
}

/// Validated `train-sae` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSae(TrainSaeInputs, TrainSaeOptions);

impl ParamGuard for TrainSae {
    const KIND: &'static str = "train-sae";
    const INPUT_KEYS: &'static [&'static str] = &["store", "tokenizer", "model"];
    type Inputs = TrainSaeInputs;
    type Options = TrainSaeOptions;
    type Checked = TrainSae;

    fn check(inputs: TrainSaeInputs, options: TrainSaeOptions) -> Result<TrainSae, Invalid> {
        if options.ce_sequences.is_some() && inputs.model.is_none() {
            return Err(Invalid::new(
                "ce_sequences",
                "`ce_sequences` is given without `model`",
                "add `model = \"<model directory of the dump>\"` (ce_loss_score needs it), or remove `ce_sequences`",
            ));
        }
        Ok(TrainSae(inputs, options))
    }
}

impl TrainSae {
    /// The hooks SAEs are trained on, in order.
    pub fn hooks(&self) -> &[HookPoint] {
        &self.1.hooks
    }
}

impl StageParams for TrainSae {
    fn kind(&self) -> &'static str {
        <Self as ParamGuard>::KIND
    }

    fn program(&self) -> &'static str {
        "circuitry-train-sae"
    }

    fn inputs(&self) -> Vec<(&'static str, &Input)> {
        let p = &self.0;
        let mut v = vec![("store", &p.store)];
        if let Some(t) = &p.tokenizer {
            v.push(("tokenizer", t));
        }
        if let Some(m) = &p.model {
            v.push(("model", m));
        }
        v
    }

    fn split(&self) -> Option<Split> {
        let hooks = self.hooks();
        (hooks.len() > 1).then(|| Split::Each {
            flag: "--only-hook",
            values: hooks.iter().map(|h| h.to_string()).collect(),
        })
    }

    fn write_args(&self, args: &mut ArgsBuilder<'_>) {
        let p = &self.0;
        args.input("--store", &p.store).out().options(&self.1);
        if let Some(t) = &p.tokenizer {
            args.input("--tokenizer", t);
        }
        if let Some(m) = &p.model {
            args.input("--model", m);
        }
    }
}
