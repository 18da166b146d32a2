"""scripts/smollm2_accuracy.py: the scoring rule (both sides) and its tables, on made-up rows.
The model run itself is checked in docs/benchmarks/smollm2-agreement.md (needs SmolLM2, minutes).

Run: python -m pytest scripts/tests/test_smollm2_accuracy.py -q
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import smollm2_accuracy  # noqa: E402

ROWS = [  # family, case, clean_diff, patch_diff
    ("simple", "singular", 2.0, 1.0),
    ("simple", "plural", 1.0, 2.0),
    ("across_rc", "singular_plural", -0.5, 3.0),
    ("across_rc", "plural_plural", 3.0, -0.5),
]


def scored() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for i, (family, case, dc, dp) in enumerate(ROWS):
        out.setdefault(family, []).append({"index": i, "case": case, "clean_diff": dc,
                                           "patch_diff": dp, "right": dc > 0 and dp > 0})
    return out


def test_a_pair_is_right_only_when_both_sides_are():
    n, acc, acc_c, acc_p, mean = smollm2_accuracy.summary(scored()["across_rc"])
    assert (n, acc, acc_c, acc_p) == (2, 0.0, 0.5, 0.5)
    assert mean == pytest.approx((-0.5 + 3.0 + 3.0 - 0.5) / 4)


def test_tables_from_rows_file(tmp_path, capsys):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"family": f, **r}) + "\n"
                            for f, rs in scored().items() for r in rs))
    assert smollm2_accuracy.main(["--from-rows", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| simple | 2 | 1.000 | 1.000 | 1.000 | +1.50 |" in out
    assert "| across_rc | 2 | 0.000 | 0.500 | 0.500 | +1.25 |" in out
    assert "| across_rc | singular_plural | 1 | 0.000 | -0.50 |" in out


def test_missing_model_is_an_error(tmp_path, capsys):
    assert smollm2_accuracy.main(["--model", str(tmp_path)]) == 2
    assert "tokenizer.json not found" in capsys.readouterr().err
