#!/usr/bin/env python3
"""Train the tiny agreement GPT-2 (the embedded default model) and everything around it.

    python scripts/train_tiny_gpt2.py --out datasets/tiny-gpt2

One run does, deterministically for its seeds:
 1. generates the corpus from the grammar in scripts/sva_grammar.py (held-out (noun, verb)
    pairs never agree anywhere in it);
 2. trains a ByteLevel BPE tokenizer on it (`<|endoftext|>` = id 0, the sentence boundary and
    BOS);
 3. writes the grammar's word lists (OUT/words.json) and the agreement datasets
    (OUT/agreement/, via make_agreement.py; test = held-out pairs), then drops every corpus
    sentence that contains a test prefix + answer (case-insensitive, as words) and checks none is
    left;
 4. trains GPT2LMHeadModel (4 layers, d_model 64, 4 heads, n_ctx 64) for each --seeds, and a
    --control-layers control for each --control-seeds (default: the same seeds), on windows of
    n_ctx tokens cut at random offsets from the stream `<|endoftext|> s1 <|endoftext|> s2 ...`
    (sentences at every position);
 5. evaluates agreement directly: after `<|endoftext|>` + prefix, is the right verb more
    likely than the wrong one? Both sides of every pair, per family, held-out (test) and seen
    (train) pairs, and on the held-out test rows made harder: `+context` (a fronted phrase or
    clause in front, OUT/agreement/context/) and the `hard_*` families (OUT/agreement/hard/:
    subject-verb distance and attractor positions vary, so no single relative position finds
    the subject);
 6. saves the model of the --keep seed (default: the first of --seeds) in HF layout (config.json,
    exports OUT/model.onnx (hooks only) and OUT/model_logits.onnx (with logits) with
    export_onnx.py, writes OUT/corpus.txt (sentences for SAE training), OUT/results.json and
    OUT/CARD.md.

    python scripts/train_tiny_gpt2.py --out datasets/tiny-gpt2 --eval-only RUNS_DIR

trains nothing: it evaluates the runs of OUT/results.json again (weights saved by --save-runs
RUNS_DIR) on every test set, written anew (e.g. after a new hard family was added), and
rewrites OUT/results.json and OUT/CARD.md; the recipe flags must be those that made OUT.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import export_onnx  # noqa: E402
import lean_gpt2  # noqa: E402
import make_agreement  # noqa: E402
import sva_grammar  # noqa: E402
from tiny_card import (  # noqa: E402,F401  (re-exported for the tests)
    CRITERION, CRITERION_FAMILY, CRITERION_POINTS, CRITERION_SLACK, HARD_COLUMNS, card,
    control_verdict, experiments, table,
)

BOS = "<|endoftext|>"
FAMILIES = make_agreement.FAMILIES


# -- data --------------------------------------------------------------------------------------
def generate_corpus(n: int, seed: int, heldout, rc_pp: float = sva_grammar.RC_PP) -> list[str]:
    gen = sva_grammar.Generator(random.Random(f"corpus-{seed}"), heldout, rc_pp)
    return [gen.sentence() for _ in range(n)]


def train_tokenizer(sentences: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[BOS], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(sentences, trainer)
    assert tok.token_to_id(BOS) == 0
    return tok


def test_strings(agreement_dir: Path) -> set[tuple[str, ...]]:
    """Every test prefix + answer (both sides), lower-cased, as a word tuple."""
    out = set()
    for family in FAMILIES:
        for line in open(agreement_dir / f"{family}_test.jsonl"):
            r = json.loads(line)
            for prefix, answer in ((r["clean_prefix"], r["clean_answer"]),
                                   (r["patch_prefix"], r["patch_answer"])):
                out.add(tuple((prefix + answer).lower().split()))
    return out


def contains_any(sentence: str, grams: set[tuple[str, ...]], lengths: list[int]) -> bool:
    words = sentence.lower().replace(",", "").replace(".", "").split()
    return any(tuple(words[i:i + n]) in grams
               for n in lengths for i in range(len(words) - n + 1))


def pack(tok, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The token stream `<bos> s1 <bos> s2 ...` and the offsets of its <bos> tokens."""
    ids, starts = [], []
    for enc in tok.encode_batch(sentences, add_special_tokens=False):
        starts.append(len(ids))
        ids.append(0)
        ids.extend(enc.ids)
    return np.asarray(ids, dtype=np.int64), np.asarray(starts, dtype=np.int64)


def load_rows(agreement_dir: Path, split: str) -> dict[str, list[dict]]:
    return {f: [json.loads(line) for line in open(agreement_dir / f"{f}_{split}.jsonl")]
            for f in FAMILIES}


def write_context_rows(agreement_dir: Path, seed: int, heldout) -> dict[str, list[dict]]:
    """The test rows with a fronted phrase or clause in front (same on both sides), written to
    agreement/context/{family}_test.jsonl: "Near the birds, the cat near the dogs" → is/are.

    At sentence start the four families are short and regular enough for a shallow model to
    match; with other nouns in front the subject has to be found from the structure.
    """
    gen = sva_grammar.Generator(random.Random(f"context-{seed}"), heldout)
    out = {}
    (agreement_dir / "context").mkdir(exist_ok=True)
    for family, rows in load_rows(agreement_dir, "test").items():
        rows_out = []
        for r in rows:
            ctx = sva_grammar.render(gen.context())[:-1]  # no full stop
            lower = lambda p: p[0].lower() + p[1:]  # noqa: E731
            rows_out.append({**r, "clean_prefix": f"{ctx} {lower(r['clean_prefix'])}",
                             "patch_prefix": f"{ctx} {lower(r['patch_prefix'])}"})
        write_atomic(agreement_dir / "context" / f"{family}_test.jsonl",
                     "".join(json.dumps(x) + "\n" for x in rows_out))
        out[f"{family}+context"] = rows_out
    return out


def corpus_text(sentences: list[str]) -> str:
    """The corpus as one searchable string: " w1 w2 ... | w1 ... " (lower case, no punctuation)."""
    return " " + " | ".join(s.lower().replace(",", "").replace(".", "") for s in sentences) + " "


def in_corpus(text: str, prefix: str, answer: str) -> bool:
    """Does prefix + answer occur, as whole words, in `corpus_text(...)`?"""
    return f" {(prefix + answer).lower().replace(',', '')} " in text


def write_hard_rows(agreement_dir: Path, seed: int, heldout, tok, corpus: str,
                    items: int = 250) -> dict[str, list[dict]]:
    """The hard held-out families (sva_grammar.HARD_FAMILIES), written to
    agreement/hard/{family}_test.jsonl: subject-verb distance and attractor positions vary
    ("With the ready foxes, the actor with the old ready hunters still" -> seems/seem).

    `items` items per family, two rows each (clean singular, clean plural), on held-out
    (subject, verb) pairs, no prefix twice, kept only when both answers are single tokens and
    both prefixes have the same number of tokens under `tok`, and dropped when either side's
    prefix + answer occurs anywhere in `corpus` (`corpus_text`; e.g. "The kind man" + " sees"
    inside "the dog near the kind man sees ..."), so the corpus needs no change for them.
    """
    hard = sva_grammar.HardItems(random.Random(f"hard-{seed}"), heldout)
    n_tokens = lambda text: len(tok.encode(text, add_special_tokens=False).ids)  # noqa: E731
    out = {}
    (agreement_dir / "hard").mkdir(parents=True, exist_ok=True)
    for family in sva_grammar.HARD_FAMILIES:
        rows, seen = [], set()
        for _ in range(100 * items):
            if len(rows) >= 2 * items:
                break
            words, index, subj, verb, a = hard.item(family)
            prefixes = []
            for n in (0, 1):
                words[index] = subj[n]
                prefixes.append(sva_grammar.render_prefix(words))
            if prefixes[0] in seen or n_tokens(prefixes[0]) != n_tokens(prefixes[1]) or any(
                    n_tokens(" " + v) != 1 for v in verb):
                continue
            seen.add(prefixes[0])
            if any(in_corpus(corpus, prefixes[n], " " + verb[n]) for n in (0, 1)):
                continue
            for n in (0, 1):
                rows.append({"clean_prefix": prefixes[n], "patch_prefix": prefixes[1 - n],
                             "clean_answer": " " + verb[n], "patch_answer": " " + verb[1 - n],
                             "case": f"{make_agreement.NUMBERS[n]}_{make_agreement.NUMBERS[a]}"})
        write_atomic(agreement_dir / "hard" / f"{family}_test.jsonl",
                     "".join(json.dumps(x) + "\n" for x in rows))
        out[family] = rows
    return out


# -- model -------------------------------------------------------------------------------------
def to_hf(model: lean_gpt2.LeanGpt2, n_layer: int, vocab: int, args):
    """The trained lean model as an HF GPT2LMHeadModel; checks both give the same logits."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab, n_positions=args.n_ctx, n_embd=args.d_model, n_layer=n_layer,
        n_head=args.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0,
    )
    hf = GPT2LMHeadModel(config).eval()
    missing, unexpected = hf.load_state_dict(lean_gpt2.to_hf_state_dict(model), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    hf.tie_weights()
    ids = torch.randint(0, vocab, (4, args.n_ctx), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((hf(input_ids=ids).logits - model(ids)).abs().max())
    assert diff < 1e-4, f"HF and lean logits differ by {diff}"
    return hf, diff


def single_token(tok, text: str) -> int:
    ids = tok.encode(text, add_special_tokens=False).ids
    assert len(ids) == 1, f"{text!r} is not one token: {ids}"
    return ids[0]


@torch.no_grad()
def accuracy(model, tok, rows_by_family: dict[str, list[dict]], batch: int = 512) -> dict:
    """Per family: fraction of (row, side) where P(right verb) > P(wrong verb) after BOS+prefix.

    For the hard families also `"{family} disagree"`: the same over the sides whose subject
    disagrees in number with every other noun (the attractors), read from `case`.
    """
    model.eval()
    result = {}
    for family, rows in rows_by_family.items():
        trials = []  # (ids, right id, wrong id, attractors disagree with the subject)
        for r in rows:
            a, b = (single_token(tok, r["clean_answer"]), single_token(tok, r["patch_answer"]))
            numbers = r["case"].split("_")
            clean_disagrees = len(numbers) == 2 and numbers[0] != numbers[1]
            for prefix, right, wrong, disagree in ((r["clean_prefix"], a, b, clean_disagrees),
                                                   (r["patch_prefix"], b, a, not clean_disagrees)):
                ids = [0] + tok.encode(prefix, add_special_tokens=False).ids
                trials.append((ids, right, wrong, disagree))
        hits = []
        for i in range(0, len(trials), batch):
            chunk = trials[i:i + batch]
            length = max(len(t[0]) for t in chunk)
            ids = torch.zeros((len(chunk), length), dtype=torch.int64)  # (batch, seq), right-padded
            last = torch.tensor([len(t[0]) - 1 for t in chunk])
            for j, t in enumerate(chunk):
                ids[j, :len(t[0])] = torch.tensor(t[0])
            logits = model(ids)[torch.arange(len(chunk)), last]  # (batch, vocab)
            right = logits[torch.arange(len(chunk)), torch.tensor([t[1] for t in chunk])]
            wrong = logits[torch.arange(len(chunk)), torch.tensor([t[2] for t in chunk])]
            hits += (right > wrong).tolist()
        result[family] = sum(hits) / max(len(trials), 1)
        if family.startswith("hard_"):
            sub = [h for h, t in zip(hits, trials) if t[3]]
            result[f"{family} disagree"] = sum(sub) / max(len(sub), 1)
    model.train()
    return result


def train(n_layer: int, seed: int, stream, starts, tok, test_rows, args, log) -> tuple:
    """Trains one model; returns (model, history, wall seconds, cpu seconds)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = lean_gpt2.LeanGpt2(tok.get_vocab_size(), args.n_ctx, args.d_model, n_layer, args.n_head)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, args.steps // 20)

    def lr_at(step):  # linear warm-up, cosine decay to 10%
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    # Windows start anywhere in the stream, so sentences (each behind its <|endoftext|>) stand
    # at every position: absolute positions say nothing about which noun is the subject.
    usable = np.arange(len(stream) - args.n_ctx)
    offsets = np.arange(args.n_ctx)
    history = []
    wall, cpu = time.time(), time.process_time()
    model.train()
    for step in range(args.steps):
        begin = rng.choice(usable, size=args.batch)
        x = torch.from_numpy(stream[begin[:, None] + offsets[None, :]])  # (batch, n_ctx)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        logits = model(x)  # (batch, n_ctx, vocab)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            acc = accuracy(model, tok, test_rows)
            history.append({"step": step + 1, "loss": round(float(loss), 4),
                            "heldout": {f: round(a, 4) for f, a in acc.items()}})
            log(f"  layers {n_layer} seed {seed} step {step + 1:5d} loss {float(loss):.3f} "
                + " ".join(f"{f} {a:.3f}" for f, a in acc.items())
                + f"  ({time.time() - wall:.0f}s)")
    return model.eval(), history, time.time() - wall, time.process_time() - cpu


def run_one(job) -> tuple[dict, dict]:
    """Trains and evaluates one (layers, seed) run; returns (record, lean state dict).

    A top-level function so that --jobs can run it in a worker process.
    """
    from tokenizers import Tokenizer

    n_layer, seed, stream, starts, tok_json, test_rows, seen_rows, args = job
    torch.set_num_threads(args.threads)
    tok = Tokenizer.from_str(tok_json)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    model, history, wall, cpu = train(n_layer, seed, stream, starts, tok, test_rows, args, log)
    record = {
        "n_layer": n_layer, "seed": seed, "wall_s": wall, "cpu_s": cpu,
        "parameters": sum(q.numel() for q in model.parameters()),
        "history": history,
        "final": {"heldout": accuracy(model, tok, test_rows),
                  "seen": accuracy(model, tok, seen_rows)},
    }
    return record, model.state_dict()


# -- outputs -----------------------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class HfLogits(torch.nn.Module):
    """An HF GPT2LMHeadModel called like LeanGpt2: ids (batch, seq) → logits (batch, seq, vocab)."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=ids).logits


def evaluate_only(args, argv, log) -> int:
    """--eval-only RUNS_DIR: evaluates the runs of an existing OUT (its results.json) again on
    every held-out and seen set, without training, and rewrites OUT's test sets, results.json
    and CARD.md.

    The corpus is regenerated from the recipe flags (--sentences, --grammar-seed, --corpus-seed,
    --rc-pp) for the leak check of the hard families; it must be the one OUT was made from:
    the tokenizer trained on it must equal OUT/tokenizer.json and its sentence count after the
    leak filter must equal results.json's, or nothing is written. Each run's weights come from
    RUNS_DIR/{n}layer_seed{s}.pt (as --save-runs writes them) or, for the kept run when that
    file is missing, from OUT/model.safetensors; runs with neither keep their old numbers. A
    kept run's .pt must hold the weights of OUT/model.safetensors.
    """
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from transformers import GPT2LMHeadModel

    out, runs_dir = args.out, args.eval_only
    t0 = time.time()
    try:
        results = json.loads((out / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        log(f"train_tiny_gpt2.py: --eval-only needs {out}/results.json of a training run: {e}")
        return 2
    heldout = sva_grammar.heldout_pairs(args.grammar_seed)
    sentences = generate_corpus(args.sentences, args.corpus_seed, heldout, args.rc_pp)
    tok = train_tokenizer(sentences, args.vocab_size)
    if tok.to_str() != Tokenizer.from_file(str(out / "tokenizer.json")).to_str():
        log(f"train_tiny_gpt2.py: the corpus of these flags (--sentences {args.sentences} "
            f"--grammar-seed {args.grammar_seed} --corpus-seed {args.corpus_seed} --rc-pp "
            f"{args.rc_pp}) does not give {out}/tokenizer.json; pass the flags of the recipe "
            f"that made {out} ({results.get('command')})")
        return 2
    grams = test_strings(out / "agreement")
    lengths = sorted({len(g) for g in grams})
    kept = sum(not contains_any(x, grams, lengths) for x in sentences)
    if kept != results["corpus"]["sentences"]:
        log(f"train_tiny_gpt2.py: {kept} corpus sentences after the leak filter, "
            f"{out}/results.json says {results['corpus']['sentences']}; wrong recipe flags?")
        return 2
    test_rows = load_rows(out / "agreement", "test")
    test_rows.update(write_context_rows(out / "agreement", args.grammar_seed, heldout))
    hard_rows = write_hard_rows(out / "agreement", args.grammar_seed, heldout, tok,
                                corpus_text(sentences))
    test_rows.update(hard_rows)
    seen_rows = load_rows(out / "agreement", "train")
    m = results["model"]
    kept_key = (m["n_layer"], m.get("seed", results["runs"][0]["seed"]))
    hf_state = load_file(str(out / "model.safetensors"))
    evaluated = []
    for run in results["runs"]:
        key = (run["n_layer"], run["seed"])
        path = runs_dir / f"{run['n_layer']}layer_seed{run['seed']}.pt"
        if path.is_file():
            model = lean_gpt2.LeanGpt2(tok.get_vocab_size(), m["n_ctx"], m["d_model"],
                                       run["n_layer"], m["n_head"])
            model.load_state_dict(torch.load(path, weights_only=True))
            if key == kept_key:
                mine = lean_gpt2.to_hf_state_dict(model)
                differ = [k for k, v in mine.items() if not torch.equal(v, hf_state[k])]
                if differ:
                    log(f"train_tiny_gpt2.py: {path} is not the model in {out}/model.safetensors "
                        f"({len(differ)} tensors differ, e.g. {differ[0]})")
                    return 2
            source = str(path)
        elif key == kept_key:
            model = HfLogits(GPT2LMHeadModel.from_pretrained(out).eval())
            source = str(out / "model.safetensors")
        else:
            log(f"  {run['n_layer']}-layer seed {run['seed']}: no {path}, numbers kept as they were")
            continue
        final = {"heldout": accuracy(model, tok, test_rows), "seen": accuracy(model, tok, seen_rows)}
        same = [abs(final[s][k] - v) for s in ("heldout", "seen")
                for k, v in run["final"].get(s, {}).items() if k in final[s]]
        log(f"  {run['n_layer']}-layer seed {run['seed']} ({source}): "
            f"max change on sets evaluated before {max(same, default=0.0):.2g}; "
            + " ".join(f"{f} {100 * a:.1f}%" for f, a in final["heldout"].items()))
        run["final"] = final
        evaluated.append({"n_layer": run["n_layer"], "seed": run["seed"], "weights": source,
                          "max_change": max(same, default=0.0)})
    results["hard_rows"] = {f: len(x) for f, x in hard_rows.items()}
    results["files"] = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*"))
                        if p.is_file() and p.name not in ("results.json", "CARD.md")}
    results["fingerprint"] = export_onnx.file_blake3(out / "model.safetensors")
    results.setdefault("evaluations", []).append({
        "command": "python scripts/train_tiny_gpt2.py " + shlex.join(
            argv if argv is not None else sys.argv[1:]),
        "runs": evaluated, "wall_s": time.time() - t0})
    write_atomic(out / "results.json", json.dumps(results, indent=1) + "\n")
    write_atomic(out / "CARD.md", card(results, out))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the tiny agreement GPT-2.")
    p.add_argument("--out", type=Path, default=Path("datasets/tiny-gpt2"))
    p.add_argument("--sentences", type=int, default=100_000)
    p.add_argument("--grammar-seed", type=int, default=0, help="held-out pairs")
    p.add_argument("--rc-pp", type=float, default=sva_grammar.RC_PP,
                   help="share of object relative clauses with a PP inside")
    p.add_argument("--corpus-seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="4-layer model seeds")
    p.add_argument("--keep", type=int, default=None,
                   help="the seed whose model is saved (default: the first of --seeds)")
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--control-layers", type=int, default=1, help="0 = no control")
    p.add_argument("--control-seeds", type=int, nargs="+", default=None,
                   help="control seeds (default: the same as --seeds)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-ctx", type=int, default=64)
    p.add_argument("--vocab-size", type=int, default=1000)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=2, help="torch threads per run")
    p.add_argument("--jobs", type=int, default=1, help="runs trained in parallel processes")
    p.add_argument("--corpus-lines", type=int, default=5000, help="lines in OUT/corpus.txt")
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--save-runs", type=Path, default=None,
                   help="also save every run's weights here ({n}layer_seed{s}.pt, lean layout)")
    p.add_argument("--eval-only", type=Path, default=None, metavar="RUNS_DIR",
                   help="train nothing: evaluate the runs of OUT/results.json again, weights "
                        "from RUNS_DIR/{n}layer_seed{s}.pt (or OUT/model.safetensors for the "
                        "kept run), on every test set (rewritten); updates results.json, CARD.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    out = args.out

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.eval_only is not None:
        return evaluate_only(args, argv, log)
    out.mkdir(parents=True, exist_ok=True)

    heldout = sva_grammar.heldout_pairs(args.grammar_seed)
    sentences = generate_corpus(args.sentences, args.corpus_seed, heldout, args.rc_pp)
    tok = train_tokenizer(sentences, args.vocab_size)
    tok.save(str(out / "tokenizer.json"))
    words_path = out / "words.json"
    write_atomic(words_path, json.dumps(sva_grammar.word_lists(heldout), indent=1) + "\n")
    counts = make_agreement.make(words_path, out / "tokenizer.json", out / "agreement",
                                 seed=args.grammar_seed)
    log(f"vocab {tok.get_vocab_size()}; agreement rows {counts}")

    grams = test_strings(out / "agreement")
    lengths = sorted({len(g) for g in grams})
    kept = [s for s in sentences if not contains_any(s, grams, lengths)]
    dropped = len(sentences) - len(kept)
    leaks = sum(contains_any(s, grams, lengths) for s in kept)
    assert leaks == 0
    log(f"corpus: {len(kept)} sentences, dropped {dropped} containing a test prefix + answer")
    stream, starts = pack(tok, kept)
    test_rows = load_rows(out / "agreement", "test")
    test_rows.update(write_context_rows(out / "agreement", args.grammar_seed, heldout))
    hard_rows = write_hard_rows(out / "agreement", args.grammar_seed, heldout, tok,
                                corpus_text(sentences))
    test_rows.update(hard_rows)
    seen_rows = load_rows(out / "agreement", "train")

    plan = [(args.n_layer, s) for s in args.seeds]
    if args.control_layers:
        plan += [(args.control_layers, s) for s in args.control_seeds or args.seeds]
    jobs = [(n_layer, seed, stream, starts, tok.to_str(), test_rows, seen_rows, args)
            for n_layer, seed in plan]
    if args.jobs > 1:  # runs are independent and seeded: same results as one after another
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(args.jobs, len(jobs))) as pool:
            done = pool.map(run_one, jobs)
    else:
        done = [run_one(job) for job in jobs]
    runs = [run for run, _ in done]
    if args.save_runs:
        args.save_runs.mkdir(parents=True, exist_ok=True)
        for run, state in done:
            torch.save(state, args.save_runs / f"{run['n_layer']}layer_seed{run['seed']}.pt")
    keep = args.seeds[0] if args.keep is None else args.keep
    first, state = next((run, st) for run, st in done
                        if (run["n_layer"], run["seed"]) == (args.n_layer, keep))
    model = lean_gpt2.LeanGpt2(tok.get_vocab_size(), args.n_ctx, args.d_model, first["n_layer"],
                               args.n_head)
    model.load_state_dict(state)
    chosen, hf_diff = to_hf(model.eval(), first["n_layer"], tok.get_vocab_size(), args)
    log(f"HF GPT2LMHeadModel vs lean logits: max abs diff {hf_diff:.2e}")

    chosen.save_pretrained(out)
    for extra in ("generation_config.json",):
        if (out / extra).exists():
            (out / extra).unlink()
    if not args.no_export:
        export_onnx.export(out, out / "model.onnx", logits=False)
        export_onnx.export(out, out / "model_logits.onnx", logits=True)
    rng = random.Random(f"corpus-txt-{args.corpus_seed}")
    write_atomic(out / "corpus.txt", "\n".join(rng.sample(kept, args.corpus_lines)) + "\n")

    import tokenizers
    import transformers

    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name not in ("results.json", "CARD.md"):
            files[str(path.relative_to(out))] = path.stat().st_size
    results = {
        "command": "python scripts/train_tiny_gpt2.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__},
        "threads": args.threads, "jobs": args.jobs, "grammar_seed": args.grammar_seed, "corpus_seed": args.corpus_seed,
        "rc_pp": args.rc_pp,
        "corpus": {"sentences": len(kept), "tokens": int(len(stream)), "dropped": dropped,
                   "leaks": leaks},
        "heldout_pairs": len(heldout),
        "all_pairs": len(sva_grammar.NOUNS) * (len(sva_grammar.MAIN_VERBS) + len(sva_grammar.SAY_VERBS)),
        "vocab_size": tok.get_vocab_size(),
        "model": {"n_layer": args.n_layer, "d_model": args.d_model, "n_head": args.n_head,
                  "n_ctx": args.n_ctx, "seed": keep},
        "hf_vs_lean_max_abs_diff": hf_diff,
        "lr": args.lr, "steps": args.steps, "batch": args.batch,
        "agreement": counts, "hard_rows": {f: len(x) for f, x in hard_rows.items()},
        "runs": runs, "files": files,
        "fingerprint": export_onnx.file_blake3(out / "model.safetensors"),
        "corpus_txt_lines": args.corpus_lines,
        "total_wall_s": time.time() - t0,
    }
    write_atomic(out / "results.json", json.dumps(results, indent=1) + "\n")
    write_atomic(out / "CARD.md", card(results, out))
    for run in runs:
        log(f"{run['n_layer']}-layer seed {run['seed']}: heldout "
            + " ".join(f"{f} {100 * a:.1f}%" for f, a in run["final"]["heldout"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
