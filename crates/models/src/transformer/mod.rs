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

    /// `e^x` as the activations compute it: `exp_f32` for `f32` (no call, no branch,
    /// so loops over activations vectorise), the standard library's for `f64`.
    fn exp_act(self) -> Self;
}

impl Scalar for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }

    #[inline(always)]
    fn exp_act(self) -> Self {
        exp_f32(self)
    }
}

impl Scalar for f64 {
    fn of(x: f64) -> Self {
        x
    }

    #[inline(always)]
    fn exp_act(self) -> Self {
        self.exp()
    }
}

/// SwiGLU's elementwise kernels, compiled for AVX-512 and AVX2 as well as the baseline
/// target and picked at run time: with [`Scalar::exp_act`] the f32 loops vectorise.
/// Only IEEE additions and multiplications in a fixed order (Rust never fuses them), so
/// the results are bitwise the same on every CPU.
pub(crate) mod swiglu {
    use multiversion::multiversion;

    use super::Scalar;

    /// `out = silu(gate) · up`, `silu(g) = g / (1 + e^(−g))`.
    #[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
    pub(crate) fn forward<A: Scalar>(gate: &[A], up: &[A], out: &mut [A]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g / (A::one() + (-g).exp_act()) * u;
        }
    }

    /// The gradients at `gate` and `up` given `dy` at the output.
    #[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
    pub(crate) fn backward<A: Scalar>(
        (gate, up, dy): (&[A], &[A], &[A]),
        d_gate: &mut [A],
        d_up: &mut [A],
    ) {
        let n = gate
            .len()
            .min(up.len())
            .min(dy.len())
            .min(d_gate.len())
            .min(d_up.len());
        for i in 0..n {
            let (g, u, y) = (gate[i], up[i], dy[i]);
            let sig = A::one() / (A::one() + (-g).exp_act());
            d_up[i] = y * g * sig;
            d_gate[i] = y * u * sig * (A::one() + g * (A::one() - sig));
        }
    }
}

/// `gelu_new`'s elementwise kernels, built as [`swiglu`]'s are (AVX-512, AVX2 and the
/// baseline, picked at run time; the f32 loops vectorise through
/// [`Scalar::exp_act`]; bitwise the same on every CPU). `gelu_new(x) =
/// 0.5 x (1 + tanh u) = x σ(2u)` with `u = √(2/π) (x + 0.044715 x³)`, since
/// `(1 + tanh u) / 2 = σ(2u)`: one exponential, where the C library's `tanhf` was a
/// call per element and a twelfth of a GPT-2-shaped circuit pass.
pub(crate) mod gelu {
    use multiversion::multiversion;

    use super::Scalar;

    const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
    const GELU_C: f64 = 0.044_715;

    /// `(e^(−2u), σ(2u))` at `x`.
    #[inline(always)]
    fn parts<A: Scalar>(x: A) -> (A, A) {
        let (k, c) = (A::of(SQRT_2_OVER_PI), A::of(GELU_C));
        let e = (A::of(-2.0) * k * (x + c * x * x * x)).exp_act();
        (e, A::one() / (A::one() + e))
    }

    /// `gelu_new(x)`.
    #[inline(always)]
    pub(crate) fn value<A: Scalar>(x: A) -> A {
        x * parts(x).1
    }

    /// `d gelu_new / dx`: `s + 2 x s (1 − s) du/dx`, `s = σ(2u)`, with `1 − s = e s`
    /// (`e = e^(−2u)`) so that it keeps its precision where `s` nears 1.
    #[inline(always)]
    pub(crate) fn slope<A: Scalar>(x: A) -> A {
        let (e, s) = parts(x);
        let du = A::of(SQRT_2_OVER_PI) * (A::one() + A::of(3.0 * GELU_C) * x * x);
        s + A::of(2.0) * x * s * (e * s) * du
    }

    /// `out = gelu_new(x)`.
    #[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
    pub(crate) fn forward<A: Scalar>(x: &[A], out: &mut [A]) {
        for (o, &x) in out.iter_mut().zip(x) {
            *o = value(x);
        }
    }

    /// `g *= gelu_new'(x)`: the gradient at the input from `g` at the output.
    #[multiversion(targets("x86_64+avx512f", "x86_64+avx2"))]
    pub(crate) fn backward<A: Scalar>(x: &[A], g: &mut [A]) {
        for (g, &x) in g.iter_mut().zip(x) {
            *g *= slope(x);
        }
    }
}

/// `e^x` in f32 without a call or a branch, so that loops over activations vectorise
/// (the C library's `expf` is a call per element, and SwiGLU's gate over every MLP row
/// was a tenth of integrated gradients' time): Cody–Waite reduction `x = n ln 2 + r`,
/// `|r| ≤ ln 2 / 2`, Cephes' polynomial for `e^r`, and `2^n` from the exponent
/// bits. Relative error below 1e-7 against f64 on `[−87, 88]` (8.1e-8 measured, tested); the input is clamped to
/// that range, so larger inputs saturate near `f32::MAX` and smaller ones near
/// `f32::MIN_POSITIVE` instead of overflowing to infinity or flushing to zero.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2²³ rounds to the nearest integer (|v| < 2²²)
    // with two additions, where `round` would be a call on baseline x86-64.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `exp_f32` against f64 `exp` over the range it keeps: relative error below 1e-7;
    /// the f32 SwiGLU built on it within 3e-7 of f64's (relative to 1 + |x|).
    #[test]
    fn exp_f32_and_swiglu_agree_with_f64() {
        let mut worst = 0.0f64;
        let mut worst_sig = 0.0f64;
        let n = 2_000_001;
        for i in 0..n {
            let x = -87.0 + 175.0 * i as f32 / (n - 1) as f32;
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            let (mut out, mut d_gate, mut d_up) = ([0f32], [0f32], [0f32]);
            swiglu::forward(&[x], &[1.0], &mut out);
            swiglu::backward((&[x], &[1.0], &[1.0]), &mut d_gate, &mut d_up);
            let sig = 1.0 / (1.0 + (-(x as f64)).exp());
            worst_sig = worst_sig
                .max((out[0] as f64 - x as f64 * sig).abs() / (1.0 + (x as f64).abs()))
                .max((d_up[0] as f64 - x as f64 * sig).abs() / (1.0 + (x as f64).abs()));
        }
        println!("exp_f32: max relative error {worst:.3e}; swiglu: max error {worst_sig:.3e}");
        assert!(worst < 1e-7, "{worst:.3e}");
        assert!(worst_sig < 3e-7, "{worst_sig:.3e}");
        // Saturates instead of overflowing or flushing to zero.
        assert!(exp_f32(1e4).is_finite() && exp_f32(1e4) > 1e38);
        assert!(exp_f32(-1e4) > 0.0 && exp_f32(-1e4) < 1e-37);
        assert_eq!(exp_f32(0.0), 1.0);
    }

    /// The f32 `gelu_new` kernels against GPT-2's formula `0.5 x (1 + tanh u)` and its
    /// derivative in f64, over `[−20, 20]` (and saturating beyond): within 2e-7
    /// relative to `1 + |x|`, and within 1.5 times the error of that formula evaluated
    /// in f32 with the C library's `tanhf` (as PyTorch does); the slice kernels equal
    /// the scalar ones bit for bit.
    #[test]
    fn gelu_kernels_agree_with_the_tanh_formula_in_f64() {
        let (k, c) = (0.797_884_560_802_865_4f64, 0.044_715f64);
        let n = 400_001;
        let xs: Vec<f32> = (0..n)
            .map(|i| -20.0 + 40.0 * i as f32 / (n - 1) as f32)
            .chain([-1e4, -100.0, 100.0, 1e4])
            .collect();
        let mut out = vec![0f32; xs.len()];
        let mut grad = vec![1f32; xs.len()];
        gelu::forward(&xs, &mut out);
        gelu::backward(&xs, &mut grad);
        let (mut worst, mut worst_grad) = (0.0f64, 0.0f64);
        let (mut libm, mut libm_grad) = (0.0f64, 0.0f64);
        for ((&x, &y), &g) in xs.iter().zip(&out).zip(&grad) {
            assert_eq!(y.to_bits(), gelu::value(x).to_bits());
            assert_eq!(g.to_bits(), gelu::slope(x).to_bits());
            let (kf, cf) = (k as f32, c as f32);
            let tf = (kf * (x + cf * x * x * x)).tanh();
            let yf = 0.5 * x * (1.0 + tf);
            let gf = 0.5 * (1.0 + tf) + 0.5 * x * (1.0 - tf * tf) * kf * (1.0 + 3.0 * cf * x * x);
            let x = x as f64;
            let t = (k * (x + c * x * x * x)).tanh();
            let want = 0.5 * x * (1.0 + t);
            let want_grad = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * c * x * x);
            worst = worst.max((y as f64 - want).abs() / (1.0 + x.abs()));
            worst_grad = worst_grad.max((g as f64 - want_grad).abs() / (1.0 + x.abs()));
            libm = libm.max((yf as f64 - want).abs() / (1.0 + x.abs()));
            libm_grad = libm_grad.max((gf as f64 - want_grad).abs() / (1.0 + x.abs()));
        }
        println!(
            "gelu_new f32: max error {worst:.3e} (tanhf formula {libm:.3e}); \
             its slope: {worst_grad:.3e} (tanhf formula {libm_grad:.3e})"
        );
        assert!(worst < 2e-7 && worst <= 1.5 * libm, "{worst:.3e}");
        assert!(
            worst_grad < 2e-7 && worst_grad <= 1.5 * libm_grad,
            "{worst_grad:.3e}"
        );
    }
}
