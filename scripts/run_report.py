#!/usr/bin/env python3
"""Markdown tables of a pipeline run: stage wall times and peak memory, every SAE's held-out metrics and
every circuit's scores, read from the files the stages wrote.

    python3 scripts/run_report.py runs/sva-smollm2 [--sae-columns 3] > report.md

SAEs: each `<stage>/<hook>/training.json` (held-out explained variance, L0, dead
fraction, ce_loss_score, the outlier rule). Circuits: each `<stage>/circuit.json` and
`faithfulness.json` (faithfulness and complement at the stage's node threshold, the
smallest node share with faithfulness ≥ 0.8, edge faithfulness at the default edge
threshold and the sparsest edge threshold that keeps it ≥ 0.8, agreement with exact
patching, the pairs the model gets right and the faithfulness over them at that smallest
circuit). Errors (not a run directory) are one line, exit 2.
"""
import argparse
import json
import sys
from pathlib import Path


def fail(msg: str) -> None:
    print(f"run_report.py: {msg}", file=sys.stderr)
    sys.exit(2)


def load(p: Path):
    return json.loads(p.read_text())


def fmt(v, spec=".3f"):
    return "–" if v is None else format(v, spec)


def stages(run: Path):
    out = []
    for d in sorted(run.iterdir()):
        rec = d / "stage.json"
        # `.<stage>.old`: a finished output set aside while its stage re-runs.
        if d.is_dir() and rec.is_file() and not d.name.startswith("."):
            out.append((d, load(rec)))
    return out


def sae_rows(stage_dir: Path):
    rows = []
    for d in sorted(stage_dir.iterdir()):
        t = d / "training.json"
        if not t.is_file():
            continue
        r = load(t)
        ev = (r.get("eval_metrics") or r["train_metrics"])
        ce = (r.get("ce_loss") or {}).get("ce_loss_score")
        hook = r["sae"]["hook_name"]
        layer = int(hook.split(".")[1]) if hook.startswith("blocks.") else -1
        rows.append((layer, hook, ev["explained_variance"], ev["l0"], ev["dead_fraction"], ce,
                     r.get("eval_rows", 0) + r.get("train_rows", 0)))
    rows.sort()
    return rows


def circuit_row(d: Path):
    c = load(d / "circuit.json")
    f = load(d / "faithfulness.json")
    s = c["scores"]
    good = [r for r in f["rows"] if r["faithfulness"] >= 0.8]
    smallest = min(good, key=lambda r: r["nodes"]) if good else None
    edges = f.get("edge_rows", [])
    at_default = next((r for r in edges if r["edge_threshold"] == f.get("edge_threshold")), None)
    keep = [r for r in edges if r["faithfulness"] >= 0.8]
    sparsest = max(keep, key=lambda r: r["edge_threshold"]) if keep else None
    return {
        "name": d.name,
        "pairs": c["n_examples"],
        "metric": s.get("metric_clean"),
        "threshold": f.get("node_threshold"),
        "nodes": s.get("nodes"),
        "all": s.get("all_nodes"),
        "frac": s.get("node_fraction"),
        "faith": s.get("faithfulness"),
        "faith_min": s.get("faithfulness_min_case"),
        "compl": s.get("complement_faithfulness"),
        "smallest": smallest,
        "edge_default": at_default,
        "edge_sparsest": sparsest,
        "pairs_right": s.get("pairs_right"),
        "r_nodes": s.get("pearson_r_vs_exact_nodes"),
        "r_pairs": s.get("exact_check_pairs"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="the run directory (run_dir of the manifest)")
    ap.add_argument("--sae-columns", type=int, default=3, help="SAE table side by side")
    a = ap.parse_args()
    if not a.run.is_dir():
        fail(f"{a.run} is not a directory; give a manifest's run_dir, e.g. runs/sva-tiny")
    all_stages = stages(a.run)
    if not all_stages:
        fail(f"{a.run} holds no finished stage (no <stage>/stage.json)")

    print("| stage | wall | peak memory |\n|---|---|---|")
    total = 0.0
    peaks = []
    for d, rec in all_stages:
        w = rec.get("wall_seconds") or 0.0
        total += w
        wall = f"{w / 60:.1f} min" if w >= 120 else f"{w:.1f} s"
        peak = rec.get("peak_rss_bytes")
        if peak is not None:
            peaks.append(peak)
        print(f"| {d.name} | {wall} | {fmt(peak and peak / 2**30, '.2f')}{'' if peak is None else ' GiB'} |")
    top = f"{max(peaks) / 2**30:.2f} GiB" if peaks else "–"
    print(f"| **all** | **{total / 60:.1f} min** | **{top}** |\n")

    for d, rec in all_stages:
        rows = sae_rows(d)
        if not rows:
            continue
        n = max(1, a.sae_columns)
        print(f"SAEs of `{d.name}` (metrics on the held-out rows; {rows[0][6]} store rows each, outliers left out):\n")
        print("| " + " | ".join(["hook", "EV", "ce score", "L0", "dead"] * n) + " |")
        print("|" + "---|" * (5 * n))
        per = (len(rows) + n - 1) // n
        for i in range(per):
            cells = []
            for j in range(n):
                k = i + j * per
                if k < len(rows):
                    _, hook, ev, l0, dead, ce, _ = rows[k]
                    short = hook.replace("blocks.", "").replace(".hook_", " ")
                    cells += [short, fmt(ev), fmt(ce), fmt(l0, ".1f"), fmt(dead, ".3f")]
                else:
                    cells += [""] * 5
            print("| " + " | ".join(cells) + " |")
        evs = [r[2] for r in rows]
        ces = [r[5] for r in rows if r[5] is not None]
        print(f"\nEV {min(evs):.3f}–{max(evs):.3f}" + (f", ce_loss_score {min(ces):.3f}–{max(ces):.3f}" if ces else "") + "\n")

    circuits = [circuit_row(d) for d, _ in all_stages if (d / "circuit.json").is_file() and (d / "faithfulness.json").is_file()]
    if circuits:
        print("| circuit | pairs | m(clean) | nodes at threshold | faithfulness (lowest case) | complement | fewest nodes with faithfulness ≥ 0.8 | edge faithfulness at default | sparsest edges with ≥ 0.8 | pairs right (faithfulness over them there) | r vs exact (pairs) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for c in circuits:
            sm = c["smallest"]
            smallest = f"{sm['nodes']} ({100 * sm['node_fraction']:.2f}%), {sm['faithfulness']:.3f} at {sm['threshold']:g}" if sm else "–"
            ed = c["edge_default"]
            edge_default = f"{ed['faithfulness']:.3f} ({ed['edges']} edges)" if ed else "–"
            es = c["edge_sparsest"]
            edge_sparsest = f"{es['faithfulness']:.3f} ({es['edges']} edges at {es['edge_threshold']:g})" if es else "none"
            nodes = f"{int(c['nodes'])} of {int(c['all'])} ({100 * c['frac']:.2f}%) at {c['threshold']:g}" if c["nodes"] is not None else "–"
            r = f"{fmt(c['r_nodes'])} ({int(c['r_pairs'])})" if c["r_nodes"] is not None else "–"
            right = "–"
            if c["pairs_right"] is not None:
                at = sm.get("faithfulness_right") if sm else None
                right = f"{int(c['pairs_right'])}" + (f" ({at:.3f})" if at is not None else "")
            print(f"| {c['name']} | {c['pairs']} | {fmt(c['metric'], '.2f')} | {nodes} | {fmt(c['faith'])} ({fmt(c['faith_min'])}) | {fmt(c['compl'])} | {smallest} | {edge_default} | {edge_sparsest} | {right} | {r} |")


if __name__ == "__main__":
    main()
