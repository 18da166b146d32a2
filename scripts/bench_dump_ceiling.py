#!/usr/bin/env python3
"""How fast can any fp32 runtime dump GPT-2 small on this machine? (issue 3, item 8). Not a test.

    python3 scripts/bench_dump_ceiling.py [--model target/bench/gpt2-small-random]
        [--threads 2] [--batch-size 8] [--context-size 128] [--reps 5] [--parts sgemm,ort]
        [--peer-json target/bench/bench_dump.json] [--out target/bench/bench_dump_ceiling.json]

1. FLOP per token of the dump's job (12 blocks.*.hook_resid_pre, no logits) at the
   benchmark's shape, counted from the model's config: the matrix products of every block
   the graph computes (Q/K/V, attention output, MLP) plus attention scores and values
   over the whole window (as ONNX Runtime and torch eager compute them, masked).
2. sgemm peak with the same threads: ONNX Runtime's MLAS (a graph of one MatMul with a
   constant right-hand side, as in the model's Gemm nodes) and torch (MKL) on the model's
   product shapes; the best of --reps.
3. Bare ONNX Runtime forward passes (random ids, full windows) on: the exported graph
   fetching the 12 resid_pre outputs (what the dump runs), the same graph pruned to those
   outputs (the last block's attention and MLP only feed hooks the dump does not fetch),
   each at graph optimisation levels basic/extended/all, and the graph fused by
   `onnxruntime.transformers.optimizer` (model_type gpt2) when its hook outputs stay within
   1e-4 of the exported graph's.
The ceiling: tokens/s = sgemm peak / FLOP per token, i.e. a runtime that spends all its
time in matrix products at peak speed, compared with 1.6x the peer's tokens/s (from
--peer-json, the last benchmark's medians). Prints a summary and writes --out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def flops_per_token(cfg: dict, ctx: int, blocks: int) -> dict:
    """Multiply-adds x 2 per token of `blocks` GPT-2 blocks at window `ctx`."""
    d, d_ff = cfg["n_embd"], cfg.get("n_inner") or 4 * cfg["n_embd"]
    dense = 2 * d * 3 * d + 2 * d * d + 2 * 2 * d * d_ff  # qkv, attn out, mlp in + out
    attention = 2 * 2 * ctx * d  # scores Q.K^T and weights.V over the whole window
    return dict(dense=blocks * dense, attention=blocks * attention,
                total=blocks * (dense + attention), blocks=blocks)


def best_time(fn, reps: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def sgemm_ort(m: int, k: int, n: int, threads: int, reps: int) -> float:
    """GFLOP/s of one MatMul (m, k) x (k, n) with a constant right-hand side in ONNX Runtime."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["A", "B"], ["C"])], "sgemm",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("C", TensorProto.FLOAT, [m, n])], initializer=[b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    a = rng.standard_normal((m, k), dtype=np.float32)
    sec = best_time(lambda: session.run(["C"], {"A": a}), reps)
    return 2 * m * k * n / sec / 1e9


def sgemm_torch(m: int, k: int, n: int, threads: int, reps: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    with torch.inference_mode():
        sec = best_time(lambda: a @ b, reps)
    return 2 * m * k * n / sec / 1e9


def prune(src: Path, dst: Path, keep: list[str]) -> None:
    """`src` with only the outputs `keep` and the nodes they need."""
    import onnx

    model = onnx.load(str(src))
    g = model.graph
    outputs = [o for o in g.output if o.name in keep]
    needed, nodes = set(keep), []
    for node in reversed(g.node):
        if any(o in needed for o in node.output):
            nodes.append(node)
            needed.update(i for i in node.input if i)
    del g.output[:]
    g.output.extend(outputs)
    del g.node[:]
    g.node.extend(reversed(nodes))
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    onnx.save(model, str(dst))


def forward(path: Path, names: list[str], threads: int, batch: int, ctx: int, reps: int,
            level: str = "all") -> tuple[float, list[np.ndarray]]:
    """Best tokens/s of bare forward passes, and the outputs of one batch."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 900, size=(batch, ctx), dtype=np.int64)
    mask = np.ones((batch, ctx), dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": mask}
    outs = session.run(names, feeds)
    sec = best_time(lambda: session.run(names, feeds), reps)
    return batch * ctx / sec, outs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=Path("target/bench/gpt2-small-random"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--context-size", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--parts", default="sgemm,ort")
    ap.add_argument("--peer-json", type=Path, default=Path("target/bench/bench_dump.json"))
    ap.add_argument("--out", type=Path, default=Path("target/bench/bench_dump_ceiling.json"))
    args = ap.parse_args()
    import os

    parts = set(args.parts.split(","))
    cfg = json.loads((args.model / "config.json").read_text())
    n_layer, d = cfg["n_layer"], cfg["n_embd"]
    names = [f"blocks.{i}.hook_resid_pre" for i in range(n_layer)]
    rows = args.batch_size * args.context_size
    report: dict = dict(load=os.getloadavg(), threads=args.threads, rows_per_batch=rows)
    report["flop_per_token"] = {
        "all blocks": flops_per_token(cfg, args.context_size, n_layer),
        "without the last block (resid_pre hooks only)": flops_per_token(cfg, args.context_size, n_layer - 1),
    }
    print(f"load {os.getloadavg()}; FLOP per token: {n_layer} blocks "
          f"{report['flop_per_token']['all blocks']['total'] / 1e6:.1f} M, {n_layer - 1} blocks "
          f"{report['flop_per_token']['without the last block (resid_pre hooks only)']['total'] / 1e6:.1f} M")
    if "sgemm" in parts:
        shapes = {"qkv": (rows, d, 3 * d), "attn out": (rows, d, d), "mlp in": (rows, d, 4 * d),
                  "mlp out": (rows, 4 * d, d)}
        sg: dict = {}
        for name, (m, k, n) in shapes.items():
            sg[name] = dict(shape=[m, k, n], ort_mlas=sgemm_ort(m, k, n, args.threads, args.reps),
                            torch=sgemm_torch(m, k, n, args.threads, args.reps))
            print(f"  sgemm {name:9} {m}x{k}x{n}: MLAS {sg[name]['ort_mlas']:6.1f} GFLOP/s, "
                  f"torch {sg[name]['torch']:6.1f} GFLOP/s")
        # The model's products weighted by their FLOP: the rate a perfect runtime gets.
        weights = {"qkv": 3, "attn out": 1, "mlp in": 4, "mlp out": 4}
        for lib in ("ort_mlas", "torch"):
            sec = sum(w / sg[k][lib] for k, w in weights.items()) / sum(weights.values())
            sg[f"weighted {lib}"] = 1 / sec
        report["sgemm_gflops"] = sg
    if "ort" in parts:
        src = args.model / "model.onnx"
        fw: dict = {}
        with tempfile.TemporaryDirectory() as tmp:
            pruned = Path(tmp) / "pruned.onnx"
            prune(src, pruned, names)
            ref = None
            for label, path in (("exported", src), ("pruned", pruned)):
                for level in ("basic", "extended", "all"):
                    tps, outs = forward(path, names, args.threads, args.batch_size,
                                        args.context_size, args.reps, level)
                    if ref is None:
                        ref = outs
                    diff = max(float(np.abs(a - b).max()) for a, b in zip(outs, ref))
                    fw[f"{label} {level}"] = dict(tokens_per_s=tps, max_diff=diff)
                    print(f"  bare ORT {label:8} {level:8}: {tps:7.1f} tokens/s (max diff {diff:.1e})")
            try:
                from onnxruntime.transformers import optimizer

                fused = Path(tmp) / "fused.onnx"
                opt = optimizer.optimize_model(str(pruned), model_type="gpt2",
                                               num_heads=cfg["n_head"], hidden_size=d, opt_level=0)
                opt.save_model_to_file(str(fused))
                ops = sorted({n.op_type for n in opt.model.graph.node})
                tps, outs = forward(fused, names, args.threads, args.batch_size,
                                    args.context_size, args.reps, "all")
                diff = max(float(np.abs(a - b).max()) for a, b in zip(outs, ref))
                fw["pruned + transformers optimizer"] = dict(tokens_per_s=tps, max_diff=diff, ops=ops)
                print(f"  bare ORT pruned + onnxruntime.transformers fusion: {tps:7.1f} tokens/s "
                      f"(max diff {diff:.1e}; ops {ops})")
            except Exception as e:  # noqa: BLE001 - report what failed, keep the rest
                fw["pruned + transformers optimizer"] = dict(error=repr(e))
                print(f"  onnxruntime.transformers optimizer failed: {e!r}")
        report["bare_ort"] = fw
    flop = report["flop_per_token"]
    if "sgemm_gflops" in report:
        ceil = {}
        for lib in ("ort_mlas", "torch"):
            peak = report["sgemm_gflops"][f"weighted {lib}"]
            for label, f in flop.items():
                ceil[f"{lib}, {label}"] = peak * 1e9 / f["total"]
        report["ceiling_tokens_per_s"] = ceil
        print("ceiling (all time in matrix products at the measured sgemm rate):")
        for k, v in ceil.items():
            print(f"  {k:60} {v:7.0f} tokens/s")
    if args.peer_json.is_file():
        med = json.loads(args.peer_json.read_text()).get("medians", {})
        for dt in ("f32", "f16"):
            peer = med.get(f"peer_{dt}", {}).get("tokens_per_s")
            if peer:
                report[f"goal_1.6x_peer_{dt}"] = 1.6 * peer
                print(f"1.6x peer_{dt} ({peer:.0f} tokens/s in {args.peer_json}) = {1.6 * peer:.0f} tokens/s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}; load {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
