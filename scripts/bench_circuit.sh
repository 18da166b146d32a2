#!/usr/bin/env bash
# One spliced forward + backward pass (gradients at every SAE feature and error term), ours
# (crates/circuit/examples/bench_circuit.rs) against a PyTorch peer doing the same pass with
# the SAEs spliced into transformers' model (scripts/bench_circuit_peer.py), in one run,
# alternating sides, medians; prints the CPU, the load and the ratio.
#
#   scripts/bench_circuit.sh [llama|gpt2] [REPS=5] [THREADS=2] [pass|ig] [K] [SEQ] [DIFF_AT=1] [L0=0]
#
# ig: integrated-gradient node effects of one batch instead (prepare, then one spliced
# forward + backward per submodule over the 10 steps at once), both sides; llama only.
#
# llama: SmolLM2-135M's shape (30 layers, d_model 576, 9 heads over 3 key/value heads,
# d_mlp 1536, vocab 49152), SAEs of 4608 latents at every resid_pre, batch 8 x 16.
# gpt2:  GPT-2 small's shape, SAEs of 3072 latents at every resid_pre/attn_out/mlp_out,
# batch 2 x 10. Random weights: speed does not depend on their values. Not a test.
# K: TopK SAEs with K active latents, both sides (default 32 for llama, as the SmolLM2
# pipelines train; 0 for gpt2: ReLU SAEs as Marks et al.'s, about half the latents active).
# SEQ: tokens per prompt (default 16 for llama, 10 for gpt2); DIFF_AT: the position where
# the patch prompt differs (default 1). The SmolLM2 agreement families (with <|endoftext|>
# first): simple 3 tokens, differing at 2; across a PP 6 at 2; within an RC 6 at 5;
# across an RC 7 at 2. Ours runs IG from DIFF_AT on; the peer runs every position.
# L0: with ReLU SAEs (K=0), both sides shift each SAE's encoder bias so that about L0
# latents fire per token, as in trained SAEs (default 0: no shift, about half fire).
set -euo pipefail
cd "$(dirname "$0")/.."
FAMILY=${1:-llama}; REPS=${2:-5}; THREADS=${3:-2}; WHAT=${4:-pass}
case $FAMILY in llama) K=${5:-32}; SEQ=${6:-16} ;; *) K=${5:-0}; SEQ=${6:-10} ;; esac
DIFF_AT=${7:-1}; L0=${8:-0}
case $FAMILY in
    llama) SHAPE=(--family llama --layers 30 --d-model 576 --heads 9 --kv-heads 3 --d-mlp 1536
                  --vocab 49152 --d-sae 4608 --subs resid --batch 8 --seq "$SEQ" --k "$K"
                  --diff-at "$DIFF_AT" --l0 "$L0") ;;
    gpt2)  SHAPE=(--family gpt2 --layers 12 --d-model 768 --heads 12 --vocab 50257
                  --d-sae 3072 --subs all --batch 2 --seq "$SEQ" --k "$K" --diff-at "$DIFF_AT"
                  --l0 "$L0") ;;
    *) echo "bench_circuit.sh: unknown family '$FAMILY' (llama or gpt2)" >&2; exit 2 ;;
esac
cargo build --release -q -p circuitry-circuit --example bench_circuit
BIN="${CARGO_TARGET_DIR:-target}/release/examples/bench_circuit"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1); threads $THREADS; SAEs: $([ "$K" = 0 ] && echo "ReLU$([ "$L0" = 0 ] || echo " with L0 about $L0")" || echo "TopK k=$K")"
echo "load before: $(uptime)"
case $WHAT in
    pass) OURS=(--only-pass 1); PEER=(); KEY=pass_s; LINE='spliced pass' ;;
    ig)   OURS=(--only-ig 1 --ig-steps 10); PEER=(--ig-steps 10); KEY=ig_s; LINE='IG node effects' ;;
    *) echo "bench_circuit.sh: unknown measurement '$WHAT' (pass or ig)" >&2; exit 2 ;;
esac
echo "measuring: $LINE"
ours=(); peer=()
for _ in 1 2 3; do
    o=$(RAYON_NUM_THREADS=$THREADS "$BIN" "${SHAPE[@]}" --reps "$REPS" "${OURS[@]}" |
        sed -n "s/^$LINE.*: \([0-9.]*\) s per batch.*/\1/p")
    t=$(python3 scripts/bench_circuit_peer.py "${SHAPE[@]}" --reps "$REPS" --threads "$THREADS" "${PEER[@]}" |
        python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$KEY'])")
    echo "ours $o s   torch $t s   ratio $(python3 -c "print(f'{$t/$o:.2f}')")x"
    ours+=("$o"); peer+=("$t")
done
echo "load after:  $(uptime)"
python3 - "${ours[*]}" "${peer[*]}" <<'PY'
import statistics, sys
o = [float(x) for x in sys.argv[1].split()]
t = [float(x) for x in sys.argv[2].split()]
print(f"median: ours {statistics.median(o):.4f} s, torch {statistics.median(t):.4f} s, "
      f"ratio {statistics.median(t) / statistics.median(o):.2f}x "
      f"(per-pair ratios {', '.join(f'{b / a:.2f}' for a, b in zip(o, t))})")
PY
