//! `train-toy`: train the toy subject–verb agreement network
//! (`circuitry-train-toy --out DIR [--seed N] [--n-train N] [--n-test N] [--noise F]
//! [--epochs N] [--lr F] [--hidden N]`).
use serde::Deserialize;

use super::{
    non_negative_real, positive, positive_real, ArgsBuilder, Invalid, ParamGuard, StageParams,
};
use crate::Input;

/// `train-toy` parameters as written in the manifest; unset values take the
/// binary's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainToyParams {
    /// Seed of data generation and initialisation.
    pub seed: Option<u64>,
    /// Number of training examples.
    pub n_train: Option<usize>,
    /// Number of held-out examples.
    pub n_test: Option<usize>,
    /// Input noise level.
    pub noise: Option<f64>,
    /// Training epochs.
    pub epochs: Option<usize>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Width of the hidden layer.
    pub hidden: Option<usize>,
}

/// Validated `train-toy` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainToy(TrainToyParams);

impl ParamGuard for TrainToyParams {
    const KIND: &'static str = "train-toy";
    type Checked = TrainToy;

    fn check(self) -> Result<TrainToy, Invalid> {
        positive("n_train", self.n_train)?;
        positive("n_test", self.n_test)?;
        non_negative_real("noise", self.noise)?;
        positive("epochs", self.epochs)?;
        positive_real("lr", self.lr)?;
        positive("hidden", self.hidden)?;
        Ok(TrainToy(self))
    }
}

impl StageParams for TrainToy {
    fn kind(&self) -> &'static str {
        TrainToyParams::KIND
    }

    fn program(&self) -> &'static str {
        "circuitry-train-toy"
    }

    fn inputs(&self) -> Vec<(&'static str, &Input)> {
        Vec::new()
    }

    fn write_args(&self, args: &mut ArgsBuilder<'_>) {
        let p = &self.0;
        args.out()
            .opt("--seed", p.seed)
            .opt("--n-train", p.n_train)
            .opt("--n-test", p.n_test)
            .opt("--noise", p.noise)
            .opt("--epochs", p.epochs)
            .opt("--lr", p.lr)
            .opt("--hidden", p.hidden);
    }
}
