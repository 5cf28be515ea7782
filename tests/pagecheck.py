"""Reading the pages imgsync writes the way a browser would find them (``html.parser``):
their tags, the data files they load, the data, and every link checked against the folder."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit


class Page(HTMLParser):
    """Every start tag with its attributes, the text of each ``<script>``, and all text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.text: list[str] = []
        self._in_script: dict[str, str | None] | None = None
        self._buf: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script, self._buf = dict(attrs), []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._in_script is not None:
            self.scripts.append((self._in_script, "".join(self._buf)))
            self._in_script = None

    def handle_data(self, data: str) -> None:
        if self._in_script is not None:
            self._buf.append(data)
        else:
            self.text.append(data)

    def attr(self, tag: str, name: str) -> list[str]:
        return [a[name] or "" for t, a in self.tags if t == tag and name in a]

    def body(self) -> dict[str, str | None]:
        return next(a for t, a in self.tags if t == "body")


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def is_relative(href: str) -> bool:
    parts = urlsplit(href)
    return not parts.scheme and not parts.netloc and not href.startswith("/")


def resolve(base: Path, href: str) -> Path:
    """The file a relative link points at, from the page's folder (percent-escapes are
    bytes of the name, as a browser reads a file: URL)."""
    assert is_relative(href), href
    return (base / os.fsdecode(unquote_to_bytes(urlsplit(href).path))).resolve()


def gallery_files(index: Path) -> list[Path]:
    """The data files a gallery page loads (named in its ``meta`` script), in order."""
    meta = report_meta(index)
    return [resolve(index.parent, href) for href in meta["files"]]


def gallery_items(index: Path) -> list[dict[str, Any]]:
    """The items of a gallery: the data files its ``meta`` script names, parsed."""
    items: list[dict[str, Any]] = []
    for path in gallery_files(index):
        text = path.read_text(encoding="utf-8")
        head, tail = "IMGSYNC_ITEMS.push(...[\n", "\n]);\n"
        assert text.startswith(head) and text.endswith(tail)
        items.extend(json.loads("[" + text[len(head) : -len(tail)] + "]"))
    return items


def report_files(path: Path) -> list[Path]:
    """The data files a report page names (in its ``meta`` script), in order."""
    page = parse(path)
    meta = json.loads(next(body for attrs, body in page.scripts if attrs.get("id") == "meta"))
    return [resolve(path.parent, href) for href in meta["files"]]


def report_meta(path: Path) -> dict[str, Any]:
    """A report page's ``meta`` script, parsed."""
    page = parse(path)
    meta: dict[str, Any] = json.loads(
        next(body for attrs, body in page.scripts if attrs.get("id") == "meta")
    )
    return meta


def report_index(path: Path) -> Path:
    """The search index file a report page names."""
    return resolve(path.parent, report_meta(path)["index"])


def report_items(path: Path) -> list[dict[str, Any]]:
    """The items of a report page: its data files, parsed."""
    items: list[dict[str, Any]] = []
    for n, file in enumerate(report_files(path)):
        text = file.read_text(encoding="utf-8")
        head, tail = f"IMGSYNC_REPORT({n}, [\n", "\n]);\n"
        assert text.startswith(head) and text.endswith(tail)
        items.extend(json.loads("[" + text[len(head) : -len(tail)] + "]"))
    return items


def assert_offline(path: Path) -> None:
    """Nothing the page loads comes from elsewhere: no absolute script/style/font/image
    source in the markup, no ``@import`` or ``url(`` in its style."""
    page = parse(path)
    for tag, name in (("script", "src"), ("link", "href"), ("img", "src"), ("iframe", "src")):
        for value in page.attr(tag, name):
            assert is_relative(value), (tag, value)
    style = "".join(body for attrs, body in page.scripts) + path.read_text(encoding="utf-8")
    assert "@import" not in style and "@font-face" not in style
    assert "url(http" not in style and "url(//" not in style
