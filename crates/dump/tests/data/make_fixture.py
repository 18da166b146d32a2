#!/usr/bin/env python3
"""Regenerate crates/dump/tests/data/tiny_random/: a randomly initialised tiny GPT-2 (HF layout),
its ONNX export with hook outputs (scripts/export_onnx.py), a ByteLevel BPE tokenizer with
<|endoftext|>, a small corpus and agreement-style pairs. Deterministic (seeded).

    python3 crates/dump/tests/data/make_fixture.py
"""
import json
import random
import subprocess
import sys
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = Path(__file__).resolve().parent
OUT = HERE / "tiny_random"
ROOT = HERE.parents[3]

NOUNS = [("cat", "cats"), ("dog", "dogs"), ("author", "authors"), ("pilot", "pilots"), ("farmer", "farmers")]
VERBS = [("runs", "run"), ("is", "are"), ("has", "have"), ("sleeps", "sleep")]
PREPS = ["near", "behind", "beside"]


def sentences(rng, n):
    out = []
    for _ in range(n):
        noun = rng.choice(NOUNS)
        verb = rng.choice(VERBS)
        plural = rng.random() < 0.5
        s = f"The {noun[plural]}"
        if rng.random() < 0.4:
            s += f" {rng.choice(PREPS)} the {rng.choice(NOUNS)[rng.random() < 0.5]}"
        s += f" {verb[plural]} here ."
        out.append(s)
    return out


def main():
    rng = random.Random(7)
    OUT.mkdir(parents=True, exist_ok=True)
    corpus = sentences(rng, 60)
    (OUT / "corpus.txt").write_text("\n".join(corpus) + "\n")

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(sentences(random.Random(1), 500), trainer)
    tok.save(str(OUT / "tokenizer.json"))

    # Pairs the dump accepts: under this tokenizer each answer is one token and the
    # clean and patch prompts have one token length (plurals are two tokens here, so
    # the contrast is between single-token nouns and answers).
    single = [n for n, _ in NOUNS]
    answers = [(" run", " sleep"), (" sleep", " run")]
    pairs = []
    for i, noun in enumerate(single):
        for clean_answer, patch_answer in answers:
            for k in (0, 1):
                other = single[(i + 1 + k) % len(single)]
                suffix = f" near the {single[0]}" if len(pairs) % 3 == 0 else ""
                pairs.append({
                    "clean_prefix": f"The {noun}{suffix}", "patch_prefix": f"The {other}{suffix}",
                    "clean_answer": clean_answer, "patch_answer": patch_answer,
                    "case": "singular" if k == 0 else "other",
                })
    for p in pairs:
        assert len(tok.encode(p["clean_answer"]).ids) == 1 and len(tok.encode(p["patch_answer"]).ids) == 1, p
        assert len(tok.encode(p["clean_prefix"]).ids) == len(tok.encode(p["patch_prefix"]).ids), p
    (OUT / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))

    torch.manual_seed(1234)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=320, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(OUT)
    for extra in ("generation_config.json",):
        (OUT / extra).unlink(missing_ok=True)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "export_onnx.py"), str(OUT), str(OUT / "model.onnx")],
                   check=True)


if __name__ == "__main__":
    main()
