#!/usr/bin/env bash
# A/B of two circuitry-dump binaries against bare ORT, interleaved (companion of
# scripts/bench_dump.sh; run that first: it makes the model and the corpus). Not a test.
#
#   scripts/bench_dump_ab.sh OLD_BIN NEW_BIN       # BENCH_REPS (3), BENCH_TOKENS (8192), ...
#   OLD_ENV="ORT_DYLIB_PATH=/other/libonnxruntime.so" scripts/bench_dump_ab.sh BIN BIN  # two ORT libraries
#
# OLD_ENV / NEW_ENV: space-separated VAR=value pairs set for the OLD / NEW runs only.
# Each repetition times, one after the other: OLD f32, NEW f32, OLD f16, NEW f16 (steady
# state: a run of BENCH_TOKENS minus a run of one batch, as bench_dump.sh) and NEW's
# `bench-ort` (bare ORT, the dump's own session); ratios are taken within a repetition, so
# the load of a shared machine cancels as far as it is steady. Results (JSON lines):
# target/bench/bench_dump_ab.jsonl; prints medians and per-repetition ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -eq 2 ]] || { echo "usage: $0 OLD_BIN NEW_BIN" >&2; exit 2; }
source scripts/bench_dump_env.sh
OUT=$DIR/bench_dump_ab.jsonl
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so}
for f in "$MODEL/model.onnx" "$CORPUS"; do
  [[ -f "$f" ]] || { echo "error: $f is missing; run scripts/bench_dump.sh first" >&2; exit 2; }
done
mkdir -p "$DIR/ab"
cp "$1" "$DIR/ab/old"
cp "$2" "$DIR/ab/new"
common=(--model "$MODEL" --corpus "$CORPUS" --tokens "$TOKENS" --context-size "$CTX"
        --batch-size "$BATCH" --threads "$THREADS" --settings '{}')
echo "A/B: $1 (${OLD_ENV:-}) vs $2 (${NEW_ENV:-}); $TOKENS tokens, $REPS reps; $(uptime)"
: > "$OUT"
for rep in $(seq 1 "$REPS"); do
  for dtype in f32 f16; do
    for which in old new; do
      if [[ $which == old ]]; then extra=${OLD_ENV:-}; else extra=${NEW_ENV:-}; fi
      # shellcheck disable=SC2086
      env $extra $PY time-dump "${common[@]}" --name "${which}_$dtype" --bin "$DIR/ab/$which" \
        --out "$DIR/ab/out" --dtype "$dtype" --shard-rows "$SHARD_ROWS" >> "$OUT"
    done
  done
  $PY ort-rust "${common[@]}" --name bare_ort_rust --bin "$DIR/ab/new" >> "$OUT"
  echo "rep $rep done ($(cut -d' ' -f1-3 /proc/loadavg))"
done
rm -rf "$DIR/ab/out"
python3 - "$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = {}
for r in rows:
    runs.setdefault(r["name"], []).append(r["tokens"] / r["seconds"])
for name, tps in runs.items():
    print(f"  {name:14} median {statistics.median(tps):7.1f} tokens/s  runs {[round(x) for x in tps]}")
bare = runs["bare_ort_rust"]
for name in ("old_f32", "new_f32", "old_f16", "new_f16"):
    per = [a / b for a, b in zip(runs[name], bare)]
    print(f"  {name}/bare_ort_rust per rep {[round(x, 3) for x in per]}, median {statistics.median(per):.3f}")
for d in ("f32", "f16"):
    per = [a / b for a, b in zip(runs[f"new_{d}"], runs[f"old_{d}"])]
    print(f"  new_{d}/old_{d} per rep {[round(x, 3) for x in per]}, median {statistics.median(per):.3f}")
EOF
echo "finished; $(uptime)"
