"""The model card of the tiny agreement GPT-2 (datasets/tiny-gpt2/CARD.md) and its parts:
the pre-registered "clearly worse" criterion for the 1-layer control, its verdict, and the
accuracy tables. Used by scripts/train_tiny_gpt2.py (training and --eval-only)."""
from __future__ import annotations

import json
from pathlib import Path

import make_agreement
import sva_grammar

FAMILIES = make_agreement.FAMILIES


CRITERION_FAMILY = "hard_long disagree"
CRITERION_POINTS = 0.10  # the control's best seed this far below the model's worst seed
CRITERION_SLACK = 0.01  # nowhere may the control's seed mean exceed the model's by more
CRITERION = f"""The control counts as **clearly worse** when both hold:
(a) on `hard_long`, on the sides where every other noun disagrees with the subject, the
control's best seed is at least {100 * CRITERION_POINTS:.0f} points below the model's worst seed;
(b) on no other held-out set (the four families, `+context`, the `hard_*` families and their
"disagree" scores) is the control's mean over seeds more than {100 * CRITERION_SLACK:.0f} point
above the model's mean over seeds (1 point is about 3 standard errors at 99% on 1000 trials).
This criterion was written down, and committed, before `hard_long` was evaluated on any model;
the numbers of the other sets were known then (the seed-0 model of the rc-pp 0.5 recipe scores
98.6% on `simple`, its controls 99.8% and 100%, which is why (b) compares seed means with a
1-point slack rather than every seed with none)."""


def control_verdict(r: dict) -> str:
    """Is the control clearly worse than the model, by CRITERION? A sentence with the numbers.

    (a) the model's worst seed against the control's best seed on CRITERION_FAMILY; (b) seed
    means on every other held-out set both were evaluated on.
    """
    key = CRITERION_FAMILY
    model = [x for x in r["runs"] if x["n_layer"] == r["model"]["n_layer"]]
    control = [x for x in r["runs"] if x["n_layer"] != r["model"]["n_layer"]]
    has = lambda runs, k: [x["final"]["heldout"][k] for x in runs if k in x["final"]["heldout"]]  # noqa: E731
    if not has(model, key) or not has(control, key):
        return (f"Model and control were not both evaluated on `{key.split()[0]}`, so the "
                "criterion above cannot be applied.")
    worst, best = min(has(model, key)), max(has(control, key))
    gap = worst - best
    keys = sorted({k for x in model + control for k in x["final"]["heldout"]} - {key})
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    better = [(k, mean(has(control, k)) - mean(has(model, k))) for k in keys
              if has(model, k) and has(control, k)]
    better = [(k, d) for k, d in better if d > CRITERION_SLACK]
    ok = gap >= CRITERION_POINTS - 1e-9 and not better
    ahead = max(((k, mean(has(control, k)) - mean(has(model, k))) for k in keys
                 if has(model, k) and has(control, k)), key=lambda kd: kd[1], default=None)
    text = (f"By the criterion above: (a) on `{key.split()[0]}` where the attractors disagree, the "
            f"model's worst seed scores {100 * worst:.1f}% and the "
            f"{control[0]['n_layer']}-layer control's best seed {100 * best:.1f}%, "
            f"{100 * gap:.1f} points lower (needed: {100 * CRITERION_POINTS:.0f}); (b) ")
    if better:
        text += "the control's seed mean is more than 1 point above the model's on " + ", ".join(
            f"{k} (+{100 * d:.1f})" for k, d in better)
    elif ahead is not None and ahead[1] > 0:
        text += (f"the control's seed mean is nowhere more than {100 * CRITERION_SLACK:.0f} point "
                 f"above the model's (most: {ahead[0]}, +{100 * ahead[1]:.1f})")
    else:
        text += "the control's seed mean is nowhere above the model's"
    verdict = ("the control IS clearly worse: one layer cannot find the subject when its distance "
               "from the verb and the material in between vary" if ok else
               "the control is NOT clearly worse")
    return f"{text} — {verdict}."


def table(rows: list[dict], names: list[str], splits) -> str:
    """A markdown table of accuracies: one line per run and split, one column per family."""
    head = "| model | seed | split | " + " | ".join(names) + " |\n"
    head += "|---|---|---|" + "---|" * len(names) + "\n"
    for run in rows:
        for split in splits:
            head += (f"| {run['n_layer']}-layer | {run['seed']} | {split} | "
                     + " | ".join(f"{100 * run['final'][split][f]:.1f}%"
                                  if f in run["final"][split] else "–" for f in names)
                     + " |\n")
    return head


HARD_COLUMNS = [k for f in sva_grammar.HARD_FAMILIES for k in (f, f + " disagree")]


def experiments(out: Path) -> str:
    """Other recipes tried, from OUT/experiments/*.json (each the results.json of a run of this
    script, weights not kept, plus a `note`): command, held-out tables, control verdict."""
    parts = []
    for path in sorted((out / "experiments").glob("*.json")):
        x = json.loads(path.read_text())
        parts.append(f"### `experiments/{path.name}`\n\n```\n{x['command']}\n```\n\n"
                     f"{x.get('note', '')}\n\n{table(x['runs'], list(FAMILIES), ('heldout',))}\n"
                     f"{table(x['runs'], HARD_COLUMNS, ('heldout',))}\n{control_verdict(x)}\n")
    return "\n".join(parts) if parts else "None yet."


def card(results: dict, out: Path) -> str:
    r = results

    sizes = "\n".join(f"| `{name}` | {size / 1e6:.2f} MB |" for name, size in r["files"].items())
    counts = "\n".join(f"| {f} | {c['train']} | {c['test']} |" for f, c in r["agreement"].items())
    counts += "".join(f"\n| {f} | – | {n} |" for f, n in r.get("hard_rows", {}).items())
    runs = "\n".join(f"| {x['n_layer']}-layer | {x['seed']} | {x['parameters']:,} | {x['wall_s']:.0f} s "
                     f"| {x['cpu_s']:.0f} s |" for x in r["runs"])
    evaluations = "".join(
        "\nThen evaluated again, without training, on every test set (written anew, `hard_long` "
        f"included), {x['wall_s']:.0f} s wall:\n\n```\n{x['command']}\n```\n"
        for x in r.get("evaluations", []))
    return f"""# tiny-gpt2: a 4-layer GPT-2 that does subject–verb agreement

The embedded default model of circuitry. Same architecture and file formats as GPT-2 (HF
`GPT2LMHeadModel`, `config.json` + `model.safetensors` + `tokenizer.json`), trained from scratch
on a generated English-like corpus in which verbs agree with their subjects across
prepositional phrases, relative clauses, fronted phrases and embedding clauses
(`scripts/sva_grammar.py`).

## How it was made

```
{r['command']}
```
{evaluations}

torch {r['versions']['torch']}, transformers {r['versions']['transformers']}, tokenizers
{r['versions']['tokenizers']}; {r['threads']} torch thread(s) per run, {r['jobs']} run(s) in parallel
on a 2-core machine shared with other jobs. Total time {r['total_wall_s']:.0f} s wall, training
{sum(x['cpu_s'] for x in r['runs']):.0f} s CPU.

- Corpus: {r['corpus']['sentences']:,} sentences ({r['corpus']['tokens']:,} tokens), grammar seed
  {r['grammar_seed']}, corpus seed {r['corpus_seed']}, PPs inside {100 * r.get('rc_pp', 0.25):.0f}% of object relative
  clauses; {r['corpus']['dropped']} sentences containing a test
  prefix + answer were dropped, and a final check found {r['corpus']['leaks']} left.
- Held out: {r['heldout_pairs']} of {r['all_pairs']} (noun, verb) pairs never agree anywhere in the
  corpus; the test splits are exactly the items on those pairs (`words.json` lists them).
- Tokenizer: ByteLevel BPE trained on the corpus, vocabulary {r['vocab_size']} (every word one
  token, verb forms with their leading space included); `<|endoftext|>` = id 0 is the sentence
  boundary and BOS.
- Model: {r['model']['n_layer']} layers, d_model {r['model']['d_model']}, {r['model']['n_head']} heads,
  n_ctx {r['model']['n_ctx']}, {r['runs'][0]['parameters']:,} parameters, no dropout; AdamW lr {r['lr']},
  {r['steps']} steps of {r['batch']} windows × {r['model']['n_ctx']} tokens.
- Training windows: n_ctx tokens cut at random offsets from the stream
  `<|endoftext|> s1 <|endoftext|> s2 ...`, so sentences stand at every position.
  **Feed the model the same way**: `<|endoftext|>` (id 0) in front of a prefix or a corpus line.

## Agreement accuracy

P(right verb) > P(wrong verb) after `<|endoftext|>` + prefix, both sides of every pair.
"heldout" = test split (pairs never seen agreeing), "seen" = train split. `+context` = the
held-out test rows with a fronted phrase or clause holding other nouns in front
(`agreement/context/`, e.g. "Near the birds, the cat near the dogs" → is/are): at sentence
start the four Marks et al. templates are short and regular enough for a shallow template
matcher; with other nouns in front the subject must be found from the structure.

{table(r['runs'], list(FAMILIES), ("heldout", "seen"))}
Harder held-out sets, same pairs and answers: `+context` (above) and the `hard_*` families
(`agreement/hard/`, row counts below, written by `write_hard_rows` from
`sva_grammar.HardItems`). In the four Marks et al. templates, with or without context, the
subject stands at a fixed distance from the verb slot, so attention that picks a noun by
relative position solves them and one layer is enough. The hard families vary that distance
and where the attractors stand, with structures the corpus grammar generates: 0–2 adjectives
on every noun, one or two PPs (`hard_across_pp`), PPs inside the relative clause
(`hard_within_rc`, `hard_across_rc`), a pre-verb adverb, and a fronted phrase or clause of
every kind the grammar has (or none); all other nouns of an item share one number, so one
side of every pair has each of them disagreeing with the subject. Items whose prefix + answer
(either side) occurs anywhere in the corpus are skipped. Example: "With the ready foxes, the
actor with the old ready hunters still" → seems/seem.

`hard_long` (same code path, same pairs, filters and leak check) was designed after seeing
where a 1-layer control trained on this grammar still fails: items with a pre-verb adverb
after two PPs or after a relative clause with a PP inside. It keeps only that, the longest
material the grammar puts between subject and verb: two PPs + adverb, or an object relative
clause with a PP inside + adverb, behind the same fronted material ("When the young people see
the wolves, the happy lawyer that the happy managers beyond the busy monkeys visit still" →
was/were). 7–12 words stand between the subject and the verb slot, two attractors
among them (and, in the relative clause, a verb agreeing with one of them), so neither a fixed
offset, nor the nearest noun, nor the nearest agreeing verb finds it: the model must locate
the subject from the structure, which needs composed attention (first mark what is inside a
PP or a relative clause, then attend past it) that one layer cannot do when the distance
varies. Not in it, because the corpus grammar never makes them: two pre-verb adverbs in a row,
a PP and a relative clause on the same subject. Left out on purpose: subject relative clauses
("the cat that likes the dogs near the birds"), whose verb agrees with the subject.

{table(r['runs'], [f"{f}+context" for f in FAMILIES], ("heldout",))}
{table(r['runs'], HARD_COLUMNS, ("heldout",))}
"disagree" = only the sides of the pairs whose subject disagrees in number with all other
nouns (half of the trials); the other half is easy for any heuristic that picks some noun.

### Is the 1-layer control clearly worse?

{CRITERION}

The committed weights are those of the {r['model']['n_layer']}-layer run with seed {r['model'].get('seed', r['runs'][0]['seed'])}. {control_verdict(r)}
{r.get('note', '')}

| run | seed | parameters | wall | CPU |
|---|---|---|---|---|
{runs}

## Other recipes tried

{experiments(out)}

## Agreement datasets (`agreement/`, from `words.json` by scripts/make_agreement.py)

| family | train rows | test rows |
|---|---|---|
{counts}

## Files

| file | size |
|---|---|
{sizes}

In all {sum(r['files'].values()) / 1e6:.2f} MB (without this card and results.json).

Model fingerprint (BLAKE3 of model.safetensors): `{r['fingerprint']}`.
`corpus.txt`: {r['corpus_txt_lines']} corpus sentences, one a line, for SAE training.
"""
