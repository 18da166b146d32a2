#!/usr/bin/env python3
"""PyTorch autograd reference for the circuit stage's node effects on a Llama (issue 13 item 4).

Loads a Hugging Face Llama folder with transformers (eager attention), SAEs in SAELens layout
(`cfg.json` + `sae_weights.safetensors`), and a batch of clean/patch token-id pairs with their
answers, and computes with autograd, as Marks et al.'s feature-circuits code does:

  splice at every SAE's hook:  f = encode(x), x_hat = decode(f) = f W_dec + b_dec,
                               err = x - x_hat, continue with x_hat + err
  (f and err are leaves that keep their gradients; the gradient also passes straight through
  to x, as Marks et al.'s `x.grad = x_recon.grad`, so upstream SAEs see every path)
  metric m = logit(patch answer) - logit(clean answer) at the last position, per pair

  attribution:  feat[b, p, i] = dm/df[b, p, i] * (f_patch - f_clean)[b, p, i]
                err[b, p]     = sum_d dm/derr[b, p, d] * (err_patch - err_clean)[b, p, d]
                (gradients at the clean prompt, all SAEs spliced)
  integrated gradients (N steps, crates/circuit/src/gpt2/nodes.rs `ig_grad`): one submodule
                at a time spliced as decode(f_a) + err_a with f_a = f_clean + a (f_patch - f_clean),
                err_a likewise, a = k/N for k = 0..N-1; the mean over k of dm/df_a and dm/derr_a
                times the deltas as above
  exact:        m(one node of one position patched to its patch value) - m(clean): the hook's
                activation gets (f_patch - f_clean)[i] W_dec[i] (feature i) or
                (err_patch - err_clean) (error) added at that position only

SAE encode (crates/sae/src/sae.rs, io.rs): x normalised per row as `normalize_activations`
says ("none"; "constant_norm_rescale": x * sqrt(d) / |x|; "none" with
metadata.model_from_pretrained_kwargs.center_writing_weights: x - mean(x)), then
(x - b_dec if apply_b_dec_to_input) W_enc + b_enc, then the activation: standard = ReLU,
topk = the k largest kept then ReLU, jumprelu = pre if pre > max(threshold, 0) else 0.
decode(f) = f W_dec + b_dec (no normalisation undone: err absorbs it, as in splice.rs).

Computation is in float64 (two float32 shortcuts of transformers' Llama replaced by the same
math in float64, scripts/llama_golden.py `exact_float64`) unless --dtype float32.

Modes:
  python3 scripts/circuit_reference.py --fixture
      writes crates/circuit/tests/data/llama_reference/: sae_<hook>/ (six random SAEs of 24
      latents on the tiny random Llama crates/models/tests/data/llama_tiny_random: resid_pre,
      attn_out and mlp_out of both blocks; standard, topk, jumprelu, with and without
      apply_b_dec_to_input, constant_norm_rescale and mean-centring) and reference.safetensors.
  python3 scripts/circuit_reference.py --model DIR --sae DIR [--sae DIR ...] --pairs FILE.json
      --out FILE.safetensors     (a real model; pairs JSON: {"clean": [[ids]], "patch": [[ids]],
      "clean_answer": [ids], "patch_answer": [ids]}, equal lengths, no padding)

Output safetensors (all F32; effects computed in float64 and rounded once):
  clean_ids, patch_ids (batch, seq); clean_answer, patch_answer (batch); metric (batch)
  attr.feat.<hook> (batch, seq, d_sae), attr.err.<hook> (batch, seq)
  ig.feat.<hook>, ig.err.<hook> (same shapes, --steps in the metadata)
  exact.feat.<hook>, exact.err.<hook> (same shapes; only with --exact, on by default for --fixture)
  margin.<hook> (batch, seq): how far the clean and patch activations are from a jump of the
    SAE's activation (TopK: k-th minus (k+1)-th pre-activation; JumpReLU: min |pre - threshold|;
    standard: inf), so a consumer computing in float32 can tell whether its active set may
    differ from this float64 one.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_golden import exact_float64, save_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "crates/circuit/tests/data/llama_reference"
TINY = ROOT / "crates/models/tests/data/llama_tiny_random"


# ---------------------------------------------------------------------------------------------
# SAEs
# ---------------------------------------------------------------------------------------------
class Sae:
    """An SAE read from SAELens layout, encode/decode as crates/sae computes them."""

    def __init__(self, path: Path, dtype):
        cfg = json.loads((path / "cfg.json").read_text())
        w = load_file(str(path / "sae_weights.safetensors"))
        meta = cfg.get("metadata") or cfg.get("meta") or {}
        self.hook = meta.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
        if self.hook is None:
            sys.exit(f"error: {path}/cfg.json names no hook (metadata.hook_name)")
        self.arch = cfg.get("architecture") or (
            "topk" if cfg.get("activation_fn_str") == "topk" else "standard")
        if self.arch not in ("standard", "topk", "jumprelu"):
            sys.exit(f"error: {path}/cfg.json: architecture {self.arch!r} not supported "
                     "(standard, topk, jumprelu)")
        self.k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
        self.apply_b_dec = cfg.get("apply_b_dec_to_input", True)
        kwargs = meta.get("model_from_pretrained_kwargs") or cfg.get(
            "model_from_pretrained_kwargs") or {}
        norm = cfg.get("normalize_activations", "none")
        norm = "none" if norm in (None, False) else norm
        if norm == "none" and kwargs.get("center_writing_weights"):
            norm = "mean_centre"
        if norm not in ("none", "constant_norm_rescale", "mean_centre"):
            sys.exit(f"error: {path}/cfg.json: normalize_activations {norm!r} not supported")
        if cfg.get("rescale_acts_by_decoder_norm"):
            sys.exit(f"error: {path}/cfg.json: rescale_acts_by_decoder_norm not supported here")
        self.norm = norm
        self.w_enc = w["W_enc"].to(dtype)  # (d_in, d_sae)
        self.b_enc = w["b_enc"].to(dtype)  # (d_sae)
        self.w_dec = w["W_dec"].to(dtype)  # (d_sae, d_in)
        self.b_dec = w["b_dec"].to(dtype)  # (d_in)
        self.threshold = None
        if self.arch == "jumprelu":
            t = w["threshold"] if "threshold" in w else w["log_threshold"].exp()
            self.threshold = t.to(dtype).clamp(min=0)

    def pre(self, x):
        """Pre-activations (..., d_sae) of x (..., d_in)."""
        if self.norm == "constant_norm_rescale":
            n = x.norm(dim=-1, keepdim=True)
            scale = torch.where(n > 0, math.sqrt(x.shape[-1]) / n, torch.ones_like(n))
            x = x * scale
        elif self.norm == "mean_centre":
            x = x - x.mean(dim=-1, keepdim=True)
        if self.apply_b_dec:
            x = x - self.b_dec
        return x @ self.w_enc + self.b_enc

    def encode(self, x):
        pre = self.pre(x)
        if self.arch == "standard":
            return pre.clamp(min=0)
        if self.arch == "jumprelu":
            return torch.where(pre > self.threshold, pre, torch.zeros_like(pre)).clamp(min=0)
        top = pre.topk(self.k, dim=-1)
        out = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
        return out.clamp(min=0)

    def margin(self, x):
        """How far each row is from a change of active set where the activation jumps, per
        row: TopK, the k-th minus the (k+1)-th largest pre-activation; JumpReLU, the smallest
        |pre - threshold| over latents with threshold > 0; inf for standard (ReLU is
        continuous)."""
        if self.arch == "topk":
            v = self.pre(x).topk(self.k + 1, dim=-1).values
            return v[..., -2] - v[..., -1]
        if self.arch == "jumprelu":
            gap = (self.pre(x) - self.threshold).abs()
            gap = torch.where(self.threshold > 0, gap, torch.full_like(gap, math.inf))
            return gap.min(dim=-1).values
        return torch.full(x.shape[:-1], math.inf, dtype=x.dtype)

    def decode(self, f):
        return f @ self.w_dec + self.b_dec


# ---------------------------------------------------------------------------------------------
# The model with hooks
# ---------------------------------------------------------------------------------------------
def parse_hook(name: str):
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or parts[2] not in (
            "hook_resid_pre", "hook_attn_out", "hook_mlp_out"):
        sys.exit(f"error: SAE hook {name!r} is not blocks.L.hook_resid_pre/attn_out/mlp_out")
    return int(parts[1]), parts[2]


class Hooked:
    """A Llama whose hook activations can be replaced by a function `edit(hook, x) -> x`."""

    def __init__(self, model: LlamaForCausalLM, dtype):
        self.model = model.to(dtype).eval()
        self.dtype = dtype
        self.n_layer = len(model.model.layers)

    def run(self, ids, edits: dict):
        """Logits (batch, seq, vocab) with `edits[hook](x) -> x'` applied."""
        inner = self.model.model
        handles = []
        for hook, fn in edits.items():
            layer, kind = parse_hook(hook)
            block = inner.layers[layer]
            if kind == "hook_resid_pre":
                def pre(_m, args, kwargs, fn=fn):
                    if args:
                        return (fn(args[0]),) + tuple(args[1:]), kwargs
                    kwargs = dict(kwargs)
                    kwargs["hidden_states"] = fn(kwargs["hidden_states"])
                    return args, kwargs
                handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
            else:
                mod = block.self_attn.o_proj if kind == "hook_attn_out" else block.mlp.down_proj
                handles.append(mod.register_forward_hook(lambda _m, _i, out, fn=fn: fn(out)))
        exact = exact_float64(self.model) if self.dtype == torch.float64 \
            else contextlib.nullcontext()
        try:
            with exact:
                return self.model(input_ids=ids, use_cache=False).logits
        finally:
            for h in handles:
                h.remove()


def metric(logits, clean_answer, patch_answer):
    """logit(patch answer) - logit(clean answer) at the last position, (batch)."""
    last = logits[:, -1, :]
    rows = torch.arange(last.shape[0])
    return last[rows, patch_answer] - last[rows, clean_answer]


# ---------------------------------------------------------------------------------------------
# Node effects
# ---------------------------------------------------------------------------------------------
def capture(hm: Hooked, ids, saes):
    """Activations at every SAE's hook (no edits)."""
    acts = {}

    def keep(hook):
        def fn(x):
            acts[hook] = x.detach().clone()
            return x
        return fn
    with torch.no_grad():
        hm.run(ids, {s.hook: keep(s.hook) for s in saes})
    return acts


def states(saes, acts):
    """(f, err) per hook for the activations."""
    out = {}
    for s in saes:
        x = acts[s.hook]
        f = s.encode(x)
        out[s.hook] = (f, x - s.decode(f))
    return out


def attribution(hm, saes, batch, clean_st):
    """Gradients dm/df, dm/derr at the clean prompt with every SAE spliced (pass-through)."""
    leaves = {}

    def splice(sae):
        def fn(x):
            f0, e0 = clean_st[sae.hook]
            f = f0.clone().requires_grad_(True)
            err = e0.clone().requires_grad_(True)
            leaves[sae.hook] = (f, err)
            # value decode(f) + err (= x); gradient also straight through to x
            return sae.decode(f) + err + (x - x.detach())
        return fn
    logits = hm.run(batch["clean"], {s.hook: splice(s) for s in saes})
    m = metric(logits, batch["clean_answer"], batch["patch_answer"])
    m.sum().backward()
    return m.detach(), {h: (f.grad, e.grad) for h, (f, e) in leaves.items()}


def ig_grads(hm, sae, batch, clean, delta, steps):
    """Mean over a = k/N (k < N) of dm/df_a, dm/derr_a with only `sae` spliced."""
    b = batch["clean"].shape[0]
    ids = batch["clean"].repeat(steps, 1)  # (steps*batch, seq)
    alpha = (torch.arange(steps, dtype=hm.dtype) / steps).repeat_interleave(b)  # (steps*batch)
    a = alpha[:, None, None]
    f = (clean[0].repeat(steps, 1, 1) + a * delta[0].repeat(steps, 1, 1)).requires_grad_(True)
    err = (clean[1].repeat(steps, 1, 1) + a * delta[1].repeat(steps, 1, 1)).requires_grad_(True)
    logits = hm.run(ids, {sae.hook: lambda _x: sae.decode(f) + err})
    m = metric(logits, batch["clean_answer"].repeat(steps), batch["patch_answer"].repeat(steps))
    m.sum().backward()
    gf = f.grad.reshape(steps, b, *f.shape[1:]).mean(0)
    ge = err.grad.reshape(steps, b, *err.shape[1:]).mean(0)
    return gf, ge


def exact_effects(hm, sae, batch, delta, m_clean, chunk=256):
    """m(one node patched) - m(clean) for every (pair, position, node) whose delta is nonzero."""
    df, de = delta
    b, seq, d_sae = df.shape
    feat = torch.zeros_like(df)
    err = torch.zeros(b, seq, dtype=df.dtype)
    variants = []
    for bi in range(b):
        for p in range(seq):
            for i in torch.nonzero(df[bi, p]).flatten().tolist():
                variants.append((bi, p, i))
            if bool((de[bi, p] != 0).any()):
                variants.append((bi, p, None))
    for c0 in range(0, len(variants), chunk):
        part = variants[c0:c0 + chunk]
        rows = torch.tensor([v[0] for v in part])
        add = torch.zeros(len(part), seq, de.shape[-1], dtype=df.dtype)
        for r, (bi, p, i) in enumerate(part):
            add[r, p] = df[bi, p, i] * sae.w_dec[i] if i is not None else de[bi, p]
        with torch.no_grad():
            logits = hm.run(batch["clean"][rows], {sae.hook: lambda x: x + add})
            m = metric(logits, batch["clean_answer"][rows], batch["patch_answer"][rows])
        for r, (bi, p, i) in enumerate(part):
            e = m[r] - m_clean[bi]
            if i is None:
                err[bi, p] = e
            else:
                feat[bi, p, i] = e
    return feat, err


def reference(model_dir: Path, sae_dirs, batch, steps, dtype, do_exact):
    model = LlamaForCausalLM.from_pretrained(str(model_dir), attn_implementation="eager",
                                             dtype=torch.float32)
    hm = Hooked(model, dtype)
    saes = [Sae(d, dtype) for d in sae_dirs]
    for s in saes:
        layer, _ = parse_hook(s.hook)
        if layer >= hm.n_layer:
            sys.exit(f"error: SAE on {s.hook} but the model has {hm.n_layer} blocks")
    clean_st = states(saes, capture(hm, batch["clean"], saes))
    patch_acts = capture(hm, batch["patch"], saes)
    patch_st = states(saes, patch_acts)
    clean_acts = capture(hm, batch["clean"], saes)
    delta = {h: (patch_st[h][0] - clean_st[h][0], patch_st[h][1] - clean_st[h][1])
             for h in clean_st}
    m_clean, grads = attribution(hm, saes, batch, clean_st)
    out = {"metric": m_clean}
    for s in saes:
        h = s.hook
        gf, ge = grads[h]
        out[f"attr.feat.{h}"] = gf * delta[h][0]
        out[f"attr.err.{h}"] = (ge * delta[h][1]).sum(-1)
        gf, ge = ig_grads(hm, s, batch, clean_st[h], delta[h], steps)
        out[f"ig.feat.{h}"] = gf * delta[h][0]
        out[f"ig.err.{h}"] = (ge * delta[h][1]).sum(-1)
        if do_exact:
            ef, ee = exact_effects(hm, s, batch, delta[h], m_clean)
            out[f"exact.feat.{h}"] = ef
            out[f"exact.err.{h}"] = ee
        out[f"margin.{h}"] = torch.minimum(s.margin(clean_acts[h]), s.margin(patch_acts[h]))
        print(f"{h}: {s.arch}, d_sae {s.w_dec.shape[0]}, active clean "
              f"{(clean_st[h][0] != 0).float().sum(-1).mean():.1f}/row, "
              f"|attr| max {out[f'attr.feat.{h}'].abs().max():.3e}, "
              f"active-set margin min {out[f'margin.{h}'].min():.3e}")
    return out


# ---------------------------------------------------------------------------------------------
# Fixture
# ---------------------------------------------------------------------------------------------
FIXTURE_SAES = [
    # hook, architecture, extra cfg
    ("blocks.0.hook_resid_pre", "standard", {}),
    ("blocks.0.hook_attn_out", "topk", {"k": 6}),
    ("blocks.0.hook_mlp_out", "standard",
     {"normalize_activations": "constant_norm_rescale", "apply_b_dec_to_input": False}),
    ("blocks.1.hook_resid_pre", "jumprelu", {}),
    ("blocks.1.hook_attn_out", "standard", {"center": True}),
    ("blocks.1.hook_mlp_out", "topk", {"k": 4, "apply_b_dec_to_input": False}),
]
D_SAE = 24


def write_sae(dir_: Path, hook, arch, extra, d_in, gen, scale):
    """A random SAE in SAELens v6 layout; encoder = decoder^T * 4 / scale so about half fire."""
    w_dec = torch.randn(D_SAE, d_in, generator=gen, dtype=torch.float64)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True) * 0.5  # (d_sae, d_in)
    w_enc = (w_dec.T * 4.0 / scale).contiguous()  # (d_in, d_sae)
    b_enc = (torch.rand(D_SAE, generator=gen, dtype=torch.float64) - 0.5) * 0.1
    b_dec = (torch.rand(d_in, generator=gen, dtype=torch.float64) - 0.5) * 0.04 * scale
    tensors = {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec, "b_dec": b_dec}
    if arch == "jumprelu":
        tensors["threshold"] = torch.rand(D_SAE, generator=gen, dtype=torch.float64) * 0.2
    cfg = {
        "architecture": arch, "d_in": d_in, "d_sae": D_SAE, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": extra.get("apply_b_dec_to_input", True),
        "normalize_activations": extra.get("normalize_activations", "none"),
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": "6.0.0", "model_name": "llama_tiny_random",
                     "hook_name": hook, "context_size": 16},
    }
    if "k" in extra:
        cfg["k"] = extra["k"]
    if extra.get("center"):
        cfg["metadata"]["model_from_pretrained_kwargs"] = {"center_writing_weights": True}
    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_atomic({k: v.float() for k, v in tensors.items()}, dir_ / "sae_weights.safetensors",
                {"format": "pt"})


def fixture(steps):
    gen = torch.Generator().manual_seed(13)
    batch_n, seq, vocab = 3, 6, 100
    clean = torch.randint(1, vocab, (batch_n, seq), generator=gen)
    patch = clean.clone()
    for b in range(batch_n):
        for p in (2, 3):
            patch[b, p] = (clean[b, p] + torch.randint(1, vocab - 1, (1,), generator=gen)) % vocab
    batch = {"clean": clean, "patch": patch,
             "clean_answer": torch.randint(0, 50, (batch_n,), generator=gen),
             "patch_answer": torch.randint(50, 100, (batch_n,), generator=gen)}
    # activation scale per hook, so that random SAEs fire on about half the latents
    model = LlamaForCausalLM.from_pretrained(str(TINY), attn_implementation="eager",
                                             dtype=torch.float32)
    hm = Hooked(model, torch.float64)

    class Probe:
        def __init__(self, hook):
            self.hook = hook
    acts = capture(hm, clean, [Probe(h) for h, _, _ in FIXTURE_SAES])
    dirs = []
    for hook, arch, extra in FIXTURE_SAES:
        rms = acts[hook].pow(2).mean().sqrt().item()
        scale = 1.0 if extra.get("normalize_activations") == "constant_norm_rescale" else rms
        d = FIXTURE / f"sae_{hook}"
        write_sae(d, hook, arch, extra, acts[hook].shape[-1], gen, scale)
        dirs.append(d)
    return batch, dirs, FIXTURE / "reference.safetensors"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixture", action="store_true",
                    help="write the tiny-Llama fixture under crates/circuit/tests/data/")
    ap.add_argument("--model", type=Path)
    ap.add_argument("--sae", type=Path, action="append", default=[])
    ap.add_argument("--pairs", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--steps", type=int, default=10, help="integrated-gradient steps N")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--exact", action="store_true", help="also exact patching (slow)")
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    dtype = torch.float64 if a.dtype == "float64" else torch.float32
    if a.fixture:
        batch, dirs, out_path = fixture(a.steps)
        model_dir, do_exact = TINY, True
    else:
        if not (a.model and a.sae and a.pairs and a.out):
            ap.error("give --fixture, or --model, --sae (one or more), --pairs and --out")
        p = json.loads(a.pairs.read_text())
        batch = {k: torch.tensor(p[k]) for k in ("clean", "patch", "clean_answer",
                                                 "patch_answer")}
        if batch["clean"].shape != batch["patch"].shape:
            sys.exit(f"error: {a.pairs}: clean and patch must have the same shape")
        model_dir, dirs, out_path, do_exact = a.model, a.sae, a.out, a.exact
    out = reference(model_dir, dirs, batch, a.steps, dtype, do_exact)
    tensors = {"clean_ids": batch["clean"], "patch_ids": batch["patch"],
               "clean_answer": batch["clean_answer"], "patch_answer": batch["patch_answer"]}
    tensors.update(out)
    tensors = {k: v.detach().to(torch.float32) for k, v in tensors.items()}
    save_atomic(tensors, out_path, {"steps": str(a.steps), "dtype": a.dtype,
                                    "saes": json.dumps([str(d) for d in dirs])})
    print(f"wrote {out_path} ({len(tensors)} tensors)")


if __name__ == "__main__":
    main()
