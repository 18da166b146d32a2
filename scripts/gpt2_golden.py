#!/usr/bin/env python3
"""Golden values for the Rust GPT-2 (crates/models/src/gpt2) from Hugging Face transformers.

Writes, into crates/models/tests/data/ (or --out):

  gpt2_tiny_random/config.json, gpt2_tiny_random/model.safetensors
      a randomly initialised small GPT-2 (2 layers, n_embd 32, 4 heads, vocab 100,
      n_positions 16), saved with `save_pretrained` (tensor names as transformers writes them).
      The weights are drawn wider than GPT-2's 0.02 init (and LayerNorm gains/biases are
      perturbed) so attention patterns are far from uniform and every term matters.

  gpt2_golden.safetensors  (all F32)
      input_ids       (batch, seq)  token ids (exact small integers)
      attention_mask  (batch, seq)  1 = token, 0 = left padding
      logits          (batch, seq, vocab)           float32 forward
      <hook name>     (batch, seq, width)           float32 forward, TransformerLens names:
                      hook_embed, hook_pos_embed, blocks.L.hook_resid_pre, .hook_attn_out,
                      .hook_resid_mid, .mlp.hook_post, .hook_mlp_out, .hook_resid_post,
                      ln_final.hook_normalized
      metric_weights  (batch, seq, vocab)  R; the metric is m = sum(R * logits * mask)
      grad.<hook>     (batch, seq, width)  dm/d(hook), float64 autograd, stored as f32
      grad.logits     (batch, seq, vocab)  = R * mask

Position ids follow scripts/export_onnx.py and HF generation: max(cumsum(mask) - 1, 0).
Attention is the eager implementation. Run: python3 scripts/gpt2_golden.py
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

SEED = 0
BATCH, SEQ = 3, 8
PADDING = [0, 3, 1]  # left padding per row


def build_model(out_dir: Path) -> GPT2LMHeadModel:
    torch.manual_seed(SEED)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=16,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name or name.startswith("transformer.ln_f"):
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn_like(p))
                else:
                    p.copy_(0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "wte" in name or "wpe" in name:
                p.copy_(0.5 * torch.randn_like(p))
            else:
                p.copy_(0.25 * torch.randn_like(p))
    model.config._attn_implementation = "eager"
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    return model


def run(model: GPT2LMHeadModel, input_ids, attention_mask, dtype):
    """Forward with every hook captured (grad retained); returns (logits, hooks)."""
    model = model.to(dtype)
    tr = model.transformer
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
        def fn(_mod, args):
            if args[0].requires_grad:
                args[0].retain_grad()
            hooks[name] = args[0]
        return fn

    handles.append(tr.wte.register_forward_hook(keep("hook_embed")))
    handles.append(tr.wpe.register_forward_hook(keep("hook_pos_embed")))
    for i, block in enumerate(tr.h):
        handles.append(block.register_forward_pre_hook(keep_input(f"blocks.{i}.hook_resid_pre")))
        handles.append(block.attn.c_proj.register_forward_hook(keep(f"blocks.{i}.hook_attn_out")))
        handles.append(block.ln_2.register_forward_pre_hook(keep_input(f"blocks.{i}.hook_resid_mid")))
        handles.append(block.mlp.act.register_forward_hook(keep(f"blocks.{i}.mlp.hook_post")))
        handles.append(block.mlp.c_proj.register_forward_hook(keep(f"blocks.{i}.hook_mlp_out")))
    handles.append(tr.ln_f.register_forward_pre_hook(
        keep_input(f"blocks.{len(tr.h) - 1}.hook_resid_post")))
    handles.append(tr.ln_f.register_forward_hook(keep("ln_final.hook_normalized")))
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids).logits
    for h in handles:
        h.remove()
    # resid_post[L] for L < n-1 is resid_pre[L+1] (the same tensor in HF's loop).
    for i in range(len(tr.h) - 1):
        hooks[f"blocks.{i}.hook_resid_post"] = hooks[f"blocks.{i + 1}.hook_resid_pre"]
    return logits, hooks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parent.parent / "crates/models/tests/data")
    args = ap.parse_args()
    model = build_model(args.out / "gpt2_tiny_random")

    gen = torch.Generator().manual_seed(SEED + 1)
    input_ids = torch.randint(0, 100, (BATCH, SEQ), generator=gen)
    attention_mask = torch.ones((BATCH, SEQ), dtype=torch.int64)
    for b, pad in enumerate(PADDING):
        attention_mask[b, :pad] = 0
        input_ids[b, :pad] = 0
    mask = attention_mask.to(torch.float64).unsqueeze(-1)  # (batch, seq, 1)
    weights = torch.randn((BATCH, SEQ, 100), generator=gen, dtype=torch.float64)

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
    max_fwd = max((hooks[n].double() - hooks64[n].detach()).abs().max().item() for n in hooks)
    print(f"float32 vs float64 forward: max abs diff {max_fwd:.2e}; metric {metric.item():.6f}")

    path = args.out / "gpt2_golden.safetensors"
    save_file({k: v.contiguous().clone() for k, v in sorted(out.items())}, str(path),
              metadata={"script": "scripts/gpt2_golden.py", "seed": str(SEED),
                        "position_ids": "max(cumsum(attention_mask, -1) - 1, 0)"})
    print(f"wrote {path} ({len(out)} tensors) and {args.out / 'gpt2_tiny_random'}")


if __name__ == "__main__":
    main()
