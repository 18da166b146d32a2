//! Typed TransformerLens hook names.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// A hook point, named as in TransformerLens.
///
/// For Hugging Face GPT-2: `ResidPre { layer }` is the input of block `layer`
/// (`hidden_states[layer]`); `AttnOut` and `MlpOut` are the outputs of the block's
/// `c_proj` (bias included); `ResidPost { layer }` equals `ResidPre { layer + 1 }`;
/// `ResidFinal` is the residual after the last block and *before* `ln_f` (Hugging
/// Face's last hidden state is after `ln_f`: they differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HookPoint {
    /// `hook_embed`: token embeddings.
    Embed,
    /// `hook_pos_embed`: position embeddings.
    PosEmbed,
    /// `blocks.L.hook_resid_pre`: input of block `L`.
    ResidPre {
        /// Block index.
        layer: usize,
    },
    /// `blocks.L.hook_resid_mid`: residual after attention, before the MLP.
    ResidMid {
        /// Block index.
        layer: usize,
    },
    /// `blocks.L.hook_resid_post`: output of block `L`.
    ResidPost {
        /// Block index.
        layer: usize,
    },
    /// `blocks.L.hook_attn_out`: attention output (after `c_proj`, bias included).
    AttnOut {
        /// Block index.
        layer: usize,
    },
    /// `blocks.L.hook_mlp_out`: MLP output (after `c_proj`, bias included).
    MlpOut {
        /// Block index.
        layer: usize,
    },
    /// `blocks.L.mlp.hook_post`: MLP hidden activations after the non-linearity.
    MlpPost {
        /// Block index.
        layer: usize,
    },
    /// `ln_final.hook_normalized`: the final residual after `ln_f`.
    LnFinal,
    /// `toy.hook_input`: the toy agreement network's 2-d input.
    ToyInput,
    /// `toy.hook_hidden`: the toy agreement network's hidden layer (after ReLU).
    ToyHidden,
    /// `toy.hook_logits`: the toy agreement network's output logits.
    ToyLogits,
}

impl HookPoint {
    /// The block this hook belongs to, if any.
    pub fn layer(&self) -> Option<usize> {
        match *self {
            HookPoint::ResidPre { layer }
            | HookPoint::ResidMid { layer }
            | HookPoint::ResidPost { layer }
            | HookPoint::AttnOut { layer }
            | HookPoint::MlpOut { layer }
            | HookPoint::MlpPost { layer } => Some(layer),
            _ => None,
        }
    }

    /// The residual right before `ln_f` of a model with `n_layer` blocks:
    /// TransformerLens names it `blocks.{n_layer-1}.hook_resid_post`.
    pub fn resid_final(n_layer: usize) -> HookPoint {
        HookPoint::ResidPost {
            layer: n_layer.saturating_sub(1),
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookPoint::Embed => f.write_str("hook_embed"),
            HookPoint::PosEmbed => f.write_str("hook_pos_embed"),
            HookPoint::ResidPre { layer } => write!(f, "blocks.{layer}.hook_resid_pre"),
            HookPoint::ResidMid { layer } => write!(f, "blocks.{layer}.hook_resid_mid"),
            HookPoint::ResidPost { layer } => write!(f, "blocks.{layer}.hook_resid_post"),
            HookPoint::AttnOut { layer } => write!(f, "blocks.{layer}.hook_attn_out"),
            HookPoint::MlpOut { layer } => write!(f, "blocks.{layer}.hook_mlp_out"),
            HookPoint::MlpPost { layer } => write!(f, "blocks.{layer}.mlp.hook_post"),
            HookPoint::LnFinal => f.write_str("ln_final.hook_normalized"),
            HookPoint::ToyInput => f.write_str("toy.hook_input"),
            HookPoint::ToyHidden => f.write_str("toy.hook_hidden"),
            HookPoint::ToyLogits => f.write_str("toy.hook_logits"),
        }
    }
}

impl FromStr for HookPoint {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::BadHookName {
            name: name.to_string(),
            reason: reason.into(),
        };
        match name {
            "hook_embed" => return Ok(HookPoint::Embed),
            "hook_pos_embed" => return Ok(HookPoint::PosEmbed),
            "ln_final.hook_normalized" => return Ok(HookPoint::LnFinal),
            "toy.hook_input" => return Ok(HookPoint::ToyInput),
            "toy.hook_hidden" => return Ok(HookPoint::ToyHidden),
            "toy.hook_logits" => return Ok(HookPoint::ToyLogits),
            _ => {}
        }
        let rest = name
            .strip_prefix("blocks.")
            .ok_or_else(|| bad("not a known hook"))?;
        let (layer, hook) = rest
            .split_once('.')
            .ok_or_else(|| bad("missing hook after layer"))?;
        if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("layer is not a number"));
        }
        if layer.len() > 1 && layer.starts_with('0') {
            return Err(bad("layer has a leading zero"));
        }
        let layer: usize = layer.parse().map_err(|_| bad("layer is out of range"))?;
        Ok(match hook {
            "hook_resid_pre" => HookPoint::ResidPre { layer },
            "hook_resid_mid" => HookPoint::ResidMid { layer },
            "hook_resid_post" => HookPoint::ResidPost { layer },
            "hook_attn_out" => HookPoint::AttnOut { layer },
            "hook_mlp_out" => HookPoint::MlpOut { layer },
            "mlp.hook_post" => HookPoint::MlpPost { layer },
            _ => return Err(bad("unknown hook within a block")),
        })
    }
}

impl Serialize for HookPoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HookPoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_transformer_lens_names() {
        assert_eq!(
            "blocks.11.hook_mlp_out".parse::<HookPoint>().unwrap(),
            HookPoint::MlpOut { layer: 11 }
        );
        assert_eq!(
            "blocks.0.mlp.hook_post".parse::<HookPoint>().unwrap(),
            HookPoint::MlpPost { layer: 0 }
        );
        assert_eq!(
            "toy.hook_hidden".parse::<HookPoint>().unwrap(),
            HookPoint::ToyHidden
        );
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "",
            "blocks.x.hook_resid_pre",
            "blocks.01.hook_resid_pre",
            "blocks.3",
            "blocks.3.hook_nope",
            "resid_pre",
        ] {
            let err = bad.parse::<HookPoint>().unwrap_err().to_string();
            assert!(
                err.contains("expected a TransformerLens name"),
                "{bad}: {err}"
            );
        }
    }

    fn any_hook() -> impl Strategy<Value = HookPoint> {
        prop_oneof![
            Just(HookPoint::Embed),
            Just(HookPoint::PosEmbed),
            Just(HookPoint::LnFinal),
            Just(HookPoint::ToyInput),
            Just(HookPoint::ToyHidden),
            Just(HookPoint::ToyLogits),
            (0usize..1000).prop_map(|layer| HookPoint::ResidPre { layer }),
            (0usize..1000).prop_map(|layer| HookPoint::ResidMid { layer }),
            (0usize..1000).prop_map(|layer| HookPoint::ResidPost { layer }),
            (0usize..1000).prop_map(|layer| HookPoint::AttnOut { layer }),
            (0usize..1000).prop_map(|layer| HookPoint::MlpOut { layer }),
            (0usize..1000).prop_map(|layer| HookPoint::MlpPost { layer }),
        ]
    }

    proptest! {
        #[test]
        fn display_then_parse_round_trips(hook in any_hook()) {
            prop_assert_eq!(hook.to_string().parse::<HookPoint>().unwrap(), hook);
            let json = serde_json::to_string(&hook).unwrap();
            prop_assert_eq!(serde_json::from_str::<HookPoint>(&json).unwrap(), hook);
        }
    }
}
