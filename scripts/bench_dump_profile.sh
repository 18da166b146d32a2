#!/usr/bin/env bash
# Where the time of `circuitry-dump onnx` goes (companion of scripts/bench_dump.sh; run that
# first: it makes the model, the corpus and the binary copy in target/bench). Not a test.
#
#   scripts/bench_dump_profile.sh
#
# 1. perf-records a one-batch run and a full run (BENCH_TOKENS) for f32 and f16, and splits
#    the steady-state CPU time (full minus one batch) by category: ONNX Runtime, zstd, Parquet/
#    Arrow encoding, f16 conversion, copies, kernel page faults, ... Everything outside ONNX
#    Runtime runs on the calling thread between two ORT runs (checks, copies into chunks) or
#    on the store's writer thread (encoding, zstd, writing, hashing) while ORT runs: with
#    ORT's intra-op threads on every core, it comes out of ORT's share of the CPU.
# 2. times the dump writing ONE hook instead of 12 (the graph computes the same either way),
#    so the difference is the cost of converting and writing 11 hooks, in wall time.
# 3. times the Python peer without writing (torch only) beside bare ORT: how much of the
#    peer's time is inference.
# BENCH_PROFILE_PARTS picks parts (default "perf hooks peer"). Results (JSON lines):
# target/bench/bench_dump_profile.jsonl. Needs `perf` (linux-perf) and
# kernel.perf_event_paranoid <= 2 or root.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/bench_dump_env.sh
HZ=${BENCH_PERF_HZ:-250}
BIN=$DIR/circuitry-dump
OUT=$DIR/bench_dump_profile.jsonl
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so}
for f in "$BIN" "$MODEL/model.onnx" "$CORPUS"; do
  [[ -f "$f" ]] || { echo "error: $f is missing; run scripts/bench_dump.sh first" >&2; exit 2; }
done
FIRST=$((BATCH * CTX))  # the one-batch run (the corpus' windows are full)
mkdir -p "$DIR/prof"
PARTS=" ${BENCH_PROFILE_PARTS:-perf hooks peer} "
: >> "$OUT"
export TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1
echo "profile: $TOKENS tokens; $(uptime)"
[[ "$PARTS" == *" perf "* ]] && dtypes="f32 f16" || dtypes=""
for dtype in $dtypes; do
  for tokens in "$FIRST" "$TOKENS"; do
    rm -rf "$DIR/out-prof"
    perf record -q -F "$HZ" -o "$DIR/prof/$dtype-$tokens.data" -- "$BIN" onnx --model "$MODEL" \
      --out "$DIR/out-prof" --hooks 'blocks.*.hook_resid_pre' --corpus "$CORPUS" \
      --context-size "$CTX" --batch-size "$BATCH" --threads "$THREADS" --dtype "$dtype" \
      --shard-rows "$SHARD_ROWS" --max-tokens "$tokens" 2>/dev/null
  done
  echo "== $dtype, 12 hooks"
  $PY perf-split "$DIR/prof/$dtype-$FIRST.data" "$DIR/prof/$dtype-$TOKENS.data" --hz "$HZ" \
    --tokens $((TOKENS - FIRST)) | tee -a "$OUT" | grep -v '^{'
done
rm -rf "$DIR/out-prof"
common=(--model "$MODEL" --corpus "$CORPUS" --tokens "$TOKENS" --context-size "$CTX"
        --batch-size "$BATCH" --threads "$THREADS" --bin "$BIN" --out "$DIR/out-prof"
        --shard-rows "$SHARD_ROWS")
show() {
  python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('  %-40s %7.1f tokens/s (load %s)' % (r['name'], r['tokens_per_s'], r['load'][0][0]))"
}
[[ "$PARTS" == *" hooks "* ]] && echo "== wall time, 1 hook vs 12 hooks (f32)" && hook_sets=(blocks.0.hook_resid_pre 'blocks.*.hook_resid_pre') || hook_sets=()
for hooks in "${hook_sets[@]}"; do
  $PY time-dump "${common[@]}" --name "dump_f32 $hooks" --dtype f32 --hooks "$hooks" | tee -a "$OUT" |
    show
done
if [[ "$PARTS" == *" peer "* ]]; then
  echo "== wall time, the peer without writing vs bare ORT"
  peer_args=(--model "$MODEL" --corpus "$CORPUS" --tokens "$TOKENS" --context-size "$CTX"
             --batch-size "$BATCH" --threads "$THREADS")
  $PY peer "${peer_args[@]}" --name "torch only (peer, no write)" --out "$DIR/out-prof" \
    --dtype f32 --shard-rows "$SHARD_ROWS" --no-write | tee -a "$OUT" | show
  $PY ort "${peer_args[@]}" --name "bare_ort" | tee -a "$OUT" | show
fi
rm -rf "$DIR/out-prof"
echo "finished; $(uptime)"
