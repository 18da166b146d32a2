#!/usr/bin/env bash
# Screenshot a circuit viewer page (circuit.html) with headless Chromium.
# Usage: scripts/screenshot_circuit.sh CIRCUIT_HTML OUT_PNG [WIDTH,HEIGHT] [NODE_ID]
#   WIDTH,HEIGHT  window size in pixels (default 1600,1000)
#   NODE_ID       a node to click first (its paths highlighted), e.g. feature:blocks.2.hook_resid_pre@3/17
# Needs Debian's `chromium` (apt-get install chromium).
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,6p' "$0" >&2
    exit 2
fi
html="$1"
png="$2"
size="${3:-1600,1000}"
node="${4:-}"
[ -f "$html" ] || { echo "error: $html not found; make it with circuitry-circuit (circuit.html in a circuit stage's output)" >&2; exit 2; }
browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
[ -n "$browser" ] || { echo "error: no chromium on PATH; install it with: apt-get install chromium" >&2; exit 2; }
abs="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
url="file://$abs"
if [ -n "$node" ]; then
    url="$url#select=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$node")"
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
tmp="$png.tmp.png"
"$browser" --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars \
    --user-data-dir="$profile" --window-size="$size" --virtual-time-budget=5000 \
    --screenshot="$tmp" "$url" >/dev/null 2>&1
[ -s "$tmp" ] || { echo "error: chromium wrote no screenshot for $url" >&2; exit 1; }
mv "$tmp" "$png"
echo "wrote $png ($size) from $url"
