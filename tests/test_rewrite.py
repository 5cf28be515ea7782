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
