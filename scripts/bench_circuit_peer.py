#!/usr/bin/env python3
"""PyTorch peer of `crates/circuit/examples/bench_circuit.rs`'s *spliced pass*.

A randomly initialised model of the same shape (transformers' GPT2LMHeadModel or
LlamaForCausalLM, eager attention, float32) with a random ReLU SAE (TopK with `--k K`) spliced at every
`resid_pre` (and with `--subs all` at every attn_out and mlp_out as well), as Marks et
al.'s feature-circuits code splices them: at each hook `f = relu((x - b_dec) W_enc + b_enc)`,
`x_hat = f W_dec + b_dec`, `err = x - x_hat`, the model continues with `x_hat + err`, and
`f` and `err` are leaves that get their gradients (`dm/df = g W_dec^T`, `dm/derr = g` for
the gradient g at the hook; no backward through the encoder, as ours). One pass = that forward over a (batch, seq) batch of
random tokens, the metric `logit(patch) - logit(clean)` at the last position summed over
the batch (logits at the last position only, `logits_to_keep=1`, as ours), and its
backward, after which every feature and error tensor has its gradient.

    python3 scripts/bench_circuit_peer.py --family llama --layers 30 --d-model 576 \
        --heads 9 --kv-heads 3 --d-mlp 1536 --vocab 49152 --d-sae 4608 --subs resid \
        --batch 8 --seq 16 --reps 5 --threads 2

Prints one JSON line: {"side": "torch", "pass_s": median seconds, ...}.

With `--ig-steps N` it times integrated-gradient node effects instead, as
`bench_circuit --only-ig 1` does (Marks et al.'s IG, one submodule at a time): prepare
(the clean forward with every hook captured and its backward, the patch forward, every
SAE encoded on both), then for each submodule one forward + backward of the model with
only that submodule spliced at `f_clean + k/N Δf` and `err_clean + k/N Δerr` for the N
steps at once (N × batch rows, as ours batches them), the gradient at the hook averaged
over the steps, and the effects `(g W_decᵀ) · Δf` and `g · Δerr`. Prints
{"side": "torch", "ig_s": median seconds per batch, ...}. The patch prompt differs from
the clean one at position `--diff-at` (default 1); every position is run, as Marks et
al.'s code runs it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def build(a):
    torch.manual_seed(0)
    if a.family == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(
            hidden_size=a.d_model, intermediate_size=a.d_mlp or 4 * a.d_model,
            num_hidden_layers=a.layers, num_attention_heads=a.heads,
            num_key_value_heads=a.kv_heads or a.heads, vocab_size=a.vocab,
            max_position_embeddings=2048, rope_theta=100000.0, tie_word_embeddings=True,
            attn_implementation="eager",
        )
        model = LlamaForCausalLM(cfg)
        blocks = model.model.layers
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(
            n_layer=a.layers, n_embd=a.d_model, n_head=a.heads, vocab_size=a.vocab,
            n_positions=1024, n_inner=a.d_mlp or None, attn_implementation="eager",
        )
        model = GPT2LMHeadModel(cfg)
        blocks = model.transformer.h
    return model.eval(), blocks


class Sae(torch.nn.Module):
    def __init__(self, d, d_sae, k=0, l0=0):
        super().__init__()
        self.k = k
        # With ReLU and l0 > 0: the first splice sets b_enc to minus the (1 - l0/d_sae)
        # quantile of its pre-activations, so about l0 latents fire per token (as
        # bench_circuit's --l0 does; the warm-up pass calibrates).
        self.l0 = l0
        self.W_enc = torch.nn.Parameter(torch.randn(d, d_sae) * 4.0 / d**0.5)
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.W_dec = torch.nn.Parameter(torch.randn(d_sae, d) / d_sae**0.5)
        self.b_dec = torch.nn.Parameter(torch.zeros(d))

    def splice(self, x, store):
        # f and err are leaves, as in Marks et al. (their nnsight code sets the error's
        # gradient and passes x_recon's gradient straight to x): with plain autograd,
        # `x_hat + (x - x_hat)` would give f a zero gradient (the two paths cancel) and
        # spend an extra encoder backward on it. The gradient also flows on to x, so
        # upstream splices see every path.
        with torch.no_grad():
            if self.l0:
                pre = ((x - self.b_dec) @ self.W_enc).flatten()
                at = pre.numel() - pre.numel() * self.l0 // self.W_enc.shape[1]
                self.b_enc -= pre.kthvalue(at + 1).values
                self.l0 = 0
            f = self.act((x - self.b_dec) @ self.W_enc + self.b_enc)  # (batch, seq, d_sae)
        f.requires_grad_(True)
        x_hat = f @ self.W_dec + self.b_dec  # (batch, seq, d)
        err = (x - x_hat).detach().requires_grad_(True)
        store.append((f, err))
        return x_hat + err + (x - x.detach())

    def act(self, pre):
        # ReLU, or with k TopK as SAELens's TopK SAE: the k largest, ReLU, in a dense
        # tensor (zeros elsewhere) that the decoder multiplies as it is.
        if not self.k:
            return torch.relu(pre)
        vals, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))

    def encode(self, x):
        f = self.act((x - self.b_dec) @ self.W_enc + self.b_enc)
        return f, x - (f @ self.W_dec + self.b_dec)


def ig_effects(a, model, blocks, saes, ids, ids_patch, clean, patch):
    """IG node effects of one batch (see the module doc); returns per submodule
    (feature effects (batch, seq, d_sae), error effects (batch, seq))."""
    rows = torch.arange(a.batch)
    captured: dict = {}

    def capture(i):
        def pre(module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            captured[i] = x
        return pre

    hs = [b.register_forward_pre_hook(capture(i), with_kwargs=True) for i, b in enumerate(blocks)]
    emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    logits = model(inputs_embeds=emb, logits_to_keep=1).logits[:, -1, :]
    for x in captured.values():
        x.retain_grad()
    (logits[rows, patch] - logits[rows, clean]).sum().backward()  # the clean gradient
    acts_clean = [captured[i].detach() for i in range(len(blocks))]
    with torch.no_grad():
        model(ids_patch, logits_to_keep=1)
    acts_patch = [captured[i].detach() for i in range(len(blocks))]
    for h in hs:
        h.remove()
    n = a.ig_steps
    alpha = (torch.arange(n, dtype=torch.float32) / n).view(n, 1, 1, 1)
    ids_n = ids.repeat(n, 1)
    rows_n = torch.arange(n * a.batch)
    clean_n, patch_n = clean.repeat(n), patch.repeat(n)
    out = []
    for i, (block, sae) in enumerate(zip(blocks, saes)):
        with torch.no_grad():
            fc, ec = sae.encode(acts_clean[i])
            fp, ep = sae.encode(acts_patch[i])
            df, de = fp - fc, ep - ec
            f = (fc + alpha * df).reshape(n * a.batch, a.seq, -1)
            err = (ec + alpha * de).reshape(n * a.batch, a.seq, -1)
            x = f @ sae.W_dec + sae.b_dec + err
        x.requires_grad_(True)

        def splice(module, args, kwargs, x=x):
            if args:
                return (x, *args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = x
            return args, kwargs

        h = block.register_forward_pre_hook(splice, with_kwargs=True)
        logits = model(ids_n, logits_to_keep=1).logits[:, -1, :]
        (logits[rows_n, patch_n] - logits[rows_n, clean_n]).sum().backward()
        h.remove()
        with torch.no_grad():
            g = x.grad.reshape(n, a.batch, a.seq, -1).mean(0)
            out.append(((g @ sae.W_dec.T) * df, (g * de).sum(-1)))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=["gpt2", "llama"], default="gpt2")
    for name, default in [("layers", 12), ("d-model", 768), ("heads", 12), ("kv-heads", 0),
                          ("d-mlp", 0), ("vocab", 50257), ("d-sae", 3072), ("batch", 2),
                          ("seq", 10), ("reps", 5), ("threads", 2), ("ig-steps", 0),
                          ("k", 0), ("diff-at", 1), ("l0", 0)]:
        p.add_argument(f"--{name}", type=int, default=default)
    p.add_argument("--subs", choices=["all", "resid"], default="all")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model, blocks = build(a)
    for prm in model.parameters():
        prm.requires_grad_(False)
    if a.ig_steps:
        if a.subs != "resid":
            raise SystemExit("bench_circuit_peer.py: --ig-steps needs --subs resid")
        if a.l0:
            raise SystemExit("bench_circuit_peer.py: --l0 is for the spliced pass, not --ig-steps")
        saes = []
        for _ in blocks:
            sae = Sae(a.d_model, a.d_sae, a.k)
            for prm in sae.parameters():
                prm.requires_grad_(False)
            saes.append(sae)
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
        ids_patch = ids.clone()
        ids_patch[:, a.diff_at] = torch.randint(0, a.vocab, (a.batch,), generator=g)
        clean = torch.randint(0, a.vocab, (a.batch,), generator=g)
        patch = torch.randint(0, a.vocab, (a.batch,), generator=g)
        ig_effects(a, model, blocks, saes, ids, ids_patch, clean, patch)  # warm-up
        times = []
        for _ in range(a.reps):
            t = time.perf_counter()
            ig_effects(a, model, blocks, saes, ids, ids_patch, clean, patch)
            times.append(time.perf_counter() - t)
        print(json.dumps({
            "side": "torch", "family": a.family, "saes": len(saes), "d_sae": a.d_sae,
            "batch": a.batch, "seq": a.seq, "diff_at": a.diff_at, "threads": a.threads,
            "ig_steps": a.ig_steps,
            "ig_s": statistics.median(times), "torch": torch.__version__,
        }))
        return
    store: list = []
    handles = []
    for block in blocks:
        sae = Sae(a.d_model, a.d_sae, a.k, a.l0)
        for prm in sae.parameters():
            prm.requires_grad_(False)

        def pre(module, args, kwargs, sae=sae):
            if args:
                return (sae.splice(args[0], store), *args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = sae.splice(kwargs["hidden_states"], store)
            return args, kwargs

        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        if a.subs == "all":
            attn = block.self_attn if a.family == "llama" else block.attn
            mlp = block.mlp
            for mod in (attn, mlp):
                sae_out = Sae(a.d_model, a.d_sae, a.k, a.l0)
                for prm in sae_out.parameters():
                    prm.requires_grad_(False)

                def post(module, args, out, sae=sae_out):
                    if isinstance(out, tuple):
                        return (sae.splice(out[0], store), *out[1:])
                    return sae.splice(out, store)

                handles.append(mod.register_forward_hook(post))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g)
    clean = torch.randint(0, a.vocab, (a.batch,), generator=g)
    patch = torch.randint(0, a.vocab, (a.batch,), generator=g)

    def one_pass():
        store.clear()
        # The embedding output must require grad so that autograd reaches the splices.
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb, logits_to_keep=1).logits
        last = logits[:, -1, :]
        rows = torch.arange(a.batch)
        metric = (last[rows, patch] - last[rows, clean]).sum()
        metric.backward()
        assert all(f.grad is not None and e.grad is not None for f, e in store)
        return len(store)

    n = one_pass()  # warm-up (and --l0's calibration)
    one_pass()
    active = sum(int((f != 0).sum()) for f, _ in store) / (n * a.batch * a.seq)
    times = []
    for _ in range(a.reps):
        t = time.perf_counter()
        one_pass()
        times.append(time.perf_counter() - t)
    print(json.dumps({
        "side": "torch", "family": a.family, "saes": n, "d_sae": a.d_sae,
        "batch": a.batch, "seq": a.seq, "threads": a.threads,
        "pass_s": statistics.median(times), "torch": torch.__version__,
        "active_per_token": active,
    }))


if __name__ == "__main__":
    main()
