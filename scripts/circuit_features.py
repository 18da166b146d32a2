#!/usr/bin/env python3
"""The strongest feature nodes of a circuit, with their top-activating contexts.

Reads `circuit.json` of a circuit stage and each feature's row of `feature_stats.parquet`
in the SAE folders, and prints (or writes as Markdown) the nodes with the largest
|effect|: hook, feature, effect, density and the top contexts (`left [token] right`), so
that a reader can name what each feature responds to.

    python3 scripts/circuit_features.py runs/sva-smollm2/circuit_simple \
        runs/sva-smollm2/saes_a runs/sva-smollm2/saes_b --top 10 --contexts 5 [--markdown out.md]

Errors (a missing file, a node whose SAE folder is absent) are one line, exit 2.
"""
import argparse
import json
import sys
from pathlib import Path


def fail(msg: str) -> None:
    print(f"circuit_features.py: {msg}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("circuit", type=Path, help="circuit stage folder (circuit.json)")
    ap.add_argument("saes", type=Path, nargs="+", help="folders of SAE folders (one per hook)")
    ap.add_argument("--top", type=int, default=10, help="feature nodes to show")
    ap.add_argument("--contexts", type=int, default=5, help="contexts per feature")
    ap.add_argument("--markdown", type=Path, help="also write a Markdown table here")
    a = ap.parse_args()

    import pyarrow.parquet as pq

    path = a.circuit / "circuit.json"
    if not path.is_file():
        fail(f"{path} does not exist; give the folder of a finished circuit stage")
    circuit = json.loads(path.read_text())
    feats = [n for n in circuit["nodes"] if n["kind"] == "feature"]
    feats.sort(key=lambda n: -abs(n["effect"]["all"]))
    rows = []
    tables = {}
    for n in feats[: a.top]:
        hook, index = n["hook"], n["index"]
        found = [d / hook / "feature_stats.parquet" for d in a.saes]
        found = [p for p in found if p.is_file()]
        stats = found[0] if found else a.saes[0] / hook / "feature_stats.parquet"
        if hook not in tables:
            if not found:
                fail(f"no {hook}/feature_stats.parquet in {', '.join(map(str, a.saes))}; give the SAE folders the circuit used")
            tables[hook] = pq.read_table(stats)
        r = tables[hook].slice(index, 1).to_pylist()[0]
        if r["feature"] != index:
            fail(f"{stats}: row {index} holds feature {r['feature']}")
        ctx = [
            f"{left}[{tok}]{right}".replace("\n", "\\n")
            for left, tok, right in zip(r["top_left"], r["top_token"], r["top_right"])
        ][: a.contexts]
        rows.append((n["label"], hook, index, n["effect"]["all"], r["density"], ctx))

    for label, hook, index, effect, density, ctx in rows:
        print(f"{label}  {hook}/{index}  effect {effect:+.4f}  density {density:.4f}")
        for c in ctx:
            print(f"    {c}")
    if a.markdown:
        lines = ["| node | effect | density | top contexts |", "|---|---|---|---|"]
        for label, hook, index, effect, density, ctx in rows:
            cells = " · ".join(f"`{c.replace('|', '¦')}`" for c in ctx)
            lines.append(f"| {label} | {effect:+.4f} | {density:.4f} | {cells} |")
        a.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
