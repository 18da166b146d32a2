#!/usr/bin/env python3
"""SmolLM2-135M's subject–verb agreement accuracy per family, on both sides of every pair.

    python3 scripts/smollm2_accuracy.py [--model models/smollm2-135m]
        [--data datasets/agreement/smollm2] [--split test] [--threads 2] [--rows-out FILE]

For every row of DIR/{family}_{split}.jsonl (scripts/make_agreement.py's format) the model reads
`<|endoftext|>` (id 0, what circuitry-dump prepends) followed by the prefix, and at the last
position compares the two answer logits:

    clean side: logit(clean_answer) - logit(patch_answer) given clean_prefix
    patch side: logit(patch_answer) - logit(clean_answer) given patch_prefix

A pair is right when both differences are > 0. Prints a Markdown table per family (pairs,
accuracy, each side's accuracy, mean logit difference over both sides) and one per prompt
`case` (subject and attractor number; accuracy of single prompts); results in
docs/benchmarks/smollm2-agreement.md. `--rows-out` writes one JSON line per row (family, index,
both differences, right) so a circuit summary can restrict to the pairs the model gets right;
`--from-rows` prints the tables again from such a file. transformers, float32, eager attention,
no gradients.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

REPO = Path(__file__).resolve().parent.parent
FAMILIES = ("simple", "across_pp", "within_rc", "across_rc")
BOS_ID = 0  # <|endoftext|>, the token circuitry-dump puts first
BATCH = 64


def encode(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


def answer_id(tok: Tokenizer, answer: str, where: str) -> int:
    ids = encode(tok, answer)
    if len(ids) != 1:
        raise SystemExit(f"smollm2_accuracy.py: {where}: answer {answer!r} is {len(ids)} tokens "
                         "in this tokenizer, not 1; regenerate the data with make_agreement.py")
    return ids[0]


@torch.no_grad()
def answer_logits(model, prompts: list[tuple[int, ...]], vocab: list[int]) -> dict:
    """{prompt: {token id: logit at the prompt's last position}} for the token ids in `vocab`.

    Prompts are grouped by length so no padding is needed (a family's prefixes all have one
    length anyway); only the last position goes through the LM head."""
    out = {}
    cols = torch.tensor(vocab)  # (A,)
    by_len = defaultdict(list)
    for p in prompts:
        by_len[len(p)].append(p)
    for _, group in sorted(by_len.items()):
        for s in range(0, len(group), BATCH):
            chunk = group[s:s + BATCH]
            ids = torch.tensor(chunk)  # (B, T)
            last = model(input_ids=ids, logits_to_keep=1).logits[:, -1, :]  # (B, vocab)
            picked = last[:, cols].tolist()  # (B, A)
            for p, row in zip(chunk, picked):
                out[p] = dict(zip(vocab, row))
    return out


def score_family(model, tok: Tokenizer, path: Path) -> list[dict]:
    """One dict per row: case, clean-side and patch-side logit differences, right."""
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"smollm2_accuracy.py: cannot read {path}: {e}; "
                         "write it with scripts/make_agreement.py")
    clean_ans = [answer_id(tok, r["clean_answer"], f"{path}:{i + 1}") for i, r in enumerate(rows)]
    patch_ans = [answer_id(tok, r["patch_answer"], f"{path}:{i + 1}") for i, r in enumerate(rows)]
    clean = [(BOS_ID, *encode(tok, r["clean_prefix"])) for r in rows]
    patch = [(BOS_ID, *encode(tok, r["patch_prefix"])) for r in rows]
    # a row's patch prefix is its partner row's clean prefix: each prompt runs once
    prompts = sorted(set(clean) | set(patch))
    logits = answer_logits(model, prompts, sorted(set(clean_ans) | set(patch_ans)))
    out = []
    for i, r in enumerate(rows):
        c, p = logits[clean[i]], logits[patch[i]]
        dc = c[clean_ans[i]] - c[patch_ans[i]]
        dp = p[patch_ans[i]] - p[clean_ans[i]]
        out.append({"index": i, "case": r["case"], "clean_diff": dc, "patch_diff": dp,
                    "right": dc > 0 and dp > 0})
    return out


def summary(scored: list[dict]) -> tuple[int, float, float, float, float]:
    """(pairs, accuracy, clean-side accuracy, patch-side accuracy, mean logit diff of both sides)."""
    n = len(scored)
    acc = sum(s["right"] for s in scored) / n
    acc_c = sum(s["clean_diff"] > 0 for s in scored) / n
    acc_p = sum(s["patch_diff"] > 0 for s in scored) / n
    mean = sum(s["clean_diff"] + s["patch_diff"] for s in scored) / (2 * n)
    return n, acc, acc_c, acc_p, mean


def tables(results: dict[str, list[dict]]) -> str:
    """The two Markdown tables: per family, and per family and prompt case."""
    out = ["| family | pairs | right on both sides | clean side | patch side | mean logit diff |",
           "|---|---|---|---|---|---|"]
    for family, scored in results.items():
        n, acc, acc_c, acc_p, mean = summary(scored)
        out.append(f"| {family} | {n} | {acc:.3f} | {acc_c:.3f} | {acc_p:.3f} | {mean:+.2f} |")
    # Per prompt: a row's clean side is one prompt of its case (subject number, attractor
    # number); its patch side is its partner row's clean side, so clean sides cover every prompt.
    out += ["", "| family | prompt case (subject_attractor) | prompts | right verb preferred | "
            "mean logit diff |", "|---|---|---|---|---|"]
    for family, scored in results.items():
        cases = defaultdict(list)
        for s in scored:
            cases[s["case"]].append(s["clean_diff"])
        for case in sorted(cases):
            d = cases[case]
            out.append(f"| {family} | {case} | {len(d)} | {sum(x > 0 for x in d) / len(d):.3f} | "
                       f"{sum(d) / len(d):+.2f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "smollm2-135m")
    ap.add_argument("--data", type=Path, default=REPO / "datasets" / "agreement" / "smollm2")
    ap.add_argument("--split", default="test", choices=("test", "train"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows-out", type=Path, help="write per-row differences here (JSONL)")
    ap.add_argument("--from-rows", type=Path,
                    help="print the tables from an earlier --rows-out file; runs no model")
    args = ap.parse_args(argv)
    if args.from_rows is None and not (args.model / "tokenizer.json").is_file():
        print(f"smollm2_accuracy.py: {args.model}/tokenizer.json not found; run "
              "scripts/setup-model.sh smollm2-135m", file=sys.stderr)
        return 2
    if args.from_rows is not None:
        results = defaultdict(list)
        for line in args.from_rows.read_text().splitlines():
            row = json.loads(line)
            results[row.pop("family")].append(row)
    else:
        torch.set_num_threads(args.threads)
        tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
        model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
        results = {f: score_family(model, tok, args.data / f"{f}_{args.split}.jsonl")
                   for f in FAMILIES}
    print(tables(results))
    if args.rows_out is not None:
        tmp = args.rows_out.with_name(args.rows_out.name + ".tmp")
        with open(tmp, "w") as f:
            for family, scored in results.items():
                for s in scored:
                    f.write(json.dumps({"family": family, **s}) + "\n")
        tmp.replace(args.rows_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
