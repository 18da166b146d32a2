#!/usr/bin/env bash
# Run the embedded default pipeline end to end: the toy recipe and one sparse feature
# circuit of the committed tiny GPT-2 (pipelines/demo.toml), then print the circuit's
# faithfulness and where its circuit.html is.
#
# Needs Rust (cargo) and the ONNX Runtime library, nothing else: no Python package is
# installed. The library comes from $ORT_DYLIB_PATH when that names a file, else from .ort/,
# where scripts/setup-ort.sh puts it (a `pip download` of the onnxruntime wheel, unpacked;
# needs pip, or set ORT_DYLIB_PATH). Outputs go under the manifest's run_dir (runs/demo/);
# a second run does nothing.
# Usage: scripts/demo.sh [MANIFEST]     (default: pipelines/demo.toml)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '[demo %(%T)T] %s\n' -1 "$*" >&2; }
MANIFEST="${1:-pipelines/demo.toml}"

command -v cargo >/dev/null || { echo "demo.sh: cargo not found; install Rust with rustup (https://rustup.rs)" >&2; exit 2; }
[[ -f $MANIFEST ]] || { echo "demo.sh: manifest $MANIFEST not found; give a path to a pipelines/*.toml file" >&2; exit 2; }

if [[ -n ${ORT_DYLIB_PATH:-} && -f $ORT_DYLIB_PATH ]]; then
    log "ONNX Runtime: $ORT_DYLIB_PATH (ORT_DYLIB_PATH)"
else
    log "ONNX Runtime: $(scripts/setup-ort.sh)"
    export ORT_DYLIB_PATH="$ROOT/.ort/libonnxruntime.so"
fi

log "building the binaries (cargo build --release; several minutes the first time)"
cargo build --release --workspace --bins
log "running $MANIFEST"
target/release/circuitry run "$MANIFEST"

# Where the circuits are: run_dir of [pipeline], relative to the manifest's directory.
RUN_DIR="$(sed -n 's/^[[:space:]]*run_dir[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$MANIFEST" | head -n 1)"
[[ $RUN_DIR == /* ]] || RUN_DIR="$(cd "$(dirname "$MANIFEST")" && pwd)/$RUN_DIR"
RUN_DIR="$(cd "$RUN_DIR" && pwd)"
echo
found=0
while IFS= read -r html; do
    dir="$(dirname "$html")"
    echo "circuit $(basename "$dir"):"
    # The GPT-2 circuit's scores, from the `key: value` lines of its summary.txt.
    if [[ -f $dir/faithfulness.json ]]; then
        awk -F': *' '{ gsub(/^ +/, "", $1) } NF == 2 { v[$1] = $2 }
            END { printf "  faithfulness %s (lowest case %s, complement %s) with %d of %d nodes\n",
                  v["faithfulness"], v["faithfulness_min_case"], v["complement_faithfulness"],
                  v["nodes"], v["all_nodes"] }' "$dir/summary.txt"
    fi
    echo "  open in a browser: $html"
    found=1
done < <(find "$RUN_DIR" -name circuit.html -not -path '*/.*' | sort)
[[ $found == 1 ]] || { echo "demo.sh: no circuit.html under $RUN_DIR" >&2; exit 1; }
