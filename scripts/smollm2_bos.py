#!/usr/bin/env python3
"""Which first token SmolLM2-135M should get: agreement logit differences per BOS choice.

    python3 scripts/smollm2_bos.py [--model models/smollm2-135m]

For each prompt, logit(right verb) - logit(wrong verb) at the last position (is/are and
was/were), with nothing, `<|endoftext|>` (id 0; what circuitry-dump prepends) or `<|im_start|>`
(id 1; the GGUF's bos_token_id) in front. transformers, float32, eager attention. Prints a
Markdown table (results: docs/benchmarks/smollm2-bos.md).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

REPO = Path(__file__).resolve().parent.parent
# (prompt, subject is plural)
PROMPTS = [
    ("The keys to the cabinet", True),
    ("The key to the cabinets", False),
    ("The dog", False),
    ("The dogs", True),
    ("The girl near the boys", False),
    ("The girls near the boy", True),
    ("The author that the guards like", False),
    ("The authors that the guard likes", True),
]
VERBS = [(" is", " are"), (" was", " were")]  # (singular, plural)
FIRST = [("none", None), ("<|endoftext|>", 0), ("<|im_start|>", 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "models" / "smollm2-135m")
    args = ap.parse_args()
    tok = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    model = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    verb_ids = []
    for sing, plur in VERBS:
        ids = [tok.encode(sing).ids, tok.encode(plur).ids]
        assert all(len(i) == 1 for i in ids), (sing, plur, ids)
        verb_ids.append((ids[0][0], ids[1][0]))
    header = "| prompt | verbs | " + " | ".join(name for name, _ in FIRST) + " |"
    print(header)
    print("|" + "---|" * (2 + len(FIRST)))
    totals = {name: [] for name, _ in FIRST}
    for prompt, plural in PROMPTS:
        text_ids = tok.encode(prompt).ids
        for (sing, plur), (si, pi) in zip(VERBS, verb_ids):
            cells = []
            for name, first in FIRST:
                ids = torch.tensor([([first] if first is not None else []) + text_ids])
                with torch.no_grad():
                    last = model(input_ids=ids).logits[0, -1]
                right, wrong = (pi, si) if plural else (si, pi)
                d = float(last[right] - last[wrong])
                totals[name].append(d)
                cells.append(f"{d:+.2f}")
            verbs = f"{plur.strip()}/{sing.strip()}" if plural else f"{sing.strip()}/{plur.strip()}"
            print(f"| {prompt} | {verbs} | " + " | ".join(cells) + " |")
    n = len(next(iter(totals.values())))
    print("| **mean** | | " + " | ".join(f"{sum(v) / n:+.2f}" for v in totals.values()) + " |")
    print("| **right > wrong** | | " + " | ".join(
        f"{sum(d > 0 for d in v)}/{n}" for v in totals.values()) + " |")


if __name__ == "__main__":
    main()
