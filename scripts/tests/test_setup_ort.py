"""scripts/setup-ort.sh: idempotent, prints the library path, never touches an existing install.

No network: the download path is exercised by running the script for real (CI's set-up step);
here a library already in place must be left alone and no download attempted.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "setup-ort.sh"


def run(ort_dir: Path, **env):
    full = {**os.environ, "ORT_DIR": str(ort_dir), "PIP_NO_INDEX": "1", **env}
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=full)


def test_existing_library_is_kept_and_its_path_printed(tmp_path):
    lib = tmp_path / "libonnxruntime.so.1.31.1"
    lib.write_bytes(b"already here")
    for _ in range(2):
        r = run(tmp_path)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == str(lib)
        assert "downloading" not in r.stderr
    assert lib.read_bytes() == b"already here"
    link = tmp_path / "libonnxruntime.so"
    assert link.is_symlink() and os.readlink(link) == lib.name


def test_failed_download_says_how_to_fix_and_leaves_nothing(tmp_path):
    # PIP_NO_INDEX=1 makes pip fail without touching the network.
    r = run(tmp_path / "ort", ORT_VERSION="1.31.1")
    assert r.returncode == 2
    assert "ORT_DYLIB_PATH" in r.stderr
    assert not (tmp_path / "ort" / "libonnxruntime.so.1.31.1").exists()
    assert not list((tmp_path / "ort").glob(".download.*"))
