"""scripts/check_links.py: every relative link and heading anchor of the repository's
Markdown files resolves, and the checker catches a broken file link and a broken anchor.

Run: python -m pytest scripts/tests -q
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SCRIPTS))
import check_links  # noqa: E402


def test_repository_markdown_links_resolve():
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "check_links.py")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_broken_file_link_and_anchor_are_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(check_links, "ROOT", tmp_path)
    (tmp_path / "other.md").write_text("# Other: `part` one\n")
    md = tmp_path / "a.md"
    md.write_text(
        "# A\n"
        "[ok](other.md#other-part-one) [self](#a) `[code](nowhere.md)`\n"
        "[gone](nowhere.md) [bad](other.md#nope) [web](https://example.org/x.md)\n"
        "```\n[fenced](nowhere-either.md)\n```\n"
    )
    problems = check_links.check(md)
    assert len(problems) == 2, problems
    assert "nowhere.md does not exist" in problems[0]
    assert "#nope" in problems[1]
