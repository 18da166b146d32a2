#!/usr/bin/env bash
# Build the English corpus (datasets/corpus/english/corpus.jsonl, about 1.5M SmolLM2 tokens) from
# the Debian packages fortunes, fortunes-min, manpages and manpages-dev; see
# datasets/corpus/README.md and scripts/make_corpus.py.
#
# Usage: scripts/make_corpus.sh [make_corpus.py options: --out DIR --tokenizer FILE --jobs N --force]
#
# Missing packages are installed with apt-get when run as root (this needs the Debian
# archive); otherwise the script says which to install and exits 2. Fast when already built.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGES=(fortunes fortunes-min manpages manpages-dev groff-base)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "make_corpus.sh: Debian packages missing: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 2
  fi
  echo "make_corpus.sh: installing ${missing[*]}" >&2
  apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
    { apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
fi
exec python3 "$ROOT/scripts/make_corpus.py" "$@"
