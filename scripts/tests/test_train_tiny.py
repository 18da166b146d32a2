"""scripts/lean_gpt2.py and the pieces of scripts/train_tiny_gpt2.py that need no training.

Run: python -m pytest scripts/tests -q
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import lean_gpt2  # noqa: E402
import sva_grammar  # noqa: E402
import train_tiny_gpt2  # noqa: E402

pytest.importorskip("transformers")


def test_lean_model_converts_to_identical_hf_gpt2():
    torch.manual_seed(0)
    lean = lean_gpt2.LeanGpt2(vocab=97, n_ctx=16, d_model=32, n_layer=2, n_head=4).eval()
    with torch.no_grad():  # non-trivial biases and layer norms
        for name, p in lean.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    args = argparse.Namespace(n_ctx=16, d_model=32, n_head=4)
    hf, diff = train_tiny_gpt2.to_hf(lean, 2, 97, args)
    print(f"HF vs lean logits: max abs diff {diff:.2e}")
    assert diff < 1e-5
    ids = torch.randint(0, 97, (3, 9))
    with torch.no_grad():
        assert torch.allclose(hf(input_ids=ids).logits, lean(ids), atol=1e-5)
    sd = hf.state_dict()
    assert sd["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D [in, out]


def test_leak_check_matches_words_case_insensitively():
    grams = {("the", "cat", "is"), ("the", "cats", "near", "the", "dog", "are")}
    lengths = [3, 6]
    assert train_tiny_gpt2.contains_any("The cat is happy.", grams, lengths)
    assert train_tiny_gpt2.contains_any("Yesterday, the dog near the cat is late.", grams, lengths)
    assert train_tiny_gpt2.contains_any("I think that the cats near the dog are kind.", grams, lengths)
    assert not train_tiny_gpt2.contains_any("The cats is.", grams, lengths)
    assert not train_tiny_gpt2.contains_any("The cat that the dogs like is.", {("the", "cat", "is")}, [3])


def test_corpus_is_deterministic_and_respects_heldout_pairs():
    heldout = sva_grammar.heldout_pairs(0)
    a = train_tiny_gpt2.generate_corpus(300, 7, heldout)
    assert a == train_tiny_gpt2.generate_corpus(300, 7, heldout)
    assert a != train_tiny_gpt2.generate_corpus(300, 8, heldout)
    tok = train_tiny_gpt2.train_tokenizer(train_tiny_gpt2.generate_corpus(3000, 0, heldout), 1000)
    stream, starts = train_tiny_gpt2.pack(tok, a[:5])
    assert all(stream[s] == 0 for s in starts) and stream[0] == 0
    assert tok.decode(stream[starts[1] + 1:starts[2]].tolist()) == a[1]
    rng = random.Random(0)
    for verb in rng.sample(sva_grammar.FAMILY_MAIN_VERBS, 5):
        assert len(tok.encode(" " + verb[0]).ids) == 1 and len(tok.encode(" " + verb[1]).ids) == 1
