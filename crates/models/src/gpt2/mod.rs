//! GPT-2 as Hugging Face stores it, on ndarray: loading, a forward pass that captures
//! and edits TransformerLens hook points, and its backward pass (vector–Jacobian
//! products).
//!
//! The model reads like the math (nanoGPT / candle style): [`Gpt2`] holds the
//! embeddings, a list of [`Block`]s `{ ln_1, attn, ln_2, mlp }` and `ln_f`; the
//! unembedding is tied to `wte`. Hook semantics follow DESIGN.md:
//!
//! | hook | value |
//! |---|---|
//! | `hook_embed`, `hook_pos_embed` | `wte[token]`, `wpe[position]` |
//! | `blocks.L.hook_resid_pre` | input of block `L` |
//! | `blocks.L.hook_attn_out` | attention `c_proj` output, bias included |
//! | `blocks.L.hook_resid_mid` | `resid_pre + attn_out` |
//! | `blocks.L.mlp.hook_post` | `gelu_new(c_fc(ln_2(resid_mid)))`, width `d_mlp` |
//! | `blocks.L.hook_mlp_out` | MLP `c_proj` output, bias included |
//! | `blocks.L.hook_resid_post` | `resid_mid + mlp_out`; for the last block the residual *before* `ln_f` |
//! | `ln_final.hook_normalized` | `ln_f(final residual)` |
//!
//! Left padding: position ids are `max(cumsum(mask) - 1, 0)` (as HF generation and
//! `scripts/export_onnx.py`), and padded keys get zero attention. Values at padded
//! positions are not meaningful.
//!
//! - [`Forward`] says what to run: tokens or a cached `resid_pre` of some block
//!   ([`Input`]), which hooks to capture, whether to compute logits and whether to
//!   keep a [`Trace`] for the backward pass. [`Gpt2::run_with`] also takes an edit,
//!   called at every hook point with the activation, which it may change in place
//!   (patching, ablation, SAE splicing: `decode(features) + error`).
//! - [`Backward`] says where gradients start (d metric / d logits and/or seeds at
//!   hooks), which hooks to return gradients for, and which hooks to detach (their
//!   gradient is recorded but not propagated further up). Edits are treated as
//!   identity by the backward pass.
//!
//! ```no_run
//! use circuitry_core::HookPoint;
//! use circuitry_models::gpt2::{Backward, Forward, Gpt2};
//! # fn main() -> circuitry_models::Result<()> {
//! let model: Gpt2 = Gpt2::load(std::path::Path::new("datasets/tiny-gpt2"))?;
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

use std::path::Path;

use circuitry_core::{Gpt2Config, HookPoint};
use ndarray::{Array1, Array2, ArrayD, Dimension, NdFloat};
use rand::distr::Distribution;
use rand_chacha::ChaCha8Rng;
use rand_distr::Normal;

pub use backward::Backward;
pub use forward::{replace_at, Forward, Gpt2Output, Input, Trace};
pub use layers::{gelu_new, Attention, Block, LayerNorm, Linear, Mlp};

use crate::tensors::TensorFile;
use crate::{Error, Result};

/// The float types the model runs in: `f32` (weights as stored) or `f64` (for
/// finite-difference checks).
pub trait Scalar: NdFloat {
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

/// A GPT-2 language model (Hugging Face `GPT2LMHeadModel` weights).
#[derive(Debug, Clone)]
pub struct Gpt2<A: Scalar = f32> {
    config: Gpt2Config,
    /// Token embeddings, also the unembedding when `lm_head` is absent.
    wte: Array2<A>, // (vocab, d_model)
    /// Position embeddings.
    wpe: Array2<A>, // (n_positions, d_model)
    blocks: Vec<Block<A>>,
    ln_f: LayerNorm<A>,
    /// An untied unembedding, when the weights file has `lm_head.weight`.
    lm_head: Option<Array2<A>>, // (vocab, d_model)
}

/// Fetches one tensor by its name without prefix (`h.0.ln_1.weight`), with a shape.
type Fetch<'a, A> = dyn FnMut(&str, &[usize]) -> Result<ArrayD<A>> + 'a;

impl<A: Scalar> Gpt2<A> {
    /// Load `model_dir/config.json` and `model_dir/model.safetensors` (tensor names
    /// with or without the `transformer.` prefix; F32, F16 or BF16).
    pub fn load(model_dir: &Path) -> Result<Self> {
        let config = Gpt2Config::load(&model_dir.join("config.json"))?;
        let file = TensorFile::read(&model_dir.join("model.safetensors"))?;
        Self::from_tensors(config, &file)
    }

    /// Build from a config and the tensors of a weights file.
    pub fn from_tensors(config: Gpt2Config, file: &TensorFile) -> Result<Self> {
        config.check()?;
        let prefix = if file.contains("transformer.wte.weight") {
            "transformer."
        } else {
            ""
        };
        let has_lm_head = file.contains("lm_head.weight");
        let mut fetch = |name: &str, shape: &[usize]| -> Result<ArrayD<A>> {
            let full = if name == "lm_head.weight" {
                name.to_string()
            } else {
                format!("{prefix}{name}")
            };
            Ok(file.get(&full, shape)?.mapv(|x| A::of(f64::from(x))))
        };
        Self::build(config, has_lm_head, &mut fetch)
    }

    /// A randomly initialised model of `config`'s shape, as Hugging Face initialises
    /// GPT-2 (weights and embeddings N(0, 0.02²), biases 0, LayerNorm gains 1). For
    /// benchmarks and tests: speed does not depend on the weights' values.
    pub fn random(config: Gpt2Config, rng: &mut ChaCha8Rng) -> Result<Self> {
        config.check()?;
        let normal = Normal::new(0.0f64, 0.02).map_err(|e| Error::BadParameter {
            name: "std",
            value: "0.02".into(),
            message: e.to_string(),
        })?;
        let mut fetch = |name: &str, shape: &[usize]| -> Result<ArrayD<A>> {
            let is_ln = name.contains("ln_");
            Ok(if name.ends_with("bias") {
                ArrayD::zeros(shape)
            } else if is_ln {
                ArrayD::ones(shape)
            } else {
                ArrayD::from_shape_simple_fn(shape, || A::of(normal.sample(rng)))
            })
        };
        Self::build(config, false, &mut fetch)
    }

    fn build(config: Gpt2Config, has_lm_head: bool, fetch: &mut Fetch<'_, A>) -> Result<Self> {
        let (d, vocab) = (config.n_embd, config.vocab_size);
        let eps = A::of(f64::from(config.layer_norm_epsilon));
        let wte = get2(fetch, "wte.weight", [vocab, d])?;
        let wpe = get2(fetch, "wpe.weight", [config.n_positions, d])?;
        let blocks = (0..config.n_layer)
            .map(|l| Block::load(fetch, &format!("h.{l}."), &config))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = LayerNorm::load(fetch, "ln_f.", d, eps)?;
        let lm_head = if has_lm_head {
            Some(get2(fetch, "lm_head.weight", [vocab, d])?)
        } else {
            None
        };
        Ok(Gpt2 {
            config,
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The width of a hook's activation: `d_mlp` for `mlp.hook_post`, else `d_model`.
    pub fn width(&self, hook: HookPoint) -> usize {
        match hook {
            HookPoint::MlpPost { .. } => self.config.d_mlp(),
            _ => self.config.n_embd,
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
    pub fn cast<B: Scalar>(&self) -> Gpt2<B> {
        let c = |a: &Array2<A>| a.mapv(|x| B::of(to_f64(x)));
        Gpt2 {
            config: self.config.clone(),
            wte: c(&self.wte),
            wpe: c(&self.wpe),
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

/// Fetch a tensor of rank 1.
fn get1<A: Scalar>(fetch: &mut Fetch<'_, A>, name: &str, n: usize) -> Result<Array1<A>> {
    into_dim(fetch(name, &[n])?, name)
}

/// Fetch a tensor of rank 2.
fn get2<A: Scalar>(fetch: &mut Fetch<'_, A>, name: &str, shape: [usize; 2]) -> Result<Array2<A>> {
    into_dim(fetch(name, &shape)?, name)
}

fn into_dim<A: Scalar, D: Dimension>(t: ArrayD<A>, name: &str) -> Result<ndarray::Array<A, D>> {
    let got = format!("shape {:?}", t.shape());
    t.into_dimensionality::<D>().map_err(|_| Error::BadTensor {
        name: name.into(),
        path: "<weights>".into(),
        expected: format!("rank {}", D::NDIM.unwrap_or(0)),
        got,
    })
}
