#!/usr/bin/env bash
# Set up a fresh machine for circuitry's tests and CI (scripts/test.sh, .ci/run),
# idempotently (fast when already done):
#   - Python packages for scripts/ and their tests (scripts/requirements.txt)
#   - the ONNX Runtime shared library in .ort/ (scripts/setup-ort.sh)
#   - with SETUP_MKL=1 (CI sets it): Intel MKL in .mkl/ (scripts/setup-mkl.sh, a 220 MB
#     download), which circuitry-train-sae uses for its dense products when present
#     (faster than the built-in faer; optional, its tests skip without it)
# Debian packages for some tests (chromium, Slurm) are installed by .ci/run.
# Running pipelines needs none of the Python packages: scripts/demo.sh calls only
# scripts/setup-ort.sh.
# Usage: scripts/setup.sh        (SETUP_MKL=1 scripts/setup.sh to add MKL)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '[setup %(%T)T] %s\n' -1 "$*" >&2; }

command -v cargo >/dev/null || { echo "setup.sh: cargo not found; install Rust with rustup (https://rustup.rs)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "setup.sh: python3 not found; install Python 3.10+" >&2; exit 2; }

STAMP="$ROOT/target/.setup-python-$(python3 -c 'import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest()[:16])' scripts/requirements.txt)"
if [[ ! -e $STAMP ]]; then
    log "installing Python packages (scripts/requirements.txt; torch is large, about 2 minutes)"
    python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir -r scripts/requirements.txt
    mkdir -p "$ROOT/target" && touch "$STAMP"
fi

log "ONNX Runtime: $(scripts/setup-ort.sh)"
if [[ "${SETUP_MKL:-0}" == 1 ]]; then
    log "Intel MKL: $(scripts/setup-mkl.sh)"
fi
