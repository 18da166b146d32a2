#!/usr/bin/env bash
# Benchmark of `circuitry-dump onnx` (issue 3, item 8). A script, not a test.
#
#   scripts/bench_dump.sh            # defaults below; results in target/bench/bench_dump.json
#   BENCH_TOKENS=16384 BENCH_REPS=5 scripts/bench_dump.sh
#
# On a randomly initialised GPT-2 of GPT-2 small's exact shape (12 layers, d_model 768,
# 12 heads, vocab 50257, n_positions 1024; seed 0; cached in target/bench/gpt2-small-random
# and exported by scripts/export_onnx.py without logits), over the same fixed corpus
# (datasets/tiny-gpt2/corpus.txt, repeated) packed into the same windows, it measures
# tokens/s of
#   dump_f32 / dump_f16  circuitry-dump onnx writing all 12 blocks.*.hook_resid_pre, f32 / f16
#   peer_f32 / peer_f16  transformers + torch eager (inference_mode, output_hidden_states)
#                        writing the same rows and columns to Parquet with pyarrow (same zstd
#                        levels, BYTE_STREAM_SPLIT, statistics, shard size)
#   bare_ort_rust        `circuitry-dump bench-ort`: the dump's own code and ORT session on the
#                        same batches, outputs dropped instead of written (the goal's reference)
#   bare_ort             Python onnxruntime on the same ONNX file and batches, outputs dropped
# with the same threads everywhere (--threads, torch.set_num_threads, intra_op_num_threads),
# repeated BENCH_REPS times in interleaved order, and prints medians and the ratios
# dump/peer and dump/bare-ORT (both) against the issue's goals (>= 1.6x the peer, >= 90% of bare ORT).
#
# "tokens/s" is steady state: the first batch (a warm-up), model load and tokenizing are
# excluded on every side (see scripts/bench_dump_peer.py); end-to-end rates are printed too.
#
# Then (BENCH_CEILING=1, the default) scripts/bench_dump_ceiling.py --parts sgemm: FLOP per
# token of the dump's graph x this machine's sgemm rate (MLAS and torch), the most tokens/s
# any fp32 runtime could reach, beside 1.6x the peer (target/bench/bench_dump_ceiling.json).
#
# BENCH_MODEL=DIR (e.g. models/smollm2-135m, made by scripts/setup-model.sh smollm2-135m): an
# existing GPT-2 or Llama HF folder with its model.onnx instead of the random GPT-2 small; the
# peer then runs that family's transformers model, the dumped hooks are its n_layer
# resid_pre, the peer goal is BENCH_GOAL_PEER (default 1.2 with BENCH_MODEL, issue 13; 1.6
# without, issue 3), only BENCH_GRAPH=full is supported and the ceiling (GPT-2 only) is off.
#
# Environment: BENCH_TOKENS (8192), BENCH_REPS (3), BENCH_CTX (128), BENCH_BATCH (8),
# BENCH_THREADS (2), BENCH_SHARD_ROWS (4096), BENCH_GRAPH (full, or pruned: the ORT sides
# run an export with --hooks 'blocks.*.hook_resid_pre'), BENCH_ATTN (sdpa: the peer's transformers
# attention), BENCH_DIR (target/bench), DUMP_BIN (use this binary instead of building one),
# CARGO_TARGET_DIR (honoured by the build), ORT_DYLIB_PATH (default .ort/libonnxruntime.so,
# made by scripts/setup-ort.sh when missing). Needs the Python packages of
# scripts/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/bench_dump_env.sh
ATTN=${BENCH_ATTN:-sdpa}
RESULTS=$DIR/bench_dump.jsonl
export TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false

if [[ -z "${ORT_DYLIB_PATH:-}" ]]; then
  [[ -f .ort/libonnxruntime.so ]] || scripts/setup-ort.sh
  export ORT_DYLIB_PATH=$PWD/.ort/libonnxruntime.so
fi

if [[ -n "${DUMP_BIN:-}" ]]; then
  BIN=$DUMP_BIN
else
  cargo build --release -p circuitry-dump --bin circuitry-dump
  BIN=${CARGO_TARGET_DIR:-target}/release/circuitry-dump
fi
# Run a private copy, so a rebuild during the benchmark does not change what is measured.
mkdir -p "$DIR"
cp "$BIN" "$DIR/circuitry-dump"
BIN=$DIR/circuitry-dump

if [[ -n "${BENCH_MODEL:-}" ]]; then
  for f in config.json model.safetensors tokenizer.json model.onnx model.onnx.json; do
    [[ -f "$MODEL/$f" ]] || { echo "bench_dump.sh: BENCH_MODEL=$MODEL has no $f (for SmolLM2 run scripts/setup-model.sh smollm2-135m first)" >&2; exit 2; }
  done
  [[ "${BENCH_GRAPH:-full}" == full ]] || { echo "bench_dump.sh: BENCH_MODEL supports BENCH_GRAPH=full only" >&2; exit 2; }
  GOAL_PEER=${BENCH_GOAL_PEER:-1.2}
  CEILING=${BENCH_CEILING:-0}
  MODEL_DESC="$(basename "$MODEL") ($MODEL)"
else
  $PY make-model "$MODEL" --seed 0
  GOAL_PEER=${BENCH_GOAL_PEER:-1.6}
  CEILING=${BENCH_CEILING:-1}
  MODEL_DESC="random GPT-2 small shape, seed 0"
fi
N_LAYER=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["n_layer"])' "$MODEL/model.onnx.json")
# BENCH_GRAPH=pruned: the ORT sides run a graph exported with `--hooks
# 'blocks.*.hook_resid_pre'` (only the dumped outputs; the last block is not computed),
# as a user dumping only resid_pre would export it. The peer is unchanged.
GRAPH=${BENCH_GRAPH:-full}
ORT_MODEL=$MODEL
if [[ "$GRAPH" == pruned ]]; then
  ORT_MODEL=$DIR/gpt2-small-random-resid
  if [[ ! -f "$ORT_MODEL/model.onnx.json" ]]; then
    mkdir -p "$ORT_MODEL"
    for f in config.json model.safetensors tokenizer.json; do
      ln -sf "$(realpath "$MODEL/$f")" "$ORT_MODEL/$f"
    done
    python3 scripts/export_onnx.py "$MODEL" "$ORT_MODEL/model.onnx" --hooks 'blocks.*.hook_resid_pre'
  fi
elif [[ "$GRAPH" != full ]]; then
  echo "bench_dump.sh: BENCH_GRAPH must be full or pruned, not '$GRAPH'" >&2; exit 2
fi
[[ -f "$CORPUS" ]] || $PY make-corpus datasets/tiny-gpt2/corpus.txt "$CORPUS" \
  --tokenizer "$MODEL/tokenizer.json" --tokens "$TOKENS"

settings=$(printf '{"tokens": %d, "context_size": %d, "batch_size": %d, "threads": %d, "shard_rows": %d, "peer_attn": "%s", "reps": %d, "nproc": %d, "model": "%s", "hooks": "blocks.*.hook_resid_pre (%d)", "ort_graph": "%s"}' \
  "$TOKENS" "$CTX" "$BATCH" "$THREADS" "$SHARD_ROWS" "$ATTN" "$REPS" "$(nproc)" "$MODEL_DESC" "$N_LAYER" "$GRAPH")
common=(--corpus "$CORPUS" --tokens "$TOKENS" --context-size "$CTX"
        --batch-size "$BATCH" --threads "$THREADS" --settings "$settings")

echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs; model: $MODEL_DESC"
echo "benchmark: $TOKENS tokens, context $CTX, batch $BATCH, $THREADS threads, $REPS reps, ORT graph $GRAPH; $(uptime)"
: > "$RESULTS"
for rep in $(seq 1 "$REPS"); do
  for dtype in f32 f16; do
    echo "rep $rep: dump_$dtype ($(cut -d' ' -f1-3 /proc/loadavg))"
    $PY time-dump --model "$ORT_MODEL" "${common[@]}" --name "dump_$dtype" --bin "$BIN" --out "$DIR/out-dump_$dtype" \
      --dtype "$dtype" --shard-rows "$SHARD_ROWS" >> "$RESULTS"
  done
  echo "rep $rep: bare_ort_rust ($(cut -d' ' -f1-3 /proc/loadavg))"
  $PY ort-rust --model "$ORT_MODEL" "${common[@]}" --name bare_ort_rust --bin "$BIN" >> "$RESULTS"
  echo "rep $rep: bare_ort ($(cut -d' ' -f1-3 /proc/loadavg))"
  $PY ort --model "$ORT_MODEL" "${common[@]}" --name bare_ort >> "$RESULTS"
  for dtype in f32 f16; do
    echo "rep $rep: peer_$dtype ($(cut -d' ' -f1-3 /proc/loadavg))"
    $PY peer --model "$MODEL" "${common[@]}" --name "peer_$dtype" --out "$DIR/out-peer_$dtype" --dtype "$dtype" \
      --shard-rows "$SHARD_ROWS" --attn "$ATTN" >> "$RESULTS"
  done
done
# Same job? The last rep's shards: same rows and tokens, same activations.
for dtype in f32 f16; do
  $PY check "$DIR/out-dump_$dtype" "$DIR/out-peer_$dtype" --dtype "$dtype" >> "$RESULTS"
  rm -rf "$DIR/out-dump_$dtype" "$DIR/out-peer_$dtype"
done
$PY summarize "$RESULTS" "$DIR/bench_dump.json" --goal-peer "$GOAL_PEER"
if [[ "$CEILING" == 1 ]]; then
  # What any fp32 runtime could reach here: FLOP per token x this machine's sgemm rate.
  echo; echo "ceiling ($(cut -d' ' -f1-3 /proc/loadavg)):"
  python3 scripts/bench_dump_ceiling.py --model "$MODEL" --threads "$THREADS" \
    --batch-size "$BATCH" --context-size "$CTX" --parts sgemm \
    --peer-json "$DIR/bench_dump.json" --out "$DIR/bench_dump_ceiling.json"
fi
echo "finished; $(uptime)"
