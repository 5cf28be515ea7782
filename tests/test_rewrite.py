"""`imgsync rewrite`: image links in Markdown/HTML replaced from a URL map."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli

from imgsync.urlmap import read_map, write_map

ROWS = [
    ("https://i.gyazo.com/abc.png", "https://www.imgz.io/images/a.png", "1" * 64),
    ("https://i.gyazo.com/abc.png?x=1", "https://www.imgz.io/images/b.png", "2" * 64),
]


def test_map_round_trips_as_csv_and_json(tmp_path: Path) -> None:
    """A map written as CSV or JSON reads back as the same old -> new pairs."""
    for name in ("map.csv", "map.json"):
        write_map(tmp_path / name, ROWS)
        assert read_map(tmp_path / name) == {old: new for old, new, _ in ROWS}


def test_rewrite_replaces_whole_urls_only(tmp_path: Path) -> None:
    """A URL that is a prefix of another (mapped or not) is never half-replaced; other text
    is untouched."""
    write_map(tmp_path / "map.csv", ROWS)
    docs = tmp_path / "docs"
    docs.mkdir()
    md = docs / "post.md"
    md.write_text(
        "![a](https://i.gyazo.com/abc.png)\n![b](https://i.gyazo.com/abc.png?x=1)\nplain\n"
        "[other](https://i.gyazo.com/abc.png/raw) https://i.gyazo.com/abc.png?y=2\n"
    )
    html = docs / "page.html"
    html.write_text('<img src="https://i.gyazo.com/abc.png">')
    other = docs / "data.bin"
    other.write_bytes(b"https://i.gyazo.com/abc.png")

    dry = run_cli("rewrite", "--map", str(tmp_path / "map.csv"), str(docs), "--dry-run")
    assert dry.returncode == 0
    assert "+![a](https://www.imgz.io/images/a.png)" in dry.stdout
    assert md.read_text().startswith("![a](https://i.gyazo.com/abc.png)")  # unchanged

    proc = run_cli("rewrite", "--map", str(tmp_path / "map.csv"), str(docs), "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["links_replaced"] == 3
    assert md.read_text() == (
        "![a](https://www.imgz.io/images/a.png)\n![b](https://www.imgz.io/images/b.png)\nplain\n"
        "[other](https://i.gyazo.com/abc.png/raw) https://i.gyazo.com/abc.png?y=2\n"
    )
    assert html.read_text() == '<img src="https://www.imgz.io/images/a.png">'
    assert other.read_bytes() == b"https://i.gyazo.com/abc.png"  # not a document type


def test_bad_map_is_a_usage_error(tmp_path: Path) -> None:
    """A map that is not valid gives a one-line error and exit 2."""
    bad = tmp_path / "map.json"
    bad.write_text("[1, 2]")
    proc = run_cli("rewrite", "--map", str(bad), str(tmp_path))
    assert proc.returncode == 2
    assert "JSON object" in proc.stderr and "Traceback" not in proc.stderr


# ---- byte-exact rewrites and undo (issue 13) --------------------------------------------

OLD = "https://i.gyazo.com/abc.png"
NEW = "https://www.imgz.io/images/a.png"
OLD_Q = "https://i.gyazo.com/q.png?a=1&b=2"
NEW_Q = "https://www.imgz.io/images/q.png?x=1&y=2"


def _map(tmp_path: Path) -> Path:
    m = tmp_path / "map.json"
    m.write_text(json.dumps({OLD: NEW, OLD_Q: NEW_Q}))
    return m


def _rw(*args: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from imgsync.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["rewrite", *args])
    return code, out.getvalue(), err.getvalue()


def test_crlf_markdown_and_html_change_only_url_bytes_and_undo_restores(tmp_path: Path) -> None:
    """CRLF line endings, a BOM, trailing spaces, Latin-1 bytes and everything that is not
    a mapped URL come back byte for byte; the URL after a period, in a reference
    definition, in BBCode, in src/srcset/href (with &amp;) is replaced; --undo restores."""
    md = tmp_path / "post.md"
    md_before = (
        b"\xef\xbb\xbf# T\xc3\xaftle  \r\n"
        b"![a](" + OLD.encode() + b' "t")\r\n'
        b"see " + OLD.encode() + b".\r\n"
        b"(" + OLD.encode() + b"), and " + OLD.encode() + b"/raw stays\r\n"
        b"[ref]: " + OLD.encode() + b' "title"\r\n'
        b"[img]" + OLD.encode() + b"[/img] [url=" + OLD_Q.encode() + b"]x[/url]\r\n"
        b"caf\xe9 latin-1 byte\r\n"
    )
    md.write_bytes(md_before)
    html = tmp_path / "page.html"
    q_html = OLD_Q.replace("&", "&amp;").encode()
    html_before = (
        b'<img src="'
        + OLD.encode()
        + b'" srcset="'
        + OLD.encode()
        + b" 1x, "
        + q_html
        + b" 2x\">\n<a href='"
        + OLD.encode()
        + b"'>x</a>\t \n"
    )
    html.write_bytes(html_before)
    md.chmod(0o640)

    code, out, _ = _rw("--map", str(_map(tmp_path)), str(md), str(html))
    assert code == 0, out
    md_after = (
        md_before.replace(OLD.encode() + b"/raw", b"KEEP")
        .replace(OLD.encode(), NEW.encode())
        .replace(OLD_Q.encode(), NEW_Q.encode())
        .replace(b"KEEP", OLD.encode() + b"/raw")
    )
    assert md.read_bytes() == md_after
    assert html.read_bytes() == html_before.replace(OLD.encode(), NEW.encode()).replace(
        q_html, NEW_Q.replace("&", "&amp;").encode()
    )
    assert "rewrote 10 links in 2 files" in out
    assert md.stat().st_mode & 0o777 == 0o640

    code, out, _ = _rw("--undo", str(md), str(html))
    assert code == 0
    assert md.read_bytes() == md_before
    assert html.read_bytes() == html_before
    assert "restored 10 links in 2 files" in out
    # nothing left to undo: a second --undo changes nothing
    assert _rw("--undo", str(md))[0] == 0
    assert md.read_bytes() == md_before


def test_utf16_document_keeps_its_encoding(tmp_path: Path) -> None:
    doc = tmp_path / "notes.txt"
    before = ("\ufeff![x](" + OLD + ")\r\nend\r\n").encode("utf-16-le")
    doc.write_bytes(before)
    assert _rw("--map", str(_map(tmp_path)), str(doc))[0] == 0
    assert doc.read_bytes() == ("\ufeff![x](" + NEW + ")\r\nend\r\n").encode("utf-16-le")


def test_undo_refuses_a_file_edited_since(tmp_path: Path) -> None:
    """A file changed after the rewrite is not undone: one message, exit 1, bytes kept."""
    doc = tmp_path / "a.md"
    doc.write_bytes(b"![a](" + OLD.encode() + b")\n")
    assert _rw("--map", str(_map(tmp_path)), str(doc))[0] == 0
    edited = doc.read_bytes() + b"a new line\n"
    doc.write_bytes(edited)
    code, _, err = _rw("--undo", str(doc))
    assert code == 1
    assert "edited since the last rewrite" in err
    assert doc.read_bytes() == edited


def test_dry_run_prints_a_unified_diff_and_changes_nothing(tmp_path: Path) -> None:
    doc = tmp_path / "a.md"
    before = b"intro\r\nsee " + OLD.encode() + b".\r\n"
    doc.write_bytes(before)
    code, out, _ = _rw("--map", str(_map(tmp_path)), str(doc), "--dry-run")
    assert code == 0
    assert f"--- a/{doc}" in out and f"+++ b/{doc}" in out
    assert f"-see {OLD}.\r\n" in out and f"+see {NEW}.\r\n" in out
    assert "would rewrite 1 links in 1 files" in out
    assert doc.read_bytes() == before
    # and --undo of a dry run has nothing to restore
    assert _rw("--undo", str(doc))[1].startswith("restored 0 links")
