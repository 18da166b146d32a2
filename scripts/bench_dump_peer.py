#!/usr/bin/env python3
"""Helpers of scripts/bench_dump.sh (the `circuitry-dump onnx` benchmark). Not a test.

    bench_dump_peer.py make-model DIR [--seed S]        random GPT-2 small shape, HF layout + ONNX
    bench_dump_peer.py make-corpus SRC OUT --tokenizer T --tokens N
    bench_dump_peer.py peer  --model DIR --corpus F --out DIR --tokens N --context-size C
                             --batch-size B --threads T --dtype f32|f16 --shard-rows R
    bench_dump_peer.py ort   --model DIR --corpus F --tokens N --context-size C --batch-size B
                             --threads T
    bench_dump_peer.py time-dump --bin BIN --model DIR --corpus F --out DIR --tokens N ...
    bench_dump_peer.py check DUMP_DIR PEER_DIR --dtype f32|f16   same rows, same activations?
    bench_dump_peer.py perf-split SHORT.data FULL.data --hz F --tokens N   (profile of the dump)
    bench_dump_peer.py summarize RESULTS.jsonl [MORE.jsonl ...] OUT.json   (pools the files)

`peer`, `ort` and `time-dump` print one JSON line with `tokens`, `seconds` (steady state:
everything after the first batch, which is a warm-up, up to the last file closed), and
`wall` (the whole job, model load included). The dump is timed from outside (it has no
timer of its own): its steady state is the difference between a run of N tokens and a run
of one batch, both of the whole process, so model load, tokenizing the corpus and the
first batch cancel out, exactly as the Python peers exclude them.

The model is a randomly initialised GPT2LMHeadModel of GPT-2 small's exact shape (12 layers,
d_model 768, 12 heads, vocab 50257, n_positions 1024), seeded. There is no internet here, so
the tokenizer is the tiny agreement model's (`datasets/tiny-gpt2/tokenizer.json`, a ByteLevel
BPE of 921 tokens, `<|endoftext|>` = 0 is BOS): its ids are all below 50257 and the cost of a
forward pass does not depend on which ids come in.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GPT2_SMALL = dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
# What crates/store writes: zstd 3 on the token columns; on the activation leaves
# BYTE_STREAM_SPLIT, no dictionary, no statistics, zstd 1; one row group per 1024 rows
# (the writer's chunk) with one data page per activation column in it.
ZSTD_LEVEL = 3
ZSTD_LEVEL_ACTS = 1
ROW_GROUP_ROWS = 1024
PAGE_BYTES = 8 << 20


def hooks(n_layer: int) -> list[str]:
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layer)]


# ---------------------------------------------------------------- model and corpus


def make_model(out: Path, seed: int, tokenizer: Path) -> None:
    """Random GPT-2 small in HF layout plus its ONNX export (reused when complete)."""
    if (out / "model.onnx").is_file() and (out / "model.onnx.json").is_file():
        print(f"reusing {out}", file=sys.stderr)
        return
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = GPT2Config(**GPT2_SMALL, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(out)  # config.json + model.safetensors
    shutil.copyfile(tokenizer, out / "tokenizer.json")
    t = time.perf_counter()
    subprocess.run([sys.executable, str(HERE / "export_onnx.py"), str(out), str(out / "model.onnx")],
                   check=True)
    print(f"exported {out / 'model.onnx'} in {time.perf_counter() - t:.0f} s", file=sys.stderr)


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def make_corpus(src: Path, out: Path, tokenizer: Path, tokens: int) -> None:
    """The source's lines, repeated in order until they hold at least `tokens` tokens (+10%)."""
    tok = load_tokenizer(tokenizer)
    lines = [line for line in src.read_text().splitlines() if line.strip()]
    chosen, count, i = [], 0, 0
    while count < tokens * 1.1 + 1000:
        line = lines[i % len(lines)]
        chosen.append(line)
        count += len(tok.encode(line, add_special_tokens=False).ids) + 1
        i += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(chosen) + "\n")
    print(f"wrote {out}: {len(chosen)} lines, about {count} tokens", file=sys.stderr)


def windows(model: Path, corpus: Path, context_size: int, tokens: int) -> list[list[int]]:
    """The dump's packing: documents joined with BOS between them; every window is BOS and
    the next context_size - 1 tokens of that stream; cut at `tokens` tokens in all."""
    tok = load_tokenizer(model / "tokenizer.json")
    bos = tok.token_to_id("<|endoftext|>")
    assert bos is not None, "the benchmark tokenizer needs <|endoftext|> as BOS"
    stream: list[int] = []
    docs = [line for line in corpus.read_text().splitlines() if line.strip()]
    for i, doc in enumerate(docs):
        if i > 0:
            stream.append(bos)
        stream.extend(tok.encode(doc, add_special_tokens=False).ids)
    body = context_size - 1
    out, total = [], 0
    for start in range(0, len(stream), body):
        window = [bos] + stream[start:start + body]
        window = window[:tokens - total]
        total += len(window)
        if window:
            out.append(window)
        if total >= tokens:
            break
    if total < tokens:
        raise SystemExit(f"{corpus} holds only {total} tokens, fewer than --tokens {tokens}")
    return out


def batches(seqs: list[list[int]], batch_size: int):
    """(first sequence index, input_ids, attention_mask) with left padding, like the dump."""
    import numpy as np

    for first in range(0, len(seqs), batch_size):
        batch = seqs[first:first + batch_size]
        width = max(len(s) for s in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)  # (batch, seq)
        mask = np.zeros((len(batch), width), dtype=np.int64)  # (batch, seq)
        for j, s in enumerate(batch):
            ids[j, width - len(s):] = s
            mask[j, width - len(s):] = 1
        yield first, batch, ids, mask


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------- the Python peer


class ParquetShards:
    """The store's rows written with pyarrow: seq u64, pos u32, token_id u32, then one
    FixedSizeList<f32|f16, 768> column per hook; zstd 3, BYTE_STREAM_SPLIT on the floats,
    one row group per shard of `shard_rows` rows."""

    def __init__(self, out: Path, names: list[str], width: int, dtype: str, shard_rows: int):
        import numpy as np
        import pyarrow as pa

        self.np, self.pa = np, pa
        self.out, self.names, self.width, self.shard_rows = out, names, width, shard_rows
        self.np_dtype = np.float32 if dtype == "f32" else np.float16
        value = pa.float32() if dtype == "f32" else pa.float16()
        fields = [pa.field("seq", pa.uint64(), False), pa.field("pos", pa.uint32(), False),
                  pa.field("token_id", pa.uint32(), False)]
        fields += [pa.field(n, pa.list_(pa.field("item", value, False), width), False) for n in names]
        self.schema = pa.schema(fields)
        self.buf: list[dict] = []
        self.rows = 0
        self.shards = 0
        out.mkdir(parents=True, exist_ok=True)

    def add(self, seq, pos, token_id, acts: list) -> None:
        """One batch: 1-d columns of `rows` values and per hook a (rows, width) float32 array."""
        self.buf.append(dict(seq=seq, pos=pos, token_id=token_id, acts=acts))
        self.rows += len(seq)
        while self.rows >= self.shard_rows:
            self._flush(self.shard_rows)

    def _flush(self, n: int) -> None:
        np, pa = self.np, self.pa
        cat = {k: np.concatenate([b[k] for b in self.buf]) for k in ("seq", "pos", "token_id")}
        acts = [np.concatenate([b["acts"][h] for b in self.buf]) for h in range(len(self.names))]
        rest = dict(seq=cat["seq"][n:], pos=cat["pos"][n:], token_id=cat["token_id"][n:],
                    acts=[a[n:] for a in acts])
        columns = [pa.array(cat["seq"][:n], pa.uint64()), pa.array(cat["pos"][:n], pa.uint32()),
                   pa.array(cat["token_id"][:n], pa.uint32())]
        for a in acts:  # (rows, width)
            flat = np.ascontiguousarray(a[:n], dtype=self.np_dtype).reshape(-1)
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(flat), self.width))
        table = pa.Table.from_arrays(columns, schema=self.schema)
        self._write(table)
        self.buf = [rest] if len(rest["seq"]) else []
        self.rows -= n

    def _write(self, table) -> None:
        import pyarrow.parquet as pq

        path = self.out / f"shard_{self.shards:05d}.parquet"
        leaves = [f"{n}.list.item" for n in self.names]  # the dump's leaf names (arrow-rs)
        tokens = ["seq", "pos", "token_id"]
        pq.write_table(table, path, compression="zstd",
                       compression_level={**{k: ZSTD_LEVEL for k in tokens},
                                          **{k: ZSTD_LEVEL_ACTS for k in leaves}},
                       use_dictionary=tokens, use_byte_stream_split=leaves, write_statistics=tokens,
                       row_group_size=ROW_GROUP_ROWS, data_page_size=PAGE_BYTES,
                       use_compliant_nested_type=False)
        self.shards += 1

    def close(self) -> None:
        if self.rows:
            self._flush(self.rows)


def peer(args) -> dict:
    """transformers + torch eager (no_grad, output_hidden_states) writing the hooks with pyarrow.
    GPT-2 or Llama: hidden_states[L] is the input of block L (resid_pre L) in both."""
    wall = time.perf_counter()
    import numpy as np
    import pyarrow as pa
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    pa.set_cpu_count(args.threads)
    # GPT2LMHeadModel or LlamaForCausalLM (config.json's architecture), float32; the body
    # (model.transformer / model.model) runs without the LM head, as the ONNX graph does.
    model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation=args.attn,
                                                 dtype=torch.float32).eval()
    body = model.base_model
    n_layer, width = model.config.num_hidden_layers, model.config.hidden_size
    names = hooks(n_layer)
    seqs = windows(args.model, args.corpus, args.context_size, args.tokens)
    if args.out.exists():
        shutil.rmtree(args.out)
    writer = ParquetShards(args.out, names, width, args.dtype, args.shard_rows)
    start, first_rows = None, 0
    with torch.inference_mode():
        for first, batch, ids, mask in batches(seqs, args.batch_size):
            ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
            position_ids = (mask_t.cumsum(-1) - 1).clamp(min=0)  # (batch, seq)
            out = body(input_ids=ids_t, attention_mask=mask_t, position_ids=position_ids,
                                    output_hidden_states=True, use_cache=False)
            hidden = out.hidden_states  # n_layer + 1 of (batch, seq, width); [L] = resid_pre L
            w = ids.shape[1]
            keep = [(j, w - len(s)) for j, s in enumerate(batch)]  # real tokens only
            acts = [np.concatenate([hidden[layer][j, off:].numpy() for j, off in keep])
                    for layer in range(n_layer)]  # each (rows, width)
            seq_col = np.concatenate([np.full(len(s), first + j, np.uint64) for j, s in enumerate(batch)])
            pos_col = np.concatenate([np.arange(len(s), dtype=np.uint32) for s in batch])
            tok_col = np.concatenate([np.asarray(s, np.uint32) for s in batch])
            if not args.no_write:
                writer.add(seq_col, pos_col, tok_col, acts)
            if start is None:  # the first batch is a warm-up
                start, first_rows = time.perf_counter(), len(seq_col)
        writer.close()
    end = time.perf_counter()
    return dict(tokens=args.tokens - first_rows, seconds=end - start, wall=end - wall,
                total_tokens=args.tokens, shards=writer.shards, attn=args.attn,
                torch=torch.__version__, pyarrow=pa.__version__)


def bare_ort(args) -> dict:
    """Python onnxruntime on the same ONNX file, same batches and intra-op threads; the 12
    resid_pre outputs are fetched (as numpy arrays) and dropped: no conversion, no writing."""
    wall = time.perf_counter()
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(args.model / "model.onnx"), opts,
                                   providers=["CPUExecutionProvider"])
    meta = json.loads((args.model / "model.onnx.json").read_text())
    names = hooks(meta["n_layer"])
    seqs = windows(args.model, args.corpus, args.context_size, args.tokens)
    start, first_rows = None, 0
    for _first, batch, ids, mask in batches(seqs, args.batch_size):
        outs = session.run(names, {"input_ids": ids, "attention_mask": mask})
        assert len(outs) == len(names)
        del outs
        if start is None:
            start, first_rows = time.perf_counter(), sum(len(s) for s in batch)
    end = time.perf_counter()
    return dict(tokens=args.tokens - first_rows, seconds=end - start, wall=end - wall,
                total_tokens=args.tokens, onnxruntime=ort.__version__)


def bare_ort_rust(args) -> dict:
    """`circuitry-dump bench-ort`: the dump's own session, inputs and batches (same code,
    same session options), outputs dropped; it times its steady state itself."""
    cmd = [str(args.bin), "bench-ort", "--model", str(args.model), "--hooks", ",".join(args.hooks),
           "--corpus", str(args.corpus), "--context-size", str(args.context_size),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads),
           "--out", "unused", "--max-tokens", str(args.tokens)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def time_dump(args) -> dict:
    """Two whole runs of the binary: N tokens and one batch; steady state is their difference."""
    env = dict(os.environ)
    seqs = windows(args.model, args.corpus, args.context_size, args.tokens)
    first_rows = sum(len(s) for s in seqs[:args.batch_size])
    cmd = [str(args.bin), "onnx", "--model", str(args.model), "--hooks", ",".join(args.hooks),
           "--corpus", str(args.corpus), "--context-size", str(args.context_size),
           "--batch-size", str(args.batch_size), "--threads", str(args.threads),
           "--dtype", args.dtype, "--shard-rows", str(args.shard_rows)]

    def run(tokens: int) -> float:
        if args.out.exists():
            shutil.rmtree(args.out)
        t = time.perf_counter()
        subprocess.run(cmd + ["--out", str(args.out), "--max-tokens", str(tokens)], check=True,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t

    short = run(first_rows)
    full = run(args.tokens)
    meta = json.loads((args.out / "meta.json").read_text())
    assert meta["n_rows"] == args.tokens, (meta["n_rows"], args.tokens)
    return dict(tokens=args.tokens - first_rows, seconds=full - short, wall=full,
                short_wall=short, total_tokens=args.tokens, shards=len(meta["shards"]),
                hooks=len(meta["hooks"]))


# ---------------------------------------------------------------- same job?


def check(dump: Path, peer_dir: Path, dtype: str) -> dict:
    """The dump's and the peer's shards hold the same rows (seq, pos, token_id) and the same
    activations: max abs difference printed; 1e-4 for f32, f16 rounding (1e-2 relative) for f16."""
    import glob

    import numpy as np
    import pyarrow.parquet as pq

    def read(d: Path):
        return pq.ParquetDataset(sorted(glob.glob(str(d / "shard_*.parquet")))).read()

    a, b = read(dump), read(peer_dir)
    if a.num_rows != b.num_rows:
        raise SystemExit(f"check: {dump} has {a.num_rows} rows, {peer_dir} {b.num_rows}")
    for k in ("seq", "pos", "token_id"):
        if not np.array_equal(a[k].to_numpy(), b[k].to_numpy()):
            raise SystemExit(f"check: column {k} differs between {dump} and {peer_dir}")
    worst, worst_rel = 0.0, 0.0
    names = [n for n in a.column_names if n.startswith("blocks.")]
    for n in names:
        x = a[n].combine_chunks().flatten().to_numpy().astype(np.float32)
        y = b[n].combine_chunks().flatten().to_numpy().astype(np.float32)
        d = np.abs(x - y)
        worst = max(worst, float(d.max()))
        worst_rel = max(worst_rel, float((d / np.maximum(np.abs(y), 1.0)).max()))
    tol = 1e-4 if dtype == "f32" else 1e-2
    size = lambda d: sum(f.stat().st_size for f in d.glob("shard_*.parquet"))  # noqa: E731
    result = dict(dtype=dtype, rows=a.num_rows, hooks=len(names), max_abs_diff=worst,
                  max_rel_diff=worst_rel, tolerance=tol, ok=worst_rel <= tol,
                  dump_bytes=size(dump), peer_bytes=size(peer_dir))
    print(f"check {dtype}: {a.num_rows} rows x {len(names)} hooks, same seq/pos/token_id; "
          f"max |dump - peer| {worst:.3g} (relative {worst_rel:.3g}, tolerance {tol:g}); "
          f"shards {result['dump_bytes'] / 1e6:.0f} MB vs {result['peer_bytes'] / 1e6:.0f} MB",
          file=sys.stderr)
    if not result["ok"]:
        raise SystemExit(f"check: the dump and the peer disagree beyond {tol:g}")
    return result


# ---------------------------------------------------------------- profile


CATEGORIES = [  # (name, dso substring or None, symbol regex), first match wins
    ("onnxruntime (inference)", "libonnxruntime", None),
    ("zstd compression", None, r"ZSTD_|HUF_|FSE_|HIST_|zstd"),
    ("f16 conversion", None, r"half::|f16|F16"),
    ("parquet/arrow encoding", None, r"parquet::|arrow|bytes::|thrift|snap"),
    ("blake3 (stage.json fingerprints)", None, r"blake3"),
    ("tokenizer", None, r"tokenizers|onig|regex|aho_corasick|unicode"),
    ("dump: output copies, finite check", "circuitry-dump", r"ndarray|circuitry_|Vec<T>|from_iter"),
    ("libc memcpy/memset/malloc", "libc", r"mem(move|cpy|set)|malloc|free|unlink_chunk"),
    ("kernel: page faults, zeroing", "kernel", r"page|fault|folio|pte|alloc|mm_|lru|memcg|rmqueue|zone|vma|mas_|anon"),
    ("kernel: file I/O", "kernel", r"iter|ext4|filemap|bio|block|mark_buffer"),
    ("kernel: other", "kernel", None),
    ("other", None, None),
]


def perf_samples(data: Path) -> dict[str, int]:
    """Sample counts per category of one `perf record` file."""
    import re

    text = subprocess.run(["perf", "report", "-i", str(data), "--sort", "dso,sym", "--stdio",
                           "-F", "sample,dso,sym"], check=True, capture_output=True, text=True).stdout
    counts = {name: 0 for name, _, _ in CATEGORIES}
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or line.startswith("#") or not parts[0].isdigit():
            continue
        n, dso, sym = int(parts[0]), parts[1], parts[2]
        for name, want_dso, pattern in CATEGORIES:
            if want_dso and want_dso not in dso:
                continue
            if pattern is not None and not re.search(pattern, sym):
                continue
            counts[name] += n
            break
    return counts


def perf_split(short: Path, full: Path, hz: int, tokens: int) -> dict:
    """CPU time per category of the steady state: a full run minus a one-batch run."""
    a, b = perf_samples(short), perf_samples(full)
    rows = {k: (b[k] - a[k]) / hz for k in a}
    total = sum(rows.values())
    print(f"steady-state CPU time of {tokens} tokens ({full.name} - {short.name}), by category:")
    for k, sec in sorted(rows.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<34} {sec:7.2f} s  {100 * sec / max(total, 1e-9):5.1f}%  {1e3 * sec / tokens:6.2f} ms/token")
    ort = rows["onnxruntime (inference)"]
    print(f"  {'total':<34} {total:7.2f} s; outside onnxruntime {total - ort:.2f} s "
          f"({1e3 * (total - ort) / tokens:.2f} ms/token: the caller's copies and the store "
          f"writer's thread, taken from the cores ORT's threads fill)")
    return dict(seconds=rows, total=total, tokens=tokens)


# ---------------------------------------------------------------- summary


def summarize(results: list[Path], out: Path, goals: dict) -> dict:
    """Medians over all results files given (several runs pool their repetitions)."""
    lines = [json.loads(line) for path in results for line in path.read_text().splitlines()
             if line.strip()]
    checks = [r for r in lines if "check" in r]
    rows = [r for r in lines if "check" not in r]
    runs: dict[str, list[dict]] = {}
    for r in rows:
        runs.setdefault(r["name"], []).append(r)
    med = {}
    for name, rs in runs.items():
        tps = [r["tokens"] / r["seconds"] for r in rs]
        wall_tps = [r["total_tokens"] / r["wall"] for r in rs]
        med[name] = dict(tokens_per_s=statistics.median(tps), runs_tokens_per_s=[round(x, 1) for x in tps],
                         end_to_end_tokens_per_s=statistics.median(wall_tps),
                         load_during=[r["load"] for r in rs])
    ratios = {}
    for d in ("f32", "f16"):
        dump = med.get(f"dump_{d}", {}).get("tokens_per_s")
        for other, key in ((f"peer_{d}", f"dump_{d}/peer_{d}"), ("peer_f32", f"dump_{d}/peer_f32"),
                           ("bare_ort_rust", f"dump_{d}/bare_ort_rust"),
                           ("bare_ort", f"dump_{d}/bare_ort")):
            if dump and other in med and key not in ratios:
                ratios[key] = dump / med[other]["tokens_per_s"]
    # Ratios within each repetition (measured minutes apart, so under similar load).
    paired = {}
    for key in list(ratios):
        a, b = key.split("/")
        if len(runs[a]) == len(runs[b]):
            per_rep = [(x["tokens"] / x["seconds"]) / (y["tokens"] / y["seconds"])
                       for x, y in zip(runs[a], runs[b])]
            paired[key] = dict(median=statistics.median(per_rep), per_rep=[round(r, 3) for r in per_rep])
    met, reps_meeting = {}, {}
    for d in ("f32", "f16"):
        for key, goal, label in ((f"dump_{d}/peer_{d}", goals["peer"], f"dump_{d} >= {goals['peer']}x peer_{d}"),
                                 (f"dump_{d}/bare_ort_rust", goals["ort"], f"dump_{d} >= {goals['ort']:.0%} of bare_ort_rust"),
                                 (f"dump_{d}/bare_ort", goals["ort"], f"dump_{d} >= {goals['ort']:.0%} of bare_ort")):
            if key in ratios:
                met[label] = ratios[key] >= goal
                per_rep = paired.get(key, {}).get("per_rep", [])
                reps_meeting[label] = [sum(r >= goal for r in per_rep), len(per_rep)]
    report = dict(measured_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(results[-1].stat().st_mtime)),
                  results_files=[str(p) for p in results], medians=med, ratios=ratios,
                  paired_ratios=paired, goals_met=met, repetitions_meeting_goal=reps_meeting, settings=rows[0].get("settings", {}),
                  goals=goals, same_job_checks=[r["check"] for r in checks])
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'run':<10} {'tokens/s (steady, median)':>26} {'end-to-end':>11}   per run")
    for name, m in med.items():
        print(f"{name:<10} {m['tokens_per_s']:>26.1f} {m['end_to_end_tokens_per_s']:>11.1f}   "
              f"{m['runs_tokens_per_s']}")
    print()
    print(f"{'ratio':<22} {'of medians':>10}   per repetition")
    for key, value in ratios.items():
        print(f"{key:<22} {value:10.3f}   {paired.get(key, {}).get('per_rep', '')}")
    print()
    for key, ok in met.items():
        k, n = reps_meeting[key]
        print(f"goal {key:<32} {'MET' if ok else 'NOT MET':<8} (medians; {k} of {n} repetitions meet it)")
    loads = [x[0] for r in rows for x in r["load"]]
    print(f"1-min load average around the runs: {min(loads):.2f}-{max(loads):.2f} "
          f"on {os.cpu_count()} CPUs")
    report["load_1min_range"] = [min(loads), max(loads)]
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("dir", type=Path)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--tokenizer", type=Path, default=HERE.parent / "datasets/tiny-gpt2/tokenizer.json")
    c = sub.add_parser("make-corpus")
    c.add_argument("src", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--tokenizer", type=Path, required=True)
    c.add_argument("--tokens", type=int, required=True)
    for name in ("peer", "ort", "ort-rust", "time-dump"):
        s = sub.add_parser(name)
        s.add_argument("--model", type=Path, required=True)
        s.add_argument("--corpus", type=Path, required=True)
        s.add_argument("--tokens", type=int, required=True)
        s.add_argument("--context-size", type=int, required=True)
        s.add_argument("--batch-size", type=int, required=True)
        s.add_argument("--threads", type=int, required=True)
        s.add_argument("--name", required=True)
        s.add_argument("--settings", default="{}", help="JSON recorded with the result")
        if name not in ("ort", "ort-rust"):
            s.add_argument("--out", type=Path, required=True)
            s.add_argument("--dtype", choices=["f32", "f16"], required=True)
            s.add_argument("--shard-rows", type=int, required=True)
        if name == "peer":
            s.add_argument("--attn", default="sdpa", help="transformers attn_implementation")
            s.add_argument("--no-write", action="store_true",
                           help="profile: run the model and gather the rows, write nothing")
        if name in ("time-dump", "ort-rust"):
            s.add_argument("--bin", type=Path, required=True)
            s.add_argument("--hooks", nargs="+", default=["blocks.*.hook_resid_pre"])
    k = sub.add_parser("check")
    k.add_argument("dump", type=Path)
    k.add_argument("peer", type=Path)
    k.add_argument("--dtype", choices=["f32", "f16"], required=True)
    f = sub.add_parser("perf-split")
    f.add_argument("short", type=Path)
    f.add_argument("full", type=Path)
    f.add_argument("--hz", type=int, required=True)
    f.add_argument("--tokens", type=int, required=True, help="tokens of full minus short")
    r = sub.add_parser("summarize")
    r.add_argument("results", type=Path, nargs="+", help="results .jsonl file(s), then OUT.json")
    r.add_argument("--goal-peer", type=float, default=1.6)
    r.add_argument("--goal-ort", type=float, default=0.9)
    args = p.parse_args(argv)
    if args.cmd == "make-model":
        make_model(args.dir, args.seed, args.tokenizer)
    elif args.cmd == "make-corpus":
        make_corpus(args.src, args.out, args.tokenizer, args.tokens)
    elif args.cmd == "check":
        print(json.dumps(dict(check=check(args.dump, args.peer, args.dtype))))
    elif args.cmd == "perf-split":
        print(json.dumps(perf_split(args.short, args.full, args.hz, args.tokens)))
    elif args.cmd == "summarize":
        if len(args.results) < 2:
            raise SystemExit("summarize: give RESULTS.jsonl [MORE.jsonl ...] OUT.json")
        summarize(args.results[:-1], args.results[-1], dict(peer=args.goal_peer, ort=args.goal_ort))
    else:
        before = loadavg()
        fn = {"peer": peer, "ort": bare_ort, "ort-rust": bare_ort_rust, "time-dump": time_dump}[args.cmd]
        result = fn(args)
        result.update(name=args.name, load=[before, loadavg()], settings=json.loads(args.settings))
        result["tokens_per_s"] = result["tokens"] / result["seconds"]
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
