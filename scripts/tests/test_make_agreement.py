"""scripts/make_agreement.py and scripts/sva_grammar.py: format, filter, splits, determinism.

Run: python -m pytest scripts/tests -q
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import make_agreement  # noqa: E402
import sva_grammar  # noqa: E402

tokenizers = pytest.importorskip("tokenizers")
REPO = Path(__file__).resolve().parents[2]
KEYS = {"clean_prefix", "patch_prefix", "clean_answer", "patch_answer", "case"}


def word_level_tokenizer(path: Path, words: list[str]) -> Path:
    """A tokenizer with one token per listed word (with and without a leading space) and
    ByteLevel fallback for everything else, so single-token checks are predictable."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=5000, min_frequency=1, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([" ".join(words)] * 3 + ["The that the"] * 3, trainer)
    tok.save(str(path))
    return path


def all_words(words: make_agreement.Words) -> list[str]:
    out = list(words.prepositions)
    for pairs in (words.nouns, words.attractors, words.verbs, words.rc_verbs):
        for sg, pl in pairs:
            out += [sg, pl]
    return out


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_words(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("words")
    path = d / "words.json"
    path.write_text(json.dumps(sva_grammar.word_lists(sva_grammar.heldout_pairs(0))))
    return path


def test_gpt2_word_lists_make_all_families(tmp_path):
    words_path = REPO / "datasets" / "agreement" / "gpt2.json"
    words = make_agreement.Words(words_path)
    tok = word_level_tokenizer(tmp_path / "tok.json", all_words(words))
    counts = make_agreement.make(words_path, tok, tmp_path / "out", seed=3, max_train=400, max_test=100)
    for family in make_agreement.FAMILIES:
        train = read(tmp_path / "out" / f"{family}_train.jsonl")
        test = read(tmp_path / "out" / f"{family}_test.jsonl")
        assert counts[family]["train"] == len(train) > 0 and len(test) > 0, family
        for r in train + test:
            assert set(r) == KEYS
            assert r["clean_prefix"] != r["patch_prefix"]
            assert r["clean_answer"].startswith(" ") and r["patch_answer"].startswith(" ")
            assert r["clean_answer"] != r["patch_answer"]
        # train and test never share a prefix
        assert not {r["clean_prefix"] for r in train} & {r["clean_prefix"] for r in test}


def test_rows_come_in_both_directions_with_cases(tiny_words, tmp_path):
    make_agreement.make(tiny_words, None, tmp_path, seed=0, max_train=200, max_test=50)
    rows = read(tmp_path / "across_pp_train.jsonl")
    for a, b in zip(rows[::2], rows[1::2]):
        assert (a["clean_prefix"], a["clean_answer"]) == (b["patch_prefix"], b["patch_answer"])
        assert a["case"].startswith("singular_") and b["case"].startswith("plural_")
        assert a["case"].split("_")[1] == b["case"].split("_")[1]
    simple = read(tmp_path / "simple_train.jsonl")
    assert {r["case"] for r in simple} == {"singular", "plural"}
    r = simple[0]
    assert r["clean_prefix"].startswith("The ") and len(r["clean_prefix"].split()) == 2


def test_heldout_pairs_define_the_test_split(tiny_words, tmp_path):
    make_agreement.make(tiny_words, None, tmp_path, seed=0, max_train=2000, max_test=500)
    heldout = {tuple(p) for p in json.loads(tiny_words.read_text())["heldout_pairs"]}
    plural_to_singular = {pl: sg for sg, pl in sva_grammar.NOUNS}
    verb_sg = {p: s for s, p in sva_grammar.FAMILY_MAIN_VERBS}
    verb_sg.update({s: s for s, _ in sva_grammar.FAMILY_MAIN_VERBS})
    for family in make_agreement.FAMILIES:
        subj_index = 1 if family != "within_rc" else 4  # word of the agreeing noun
        for split, expect in (("test", True), ("train", False)):
            for r in read(tmp_path / f"{family}_{split}.jsonl"):
                noun = r["clean_prefix"].split()[subj_index]
                noun = plural_to_singular.get(noun, noun)
                verb = verb_sg[r["clean_answer"].strip()]
                assert ((noun, verb) in heldout) is expect, (family, split, r)


def test_tokenizer_filter_drops_multi_token_answers_and_unequal_prefixes(tmp_path):
    words = {
        "nouns": [["cat", "cats"], ["ox", "oxen"]],
        "prepositions": ["near"],
        "verbs": [["is", "are"], ["zzqx", "zzqy"]],
        "rc_verbs": [["likes", "like"]],
        "templates": {"simple": "The {subj}", "across_pp": "The {subj} {prep} the {attr}",
                      "within_rc": "The {attr} that the {subj}",
                      "across_rc": "The {subj} that the {attr} {attr_verb}"},
    }
    path = tmp_path / "w.json"
    path.write_text(json.dumps(words))
    # "oxen" and the zzq* verbs are not in the tokenizer's vocabulary: several tokens each.
    tok = word_level_tokenizer(tmp_path / "tok.json", ["cat", "cats", "ox", "near", "is", "are",
                                                       "likes", "like"])
    make_agreement.make(path, tok, tmp_path / "o", seed=0)
    simple = read(tmp_path / "o" / "simple_train.jsonl") + read(tmp_path / "o" / "simple_test.jsonl")
    assert {r["clean_prefix"] for r in simple} == {"The cat", "The cats"}
    assert {r["clean_answer"] for r in simple} == {" is", " are"}


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    words_path = REPO / "datasets" / "agreement" / "gpt2.json"
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        make_agreement.make(words_path, None, tmp_path / name, seed=seed, max_train=300, max_test=80)
    for family in make_agreement.FAMILIES:
        for split in ("train", "test"):
            f = f"{family}_{split}.jsonl"
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / "simple_test.jsonl").read_bytes() != (
        tmp_path / "c" / "simple_test.jsonl").read_bytes()


def test_grammar_never_lets_a_heldout_pair_agree():
    heldout = sva_grammar.heldout_pairs(0)
    gen = sva_grammar.Generator(random.Random(5), heldout)
    banned = {v for n, v in heldout if n == "cat"}
    assert banned
    for _ in range(300):
        assert gen.agreeing("cat", 0, sva_grammar.MAIN_VERBS) not in banned
    # all sentences render: capitalised, one full stop at the end
    for _ in range(200):
        s = gen.sentence()
        assert s[0].isupper() and s.endswith(".") and s.count(".") == 1


def test_cli_rejects_missing_tokenizer(tmp_path, capsys):
    assert make_agreement.main(["--tokenizer", str(tmp_path / "nope.json"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err


# --- SmolLM2: the committed word lists and test sets -----------------------------------------
SMOLLM2_TOKENIZER = REPO / "models" / "smollm2-135m" / "tokenizer.json"
SMOLLM2_WORDS = REPO / "datasets" / "agreement" / "smollm2.json"
SMOLLM2_DATA = REPO / "datasets" / "agreement" / "smollm2"
needs_smollm2 = pytest.mark.skipif(
    not SMOLLM2_TOKENIZER.is_file(),
    reason="models/smollm2-135m/tokenizer.json not found; run scripts/setup-model.sh smollm2-135m")


@needs_smollm2
def test_smollm2_sets_regenerate_byte_for_byte(tmp_path):
    """datasets/agreement/smollm2/ is exactly what the documented command writes:
    make_agreement.py --tokenizer models/smollm2-135m/tokenizer.json
        --words datasets/agreement/smollm2.json --out datasets/agreement/smollm2 --seed 0"""
    assert make_agreement.main(["--tokenizer", str(SMOLLM2_TOKENIZER), "--words", str(SMOLLM2_WORDS),
                                "--out", str(tmp_path), "--seed", "0"]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in SMOLLM2_DATA.glob("*.jsonl"))
    assert written == committed
    for name in written:
        assert (tmp_path / name).read_bytes() == (SMOLLM2_DATA / name).read_bytes(), name


@needs_smollm2
def test_smollm2_word_lists_are_single_tokens():
    tok = tokenizers.Tokenizer.from_file(str(SMOLLM2_TOKENIZER))
    words = make_agreement.Words(SMOLLM2_WORDS)
    multi = [w for w in all_words(words)
             if len(tok.encode(" " + w, add_special_tokens=False).ids) != 1]
    assert multi == [], f"not one token with a leading space in SmolLM2: {multi}"


@needs_smollm2
@pytest.mark.parametrize("family", make_agreement.FAMILIES)
def test_smollm2_test_sets_have_500_pairs_that_pass_the_filter(family):
    tok = tokenizers.Tokenizer.from_file(str(SMOLLM2_TOKENIZER))

    def n(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    test = read(SMOLLM2_DATA / f"{family}_test.jsonl")
    train = read(SMOLLM2_DATA / f"{family}_train.jsonl")
    assert len(test) == 500
    for r in test + train:
        assert set(r) == KEYS
        assert n(r["clean_answer"]) == n(r["patch_answer"]) == 1, r
        assert n(r["clean_prefix"]) == n(r["patch_prefix"]), r
        assert r["clean_prefix"] != r["patch_prefix"] and r["clean_answer"] != r["patch_answer"]
    assert len({(r["clean_prefix"], r["clean_answer"]) for r in test}) == len(test)  # no duplicates
    assert not {r["clean_prefix"] for r in train} & {r["clean_prefix"] for r in test}
    # both directions, equally often
    assert sum(r["case"].startswith("singular") for r in test) == len(test) // 2


@needs_smollm2
def test_smollm2_smoke_sets_are_the_first_64_rows(tmp_path):
    """datasets/agreement/smollm2-smoke/ (for the smoke pipeline) is what
    `--max-train 0 --max-test 64` writes, and that is the head of each full test set."""
    assert make_agreement.main(["--tokenizer", str(SMOLLM2_TOKENIZER), "--words", str(SMOLLM2_WORDS),
                                "--out", str(tmp_path), "--seed", "0", "--max-train", "0",
                                "--max-test", "64"]) == 0
    smoke = REPO / "datasets" / "agreement" / "smollm2-smoke"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in smoke.glob("*.jsonl"))
    for p in tmp_path.iterdir():
        assert p.read_bytes() == (smoke / p.name).read_bytes(), p.name
    for family in make_agreement.FAMILIES:
        full = (SMOLLM2_DATA / f"{family}_test.jsonl").read_text().splitlines(keepends=True)
        assert (smoke / f"{family}_test.jsonl").read_text() == "".join(full[:64])
