# Shared settings of the dump benchmarks (scripts/bench_dump*.sh), each overridable by
# its BENCH_* variable; sourced, not run.
TOKENS=${BENCH_TOKENS:-8192}
REPS=${BENCH_REPS:-3}
CTX=${BENCH_CTX:-128}
BATCH=${BENCH_BATCH:-8}
THREADS=${BENCH_THREADS:-2}
SHARD_ROWS=${BENCH_SHARD_ROWS:-4096}
DIR=${BENCH_DIR:-target/bench}
# BENCH_MODEL: an existing HF folder with its model.onnx (e.g. models/smollm2-135m, exported
# without logits); unset: the random GPT-2 small made by `bench_dump_peer.py make-model`.
if [[ -n "${BENCH_MODEL:-}" ]]; then
  MODEL=$BENCH_MODEL
  CORPUS=$DIR/corpus-$TOKENS-$(basename "$MODEL").txt
else
  MODEL=$DIR/gpt2-small-random
  CORPUS=$DIR/corpus-$TOKENS.txt
fi
PY="python3 scripts/bench_dump_peer.py"
