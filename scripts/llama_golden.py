#!/usr/bin/env python3
"""Golden values for the Rust Llama (crates/models) from Hugging Face transformers.

Mirrors scripts/gpt2_golden.py. Without arguments it writes, into crates/models/tests/data/
(or --out DIR):

  llama_tiny_random/config.json, llama_tiny_random/model.safetensors
      a randomly initialised small LlamaForCausalLM (2 layers, hidden_size 32, 4 heads, 2
      key/value heads (grouped-query attention), intermediate_size 48, vocab 100,
      max_position_embeddings 16, rope_theta 10000, rms_norm_eps 1e-5, untied lm_head), saved
      with `save_pretrained` (tensor names and config.json as transformers writes them; the rope
      base is under `rope_parameters.rope_theta`). The weights are drawn wider than the default
      0.02 init and the RMSNorm gains are perturbed, so attention patterns are far from uniform
      and every term matters.

  llama_golden.safetensors  (all F32)
      input_ids       (batch, seq)  token ids (exact small integers)
      attention_mask  (batch, seq)  1 = token, 0 = left padding (rows padded by 0, 3, 1)
      logits          (batch, seq, vocab)           float32 forward
      <hook name>     (batch, seq, width)           float32 forward, TransformerLens names:
                      hook_embed (embed_tokens output), blocks.L.hook_resid_pre (input of
                      decoder layer L), .hook_attn_out (o_proj output), .hook_resid_mid (input
                      of post_attention_layernorm), .mlp.hook_post (silu(gate_proj(x)) *
                      up_proj(x), width intermediate_size), .hook_mlp_out (down_proj output),
                      .hook_resid_post, ln_final.hook_normalized (model.norm output).
                      No hook_pos_embed: Llama has no position embedding (RoPE instead).
      metric_weights  (batch, seq, vocab)  R; the metric is m = sum(R * logits * mask)
      grad.<hook>     (batch, seq, width)  dm/d(hook), float64 autograd, stored as f32
      grad.logits     (batch, seq, vocab)  = R * mask

With `--model DIR --out FILE` it writes the same kind of file for a real Llama folder (used by
scripts/setup_model.py for models/smollm2-135m/golden.safetensors): batch 2 x seq 12 of real
English (<|endoftext|> first, as the Rust dump prepends it; row 1 left-padded by 4), hooks only
at layers 0, 1, 14 and 29 (those below n_layers) plus hook_embed, ln_final.hook_normalized and
logits; gradients in float32 autograd, only for blocks.{0,14,29}.hook_resid_pre and logits.

Position ids follow scripts/export_onnx.py and HF generation: max(cumsum(mask) - 1, 0); they are
the RoPE positions. Attention is the eager implementation. For the float64 pass two float32
shortcuts of transformers' Llama are replaced by the same math in float64 (`exact_float64`):
eager attention's softmax (computed in float32 even for float64 inputs, which also turns the
float64 mask minimum into -inf and fully masked padding rows into NaN) and the RoPE cos/sin
(computed in float32 from a float32 inv_freq, then cast). The float32 pass is transformers as is.
Run: python3 scripts/llama_golden.py
"""
from __future__ import annotations

import argparse
import contextlib
import os
import types
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

SEED = 0
BATCH, SEQ = 3, 8
PADDING = [0, 3, 1]  # left padding per row
VOCAB = 100
POSITION_IDS_RULE = "max(cumsum(attention_mask, -1) - 1, 0)"

# --model: real English, <|endoftext|> (id 0) first; row 1 is shorter and left-padded.
MODEL_TEXTS = ["The keys to the old wooden cabinet in the kitchen are",
               "The author that the guards like says that"]
MODEL_SEQ = 12
MODEL_PAD = 4
MODEL_LAYERS = (0, 1, 14, 29)
MODEL_GRAD_LAYERS = (0, 14, 29)


def build_model(out_dir: Path) -> LlamaForCausalLM:
    torch.manual_seed(SEED)
    config = LlamaConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=48, vocab_size=VOCAB, max_position_embeddings=16, rope_theta=10000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=False, hidden_act="silu", attention_bias=False,
        mlp_bias=False, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # RMSNorm gains
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                p.copy_(0.25 * torch.randn_like(p))
    model.config._attn_implementation = "eager"
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    return model


@contextlib.contextmanager
def exact_float64(model: LlamaForCausalLM):
    """Within: eager attention's softmax in the input dtype and RoPE cos/sin from a float64
    inv_freq, for the float64 reference (see the module doc). Restored on exit."""
    from transformers.models.llama import modeling_llama

    original = modeling_llama.eager_attention_forward

    def eager_same_dtype(module, query, key, value, attention_mask, scaling, dropout=0.0,
                         **kwargs):
        # query: (batch, n_head, seq, head_dim); key, value: (batch, n_kv_head, seq, head_dim)
        key = modeling_llama.repeat_kv(key, module.num_key_value_groups)
        value = modeling_llama.repeat_kv(value, module.num_key_value_groups)
        scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (batch, n_head, q, k)
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = torch.softmax(scores, dim=-1)
        return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs

    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    theta = cfg.rope_parameters["rope_theta"]
    assert cfg.rope_parameters.get("rope_type", "default") == "default", cfg.rope_parameters
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)

    def rope64(_self, x, position_ids):
        freqs = position_ids[..., None].to(torch.float64) * inv_freq  # (batch, seq, head_dim/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (batch, seq, head_dim)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    rotary = model.model.rotary_emb
    modeling_llama.eager_attention_forward = eager_same_dtype
    rotary.forward = types.MethodType(rope64, rotary)
    try:
        yield
    finally:
        modeling_llama.eager_attention_forward = original
        del rotary.forward


def run(model: LlamaForCausalLM, input_ids, attention_mask, dtype, layers=None):
    """Forward with the hooks captured (grad retained); returns (logits, hooks).

    `layers`: the layers whose block hooks are kept (all when None)."""
    model = model.to(dtype)
    inner = model.model
    n_layer = len(inner.layers)
    layers = range(n_layer) if layers is None else [i for i in layers if i < n_layer]
    hooks: dict[str, torch.Tensor] = {}
    handles = []

    def keep(name):
        def fn(_mod, _inp, out):
            out = out[0] if isinstance(out, tuple) else out
            if out.requires_grad:
                out.retain_grad()
            hooks[name] = out
        return fn

    def keep_input(name):
        def fn(_mod, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            if x.requires_grad:
                x.retain_grad()
            hooks[name] = x
        return fn

    handles.append(inner.embed_tokens.register_forward_hook(keep("hook_embed")))
    for i in layers:
        block = inner.layers[i]
        handles.append(block.register_forward_pre_hook(
            keep_input(f"blocks.{i}.hook_resid_pre"), with_kwargs=True))
        handles.append(block.self_attn.o_proj.register_forward_hook(
            keep(f"blocks.{i}.hook_attn_out")))
        handles.append(block.post_attention_layernorm.register_forward_pre_hook(
            keep_input(f"blocks.{i}.hook_resid_mid"), with_kwargs=True))
        handles.append(block.mlp.down_proj.register_forward_pre_hook(
            keep_input(f"blocks.{i}.mlp.hook_post"), with_kwargs=True))
        handles.append(block.mlp.down_proj.register_forward_hook(keep(f"blocks.{i}.hook_mlp_out")))
        if i + 1 < n_layer:  # resid_post[i] is resid_pre[i+1] (the same tensor in HF's loop)
            handles.append(inner.layers[i + 1].register_forward_pre_hook(
                keep_input(f"blocks.{i}.hook_resid_post"), with_kwargs=True))
        else:
            handles.append(inner.norm.register_forward_pre_hook(
                keep_input(f"blocks.{i}.hook_resid_post"), with_kwargs=True))
    handles.append(inner.norm.register_forward_hook(keep("ln_final.hook_normalized")))
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    exact = exact_float64(model) if dtype == torch.float64 else contextlib.nullcontext()
    try:
        with exact:
            logits = model(input_ids=input_ids, attention_mask=attention_mask,
                           position_ids=position_ids, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    return logits, hooks


def save_atomic(tensors: dict[str, torch.Tensor], path: Path, metadata: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.contiguous().clone() for k, v in sorted(tensors.items())}, str(tmp),
                  metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def tiny_golden(out_dir: Path) -> None:
    """The random tiny model and its golden file (float64 gradients at every hook)."""
    model = build_model(out_dir / "llama_tiny_random")
    gen = torch.Generator().manual_seed(SEED + 1)
    input_ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
    attention_mask = torch.ones((BATCH, SEQ), dtype=torch.int64)
    for b, pad in enumerate(PADDING):
        attention_mask[b, :pad] = 0
        input_ids[b, :pad] = 0
    mask = attention_mask.to(torch.float64).unsqueeze(-1)  # (batch, seq, 1)
    weights = torch.randn((BATCH, SEQ, VOCAB), generator=gen, dtype=torch.float64)

    out: dict[str, torch.Tensor] = {
        "input_ids": input_ids.to(torch.float32),
        "attention_mask": attention_mask.to(torch.float32),
        "metric_weights": weights.to(torch.float32),
    }
    with torch.no_grad():
        logits, hooks = run(model, input_ids, attention_mask, torch.float32)
    out["logits"] = logits.float()
    for name, t in hooks.items():
        out[name] = t.detach().float()

    logits64, hooks64 = run(model, input_ids, attention_mask, torch.float64)
    metric = (weights * logits64 * mask).sum()
    metric.backward()
    out["grad.logits"] = (weights * mask).float()
    for name, t in hooks64.items():
        out[f"grad.{name}"] = t.grad.detach().float()
    real = attention_mask.bool()
    max_fwd = max((hooks[n].double() - hooks64[n].detach())[real].abs().max().item() for n in hooks)
    print(f"float32 vs float64 forward (real tokens): max abs diff {max_fwd:.2e}; "
          f"metric {metric.item():.6f}")
    path = out_dir / "llama_golden.safetensors"
    save_atomic(out, path, {"script": "scripts/llama_golden.py", "seed": str(SEED),
                            "position_ids": POSITION_IDS_RULE})
    print(f"wrote {path} ({len(out)} tensors) and {out_dir / 'llama_tiny_random'}")


def model_golden(model_dir: Path, path: Path) -> None:
    """Golden values for a real Llama folder (see the module doc): float32, selected layers."""
    from tokenizers import Tokenizer

    model_dir, path = Path(model_dir), Path(path)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    model = LlamaForCausalLM.from_pretrained(model_dir, attn_implementation="eager",
                                             dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    input_ids = torch.zeros((2, MODEL_SEQ), dtype=torch.int64)
    attention_mask = torch.zeros((2, MODEL_SEQ), dtype=torch.int64)
    for b, text in enumerate(MODEL_TEXTS):
        n = MODEL_SEQ - (MODEL_PAD if b == 1 else 0)
        ids = [0] + tok.encode(text, add_special_tokens=False).ids  # <|endoftext|> first
        if len(ids) < n:
            raise ValueError(f"text {text!r} has {len(ids)} tokens, needs {n}")
        input_ids[b, MODEL_SEQ - n:] = torch.tensor(ids[:n])
        attention_mask[b, MODEL_SEQ - n:] = 1
    gen = torch.Generator().manual_seed(SEED + 1)
    weights = torch.randn((2, MODEL_SEQ, vocab), generator=gen, dtype=torch.float32)
    mask = attention_mask.to(torch.float32).unsqueeze(-1)  # (batch, seq, 1)

    logits, hooks = run(model, input_ids, attention_mask, torch.float32, MODEL_LAYERS)
    metric = (weights * logits * mask).sum()
    metric.backward()
    out: dict[str, torch.Tensor] = {
        "input_ids": input_ids.to(torch.float32),
        "attention_mask": attention_mask.to(torch.float32),
        "metric_weights": weights,
        "logits": logits.detach(),
        "grad.logits": weights * mask,
    }
    for name, t in hooks.items():
        out[name] = t.detach()
    for i in MODEL_GRAD_LAYERS:
        name = f"blocks.{i}.hook_resid_pre"
        if name in hooks:
            out[f"grad.{name}"] = hooks[name].grad.detach()
    save_atomic(out, path, {"script": "scripts/llama_golden.py --model", "seed": str(SEED),
                            "position_ids": POSITION_IDS_RULE, "texts": "\n".join(MODEL_TEXTS),
                            "grad_dtype": "float32"})
    print(f"wrote {path} ({len(out)} tensors); metric {metric.item():.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path,
                    help="a real Llama folder (e.g. models/smollm2-135m); needs --out FILE")
    ap.add_argument("--out", type=Path, help="output folder (tiny model) or file (--model)")
    args = ap.parse_args()
    if args.model is not None:
        if args.out is None:
            ap.error("--model needs --out FILE.safetensors")
        model_golden(args.model, args.out)
    else:
        tiny_golden(args.out or Path(__file__).resolve().parent.parent / "crates/models/tests/data")


if __name__ == "__main__":
    main()
