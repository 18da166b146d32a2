#!/usr/bin/env python3
"""Check the relative links of the repository's Markdown files.

Every `[text](target)` and `![alt](target)` whose target is not a URL must name a file or
directory that exists (relative to the Markdown file), and a `#fragment` must name a
heading of the target file (GitHub's anchor rules: lower case, punctuation dropped,
spaces to hyphens). Links inside code blocks and inline code are ignored.

Usage: python3 scripts/check_links.py [FILE.md ...]   (default: every tracked *.md)
Prints one line per broken link (file:line: target: why) and exits 1 if there is any.
"""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`]*`")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links → their text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set:
    """Every heading anchor of a Markdown file (duplicates numbered as GitHub does)."""
    seen, out, fenced = {}, set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if fenced or not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def check(md: Path) -> list:
    """The broken links of one Markdown file, as printable lines."""
    problems, fenced = [], False
    for number, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            where = f"{md.relative_to(ROOT)}:{number}: {target}"
            file_part, _, fragment = target.partition("#")
            dest = (md.parent / file_part).resolve() if file_part else md
            if not dest.exists():
                problems.append(f"{where}: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} does not exist")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                problems.append(f"{where}: no heading with anchor #{fragment} in {dest.relative_to(ROOT)}")
    return problems


def main(argv: list) -> int:
    if argv:
        files = [Path(a).resolve() for a in argv]
    else:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout.split()
        files = [ROOT / f for f in listed]
    problems = [p for f in files for p in check(f)]
    for p in problems:
        print(p)
    print(f"check_links: {len(files)} files, {len(problems)} broken links", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
