//! The model families circuitry supports and one family-neutral [`ModelConfig`] read
//! from a Hugging Face `config.json`.
//!
//! | family | `model_type` | architecture |
//! |---|---|---|
//! | [`Family::Gpt2`] | `gpt2` | LayerNorm, learned positions, `gelu_new` MLP, biases |
//! | [`Family::Llama`] | `llama` | RMSNorm, rotary positions, grouped-query attention, SwiGLU MLP |
//!
//! The family is chosen from `model_type` (or, without it, `architectures`); every stage
//! reaches both through this one config and the one model type built from it.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{atomic, Error, Gpt2Config, Result};

/// The `model_type`s circuitry can load, for error messages.
pub const SUPPORTED_MODEL_TYPES: &str =
    "\"gpt2\" (GPT2LMHeadModel) and \"llama\" (LlamaForCausalLM)";

/// A model family: which layers a transformer block is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// GPT-2: LayerNorm with bias, learned position embeddings, fused `c_attn`, `gelu_new`.
    Gpt2,
    /// Llama: RMSNorm, rotary position embeddings, grouped-query attention, SwiGLU.
    Llama,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::Gpt2 => "gpt2",
            Family::Llama => "llama",
        })
    }
}

/// The fields of a Hugging Face Llama `config.json` (`LlamaConfig`) that the model math
/// needs. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's gate and up projections.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); `None` means one per query head.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Maximum context length.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// Base of the rotary embedding's frequencies (older configs; transformers 5 writes
    /// it inside `rope_parameters`). 10000 when given nowhere.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// transformers 5's `{"rope_theta": …, "rope_type": "default"}`; only the default
    /// rotary type is supported.
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// Whether `lm_head` is the token embedding (then `lm_head.weight` is not stored).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// The MLP's activation; Llama uses `silu`.
    #[serde(default = "default_silu")]
    pub hidden_act: String,
    /// Biases on q, k, v and o projections.
    #[serde(default)]
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Rotary scaling (long-context variants); only `null` is supported.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Width of one head when it is not `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
}

fn default_rms_eps() -> f64 {
    1e-6
}

fn default_rope_theta() -> f64 {
    10_000.0
}

fn default_silu() -> String {
    "silu".into()
}

/// One description of a decoder-only transformer, whatever its family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Which layers the blocks are made of.
    pub family: Family,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Number of query heads.
    pub n_head: usize,
    /// Number of key/value heads (`n_head` without grouped-query attention).
    pub n_kv_head: usize,
    /// Width of the MLP hidden layer (`mlp.hook_post`).
    pub d_mlp: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Maximum context length.
    pub n_ctx: usize,
    /// The norms' epsilon (LayerNorm or RMSNorm).
    pub norm_eps: f64,
    /// Rotary base for Llama; `None` for learned positions (GPT-2).
    pub rope_theta: Option<f64>,
    /// Biases on the attention projections.
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
}

impl ModelConfig {
    /// Read a Hugging Face `config.json` of any supported family and check it.
    pub fn load(path: &Path) -> Result<Self> {
        let value: serde_json::Value = atomic::read_json(path)?;
        let bad = |message: String| Error::BadConfig(format!("{}: {message}", path.display()));
        let family = family_of(&value).map_err(bad)?;
        let json = |source| Error::Json {
            path: path.into(),
            source,
        };
        let cfg = match family {
            Family::Gpt2 => Self::from_gpt2(&serde_json::from_value(value).map_err(json)?),
            Family::Llama => Self::from_llama(&serde_json::from_value(value).map_err(json)?),
        }
        .map_err(|e| match e {
            Error::BadConfig(m) => bad(m),
            e => e,
        })?;
        Ok(cfg)
    }

    /// From a GPT-2 config (checked).
    pub fn from_gpt2(c: &Gpt2Config) -> Result<Self> {
        c.check()?;
        Ok(ModelConfig {
            family: Family::Gpt2,
            n_layer: c.n_layer,
            d_model: c.n_embd,
            n_head: c.n_head,
            n_kv_head: c.n_head,
            d_mlp: c.d_mlp(),
            vocab_size: c.vocab_size,
            n_ctx: c.n_positions,
            norm_eps: f64::from(c.layer_norm_epsilon),
            rope_theta: None,
            attention_bias: true,
            mlp_bias: true,
        })
    }

    /// From a Llama config (checked: SiLU, no rotary scaling, heads that divide the width).
    pub fn from_llama(c: &LlamaConfig) -> Result<Self> {
        let bad = |m: String| Err(Error::BadConfig(m));
        if c.hidden_act != "silu" {
            return bad(format!(
                "hidden_act {:?} is not supported (Llama uses \"silu\")",
                c.hidden_act
            ));
        }
        let params = c.rope_parameters.as_ref().filter(|v| !v.is_null());
        if let Some(kind) = params
            .and_then(|p| p.get("rope_type"))
            .and_then(|t| t.as_str())
        {
            if kind != "default" {
                return bad(format!(
                    "rope_parameters.rope_type {kind:?} is not supported (only \"default\" rotary embeddings)"
                ));
            }
        }
        let rope_theta = c
            .rope_theta
            .or_else(|| {
                params
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(|t| t.as_f64())
            })
            .unwrap_or_else(default_rope_theta);
        if c.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return bad(
                "rope_scaling is not supported (only plain rotary embeddings); \
                 use a checkpoint without rope_scaling"
                    .into(),
            );
        }
        let cfg = ModelConfig {
            family: Family::Llama,
            n_layer: c.num_hidden_layers,
            d_model: c.hidden_size,
            n_head: c.num_attention_heads,
            n_kv_head: c.num_key_value_heads.unwrap_or(c.num_attention_heads),
            d_mlp: c.intermediate_size,
            vocab_size: c.vocab_size,
            n_ctx: c.max_position_embeddings,
            norm_eps: c.rms_norm_eps,
            rope_theta: Some(rope_theta),
            attention_bias: c.attention_bias,
            mlp_bias: c.mlp_bias,
        };
        cfg.check()?;
        if let Some(h) = c.head_dim {
            if h != cfg.d_head() {
                return bad(format!(
                    "head_dim {h} differs from hidden_size / num_attention_heads = {}; \
                     such checkpoints are not supported",
                    cfg.d_head()
                ));
            }
        }
        Ok(cfg)
    }

    /// Check that the dimensions describe a working model.
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadConfig(m));
        if self.n_layer == 0
            || self.n_head == 0
            || self.n_kv_head == 0
            || self.d_model == 0
            || self.d_mlp == 0
            || self.vocab_size == 0
            || self.n_ctx == 0
        {
            return bad("layers, heads, widths, vocabulary and context must be positive".into());
        }
        if !self.d_model.is_multiple_of(self.n_head) {
            return bad(format!(
                "d_model {} is not divisible by the {} heads",
                self.d_model, self.n_head
            ));
        }
        if !self.n_head.is_multiple_of(self.n_kv_head) {
            return bad(format!(
                "{} query heads cannot be grouped over {} key/value heads",
                self.n_head, self.n_kv_head
            ));
        }
        if self.rope_theta.is_some() && !self.d_head().is_multiple_of(2) {
            return bad(format!(
                "rotary embeddings need an even head width, got {}",
                self.d_head()
            ));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn d_head(&self) -> usize {
        self.d_model / self.n_head
    }

    /// Width of the keys (and of the values): `n_kv_head · d_head`.
    pub fn d_kv(&self) -> usize {
        self.n_kv_head * self.d_head()
    }
}

/// The family a `config.json` describes, from `model_type`, else `architectures`.
fn family_of(v: &serde_json::Value) -> std::result::Result<Family, String> {
    let model_type = v.get("model_type").and_then(|t| t.as_str());
    match model_type {
        Some("gpt2") => return Ok(Family::Gpt2),
        Some("llama") => return Ok(Family::Llama),
        Some(other) => {
            return Err(format!(
                "model_type {other:?} is not supported; supported: {SUPPORTED_MODEL_TYPES}"
            ))
        }
        None => {}
    }
    let archs: Vec<&str> = v
        .get("architectures")
        .and_then(|a| a.as_array())
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    if archs.contains(&"GPT2LMHeadModel") || archs.contains(&"GPT2Model") {
        Ok(Family::Gpt2)
    } else if archs.contains(&"LlamaForCausalLM") {
        Ok(Family::Llama)
    } else if v.get("n_embd").is_some() {
        // Older GPT-2 configs carry neither field.
        Ok(Family::Gpt2)
    } else {
        Err(format!(
            "no model_type (or architectures {archs:?}) that circuitry supports; \
             supported: {SUPPORTED_MODEL_TYPES}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, v: serde_json::Value) -> std::path::PathBuf {
        let p = dir.join("config.json");
        std::fs::write(&p, v.to_string()).unwrap();
        p
    }

    fn llama() -> serde_json::Value {
        serde_json::json!({
            "model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
            "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
            "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
            "tie_word_embeddings": true, "hidden_act": "silu", "rope_scaling": null
        })
    }

    #[test]
    fn smollm2_config_reads_as_llama_with_grouped_heads() {
        let dir = tempfile::tempdir().unwrap();
        let c = ModelConfig::load(&write(dir.path(), llama())).unwrap();
        assert_eq!(c.family, Family::Llama);
        assert_eq!(
            (c.n_layer, c.d_model, c.n_head, c.n_kv_head),
            (30, 576, 9, 3)
        );
        assert_eq!((c.d_head(), c.d_kv(), c.d_mlp), (64, 192, 1536));
        assert_eq!(c.rope_theta, Some(100000.0));
    }

    #[test]
    fn rope_theta_is_read_from_transformers_5_rope_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = llama();
        v.as_object_mut().unwrap().remove("rope_theta");
        v["rope_parameters"] = serde_json::json!({"rope_theta": 500.0, "rope_type": "default"});
        let c = ModelConfig::load(&write(dir.path(), v.clone())).unwrap();
        assert_eq!(c.rope_theta, Some(500.0));
        v["rope_parameters"]["rope_type"] = "yarn".into();
        let e = ModelConfig::load(&write(dir.path(), v))
            .unwrap_err()
            .to_string();
        assert!(e.contains("yarn"), "{e}");
    }

    #[test]
    fn gpt2_config_reads_with_or_without_model_type() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = serde_json::json!({"n_layer": 2, "n_head": 4, "n_embd": 32,
            "n_positions": 16, "vocab_size": 100});
        let c = ModelConfig::load(&write(dir.path(), v.clone())).unwrap();
        assert_eq!((c.family, c.d_mlp, c.rope_theta), (Family::Gpt2, 128, None));
        v["model_type"] = "gpt2".into();
        assert_eq!(ModelConfig::load(&write(dir.path(), v)).unwrap(), c);
    }

    #[test]
    fn unsupported_families_and_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = |v| {
            ModelConfig::load(&write(dir.path(), v))
                .unwrap_err()
                .to_string()
        };
        let e = err(serde_json::json!({"model_type": "mistral", "hidden_size": 8}));
        assert!(e.contains("\"mistral\"") && e.contains("\"llama\""), "{e}");
        assert!(e.contains("config.json"), "{e}");
        let mut v = llama();
        v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0});
        assert!(err(v).contains("rope_scaling"));
        let mut v = llama();
        v["num_key_value_heads"] = 4.into();
        assert!(err(v).contains("grouped"));
        let mut v = llama();
        v["hidden_act"] = "gelu".into();
        assert!(err(v).contains("silu"));
    }
}
