"""SAELens loads SAEs this project wrote and reproduces our encode/decode values
(scripts/saelens_load_ours.py on crates/sae/tests/ours_fixture). Skips when sae_lens
is not importable (pip install sae-lens; see README "SAEs")."""
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("sae_lens")

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_saelens_loads_our_saes_and_reproduces_our_values():
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts/saelens_load_ours.py"), "--fixture", str(ROOT / "crates/sae/tests/ours_fixture")],
        capture_output=True,
        text=True,
    )
    print(r.stdout, r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mean_centred" in r.stdout and "batchtopk" in r.stdout
