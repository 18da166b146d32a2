#!/usr/bin/env bash
# Run every test of circuitry: set-up if needed, build the stage binaries, Rust tests
# (unit, integration and end-to-end), then the Python scripts' tests.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.ort/libonnxruntime.so}"
# One profile (release) for binaries and tests: arrow/parquet are built once.
cargo build --release --workspace --bins
cargo test --release --workspace "$@"
python3 -m pytest -q scripts/tests
