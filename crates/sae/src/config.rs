//! What an SAE is: its architecture and the SAELens-named configuration fields.
use std::fmt;

use circuitry_core::HookPoint;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The SAE's activation function, and with it the training objective.
///
/// Names in `cfg.json` follow SAELens v6 (`"standard"`, `"topk"`, `"jumprelu"`);
/// a trained BatchTopK SAE is saved as JumpReLU with its threshold, as SAELens does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Architecture {
    /// `f = ReLU(pre)`; trained with an L1 penalty weighted by decoder row norms
    /// (SAELens v6 "standard", Anthropic April 2024).
    Standard,
    /// `f = ReLU` of the `k` largest pre-activations per row, zero elsewhere
    /// (Gao et al. 2024); trained with MSE plus the AuxK loss for dead latents.
    TopK {
        /// Active latents per row.
        k: usize,
    },
    /// The `k · batch` largest positive pre-activations of a batch stay active
    /// (Bussmann et al. 2024); trained with AuxK, and turned into a JumpReLU SAE with
    /// one threshold for every latent (the running estimate of the batch threshold)
    /// when training ends.
    BatchTopK {
        /// Mean active latents per row.
        k: usize,
    },
    /// `f = pre · [pre > threshold]` (Rajamanoharan et al. 2024); trained with an L0
    /// penalty and straight-through pseudo-derivatives for the threshold.
    JumpRelu,
}

impl Architecture {
    /// The SAELens `architecture` string.
    pub fn saelens_name(&self) -> &'static str {
        match self {
            Architecture::Standard => "standard",
            Architecture::TopK { .. } => "topk",
            Architecture::BatchTopK { .. } => "batchtopk",
            Architecture::JumpRelu => "jumprelu",
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Architecture::TopK { k } => write!(f, "topk(k={k})"),
            Architecture::BatchTopK { k } => write!(f, "batchtopk(k={k})"),
            other => f.write_str(other.saelens_name()),
        }
    }
}

/// SAELens `normalize_activations`: how inputs are changed before encoding, per
/// token; [`crate::Sae::forward`] undoes it on the reconstruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActivationNormalization {
    /// Inputs are used as they are.
    #[default]
    None,
    /// Each row scaled to norm `√d_in` (SAELens `"constant_norm_rescale"`); the
    /// reconstruction is scaled back by `‖x‖ / √d_in`.
    ConstantNormRescale,
    /// Each row's mean over `d_in` subtracted (the centring gpt2-small-res-jb's
    /// TransformerLens residuals had); the reconstruction gets it back. SAELens has
    /// no such normalisation: `cfg.json` says `normalize_activations: "none"` with
    /// `metadata.model_from_pretrained_kwargs: {"center_writing_weights": true}`, as
    /// that release does, and [`crate::Sae::load`] reads it back as this.
    MeanCentre,
}

impl ActivationNormalization {
    /// The SAELens string.
    pub fn saelens_name(&self) -> &'static str {
        match self {
            ActivationNormalization::None => "none",
            ActivationNormalization::ConstantNormRescale => "constant_norm_rescale",
            ActivationNormalization::MeanCentre => "mean_centre",
        }
    }
}

/// An SAE's configuration, with SAELens v6 field names.
///
/// Build one with [`SaeConfig::new`] and struct-update syntax, so that fields added
/// later do not break callers:
/// `SaeConfig { architecture: Architecture::TopK { k: 2 }, ..SaeConfig::new(4, 8, hook) }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeConfig {
    /// Width of the activations the SAE reads and reconstructs.
    pub d_in: usize,
    /// Number of latents (features).
    pub d_sae: usize,
    /// Activation function and training objective.
    pub architecture: Architecture,
    /// Subtract `b_dec` from the input before encoding (SAELens default: true).
    pub apply_b_dec_to_input: bool,
    /// Input normalisation.
    pub normalize_activations: ActivationNormalization,
    /// The hook whose activations the SAE reads.
    pub hook_name: HookPoint,
    /// The model the activations came from (SAELens `metadata.model_name`).
    pub model_name: String,
    /// Context length (tokens per sequence) of the training activations.
    pub context_size: usize,
    /// Where the training activations came from (SAELens `metadata.dataset_path`).
    pub dataset_path: Option<String>,
}

impl SaeConfig {
    /// A standard SAE `d_in → d_sae` on `hook_name`, with SAELens defaults
    /// (`apply_b_dec_to_input` true, no normalisation), model name empty and
    /// context size 1.
    pub fn new(d_in: usize, d_sae: usize, hook_name: HookPoint) -> Self {
        SaeConfig {
            d_in,
            d_sae,
            architecture: Architecture::Standard,
            apply_b_dec_to_input: true,
            normalize_activations: ActivationNormalization::None,
            hook_name,
            model_name: String::new(),
            context_size: 1,
            dataset_path: None,
        }
    }

    /// Check the dimensions and the architecture's parameters.
    pub fn check(&self) -> Result<()> {
        if self.d_in == 0 {
            return Err(Error::config(
                "d_in",
                0,
                "the SAE input width must be positive",
            ));
        }
        if self.d_sae == 0 {
            return Err(Error::config(
                "d_sae",
                0,
                "the SAE needs at least one latent; pass --d-sae N with N ≥ 1",
            ));
        }
        if let Architecture::TopK { k } | Architecture::BatchTopK { k } = self.architecture {
            if k == 0 || k >= self.d_sae {
                return Err(Error::config(
                    "k",
                    k,
                    format!(
                        "TopK needs 1 ≤ k < d_sae = {}; pick a smaller k or a larger d_sae",
                        self.d_sae
                    ),
                ));
            }
        }
        Ok(())
    }
}
