#!/usr/bin/env bash
# Run the embedded default pipeline end to end: set-up if needed, build, run.
# Outputs go under runs/ (see the pipeline's run_dir); a second run does nothing.
# Usage: scripts/demo.sh [MANIFEST]     (default: the embedded default pipeline)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.ort/libonnxruntime.so}"
cargo build --release --workspace --bins
exec target/release/circuitry run "${1:-pipelines/toy.toml}"
