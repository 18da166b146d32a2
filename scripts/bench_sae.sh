#!/usr/bin/env bash
# SAE training throughput, ours (faer, and Intel MKL when installed: scripts/setup-mkl.sh;
# TopK also with its exact bf16 prefilter where the CPU has AVX512-BF16)
# against a PyTorch CPU peer doing the same step, and against this machine's sgemm
# (faer's, MKL's and torch's), measured in one run (medians over STEPS steps).
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
BACKENDS="faer"
TOPK_BACKENDS="faer"
if "$BIN" gemm 1 1 16 16 16 1 mkl >/dev/null 2>&1; then
    BACKENDS="faer mkl"
    TOPK_BACKENDS="faer mkl"
    if "$BIN" topk 1 1 64 "$D_IN" "$D_SAE" 4 mkl-prefilter >/dev/null 2>&1; then
        TOPK_BACKENDS="faer mkl mkl-prefilter"
    else
        echo "TopK bf16 prefilter not used here (needs MKL, AVX512-BF16, d_in >= 64, d_sae >= 1024)"
    fi
else
    echo "MKL not installed (scripts/setup-mkl.sh): faer only"
fi
echo "load before: $(uptime)"
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
for what in gemm topk standard; do
    sides=$BACKENDS
    [[ $what == topk ]] && sides=$TOPK_BACKENDS
    for b in $sides; do
        "$BIN" "$what" "$STEPS" "$THREADS" $SHAPE "$b" | tee -a "$OUT"
    done
    python3 scripts/bench_sae_peer.py "$what" "$STEPS" "$THREADS" $SHAPE | tee -a "$OUT"
done
echo "load after:  $(uptime)"
python3 - "$OUT" "$BATCH" "$D_IN" "$D_SAE" "$K" "$THREADS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
batch, d_in, d_sae, k, threads = (int(a) for a in sys.argv[2:])
sides = [s for s in ("faer", "mkl", "mkl-prefilter") if any(r["side"] == s for r in rows)]
get = lambda side, what: next(r for r in rows if r["side"] == side and r["what"] == what)
peaks = {s: get(s, "sgemm")["gflops"] for s in sides + ["torch"] if s != "mkl-prefilter"}
peak = max(peaks.values())
print(f"\nd_in {d_in}, d_sae {d_sae}, batch {batch}, {threads} threads; medians")
print(f"sgemm {batch}x{d_in}x{d_sae}: " + ", ".join(f"{s} {g:.0f}" for s, g in peaks.items())
      + f" GFLOP/s -> peak {peak:.0f}")
print(f"{'':<20}{'ours tok/s':>12}{'torch tok/s':>13}{'ratio':>8}{'dense GFLOP/s':>15}{'of peak':>9}")
for what, dense in (("topk", "encoder_gflops"), ("standard", "step_dense_gflops")):
    t = get("torch", what)
    for s in sides:
        if s == "mkl-prefilter" and what != "topk":
            continue
        r = get(s, what)
        name = what + (f" k={k}" if what == "topk" else "") + f" ({s})"
        print(f"{name:<20}{r['tokens_per_s']:>12.0f}{t['tokens_per_s']:>13.0f}"
              f"{r['tokens_per_s'] / t['tokens_per_s']:>7.2f}x{r[dense]:>15.0f}{r[dense] / peak:>8.0%}")
print("dense GFLOP/s: TopK = the f32 encoder product alone; standard = 5 products of 2*B*d_in*d_sae per step / step time")
print("mkl-prefilter: TopK with the exact bf16 prefilter (the same latents as the f32 encoder); its dense column is the f32 encoder's")
PY
