//! The Hugging Face GPT-2 `config.json`.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{atomic, Error, Result};

/// The fields of a Hugging Face GPT-2 `config.json` that the model math needs.
/// Unknown fields are ignored: HF configs carry many more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Number of attention heads.
    pub n_head: usize,
    /// Width of the residual stream (d_model).
    pub n_embd: usize,
    /// Maximum context length.
    pub n_positions: usize,
    /// Vocabulary size (d_vocab).
    pub vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f32,
    /// Width of the MLP hidden layer; `None` means `4 * n_embd`.
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// Activation function name; GPT-2 uses `gelu_new`.
    #[serde(default = "default_act")]
    pub activation_function: String,
}

fn default_eps() -> f32 {
    1e-5
}

fn default_act() -> String {
    "gelu_new".into()
}

impl Gpt2Config {
    /// Read and check a `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg: Gpt2Config = atomic::read_json(path)?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Check that the dimensions describe a working model.
    pub fn check(&self) -> Result<()> {
        if self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 || self.vocab_size == 0 {
            return Err(Error::BadConfig(
                "n_layer, n_head, n_embd and vocab_size must be positive".into(),
            ));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(Error::BadConfig(format!(
                "n_embd {} is not divisible by n_head {}",
                self.n_embd, self.n_head
            )));
        }
        if !matches!(
            self.activation_function.as_str(),
            "gelu_new" | "gelu_pytorch_tanh"
        ) {
            return Err(Error::BadConfig(format!(
                "activation_function {:?} is not supported (GPT-2 uses \"gelu_new\")",
                self.activation_function
            )));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn d_head(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Width of the MLP hidden layer.
    pub fn d_mlp(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}
