//! Option values that a stage binary's flag and its manifest key share, declared once:
//! `clap` parses them from the command line and `serde` from a pipeline manifest, with
//! the same spellings, and `Display` writes that spelling back (the runner builds
//! command lines from manifests).
use std::fmt;

use serde::{Deserialize, Serialize};

/// The SAE architecture (`--architecture`, `architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SaeArchitecture {
    /// ReLU encoder with an L1 penalty.
    Standard,
    /// Keep the k largest pre-activations.
    #[value(name = "topk")]
    TopK,
    /// Keep the k·batch largest pre-activations of a batch (saved as JumpReLU).
    #[value(name = "batchtopk")]
    BatchTopK,
    /// A learned threshold per latent, L0 penalty.
    #[value(name = "jumprelu")]
    JumpRelu,
}

/// Input normalisation of SAE training (`--normalize-activations`,
/// `normalize_activations`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SaeNormalization {
    /// Inputs as they are.
    None,
    /// Each row scaled to norm √d_in.
    ConstantNormRescale,
    /// Each row's mean subtracted.
    MeanCentre,
}

/// The library of the dense products (`--gemm`, `gemm`): the SAE trainer's, and the
/// transformer's forward and backward passes in the circuit stage and ce_loss_score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GemmLibrary {
    /// Intel MKL when installed (scripts/setup-mkl.sh), faer otherwise.
    Auto,
    /// faer, always available.
    Faer,
    /// Intel MKL; an error (exit 2) when it is not installed.
    Mkl,
}

/// The node-effect method of a circuit (`--method`, `method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CircuitMethod {
    /// Attribution patching: ∇m(clean) · Δa.
    Attribution,
    /// Integrated gradients along clean → patch (--ig-steps).
    Ig,
    /// Exact activation patching, one node at a time.
    Exact,
}

/// How a circuit's node effects are aggregated over positions (`--aggregation`,
/// `aggregation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CircuitAggregation {
    /// One node per feature, effects summed over positions.
    Sum,
    /// One node per feature and token position.
    PerPosition,
}

/// How the evaluation ablates nodes outside a circuit (`--ablation`, `ablation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CircuitAblation {
    /// Per-position mean over the dataset.
    Mean,
    /// Zero.
    Zero,
    /// Another pair's clean value (seeded by --seed).
    Resample,
}

/// Storage dtype of an activation store's columns (`--dtype`, `dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreDtype {
    /// 32-bit floats.
    F32,
    /// Half precision (half the size).
    F16,
}

/// Which nouns the toy dump's examples use (`--nouns`, `nouns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NounSet {
    /// Every noun of the lexicon.
    All,
    /// Only the nouns the model was trained on.
    Train,
    /// Only the held-out nouns.
    Test,
}

/// The spelling `clap` parses, which is also the manifest's.
fn spelling(v: &impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

macro_rules! display_as_spelled {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&spelling(self))
            }
        }
    )*};
}

display_as_spelled!(
    SaeArchitecture,
    SaeNormalization,
    GemmLibrary,
    CircuitMethod,
    CircuitAggregation,
    CircuitAblation,
    StoreDtype,
    NounSet
);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    /// Each value's command-line spelling is its manifest spelling, both ways.
    fn same_spellings<T>()
    where
        T: ValueEnum + fmt::Display + PartialEq + fmt::Debug + for<'de> Deserialize<'de>,
    {
        for v in T::value_variants() {
            let text = v.to_string();
            assert_eq!(T::from_str(&text, false).as_ref(), Ok(v), "{text}");
            let from_manifest: T = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(&from_manifest, v, "{text}");
        }
    }

    #[test]
    fn command_line_and_manifest_spell_every_value_alike() {
        same_spellings::<SaeArchitecture>();
        same_spellings::<SaeNormalization>();
        same_spellings::<GemmLibrary>();
        same_spellings::<CircuitMethod>();
        same_spellings::<CircuitAggregation>();
        same_spellings::<CircuitAblation>();
        same_spellings::<StoreDtype>();
        same_spellings::<NounSet>();
        assert_eq!(CircuitAggregation::PerPosition.to_string(), "per-position");
        assert_eq!(SaeArchitecture::BatchTopK.to_string(), "batchtopk");
        assert_eq!(
            SaeNormalization::ConstantNormRescale.to_string(),
            "constant-norm-rescale"
        );
    }
}
