#!/usr/bin/env bash
# Run every test of circuitry: set-up if needed, build the stage binaries, Rust tests
# (unit, integration and end-to-end), then the Python scripts' tests.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/setup.sh
export ORT_DYLIB_PATH="${ORT_DYLIB_PATH:-$ROOT/.ort/libonnxruntime.so}"
# SmolLM2-135M, a real pretrained Llama, for the parity tests (crates/models/tests/llama.rs,
# scripts/tests): converted once into the cache that clones and CI runs share (about 5 minutes
# the first time, a second to verify after), linked into models/ here.
MODEL_CACHE="${CIRCUITRY_CACHE:-$HOME/.cache/circuitry}/models/smollm2-135m"
if [[ ! -e models/smollm2-135m ]]; then
    scripts/setup-model.sh smollm2-135m --out "$MODEL_CACHE" >/dev/null
    mkdir -p models && ln -s "$MODEL_CACHE" models/smollm2-135m
fi
scripts/setup-model.sh smollm2-135m >/dev/null
# The fortunes corpus of the SmolLM2 smoke pipeline (tests/e2e/smollm2_smoke.rs): Debian's
# fortunes packages, a few seconds; gitignored.
scripts/make_corpus.sh --only fortunes --out datasets/corpus/english-fortunes >/dev/null
export CIRCUITRY_REQUIRE_SMOLLM2=1
# One profile (release) for binaries and tests: arrow/parquet are built once.
cargo build --release --workspace --bins
cargo test --release --workspace "$@"
python3 -m pytest -q scripts/tests
