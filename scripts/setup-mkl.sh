#!/usr/bin/env bash
# Installs the Intel MKL shared libraries that circuitry-train-sae can load at run time
# (--gemm auto|mkl) into the project-local folder .mkl/ (gitignored), from the `mkl`
# PyPI wheel (Intel Simplified Software License). Only what cblas_sgemm/dgemm need is kept:
#
#   libmkl_rt.so.3            the single dynamic library the trainer opens (dlopen)
#   libmkl_core.so.3          MKL's core
#   libmkl_sequential.so.3    the sequential threading layer (the trainer runs MKL
#                             single-threaded per block, on its own rayon threads)
#   libmkl_intel_lp64.so.3    the 32-bit-integer interface layer
#   libmkl_{def,mc3,avx2,avx512,avx10}.so.3
#                             the CPU-specific kernels (MKL picks one at run time)
#
# Idempotent: when the libraries are there it only prints the path of libmkl_rt.so.3.
# Needs `pip` (to download the wheel, no install) and `unzip` or `python3`.
# Usage: scripts/setup-mkl.sh          (prints the absolute path of libmkl_rt.so.3)
#        MKL_VERSION=2026.2.0 MKL_DIR=/some/dir scripts/setup-mkl.sh
# The trainer finds .mkl/ by itself; elsewhere, point CIRCUITRY_MKL at libmkl_rt.so.3.
set -euo pipefail

MKL_VERSION="${MKL_VERSION:-2026.2.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MKL_DIR="${MKL_DIR:-$ROOT/.mkl}"
LIBS=(rt core sequential intel_lp64 def mc3 avx2 avx512 avx10)
STAMP="$MKL_DIR/.complete-$MKL_VERSION"

if [[ "$(uname -s)" != "Linux" || "$(uname -m)" != "x86_64" ]]; then
    echo "setup-mkl.sh: only Linux x86_64 is supported (found $(uname -s) $(uname -m)); the trainer uses faer without MKL" >&2
    exit 2
fi

if [[ -f "$STAMP" && -s "$MKL_DIR/libmkl_rt.so.3" ]]; then
    echo "$MKL_DIR/libmkl_rt.so.3"
    exit 0
fi

PIP=(pip)
command -v pip >/dev/null 2>&1 || PIP=(python3 -m pip)

mkdir -p "$MKL_DIR"
WORK="$(mktemp -d "$MKL_DIR/.download.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "setup-mkl.sh: downloading mkl==$MKL_VERSION wheel from PyPI (about 220 MB)" >&2
if ! "${PIP[@]}" download --quiet --no-cache-dir --no-deps --only-binary=:all: "mkl==$MKL_VERSION" -d "$WORK" >&2; then
    echo "setup-mkl.sh: could not download the mkl==$MKL_VERSION wheel; check network/pip, or set CIRCUITRY_MKL to an existing libmkl_rt.so.3" >&2
    exit 2
fi
WHEEL="$(ls "$WORK"/mkl-*.whl | head -n 1)"
PREFIX="mkl-$MKL_VERSION.data/data/lib"
MEMBERS=()
for l in "${LIBS[@]}"; do MEMBERS+=("$PREFIX/libmkl_$l.so.3"); done

if command -v unzip >/dev/null 2>&1; then
    unzip -q -o -j "$WHEEL" "${MEMBERS[@]}" -d "$WORK"
else
    python3 - "$WHEEL" "$WORK" "${MEMBERS[@]}" <<'PY'
import sys, zipfile, os
wheel, out, *members = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for m in members:
        with open(os.path.join(out, os.path.basename(m)), "wb") as f:
            f.write(z.read(m))
PY
fi
for l in "${LIBS[@]}"; do
    if [[ ! -s "$WORK/libmkl_$l.so.3" ]]; then
        echo "setup-mkl.sh: $PREFIX/libmkl_$l.so.3 not found in $(basename "$WHEEL")" >&2
        exit 2
    fi
done
# Move into place only once complete (libmkl_rt last, then the stamp), so an interrupted
# run never leaves a partial installation that looks complete.
for l in "${LIBS[@]}"; do
    [[ "$l" == rt ]] || mv -f "$WORK/libmkl_$l.so.3" "$MKL_DIR/"
done
chmod 755 "$MKL_DIR"/libmkl_*.so.3 "$WORK/libmkl_rt.so.3"
mv -f "$WORK/libmkl_rt.so.3" "$MKL_DIR/"
touch "$STAMP"
echo "$MKL_DIR/libmkl_rt.so.3"
