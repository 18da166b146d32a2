#!/usr/bin/env bash
# Installs the ONNX Runtime shared library that the `ort` crate (2.0.0-rc.15, ONNX Runtime
# API 31) loads at run time, into the project-local folder .ort/ (gitignored):
#
#   .ort/libonnxruntime.so.1.31.1   the library, taken from the onnxruntime PyPI wheel
#   .ort/libonnxruntime.so          a symlink to it (what ort looks for when unversioned)
#
# Idempotent: when the library is already there it only prints its path. Needs `pip` (to
# download the wheel, no install) and `unzip` or `python3` (to extract one file).
# Usage: scripts/setup-ort.sh          (prints the absolute path of the library)
#        ORT_VERSION=1.31.1 ORT_DIR=/some/dir scripts/setup-ort.sh
set -euo pipefail

ORT_VERSION="${ORT_VERSION:-1.31.1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ORT_DIR="${ORT_DIR:-$ROOT/.ort}"
LIB="libonnxruntime.so.$ORT_VERSION"
TARGET="$ORT_DIR/$LIB"

if [[ "$(uname -s)" != "Linux" ]]; then
    echo "setup-ort.sh: only Linux is supported (found $(uname -s)); set ORT_DYLIB_PATH to an ONNX Runtime $ORT_VERSION library instead" >&2
    exit 2
fi

if [[ -s "$TARGET" ]]; then
    ln -sfn "$LIB" "$ORT_DIR/libonnxruntime.so"
    echo "$TARGET"
    exit 0
fi

PIP=(pip)
command -v pip >/dev/null 2>&1 || PIP=(python3 -m pip)

mkdir -p "$ORT_DIR"
WORK="$(mktemp -d "$ORT_DIR/.download.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "setup-ort.sh: downloading onnxruntime==$ORT_VERSION wheel from PyPI" >&2
if ! "${PIP[@]}" download --quiet --no-deps --only-binary=:all: "onnxruntime==$ORT_VERSION" -d "$WORK" >&2; then
    echo "setup-ort.sh: could not download the onnxruntime==$ORT_VERSION wheel; check network/pip, or set ORT_DYLIB_PATH to an existing $LIB" >&2
    exit 2
fi
WHEEL="$(ls "$WORK"/onnxruntime-*.whl | head -n 1)"
MEMBER="onnxruntime/capi/$LIB"

if command -v unzip >/dev/null 2>&1; then
    unzip -q -o -j "$WHEEL" "$MEMBER" -d "$WORK"
else
    python3 - "$WHEEL" "$MEMBER" "$WORK" <<'PY'
import sys, zipfile, os
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, open(os.path.join(out, os.path.basename(member)), "wb") as f:
    f.write(z.read(member))
PY
fi
if [[ ! -s "$WORK/$LIB" ]]; then
    echo "setup-ort.sh: $MEMBER not found in $(basename "$WHEEL")" >&2
    exit 2
fi
# Rename into place only once complete, so an interrupted run never leaves a partial library.
mv -f "$WORK/$LIB" "$TARGET"
ln -sfn "$LIB" "$ORT_DIR/libonnxruntime.so"
echo "$TARGET"
