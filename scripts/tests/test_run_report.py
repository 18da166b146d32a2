"""scripts/run_report.py and scripts/circuit_features.py on a small fake run directory:
the tables carry the numbers of the stage files, and bad input is one line, exit 2."""
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[2]


def run(script, *args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *map(str, args)],
                          capture_output=True, text=True)


def make_run(tmp: Path) -> Path:
    run_dir = tmp / "run"
    hook = "blocks.3.hook_resid_pre"
    sae = run_dir / "saes" / hook
    sae.mkdir(parents=True)
    (run_dir / "saes" / "stage.json").write_text(json.dumps({"wall_seconds": 150.0,
                                                             "peak_rss_bytes": 3 * 2**29}))
    (sae / "training.json").write_text(json.dumps({
        "sae": {"hook_name": hook},
        "train_metrics": {"explained_variance": 0.5, "l0": 30.0, "dead_fraction": 0.2},
        "eval_metrics": {"explained_variance": 0.875, "l0": 32.0, "dead_fraction": 0.125},
        "ce_loss": {"ce_loss_score": 0.9375},
        "train_rows": 90, "eval_rows": 10,
    }))
    pq.write_table(pa.table({
        "feature": pa.array([0, 1], pa.uint32()),
        "density": [0.5, 0.25],
        "top_left": [["a"], [" the big"]],
        "top_token": [["x"], [" cats"]],
        "top_right": [["y"], [" run"]],
    }), sae / "feature_stats.parquet")
    aside = run_dir / ".circuit_simple.old"  # set aside by a re-run: not reported
    aside.mkdir(parents=True)
    (aside / "stage.json").write_text(json.dumps({"wall_seconds": 99.0}))
    circ = run_dir / "circuit_simple"
    circ.mkdir()
    (circ / "stage.json").write_text(json.dumps({"wall_seconds": 12.5}))
    (circ / "circuit.json").write_text(json.dumps({
        "n_examples": 8,
        "scores": {"metric_clean": -3.0, "nodes": 2, "all_nodes": 10, "node_fraction": 0.2,
                   "faithfulness": 0.75, "faithfulness_min_case": 0.5,
                   "complement_faithfulness": 0.125, "pearson_r_vs_exact_nodes": 0.625,
                   "exact_check_pairs": 2, "pairs_right": 7},
        "nodes": [
            {"kind": "feature", "label": "R3/1", "hook": hook, "index": 1, "effect": {"all": -0.5}},
            {"kind": "feature", "label": "R3/0", "hook": hook, "index": 0, "effect": {"all": 0.25}},
            {"kind": "error", "label": "R3 err", "hook": hook, "effect": {"all": 1.0}},
        ],
    }))
    (circ / "faithfulness.json").write_text(json.dumps({
        "node_threshold": 0.05, "edge_threshold": 0.01,
        "rows": [{"threshold": 0.01, "nodes": 5, "node_fraction": 0.5, "faithfulness": 0.875,
                  "faithfulness_right": 0.9375},
                 {"threshold": 0.05, "nodes": 2, "node_fraction": 0.2, "faithfulness": 0.75}],
        "edge_rows": [{"edge_threshold": 0.01, "edges": 3, "faithfulness": 0.5},
                      {"edge_threshold": 0.001, "edges": 6, "faithfulness": 0.8125}],
    }))
    return run_dir


def test_run_report_tables_carry_the_stage_files_numbers(tmp_path):
    run_dir = make_run(tmp_path)
    out = run("run_report.py", run_dir)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "| saes | 2.5 min | 1.50 GiB |" in text and "| circuit_simple | 12.5 s | – |" in text
    assert "| **all** | **2.7 min** | **1.50 GiB** |" in text
    assert "| 3 resid_pre | 0.875 | 0.938 | 32.0 | 0.125 |" in text
    # The smallest faithful circuit, the edge rows at the default and the sparsest >= 0.8.
    assert "5 (50.00%), 0.875 at 0.01" in text
    assert "0.500 (3 edges)" in text and "0.812 (6 edges at 0.001)" in text
    assert "| 7 (0.938) | 0.625 (2) |" in text
    assert ".circuit_simple.old" not in text

    bad = run("run_report.py", tmp_path / "missing")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr


def test_circuit_features_orders_by_effect_and_shows_contexts(tmp_path):
    run_dir = make_run(tmp_path)
    md = tmp_path / "f.md"
    out = run("circuit_features.py", run_dir / "circuit_simple", run_dir / "saes",
              "--top", "2", "--markdown", md)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("R3/1") and "effect -0.5000" in lines[0]
    assert lines[1].strip() == "the big[ cats] run"
    assert "R3/0" in out.stdout and "err" not in out.stdout
    assert "| R3/1 | -0.5000 | 0.2500 |" in md.read_text()

    bad = run("circuit_features.py", run_dir / "circuit_simple", tmp_path)
    assert bad.returncode == 2 and "feature_stats.parquet" in bad.stderr
