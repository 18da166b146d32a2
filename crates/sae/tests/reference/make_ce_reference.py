"""Write ce_model/ (a small random GPT-2 in Hugging Face format) and ce_reference.json:
next-token cross-entropies computed by PyTorch + transformers, for
crates/sae/tests/it/ce.rs, with SAELens's definition of ce_loss_score:

    ce_loss_score = (CE_zero_ablation - CE_with_SAE) / (CE_zero_ablation - CE_clean)

CE is the mean of -log softmax(logits[b, t])[ids[b, t + 1]] over the counted positions
(mask below); "with SAE" replaces the activation at the SAE's hook, at every position,
by the SAE's reconstruction; "zero ablation" sets it to zero. The SAEs' parameters come
from closed formulas that the Rust test evaluates too (no weights file), in float64 then
rounded to float32.

Hooks follow TransformerLens/DESIGN.md on HF GPT-2: blocks.L.hook_resid_pre = input of
block L, blocks.L.hook_attn_out = attention c_proj output, blocks.L.hook_mlp_out = MLP
c_proj output.

Run: python3 crates/sae/tests/reference/make_ce_reference.py  (needs torch, transformers)
"""
import json
import math
import pathlib

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

HERE = pathlib.Path(__file__).parent
VOCAB, CTX, D, LAYERS, HEADS = 40, 16, 16, 2, 2
WINDOWS, LEN = 5, 12

torch.manual_seed(1234)
config = GPT2Config(
    vocab_size=VOCAB,
    n_positions=CTX,
    n_embd=D,
    n_layer=LAYERS,
    n_head=HEADS,
    activation_function="gelu_new",
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    bos_token_id=0,
    eos_token_id=0,
)
model = GPT2LMHeadModel(config)
# Larger weights than GPT-2's 0.02 initialisation, so the random model's predictions
# depend strongly on its activations (clean and zero-ablated losses differ).
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
            p.copy_(1.0 + 0.2 * torch.randn_like(p))
        else:
            p.copy_(0.4 * torch.randn_like(p))
model.eval()
model_dir = HERE / "ce_model"
model.save_pretrained(model_dir, safe_serialization=True)

rng = np.random.default_rng(7)
ids = rng.integers(0, VOCAB, size=(WINDOWS, LEN))
counted = np.array(
    [[(b * LEN + t) % 3 != 0 and t + 1 < LEN for t in range(LEN)] for b in range(WINDOWS)]
)


def sae_params(d_in, d_sae, salt):
    """The formula SAE (also in ce.rs): a ±identity pair of latents per input
    dimension plus small smooth perturbations; float64 then float32."""
    i = np.arange(d_in)[:, None]
    j = np.arange(d_sae)[None, :]
    pair = (j == i).astype(np.float64) - (j == i + d_in).astype(np.float64)  # (d_in, d_sae)
    w_enc = pair + 0.05 * np.sin(1.0 + salt + 7.0 * i + 3.0 * j)
    w_dec = (0.8 * pair + 0.05 * np.cos(2.0 + salt + 5.0 * i + 11.0 * j)).T  # (d_sae, d_in)
    b_enc = 0.02 * np.sin(np.arange(d_sae) + salt)
    b_dec = 0.1 * np.cos(np.arange(d_in) + salt)
    f32 = lambda a: torch.tensor(np.asarray(a, dtype=np.float32))
    return f32(w_enc), f32(b_enc), f32(w_dec), f32(b_dec)


def sae_forward(x, params, norm):
    """SAELens standard SAE (apply_b_dec_to_input) on x (..., d), with the input
    normalisation undone on the output."""
    w_enc, b_enc, w_dec, b_dec = params
    d = x.shape[-1]
    if norm == "constant_norm_rescale":
        s = math.sqrt(d) / x.norm(dim=-1, keepdim=True)
        xn = x * s
    elif norm == "mean_centre":
        m = x.mean(dim=-1, keepdim=True)
        xn = x - m
    else:
        xn = x
    f = torch.relu((xn - b_dec) @ w_enc + b_enc)
    x_hat = f @ w_dec + b_dec
    if norm == "constant_norm_rescale":
        x_hat = x_hat / s
    elif norm == "mean_centre":
        x_hat = x_hat + m
    return x_hat


def run(edit_hook=None, fn=None):
    handles = []
    if edit_hook is not None:
        kind, layer = edit_hook
        block = model.transformer.h[layer]
        if kind == "hook_resid_pre":

            def pre(module, args, kwargs):
                if args:
                    return (fn(args[0]),) + tuple(args[1:]), kwargs
                kwargs = dict(kwargs)
                kwargs["hidden_states"] = fn(kwargs["hidden_states"])
                return args, kwargs

            handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        else:
            module = block.attn if kind == "hook_attn_out" else block.mlp

            def post(module, args, out):
                if isinstance(out, tuple):
                    return (fn(out[0]),) + tuple(out[1:])
                return fn(out)

            handles.append(module.register_forward_hook(post))
    with torch.no_grad():
        logits = model(torch.tensor(ids)).logits.double()
    for h in handles:
        h.remove()
    logp = torch.log_softmax(logits, dim=-1)  # (b, s, vocab)
    total, n = 0.0, 0
    for b in range(WINDOWS):
        for t in range(LEN):
            if counted[b, t]:
                total -= logp[b, t, ids[b, t + 1]].item()
                n += 1
    return total / n


clean = run()
cases = []
for salt, (kind, layer, norm) in enumerate(
    [("hook_resid_pre", 1, "none"), ("hook_attn_out", 0, "mean_centre"), ("hook_mlp_out", 1, "constant_norm_rescale")]
):
    params = sae_params(D, 2 * D, float(salt))
    with_sae = run((kind, layer), lambda x: sae_forward(x, params, norm))
    zero = run((kind, layer), lambda x: torch.zeros_like(x))
    cases.append(
        {
            "hook": f"blocks.{layer}.{kind}",
            "normalize_activations": norm,
            "salt": float(salt),
            "d_sae": 2 * D,
            "ce_with_sae": with_sae,
            "ce_zero_ablation": zero,
            "ce_loss_score": (zero - with_sae) / (zero - clean),
        }
    )

out = {
    "about": "made by make_ce_reference.py (torch + transformers, float32 model, float64 log-softmax)",
    "ids": ids.tolist(),
    "counted": counted.tolist(),
    "ce_clean": clean,
    "cases": cases,
}
(HERE / "ce_reference.json").write_text(json.dumps(out, indent=1) + "\n")
print(json.dumps({k: v for k, v in out.items() if k in ("ce_clean", "cases")}, indent=1))
