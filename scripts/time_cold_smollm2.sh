#!/usr/bin/env bash
# Time a newcomer's first SmolLM2 dump after the build: clone this checkout into a fresh
# folder with an empty download cache and no pip cache, then scripts/setup-ort.sh,
# scripts/setup-model.sh smollm2-135m, and a dump of the first 100 simple-family test
# pairs (all 30 resid_pre hooks) with this checkout's release binaries; pyarrow reads the
# shards back. Needs the Python packages of scripts/requirements.txt (torch for the ONNX
# export) and a built target/release. Results: docs/benchmarks/smollm2-cold-setup.md.
# Usage: scripts/time_cold_smollm2.sh [WORK_DIR]   (default /tmp/circuitry-cold; removed first)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release"
WORK="${1:-/tmp/circuitry-cold}"
rm -rf "$WORK"
git clone -q "$ROOT" "$WORK/clone"
cd "$WORK/clone"
git log --oneline -1
export CIRCUITRY_CACHE="$WORK/cache" PIP_NO_CACHE_DIR=1
now() { date +%s.%N; }
t0=$(now)
scripts/setup-ort.sh
t1=$(now)
scripts/setup-model.sh smollm2-135m
t2=$(now)
head -100 datasets/agreement/smollm2/simple_test.jsonl > p100.jsonl
ORT_DYLIB_PATH=$PWD/.ort/libonnxruntime.so $BIN/circuitry-dump onnx --model models/smollm2-135m \
  --out runs/cold/pairs --pairs p100.jsonl --hooks 'blocks.*.hook_resid_pre'
t3=$(now)
python3 - <<'PY'
import glob, pyarrow.parquet as pq
files = sorted(glob.glob("runs/cold/pairs/**/*.parquet", recursive=True))
rows = sum(pq.read_table(f).num_rows for f in files)
t = pq.read_table(files[0])
print(f"pyarrow read {len(files)} shard(s), {rows} rows, {t.num_columns} columns")
PY
python3 - "$t0" "$t1" "$t2" "$t3" <<'PY'
import sys
t0, t1, t2, t3 = map(float, sys.argv[1:])
print(f"setup-ort {t1-t0:.1f} s, setup-model {t2-t1:.1f} s, dump {t3-t2:.1f} s, total {t3-t0:.1f} s")
PY
uptime
lscpu | grep "Model name" || true
