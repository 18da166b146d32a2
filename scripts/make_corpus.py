#!/usr/bin/env python3
"""Build the English text corpus from Debian packages: fortunes and the Linux man pages.

    python3 scripts/make_corpus.py [--out datasets/corpus/english]
        [--tokenizer models/smollm2-135m/tokenizer.json] [--jobs 2] [--force]
        [--only fortunes|man]

(`scripts/make_corpus.sh` first installs or checks the Debian packages, then runs this.)

Inputs, read in sorted order:

    fortunes   /usr/share/games/fortunes/* of the `fortunes` and `fortunes-min` packages, every
               file but the .dat/.u8 indexes and the ASCII-art files (art, ascii-art); one
               document per fortune (the text between `%` lines)
    man pages  the English pages (/usr/share/man/manN/) of `manpages` and `manpages-dev`, not the
               symlinks and `.so` redirects; rendered with `groff -t -mandoc -Tutf8` on one very
               long line per paragraph (no hyphenation, no bold or underline), running header and
               footer dropped; one document per page

Normalisation: tabs become spaces, every line is stripped and its runs of spaces collapsed to
one, empty lines dropped (a document's lines are joined with "\\n"). Documents with fewer than
4 words are dropped; exact duplicates (after normalisation) are kept once, the first in input
order.

Output in OUT (gitignored): `corpus.jsonl`, one document a line,
`{"text": ..., "source": "fortunes/literature" | "man/read.2"}` (circuitry-dump reads the
`text` field), and `corpus.json`: the package versions, counts (documents, bytes, SmolLM2
tokens) and the BLAKE3 of corpus.jsonl. Both are written atomically (temporary file, rename).
A second run with the same packages, tokenizer and builder checks the BLAKE3 and returns at
once; --force rebuilds. Same packages, same bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import blake3

REPO = Path(__file__).resolve().parent.parent
FORTUNE_PACKAGES = ("fortunes", "fortunes-min")
MAN_PACKAGES = ("manpages", "manpages-dev")
PACKAGES = FORTUNE_PACKAGES + MAN_PACKAGES
FORTUNE_SKIP = {"art", "ascii-art"}  # pictures made of characters, not prose
MIN_WORDS = 4
# groff: preconv (the sources are UTF-8), tbl preprocessor, man macros, UTF-8 output; line
# length 5000 ens so paragraphs stay on one line; no hyphenation; -P-cbou: no SGR escapes, no
# overstrike bold or underline.
GROFF = ["groff", "-k", "-Kutf-8", "-t", "-mandoc", "-Tutf8", "-rLL=5000n", "-rHY=0", "-P-cbou"]
# tbl's rules and cell borders (U+2500-U+257F), drawn 5000 columns wide at that line length
BOX_TO_SPACE = {c: " " for c in range(0x2500, 0x2580)}
MAN_PAGE = re.compile(r"^/usr/share/man/man[0-9]/[^/]+$")


@dataclass(frozen=True)
class Source:
    """One input file: `name` is its label in the corpus, `kind` "fortune" or "man"."""

    name: str
    path: Path
    kind: str


def die(msg: str) -> "SystemExit":
    return SystemExit(f"make_corpus.py: {msg}")


def normalise(text: str) -> str:
    """Tabs → spaces, lines stripped with runs of spaces collapsed, empty lines dropped."""
    lines = (" ".join(line.replace("\t", " ").split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def fortune_documents(path: Path) -> list[str]:
    """The fortunes of a strfile source file: texts separated by lines holding only `%`."""
    raw = path.read_bytes().decode("utf-8", errors="replace")
    docs, cur = [], []
    for line in raw.splitlines():
        if line.strip() == "%":
            docs.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    docs.append("\n".join(cur))
    return [d for d in docs if d.strip()]


def read_man_source(path: Path) -> bytes:
    import gzip

    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def render_man(path: Path) -> str:
    """A man page as plain text: groff output without its running header and footer and
    without table rules (box-drawing characters become spaces)."""
    src = read_man_source(path)
    proc = subprocess.run(GROFF, input=src, capture_output=True, check=False,
                          env={**os.environ, "LC_ALL": "C.UTF-8"})
    if proc.returncode != 0:
        raise die(f"groff failed on {path} (exit {proc.returncode}): "
                  f"{proc.stderr.decode(errors='replace').strip()[:200]}")
    text = proc.stdout.decode("utf-8", errors="replace").translate(BOX_TO_SPACE)
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[1:-1])  # first: "read(2)  System Calls Manual  read(2)"; last: footer


def is_redirect(path: Path) -> bool:
    """A page that only sources another (`.so man2/foo.2`), or a symlink."""
    if path.is_symlink():
        return True
    head = read_man_source(path)[:4096].decode("utf-8", errors="replace")
    body = [ln for ln in head.splitlines() if ln.strip() and not ln.startswith(('.\\"', "'\\\""))]
    return bool(body) and body[0].startswith(".so ")


def dpkg_files(package: str) -> list[str]:
    proc = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise die(f"Debian package {package} is not installed; run scripts/make_corpus.sh "
                  f"(as root it installs it) or apt-get install {' '.join(PACKAGES)}")
    return proc.stdout.splitlines()


def dpkg_version(package: str) -> str:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise die(f"Debian package {package} is not installed; run scripts/make_corpus.sh")
    return proc.stdout


def debian_sources(only: str | None = None) -> list[Source]:
    """The input files of the installed packages, in a fixed (sorted) order; `only` "fortunes"
    or "man" keeps one kind."""
    fortunes = set()
    for pkg in FORTUNE_PACKAGES if only != "man" else ():
        for f in dpkg_files(pkg):
            p = Path(f)
            if (p.parent == Path("/usr/share/games/fortunes") and p.suffix not in (".dat", ".u8")
                    and p.name not in FORTUNE_SKIP and p.is_file()):
                fortunes.add(p)
    pages = set()
    for pkg in MAN_PACKAGES if only != "fortunes" else ():
        for f in dpkg_files(pkg):
            p = Path(f)
            if MAN_PAGE.match(f) and p.is_file() and not is_redirect(p):
                pages.add(p)
    out = [Source(f"fortunes/{p.name}", p, "fortune") for p in sorted(fortunes)]
    out += [Source(f"man/{p.name.removesuffix('.gz')}", p, "man") for p in sorted(pages)]
    return out


def documents(sources: list[Source], jobs: int) -> list[tuple[str, str]]:
    """(source name, normalised text) for every document, in input order, deduplicated."""
    def load(src: Source) -> list[str]:
        if src.kind == "fortune":
            return fortune_documents(src.path)
        return [render_man(src.path)]

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:  # groff runs in subprocesses
        texts = list(pool.map(load, sources))
    out, seen = [], set()
    for src, docs in zip(sources, texts):
        for raw in docs:
            text = normalise(raw)
            if len(text.split()) < MIN_WORDS or text in seen:
                continue
            seen.add(text)
            out.append((src.name, text))
    return out


def count_tokens(texts: list[str], tokenizer: Path) -> int:
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(tokenizer))
    except Exception as e:  # tokenizers raises its own Exception type
        raise die(f"cannot load tokenizer {tokenizer}: {e}; run scripts/setup-model.sh smollm2-135m")
    return sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def file_blake3(path: Path) -> str:
    h = blake3.blake3()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recipe(sources: list[Source], versions: dict[str, str], tokenizer: Path) -> str:
    """What determines the output: builder source, package versions, inputs, tokenizer."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(json.dumps(versions, sort_keys=True).encode())
    for s in sources:
        h.update(f"{s.name}|{s.path}|{s.kind}|{s.path.stat().st_size}\n".encode())
    h.update(Path(tokenizer).read_bytes() if Path(tokenizer).is_file() else b"")
    return h.hexdigest()


def up_to_date(out: Path, key: str) -> dict | None:
    """The manifest when OUT already holds this recipe's corpus, its BLAKE3 intact."""
    try:
        manifest = json.loads((out / "corpus.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("recipe") != key or not (out / "corpus.jsonl").is_file():
        return None
    return manifest if file_blake3(out / "corpus.jsonl") == manifest.get("blake3") else None


def build(sources: list[Source], out: Path, tokenizer: Path, versions: dict[str, str],
          jobs: int = 2, force: bool = False) -> dict:
    """Write OUT/corpus.jsonl and OUT/corpus.json (see the module doc); returns the manifest."""
    key = recipe(sources, versions, tokenizer)
    if not force and (done := up_to_date(out, key)) is not None:
        return {**done, "skipped": True}
    t0 = time.monotonic()
    docs = documents(sources, jobs)
    if not docs:
        raise die("no documents found in the inputs")
    data = "".join(json.dumps({"text": t, "source": s}, ensure_ascii=False) + "\n"
                   for s, t in docs).encode("utf-8")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "corpus.jsonl", data)
    per_source: dict[str, int] = {}
    for s, _ in docs:
        kind = s.split("/")[0]
        per_source[kind] = per_source.get(kind, 0) + 1
    manifest = {
        "file": "corpus.jsonl",
        "blake3": blake3.blake3(data).hexdigest(),
        "bytes": len(data),
        "documents": len(docs),
        "documents_per_source": per_source,
        "input_files": len(sources),
        "tokens_smollm2": count_tokens([t for _, t in docs], tokenizer),
        "tokenizer": str(tokenizer),
        "packages": versions,
        "recipe": key,
        "build_seconds": round(time.monotonic() - t0, 1),
    }
    write_atomic(out / "corpus.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return {**manifest, "skipped": False}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "datasets" / "corpus" / "english")
    ap.add_argument("--tokenizer", type=Path,
                    default=REPO / "models" / "smollm2-135m" / "tokenizer.json")
    ap.add_argument("--jobs", type=int, default=2, help="groff processes at once")
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    ap.add_argument("--only", choices=("fortunes", "man"),
                    help="one source only: `--only fortunes` (about 0.5M tokens, no groff, "
                         "seconds) is enough for smoke runs")
    args = ap.parse_args(argv)
    if not args.tokenizer.is_file():
        print(f"make_corpus.py: tokenizer {args.tokenizer} not found; run "
              "scripts/setup-model.sh smollm2-135m", file=sys.stderr)
        return 2
    try:
        versions = {p: dpkg_version(p) for p in PACKAGES}
        m = build(debian_sources(args.only), args.out, args.tokenizer, versions, args.jobs,
                  args.force)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    state = "up to date" if m["skipped"] else f"built in {m['build_seconds']} s"
    print(f"{args.out}/corpus.jsonl: {m['documents']} documents, {m['bytes']} bytes, "
          f"{m['tokens_smollm2']} SmolLM2 tokens, blake3 {m['blake3']} ({state})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
