#!/usr/bin/env python3
"""Write the four subject–verb agreement datasets (Marks et al. 2024 after Finlayson et al. 2021).

    python scripts/make_agreement.py --tokenizer tokenizer.json --out DIR --seed N \
        [--words datasets/agreement/gpt2.json] [--max-train 2000] [--max-test 500]

writes DIR/{simple,across_pp,within_rc,across_rc}_{train,test}.jsonl, one JSON object a line:

    {"clean_prefix": "The cat near the dogs", "patch_prefix": "The cats near the dogs",
     "clean_answer": " is", "patch_answer": " are", "case": "singular_plural"}

Families (templates come from the word-list file; {subj} is the noun the answer agrees with):

    simple      The {subj}                              → main verb
    across_pp   The {subj} {prep} the {attr}            → main verb
    within_rc   The {attr} that the {subj}              → relative-clause (transitive) verb
    across_rc   The {subj} that the {attr} {attr_verb}  → main verb

Clean and patch prefixes differ only in the number of {subj}; answers are the verb forms with a
leading space, clean_answer agreeing with the clean prefix. Every lemma-level item gives two
rows, one with a singular clean subject and one with a plural one. `case` is the clean
subject's number ("singular"/"plural"), followed for the three families with an attractor by
the attractor's number ("singular_plural" = singular subject, plural attractor).

Filter for the tokenizer: both answers single tokens, clean and patch prefixes the same number
of tokens; items failing it are dropped (counts printed).

Splits are fixed: when the word-list file has `heldout_pairs` ([noun singular, verb singular]),
the test split is exactly the items whose (subject, answer verb) pair is held out and the train
split the others; otherwise an item goes to test when a hash of (seed, family, the item without
its answer verb) falls below `test_fraction` (default 0.2), so no test prefix occurs in train. Items are then drawn in a seeded order up to --max-train /
--max-test rows per split. Same inputs and seed, same files, byte for byte.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import sys
from pathlib import Path

FAMILIES = ("simple", "across_pp", "within_rc", "across_rc")
NUMBERS = ("singular", "plural")
MAX_MISSES = 5000  # consecutive draws that add nothing before a family counts as exhausted
DEFAULT_WORDS = Path(__file__).resolve().parents[1] / "datasets" / "agreement" / "gpt2.json"


class Words:
    """A validated word-list file (see datasets/agreement/README.md)."""

    def __init__(self, path: Path):
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"make_agreement.py: cannot read word lists {path}: {e}")
        for key in ("nouns", "prepositions", "verbs", "rc_verbs", "templates"):
            if key not in raw:
                raise SystemExit(f"make_agreement.py: {path}: missing field {key!r}")
        self.nouns = [tuple(p) for p in raw["nouns"]]
        self.attractors = [tuple(p) for p in raw.get("attractors", raw["nouns"])]
        self.prepositions = list(raw["prepositions"])
        self.verbs = [tuple(p) for p in raw["verbs"]]
        self.rc_verbs = [tuple(p) for p in raw["rc_verbs"]]
        self.templates = dict(raw["templates"])
        missing = [f for f in FAMILIES if f not in self.templates]
        if missing:
            raise SystemExit(f"make_agreement.py: {path}: templates lack {missing}")
        held = raw.get("heldout_pairs")
        self.heldout = {tuple(p) for p in held} if held is not None else None
        self.test_fraction = float(raw.get("test_fraction", 0.2))
        for name in ("nouns", "attractors", "verbs", "rc_verbs"):
            for pair in getattr(self, name):
                if len(pair) != 2:
                    raise SystemExit(f"make_agreement.py: {path}: {name} entry {list(pair)} "
                                     "is not a [singular, plural] pair")


def items(words: Words, family: str, rng: random.Random):
    """An endless seeded stream of lemma-level items: dicts of the template's slots.

    `subj`, `attr` are (singular, plural) pairs; `verb` the answer pair; `attr_n` the
    attractor's number index.
    """
    if family == "simple":  # small: every combination once, in a seeded order
        combos = list(itertools.product(words.nouns, words.verbs))
        rng.shuffle(combos)
        for subj, verb in combos:
            yield {"subj": subj, "verb": verb}
        return
    verbs = words.rc_verbs if family == "within_rc" else words.verbs
    while True:
        item = {"subj": rng.choice(words.nouns), "verb": rng.choice(verbs),
                "attr": rng.choice(words.attractors), "attr_n": rng.randrange(2)}
        if family == "across_pp":
            item["prep"] = rng.choice(words.prepositions)
        if family == "across_rc":
            attr_verbs = words.rc_verbs
            if words.heldout is not None:  # keep the prefix in-distribution: a seen pair
                attr_verbs = [v for v in attr_verbs if (item["attr"][0], v[0]) not in words.heldout]
            item["attr_verb"] = rng.choice(attr_verbs)
        if item["attr"] == item["subj"]:
            continue
        yield item


def item_key(family: str, item: dict) -> str:
    return json.dumps([family] + [item[k] for k in sorted(item)])


def is_test(words: Words, family: str, item: dict, seed: int) -> bool:
    if words.heldout is not None:
        return (item["subj"][0], item["verb"][0]) in words.heldout
    # split by prefix (the item without its answer verb): no test prefix is in train
    prefix_item = {k: v for k, v in item.items() if k != "verb"}
    digest = hashlib.sha256(f"{seed}|{item_key(family, prefix_item)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < words.test_fraction


def render(words: Words, family: str, item: dict, subj_n: int) -> str:
    slots = {"subj": item["subj"][subj_n]}
    if "attr" in item:
        slots["attr"] = item["attr"][item["attr_n"]]
    if "prep" in item:
        slots["prep"] = item["prep"]
    if "attr_verb" in item:
        slots["attr_verb"] = item["attr_verb"][item["attr_n"]]
    return words.templates[family].format(**slots)


def rows(words: Words, family: str, item: dict) -> list[dict]:
    """The two rows of an item: clean singular, then clean plural."""
    out = []
    for n in (0, 1):
        case = NUMBERS[n] + (f"_{NUMBERS[item['attr_n']]}" if "attr" in item else "")
        out.append({
            "clean_prefix": render(words, family, item, n),
            "patch_prefix": render(words, family, item, 1 - n),
            "clean_answer": " " + item["verb"][n],
            "patch_answer": " " + item["verb"][1 - n],
            "case": case,
        })
    return out


class TokenFilter:
    """Single-token answers and equal-length clean/patch prefixes under a tokenizer."""

    def __init__(self, tokenizer_path: Path):
        from tokenizers import Tokenizer

        try:
            self.tok = Tokenizer.from_file(str(tokenizer_path))
        except Exception as e:  # tokenizers raises its own Exception type
            raise SystemExit(f"make_agreement.py: cannot load tokenizer {tokenizer_path}: {e}")

    def n_tokens(self, text: str) -> int:
        return len(self.tok.encode(text, add_special_tokens=False).ids)

    def accepts(self, row: dict) -> bool:
        return (self.n_tokens(row["clean_answer"]) == 1 and self.n_tokens(row["patch_answer"]) == 1
                and self.n_tokens(row["clean_prefix"]) == self.n_tokens(row["patch_prefix"]))


def make_family(words: Words, family: str, keep, seed: int, max_train: int, max_test: int):
    """(train rows, test rows, dropped item count) for one family."""
    rng = random.Random(f"agreement|{seed}|{family}")
    split = {"train": [], "test": []}
    cap = {"train": max_train, "test": max_test}
    seen, dropped, misses = set(), 0, 0
    for item in items(words, family, rng):
        key = item_key(family, item)
        name = "test" if is_test(words, family, item, seed) else "train"
        if key in seen or len(split[name]) + 2 > cap[name]:
            misses += 1
            # stop once both splits are full or the item space looks exhausted
            if all(len(split[s]) + 2 > cap[s] for s in split) or misses >= MAX_MISSES:
                break
            continue
        misses = 0
        seen.add(key)
        pair = rows(words, family, item)
        if all(keep(r) for r in pair):
            split[name] += pair
        else:
            dropped += 1
    return split["train"], split["test"], dropped


def write_jsonl(path: Path, rows_: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for r in rows_:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def make(words_path: Path, tokenizer: Path | None, out: Path, seed: int,
         max_train: int = 2000, max_test: int = 500) -> dict:
    """Write the eight JSONL files; returns {family: {"train": n, "test": n, "dropped": n}}."""
    words = Words(words_path)
    keep = TokenFilter(tokenizer).accepts if tokenizer is not None else (lambda _r: True)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for family in FAMILIES:
        train, test, dropped = make_family(words, family, keep, seed, max_train, max_test)
        write_jsonl(out / f"{family}_train.jsonl", train)
        write_jsonl(out / f"{family}_test.jsonl", test)
        counts[family] = {"train": len(train), "test": len(test), "dropped": dropped}
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path, required=True, help="HF tokenizer.json")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--words", type=Path, default=DEFAULT_WORDS,
                        help=f"word lists and templates (default {DEFAULT_WORDS.name})")
    parser.add_argument("--max-train", type=int, default=2000, help="rows per family, train")
    parser.add_argument("--max-test", type=int, default=500, help="rows per family, test")
    args = parser.parse_args(argv)
    if not args.tokenizer.is_file():
        print(f"make_agreement.py: tokenizer {args.tokenizer} not found", file=sys.stderr)
        return 2
    counts = make(args.words, args.tokenizer, args.out, args.seed, args.max_train, args.max_test)
    for family, c in counts.items():
        print(f"{family:10s} train {c['train']:5d}  test {c['test']:5d}  "
              f"(items dropped by the tokenizer filter: {c['dropped']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
