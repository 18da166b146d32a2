#!/usr/bin/env bash
# SAE training throughput, ours against a PyTorch CPU peer doing the same step, and
# against this machine's sgemm, measured in one run (medians over STEPS steps).
#
#   scripts/bench_sae.sh [STEPS=5] [THREADS=2] [BATCH=4096] [D_IN=768] [D_SAE=24576] [K=32]
#
# Needs python3 with torch. Set CARGO_TARGET_DIR to reuse a build. Not a test: the
# numbers depend on the machine and its load (printed before and after).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-5}; THREADS=${2:-2}; BATCH=${3:-4096}; D_IN=${4:-768}; D_SAE=${5:-24576}; K=${6:-32}
cargo build --release -q -p circuitry-sae --example bench_sae
BIN="${CARGO_TARGET_DIR:-target}/release/examples/bench_sae"
SHAPE="$BATCH $D_IN $D_SAE $K"
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
echo "load before: $(uptime)"
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
for what in gemm topk standard; do
    "$BIN" "$what" "$STEPS" "$THREADS" $SHAPE | tee -a "$OUT"
    python3 scripts/bench_sae_peer.py "$what" "$STEPS" "$THREADS" $SHAPE | tee -a "$OUT"
done
echo "load after:  $(uptime)"
python3 - "$OUT" "$BATCH" "$D_IN" "$D_SAE" "$K" "$THREADS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
batch, d_in, d_sae, k, threads = (int(a) for a in sys.argv[2:])
get = lambda side, what: next(r for r in rows if r["side"] == side and r["what"] == what)
peak = max(get("rust", "sgemm")["gflops"], get("torch", "sgemm")["gflops"])
print(f"\nd_in {d_in}, d_sae {d_sae}, batch {batch}, {threads} threads; medians")
print(f"sgemm {batch}x{d_in}x{d_sae}: faer {get('rust','sgemm')['gflops']:.0f} GFLOP/s, "
      f"torch {get('torch','sgemm')['gflops']:.0f} GFLOP/s -> peak {peak:.0f}")
print(f"{'':<10}{'ours tok/s':>12}{'torch tok/s':>13}{'ratio':>8}{'dense GFLOP/s':>15}{'of peak':>9}")
for what, dense in (("topk", "encoder_gflops"), ("standard", "step_dense_gflops")):
    r, t = get("rust", what), get("torch", what)
    print(f"{what + (f' k={k}' if what == 'topk' else ''):<10}{r['tokens_per_s']:>12.0f}{t['tokens_per_s']:>13.0f}"
          f"{r['tokens_per_s'] / t['tokens_per_s']:>7.2f}x{r[dense]:>15.0f}{r[dense] / peak:>8.0%}")
print("dense GFLOP/s: TopK = the encoder product alone; standard = 5 products of 2*B*d_in*d_sae per step / step time")
PY
