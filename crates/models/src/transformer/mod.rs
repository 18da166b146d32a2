//! Decoder-only transformers as Hugging Face stores them — GPT-2 and Llama — on
//! ndarray: loading, a forward pass that captures and edits TransformerLens hook
//! points, and its backward pass (vector–Jacobian products).
//!
//! One model type, [`Transformer`], serves both families: the family (read from
//! `config.json`, see [`circuitry_core::ModelConfig`]) decides which layers a block is
//! made of ([`Norm`], [`Attention`] with or without [`Rotary`] positions and grouped
//! key/value heads, [`Mlp`] with `gelu_new` or SwiGLU), and everything above the layers
//! — hooks, edits, traces, the backward walk — is shared. The model reads like the math
//! (nanoGPT / candle style): embeddings, a list of [`Block`]s `{ ln_1, attn, ln_2, mlp }`
//! and `ln_f`. Hook semantics follow DESIGN.md, for both families:
//!
//! | hook | value |
//! |---|---|
//! | `hook_embed` | `wte[token]` (Llama: `embed_tokens`) |
//! | `hook_pos_embed` | `wpe[position]` (GPT-2 only; Llama's positions are rotary) |
//! | `blocks.L.hook_resid_pre` | input of block `L` |
//! | `blocks.L.hook_attn_out` | attention output projection, bias included |
//! | `blocks.L.hook_resid_mid` | `resid_pre + attn_out` |
//! | `blocks.L.mlp.hook_post` | `gelu_new(c_fc(ln_2(resid_mid)))`; Llama: `silu(gate) · up`; width `d_mlp` |
//! | `blocks.L.hook_mlp_out` | MLP output projection, bias included |
//! | `blocks.L.hook_resid_post` | `resid_mid + mlp_out`; for the last block the residual *before* `ln_f` |
//! | `ln_final.hook_normalized` | `ln_f(final residual)` (Llama: `model.norm`) |
//!
//! Left padding: position ids are `max(cumsum(mask) - 1, 0)` (as HF generation and
//! `scripts/export_onnx.py`), for learned and rotary positions alike, and padded keys
//! get zero attention. Values at padded positions are not meaningful.
//!
//! - [`Forward`] says what to run: tokens or a cached `resid_pre` of some block
//!   ([`Input`]), which hooks to capture, whether to compute logits and whether to
//!   keep a [`Trace`] for the backward pass. [`Transformer::run_with`] also takes an
//!   edit, called at every hook point with the activation, which it may change in place
//!   (patching, ablation, SAE splicing: `decode(features) + error`).
//! - [`Backward`] says where gradients start (d metric / d logits and/or seeds at
//!   hooks), which hooks to return gradients for, and which hooks to detach (their
//!   gradient is recorded but not propagated further up). Edits are treated as
//!   identity by the backward pass.
//!
//! ```no_run
//! use circuitry_core::HookPoint;
//! use circuitry_models::transformer::{Backward, Forward, Transformer};
//! # fn main() -> circuitry_models::Result<()> {
//! let model: Transformer = Transformer::load(std::path::Path::new("datasets/tiny-gpt2"))?;
//! let ids = ndarray::array![[5u32, 17, 3]]; // (batch, seq)
//! let hooks = [HookPoint::ResidPre { layer: 1 }];
//! let out = model.run(&Forward::tokens(ids.view()).capture(&hooks).trace(true))?;
//! let logits = out.logits.as_ref().unwrap(); // (batch, seq, vocab)
//! let d_logits = ndarray::Array3::<f32>::ones(logits.dim());
//! let grads = model.backward(
//!     out.trace.as_ref().unwrap(),
//!     &Backward::from_logits(d_logits.view()).want(&hooks),
//! )?;
//! assert_eq!(grads[&hooks[0]].dim(), out.hooks[&hooks[0]].dim());
//! # Ok(()) }
//! ```
mod backward;
mod forward;
mod layers;
mod load;

use std::path::Path;

use circuitry_core::{Family, HookPoint, ModelConfig};
use ndarray::{Array2, NdFloat};
use rand::distr::Distribution;
use rand_chacha::ChaCha8Rng;
use rand_distr::Normal;

pub use backward::Backward;
pub use forward::{replace_at, Forward, Input, KvPrefix, Output, Trace};
pub use layers::{gelu_new, Activation, Attention, Block, Linear, Mlp, Norm, NormKind, Rotary};

use crate::tensors::TensorFile;
use crate::{Error, Result};

/// The float types the model runs in: `f32` (weights as stored) or `f64` (for
/// finite-difference checks).
pub trait Scalar: NdFloat + crate::gemm::Gemm {
    /// Convert from `f64` (rounding for `f32`).
    fn of(x: f64) -> Self;
}

impl Scalar for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
}

impl Scalar for f64 {
    fn of(x: f64) -> Self {
        x
    }
}

/// A decoder-only transformer language model of a supported [`Family`]: Hugging Face
/// `GPT2LMHeadModel` or `LlamaForCausalLM` weights.
#[derive(Debug, Clone)]
pub struct Transformer<A: Scalar = f32> {
    config: ModelConfig,
    /// Token embeddings, also the unembedding when `lm_head` is absent (tied).
    wte: Array2<A>, // (vocab, d_model)
    /// Learned position embeddings (GPT-2); `None` with rotary positions (Llama).
    wpe: Option<Array2<A>>, // (n_ctx, d_model)
    blocks: Vec<Block<A>>,
    ln_f: Norm<A>,
    /// An untied unembedding, when the weights file has `lm_head.weight`.
    lm_head: Option<Array2<A>>, // (vocab, d_model)
}

impl<A: Scalar> Transformer<A> {
    /// Load `model_dir/config.json` (its `model_type` picks the family) and
    /// `model_dir/model.safetensors` (Hugging Face tensor names, with or without the
    /// `transformer.` / `model.` prefix; F32, F16 or BF16).
    pub fn load(model_dir: &Path) -> Result<Self> {
        let config = ModelConfig::load(&model_dir.join("config.json"))?;
        let file = TensorFile::read(&model_dir.join("model.safetensors"))?;
        Self::from_tensors(config, &file)
    }

    /// Build from a config and the tensors of a weights file.
    pub fn from_tensors(config: ModelConfig, file: &TensorFile) -> Result<Self> {
        config.check()?;
        let prefix = match config.family {
            Family::Gpt2 if file.contains("transformer.wte.weight") => "transformer.",
            Family::Llama if file.contains("model.embed_tokens.weight") => "model.",
            _ => "",
        };
        let has_lm_head = file.contains("lm_head.weight");
        let mut fetch = |name: &str, shape: &[usize]| -> Result<ndarray::ArrayD<A>> {
            let full = if name == "lm_head.weight" {
                name.to_string()
            } else {
                format!("{prefix}{name}")
            };
            Ok(file.get(&full, shape)?.mapv(|x| A::of(f64::from(x))))
        };
        load::build(config, has_lm_head, &mut fetch)
    }

    /// A randomly initialised model of `config`'s shape, as Hugging Face initialises
    /// both families (weights and embeddings N(0, 0.02²), biases 0, norm gains 1). For
    /// benchmarks and tests: speed does not depend on the weights' values.
    pub fn random(config: ModelConfig, rng: &mut ChaCha8Rng) -> Result<Self> {
        Self::random_with_std(config, 0.02, rng)
    }

    /// [`Transformer::random`] with weights and embeddings N(0, `std`²): a larger `std`
    /// gives sharper attention patterns, for tests that should see them.
    pub fn random_with_std(config: ModelConfig, std: f64, rng: &mut ChaCha8Rng) -> Result<Self> {
        config.check()?;
        let normal = Normal::new(0.0f64, std).map_err(|e| Error::BadParameter {
            name: "std",
            value: std.to_string(),
            message: e.to_string(),
        })?;
        let mut fetch = |name: &str, shape: &[usize]| -> Result<ndarray::ArrayD<A>> {
            Ok(if name.ends_with("bias") {
                ndarray::ArrayD::zeros(shape)
            } else if load::is_norm_gain(name) {
                ndarray::ArrayD::ones(shape)
            } else {
                ndarray::ArrayD::from_shape_simple_fn(shape, || A::of(normal.sample(rng)))
            })
        };
        load::build(config, false, &mut fetch)
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The width of a hook's activation: `d_mlp` for `mlp.hook_post`, else `d_model`.
    pub fn width(&self, hook: HookPoint) -> usize {
        match hook {
            HookPoint::MlpPost { .. } => self.config.d_mlp,
            _ => self.config.d_model,
        }
    }

    /// The transformer blocks, in order.
    pub fn blocks(&self) -> &[Block<A>] {
        &self.blocks
    }

    /// The unembedding matrix `W_U^T`.
    pub fn unembedding(&self) -> &Array2<A> /* (vocab, d_model) */ {
        self.lm_head.as_ref().unwrap_or(&self.wte)
    }

    /// The same model in another float type (e.g. `f64` for gradient checks).
    pub fn cast<B: Scalar>(&self) -> Transformer<B> {
        let c = |a: &Array2<A>| a.mapv(|x| B::of(to_f64(x)));
        Transformer {
            config: self.config.clone(),
            wte: c(&self.wte),
            wpe: self.wpe.as_ref().map(c),
            blocks: self.blocks.iter().map(Block::cast).collect(),
            ln_f: self.ln_f.cast(),
            lm_head: self.lm_head.as_ref().map(c),
        }
    }
}

/// `x` as `f64` (exact for `f32` and `f64`).
fn to_f64<A: Scalar>(x: A) -> f64 {
    x.to_f64().unwrap_or(f64::NAN)
}
