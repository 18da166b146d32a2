"""scripts/make_corpus.py: normalisation, fortune splitting, man rendering, determinism, dedup,
the up-to-date check. Small inputs written here (real groff for the man page); the 1M-token
corpus itself is not built in the tests (about 2 minutes; see datasets/corpus/README.md).

Run: python -m pytest scripts/tests/test_make_corpus.py -q
"""
from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import make_corpus  # noqa: E402
from make_corpus import Source  # noqa: E402

blake3 = pytest.importorskip("blake3")
tokenizers = pytest.importorskip("tokenizers")
needs_groff = pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")

MAN_PAGE = r""".\" a comment line
.TH WIDGET 1 2024-01-01 "test 1.0" "Test Manual"
.SH NAME
widget \- make widgets from  thin air
.SH DESCRIPTION
.B widget
reads a plan and builds the widget it describes, one part at a time.
.PP
It never   stops early.
.TS
allbox;
l l.
size	colour
small	red
.TE
"""
FORTUNES_A = ("The first fortune\n  has two lines.\n%\nToo short here\n%\n"
              "Shared by both files, word for word.\n%\n")
FORTUNES_B = "Shared by both files,   word for word.\n%\nA fortune only the second file holds.\n"


def whitespace_tokenizer(path: Path) -> Path:
    """One token per whitespace-separated piece, so token counts are known exactly."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel(vocab={"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))
    return path


@pytest.fixture
def inputs(tmp_path) -> tuple[list[Source], Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text(FORTUNES_A)
    (src / "b").write_text(FORTUNES_B)
    with gzip.open(src / "widget.1.gz", "wb") as f:
        f.write(MAN_PAGE.encode())
    sources = [Source("fortunes/a", src / "a", "fortune"), Source("fortunes/b", src / "b", "fortune"),
               Source("man/widget.1", src / "widget.1.gz", "man")]
    return sources, whitespace_tokenizer(tmp_path / "tok.json")


VERSIONS = {"fortunes": "1", "manpages": "2"}


def read_docs(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "corpus.jsonl").read_text().splitlines()]


def test_normalise_collapses_spaces_and_drops_empty_lines():
    assert make_corpus.normalise("  a\t b  \n\n\t\nc   d \n") == "a b\nc d"


def test_fortunes_split_on_percent_lines(tmp_path):
    p = tmp_path / "f"
    p.write_text("one\ntwo\n%\n\n%\nthree % four\n%\n")
    assert make_corpus.fortune_documents(p) == ["one\ntwo", "three % four"]


@needs_groff
def test_man_page_renders_without_header_footer_or_table_rules(inputs):
    sources, _ = inputs
    text = make_corpus.normalise(make_corpus.render_man(sources[2].path))
    lines = text.splitlines()
    assert lines[:2] == ["NAME", "widget - make widgets from thin air"], lines
    assert "widget reads a plan and builds the widget it describes, one part at a time." in lines
    assert "It never stops early." in lines
    assert "small red" in lines  # the table's cells, its borders gone
    assert not any(0x2500 <= ord(c) < 0x2580 for c in text)
    assert "WIDGET(1)" not in text and "test 1.0" not in text  # running header and footer


@needs_groff
def test_build_is_deterministic_dedups_and_counts_tokens(inputs, tmp_path):
    sources, tok = inputs
    m1 = make_corpus.build(sources, tmp_path / "o1", tok, VERSIONS, jobs=2)
    m2 = make_corpus.build(sources, tmp_path / "o2", tok, VERSIONS, jobs=1)
    data = (tmp_path / "o1" / "corpus.jsonl").read_bytes()
    assert data == (tmp_path / "o2" / "corpus.jsonl").read_bytes()
    docs = read_docs(tmp_path / "o1")
    texts = [d["text"] for d in docs]
    # the short fortune is dropped, the shared one kept once (first file), order kept
    assert texts[:3] == ["The first fortune\nhas two lines.", "Shared by both files, word for word.",
                         "A fortune only the second file holds."]
    assert [d["source"] for d in docs] == ["fortunes/a", "fortunes/a", "fortunes/b", "man/widget.1"]
    assert m1["blake3"] == m2["blake3"] == blake3.blake3(data).hexdigest()
    assert m1["bytes"] == len(data) and m1["documents"] == 4
    assert m1["tokens_smollm2"] == sum(len(t.split()) for t in texts)
    manifest = json.loads((tmp_path / "o1" / "corpus.json").read_text())
    assert manifest["blake3"] == m1["blake3"] and manifest["packages"] == VERSIONS
    assert not list((tmp_path / "o1").glob("*.tmp"))


@needs_groff
def test_second_run_is_up_to_date_and_a_damaged_corpus_is_rebuilt(inputs, tmp_path):
    sources, tok = inputs
    out = tmp_path / "o"
    first = make_corpus.build(sources, out, tok, VERSIONS)
    assert not first["skipped"]
    stamp = (out / "corpus.jsonl").stat().st_mtime_ns
    again = make_corpus.build(sources, out, tok, VERSIONS)
    assert again["skipped"] and again["blake3"] == first["blake3"]
    assert (out / "corpus.jsonl").stat().st_mtime_ns == stamp
    # other package versions: rebuilt
    assert not make_corpus.build(sources, out, tok, {**VERSIONS, "manpages": "3"})["skipped"]
    # a damaged file: its BLAKE3 no longer matches, rebuilt to the same bytes
    good = (out / "corpus.jsonl").read_bytes()
    (out / "corpus.jsonl").write_bytes(good[:-10])
    rebuilt = make_corpus.build(sources, out, tok, {**VERSIONS, "manpages": "3"})
    assert not rebuilt["skipped"] and (out / "corpus.jsonl").read_bytes() == good


def test_cli_rejects_a_missing_tokenizer(tmp_path, capsys):
    argv = ["--out", str(tmp_path / "o"), "--tokenizer", str(tmp_path / "no.json")]
    assert make_corpus.main(argv) == 2
    assert "no.json not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(subprocess.run(["dpkg-query", "-W", "fortunes", "manpages"], capture_output=True,
                                   check=False).returncode != 0 if shutil.which("dpkg-query") else True,
                    reason="Debian packages fortunes/manpages not installed (scripts/make_corpus.sh)")
def test_debian_sources_are_sorted_prose_files():
    sources = make_corpus.debian_sources()
    names = [s.name for s in sources]
    fortunes = [s for s in sources if s.kind == "fortune"]
    pages = [s for s in sources if s.kind == "man"]
    assert fortunes and pages and names == [s.name for s in fortunes + pages]
    assert [s.path for s in fortunes] == sorted(s.path for s in fortunes)
    assert not any(s.path.suffix in (".dat", ".u8") or s.path.name in ("art", "ascii-art")
                   for s in fortunes)
    assert not any(s.path.is_symlink() or make_corpus.is_redirect(s.path) for s in pages)
    assert [s for s in make_corpus.debian_sources("fortunes")] == fortunes
    # name.SECTION[.gz], e.g. ld.so.8.gz
    assert all(s.path.name.removesuffix(".gz").rsplit(".", 1)[1][0].isdigit() for s in pages)
