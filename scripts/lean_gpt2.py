"""A lean PyTorch GPT-2 for fast CPU training, convertible to Hugging Face GPT2LMHeadModel.

The same math as HF GPT-2 (pre-LayerNorm blocks, eps 1e-5, tanh GELU, attention scaled by
1/sqrt(head_dim), learned positions, unembedding tied to `wte`), without HF's mask and cache
machinery: about a third cheaper per training step at the tiny model's size.
`to_hf_state_dict` renames the weights to HF's layout (Conv1D weights stored [in, out]);
train_tiny_gpt2.py checks that the HF model then gives the same logits.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(d_model, eps=1e-5)
        self.c_attn = nn.Linear(d_model, 3 * d_model)
        self.attn_proj = nn.Linear(d_model, d_model)
        self.ln_2 = nn.LayerNorm(d_model, eps=1e-5)
        self.c_fc = nn.Linear(d_model, 4 * d_model)
        self.mlp_proj = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape  # (batch, seq, d_model)
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        # (batch, n_head, seq, head_dim)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn_proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class LeanGpt2(nn.Module):
    def __init__(self, vocab: int, n_ctx: int, d_model: int, n_layer: int, n_head: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(n_ctx, d_model)
        self.h = nn.ModuleList(Block(d_model, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model, eps=1e-5)
        # HF GPT-2 initialisation: N(0, 0.02), zero biases, residual projections / sqrt(2 L)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln_" in name or name.startswith("ln_"):
                nn.init.ones_(p)
            elif name.endswith("_proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))
            else:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(batch, seq) int64 → logits (batch, seq, vocab)."""
        x = self.wte(ids) + self.wpe.weight[: ids.shape[1]]  # (batch, seq, d_model)
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T


def to_hf_state_dict(model: LeanGpt2) -> dict[str, torch.Tensor]:
    """Weights under HF GPT2LMHeadModel names (`transformer.` prefix, Conv1D [in, out])."""
    sd = {
        "transformer.wte.weight": model.wte.weight,
        "transformer.wpe.weight": model.wpe.weight,
        "transformer.ln_f.weight": model.ln_f.weight,
        "transformer.ln_f.bias": model.ln_f.bias,
    }
    for i, blk in enumerate(model.h):
        p = f"transformer.h.{i}."
        for hf, mod in (("attn.c_attn", blk.c_attn), ("attn.c_proj", blk.attn_proj),
                        ("mlp.c_fc", blk.c_fc), ("mlp.c_proj", blk.mlp_proj)):
            sd[p + hf + ".weight"] = mod.weight.T
            sd[p + hf + ".bias"] = mod.bias
        for hf, mod in (("ln_1", blk.ln_1), ("ln_2", blk.ln_2)):
            sd[p + hf + ".weight"] = mod.weight
            sd[p + hf + ".bias"] = mod.bias
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}
