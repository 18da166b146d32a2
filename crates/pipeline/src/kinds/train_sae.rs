//! `train-sae`: train a sparse autoencoder on one hook of an activation store
//! (`circuitry-train-sae --store DIR --hook NAME --out DIR --d-sae N
//! [--architecture standard|topk] [--k N] [--l1-coefficient F] [--lr F] [--steps N]
//! [--batch-size N] [--seed N] [--eval-fraction F] [--lr-warm-up-steps N]
//! [--lr-decay-steps N] [--l1-warm-up-steps N] [--model-name NAME]`).
//! The SAE is written to `OUT/<hook name>/`.
use std::fmt;

use circuitry_core::HookPoint;
use serde::Deserialize;

use super::{
    fraction, non_negative_real, positive, positive_real, ArgsBuilder, Invalid, ParamGuard,
    StageParams,
};
use crate::Input;

/// The SAE architecture, as the binary's `--architecture` flag spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaeArchitecture {
    /// ReLU encoder with an L1 penalty.
    Standard,
    /// Keep the k largest pre-activations.
    TopK,
}

impl fmt::Display for SaeArchitecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SaeArchitecture::Standard => "standard",
            SaeArchitecture::TopK => "topk",
        })
    }
}

/// `train-sae` parameters as written in the manifest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSaeParams {
    /// The activation store, e.g. `"@acts"`.
    pub store: Input,
    /// The hook to train on, a TransformerLens name such as `toy.hook_hidden`.
    pub hook: HookPoint,
    /// Number of SAE latents.
    pub d_sae: usize,
    /// Architecture (`standard` or `topk`).
    pub architecture: Option<SaeArchitecture>,
    /// Active latents per token for `topk`.
    pub k: Option<usize>,
    /// L1 sparsity coefficient (standard architecture).
    pub l1_coefficient: Option<f64>,
    /// Learning rate.
    pub lr: Option<f64>,
    /// Training steps.
    pub steps: Option<usize>,
    /// Tokens per step.
    pub batch_size: Option<usize>,
    /// Seed of initialisation and shuffling.
    pub seed: Option<u64>,
    /// Fraction of rows held out for evaluation.
    pub eval_fraction: Option<f64>,
    /// Learning-rate warm-up steps.
    pub lr_warm_up_steps: Option<usize>,
    /// Steps of linear learning-rate decay at the end.
    pub lr_decay_steps: Option<usize>,
    /// Steps of linear L1 warm-up.
    pub l1_warm_up_steps: Option<usize>,
    /// Model name written to the SAE's cfg.json.
    pub model_name: Option<String>,
}

/// Validated `train-sae` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSae(TrainSaeParams);

impl ParamGuard for TrainSaeParams {
    const KIND: &'static str = "train-sae";
    type Checked = TrainSae;

    fn check(self) -> Result<TrainSae, Invalid> {
        positive("d_sae", Some(self.d_sae))?;
        positive("k", self.k)?;
        let topk = self.architecture == Some(SaeArchitecture::TopK);
        match self.k {
            Some(_) if !topk => {
                return Err(Invalid::new(
                    "k",
                    "`k` applies only to the topk architecture",
                    "add `architecture = \"topk\"`, or remove `k`",
                ))
            }
            Some(k) if k >= self.d_sae => {
                return Err(Invalid::new(
                    "k",
                    format!("k = {k} must be below d_sae = {}", self.d_sae),
                    "choose k smaller than d_sae (k of the d_sae latents are active per token)",
                ))
            }
            None if topk => {
                return Err(Invalid::new(
                    "architecture",
                    "the topk architecture needs `k`",
                    "add `k = N`, the number of active latents per token (below d_sae)",
                ))
            }
            _ => {}
        }
        non_negative_real("l1_coefficient", self.l1_coefficient)?;
        positive_real("lr", self.lr)?;
        positive("steps", self.steps)?;
        positive("batch_size", self.batch_size)?;
        fraction("eval_fraction", self.eval_fraction)?;
        Ok(TrainSae(self))
    }
}

impl TrainSae {
    /// The hook the SAE is trained on.
    pub fn hook(&self) -> HookPoint {
        self.0.hook
    }
}

impl StageParams for TrainSae {
    fn kind(&self) -> &'static str {
        TrainSaeParams::KIND
    }

    fn program(&self) -> &'static str {
        "circuitry-train-sae"
    }

    fn inputs(&self) -> Vec<(&'static str, &Input)> {
        vec![("store", &self.0.store)]
    }

    fn write_args(&self, args: &mut ArgsBuilder<'_>) {
        let p = &self.0;
        args.input("--store", &p.store)
            .value("--hook", p.hook)
            .out()
            .value("--d-sae", p.d_sae)
            .opt("--architecture", p.architecture)
            .opt("--k", p.k)
            .opt("--l1-coefficient", p.l1_coefficient)
            .opt("--lr", p.lr)
            .opt("--steps", p.steps)
            .opt("--batch-size", p.batch_size)
            .opt("--seed", p.seed)
            .opt("--eval-fraction", p.eval_fraction)
            .opt("--lr-warm-up-steps", p.lr_warm_up_steps)
            .opt("--lr-decay-steps", p.lr_decay_steps)
            .opt("--l1-warm-up-steps", p.l1_warm_up_steps)
            .opt("--model-name", p.model_name.as_deref());
    }
}
