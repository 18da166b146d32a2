//! Building a [`Transformer`] from Hugging Face tensor names, per family.
//!
//! | part | GPT-2 (`Conv1D`, stored `[in, out]`) | Llama (`nn.Linear`, stored `[out, in]`, transposed here) |
//! |---|---|---|
//! | embeddings | `wte.weight`, `wpe.weight` | `embed_tokens.weight` |
//! | `ln_1` | `h.L.ln_1.{weight,bias}` | `layers.L.input_layernorm.weight` |
//! | `attn.c_attn` | `h.L.attn.c_attn.{weight,bias}` | `layers.L.self_attn.{q,k,v}_proj.weight` concatenated |
//! | `attn.c_proj` | `h.L.attn.c_proj.{weight,bias}` | `layers.L.self_attn.o_proj.weight` |
//! | `ln_2` | `h.L.ln_2.{weight,bias}` | `layers.L.post_attention_layernorm.weight` |
//! | `mlp.w_in` | `h.L.mlp.c_fc.{weight,bias}` | `layers.L.mlp.{gate,up}_proj.weight` concatenated |
//! | `mlp.w_out` | `h.L.mlp.c_proj.{weight,bias}` | `layers.L.mlp.down_proj.weight` |
//! | `ln_f` | `ln_f.{weight,bias}` | `norm.weight` |
//! | unembedding | `lm_head.weight` or tied to `wte` | `lm_head.weight` or tied (`tie_word_embeddings`) |
use circuitry_core::{Family, ModelConfig};
use ndarray::{concatenate, Array1, Array2, ArrayD, Axis, Dimension};

use super::layers::{Activation, Attention, Block, Linear, Mlp, Norm, NormKind, Rotary};
use super::{Scalar, Transformer};
use crate::{Error, Result};

/// Fetches one tensor by its name without prefix (`h.0.ln_1.weight`), with a shape.
pub(crate) type Fetch<'a, A> = dyn FnMut(&str, &[usize]) -> Result<ArrayD<A>> + 'a;

/// Whether a tensor name is a norm's gain (initialised to 1 in random models).
pub(crate) fn is_norm_gain(name: &str) -> bool {
    name.ends_with("weight") && (name.contains("ln_") || name.ends_with("norm.weight"))
}

pub(crate) fn build<A: Scalar>(
    config: ModelConfig,
    has_lm_head: bool,
    fetch: &mut Fetch<'_, A>,
) -> Result<Transformer<A>> {
    let (d, vocab) = (config.d_model, config.vocab_size);
    let (wte, wpe, ln_f, blocks) = match config.family {
        Family::Gpt2 => (
            get2(fetch, "wte.weight", [vocab, d])?,
            Some(get2(fetch, "wpe.weight", [config.n_ctx, d])?),
            layer_norm(fetch, "ln_f.", &config)?,
            (0..config.n_layer)
                .map(|l| gpt2_block(fetch, &format!("h.{l}."), &config))
                .collect::<Result<Vec<_>>>()?,
        ),
        Family::Llama => (
            get2(fetch, "embed_tokens.weight", [vocab, d])?,
            None,
            rms_norm(fetch, "norm.", &config)?,
            (0..config.n_layer)
                .map(|l| llama_block(fetch, &format!("layers.{l}."), &config))
                .collect::<Result<Vec<_>>>()?,
        ),
    };
    let lm_head = if has_lm_head {
        Some(get2(fetch, "lm_head.weight", [vocab, d])?)
    } else {
        None
    };
    Ok(Transformer {
        config,
        wte,
        wpe,
        blocks,
        ln_f,
        lm_head,
    })
}

fn gpt2_block<A: Scalar>(
    fetch: &mut Fetch<'_, A>,
    prefix: &str,
    cfg: &ModelConfig,
) -> Result<Block<A>> {
    let (d, m) = (cfg.d_model, cfg.d_mlp);
    let conv1d = |fetch: &mut Fetch<'_, A>, name: &str, d_in: usize, d_out: usize| {
        Ok::<_, Error>(Linear::new(
            get2(fetch, &format!("{prefix}{name}.weight"), [d_in, d_out])?,
            Some(get1(fetch, &format!("{prefix}{name}.bias"), d_out)?),
        ))
    };
    Ok(Block {
        ln_1: layer_norm(fetch, &format!("{prefix}ln_1."), cfg)?,
        attn: Attention {
            c_attn: conv1d(fetch, "attn.c_attn", d, 3 * d)?,
            c_proj: conv1d(fetch, "attn.c_proj", d, d)?,
            n_head: cfg.n_head,
            n_kv_head: cfg.n_head,
            rotary: None,
        },
        ln_2: layer_norm(fetch, &format!("{prefix}ln_2."), cfg)?,
        mlp: Mlp {
            w_in: conv1d(fetch, "mlp.c_fc", d, m)?,
            w_out: conv1d(fetch, "mlp.c_proj", m, d)?,
            act: Activation::GeluNew,
        },
    })
}

fn llama_block<A: Scalar>(
    fetch: &mut Fetch<'_, A>,
    prefix: &str,
    cfg: &ModelConfig,
) -> Result<Block<A>> {
    let (d, dkv, m) = (cfg.d_model, cfg.d_kv(), cfg.d_mlp);
    // nn.Linear stores [out, in]: transposed to [in, out] here.
    let linear = |fetch: &mut Fetch<'_, A>, name: &str, d_in: usize, d_out: usize, bias: bool| {
        let w = get2(fetch, &format!("{prefix}{name}.weight"), [d_out, d_in])?;
        let bias = if bias {
            Some(get1(fetch, &format!("{prefix}{name}.bias"), d_out)?)
        } else {
            None
        };
        Ok::<_, Error>(Linear::new(
            w.reversed_axes().as_standard_layout().into_owned(),
            bias,
        ))
    };
    let ab = cfg.attention_bias;
    let q = linear(fetch, "self_attn.q_proj", d, d, ab)?;
    let k = linear(fetch, "self_attn.k_proj", d, dkv, ab)?;
    let v = linear(fetch, "self_attn.v_proj", d, dkv, ab)?;
    let gate = linear(fetch, "mlp.gate_proj", d, m, cfg.mlp_bias)?;
    let up = linear(fetch, "mlp.up_proj", d, m, cfg.mlp_bias)?;
    let rotary = cfg.rope_theta.map(|theta| Rotary { theta });
    Ok(Block {
        ln_1: rms_norm(fetch, &format!("{prefix}input_layernorm."), cfg)?,
        attn: Attention {
            c_attn: fuse(&[q, k, v]),
            c_proj: linear(fetch, "self_attn.o_proj", d, d, ab)?,
            n_head: cfg.n_head,
            n_kv_head: cfg.n_kv_head,
            rotary,
        },
        ln_2: rms_norm(fetch, &format!("{prefix}post_attention_layernorm."), cfg)?,
        mlp: Mlp {
            w_in: fuse(&[gate, up]),
            w_out: linear(fetch, "mlp.down_proj", m, d, cfg.mlp_bias)?,
            act: Activation::SwiGlu,
        },
    })
}

/// Linears on the same input side by side: one product instead of several.
fn fuse<A: Scalar>(parts: &[Linear<A>]) -> Linear<A> {
    let weights: Vec<_> = parts.iter().map(|p| p.weight().view()).collect();
    let bias = parts.iter().all(|p| p.bias().is_some()).then(|| {
        let bs: Vec<_> = parts
            .iter()
            .filter_map(|p| p.bias())
            .map(|b| b.view())
            .collect();
        concatenate(Axis(0), &bs).unwrap_or_else(|_| Array1::zeros(0))
    });
    // Every part has d_in rows (checked by the shapes fetched), so this cannot fail.
    let weight = concatenate(Axis(1), &weights).unwrap_or_else(|_| Array2::zeros((0, 0)));
    Linear::new(weight, bias)
}

fn layer_norm<A: Scalar>(
    fetch: &mut Fetch<'_, A>,
    prefix: &str,
    cfg: &ModelConfig,
) -> Result<Norm<A>> {
    Ok(Norm {
        kind: NormKind::LayerNorm,
        weight: get1(fetch, &format!("{prefix}weight"), cfg.d_model)?,
        bias: Some(get1(fetch, &format!("{prefix}bias"), cfg.d_model)?),
        eps: A::of(cfg.norm_eps),
    })
}

fn rms_norm<A: Scalar>(
    fetch: &mut Fetch<'_, A>,
    prefix: &str,
    cfg: &ModelConfig,
) -> Result<Norm<A>> {
    Ok(Norm {
        kind: NormKind::RmsNorm,
        weight: get1(fetch, &format!("{prefix}weight"), cfg.d_model)?,
        bias: None,
        eps: A::of(cfg.norm_eps),
    })
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
