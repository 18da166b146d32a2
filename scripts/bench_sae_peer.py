#!/usr/bin/env python3
"""PyTorch CPU peer of `bench_sae`: the same SAE training step (encode, activation,
decode, loss, backward, Adam) at the same shapes and thread count, and the sgemm of
the encoder's shape. Prints one JSON line per measurement (medians).

    python3 scripts/bench_sae_peer.py ARCH STEPS THREADS [BATCH D_IN D_SAE K]

ARCH: standard (ReLU, L1 weighted by decoder row norms, as SAELens v6), topk (k
largest pre-activations, ReLU; decoded with embedding_bag, the fastest CPU form of
a sparse decode in PyTorch), or gemm. No AuxK (ours has no dead latents in the
measured steps, so neither side does that work).
"""
import json
import sys
import time

import torch


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def main():
    arch = sys.argv[1]
    steps, threads = int(sys.argv[2]), int(sys.argv[3])
    batch, d_in, d_sae, k = (int(a) for a in (sys.argv[4:8] or [4096, 768, 24576, 32]))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, d_in)
    flop_gemm = 2.0 * batch * d_in * d_sae

    if arch == "gemm":
        w = torch.randn(d_in, d_sae)
        times = []
        for _ in range(steps + 1):
            t = time.perf_counter()
            torch.mm(x, w)
            times.append(time.perf_counter() - t)
        s = median(times[1:])
        print(json.dumps({"side": "torch", "what": "sgemm", "seconds": s, "gflops": flop_gemm / s / 1e9}))
        return

    w_dec = torch.randn(d_sae, d_in)
    w_dec = (w_dec / w_dec.norm(dim=1, keepdim=True) * 0.1).requires_grad_()
    w_enc = w_dec.detach().t().clone().contiguous().requires_grad_()
    b_enc = torch.zeros(d_sae, requires_grad=True)
    b_dec = torch.zeros(d_in, requires_grad=True)
    params = [w_enc, b_enc, w_dec, b_dec]
    try:
        opt = torch.optim.Adam(params, lr=1e-4, fused=True)
        adam = "fused"
    except (RuntimeError, TypeError):
        opt = torch.optim.Adam(params, lr=1e-4)
        adam = "default"
    l1 = 1.0

    def step():
        x_in = x - b_dec
        pre = x_in @ w_enc + b_enc
        if arch == "standard":
            f = torch.relu(pre)
            x_hat = f @ w_dec + b_dec
            mse = (x_hat - x).pow(2).sum(-1).mean()
            loss = mse + l1 * (f * w_dec.norm(dim=1)).sum(-1).mean()
        elif arch == "topk":
            vals, idx = pre.topk(k, dim=-1, sorted=False)
            vals = torch.relu(vals)
            x_hat = torch.nn.functional.embedding_bag(idx, w_dec, per_sample_weights=vals, mode="sum") + b_dec
            loss = (x_hat - x).pow(2).sum(-1).mean()
        else:
            raise SystemExit(f"unknown ARCH {arch!r}: use standard, topk or gemm")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    s = median(times[1:])
    print(json.dumps({"side": "torch", "what": arch, "step_s": s, "tokens_per_s": batch / s, "adam": adam}))


if __name__ == "__main__":
    main()
