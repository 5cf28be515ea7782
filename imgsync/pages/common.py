"""What the gallery and the report share: escaping, data embedding, atomic writes, style.

Every text that comes from a host (names, titles, descriptions, URLs, metadata) reaches a
page in one of two ways only:

* through :func:`esc` into the static HTML (``<`` ``>`` ``&`` ``"`` ``'`` become entities), or
* as JSON data (:func:`js_data`, with ``<``, ``>``, ``&`` and the two JavaScript line
  separators written as ``\\uXXXX`` escapes, so no text can close a ``<script>``), which the
  page's script puts into the document with ``textContent`` and attribute setters only --
  never ``innerHTML``.

Links taken from hosts are only made clickable when they are ``http(s)`` (a
``javascript:`` URL stays text); links to files in the folder are relative and
percent-encoded (:func:`file_href`).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import time
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from imgsync import __version__


def esc(text: object) -> str:
    """HTML-escape ``text`` for element content and quoted attributes."""
    return html.escape(str(text), quote=True)


_JS_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


# made once: json.dumps with any option builds a new encoder per call
_JS_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def js_data(value: Any) -> str:
    """``value`` as JSON that is safe inside a ``<script>`` element or a ``.js`` file."""
    try:
        text = _JS_ENCODE(value)
    except ValueError:  # NaN or infinity in a host's metadata: not JSON, so null
        text = json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"))
    for ch, escape in _JS_ESCAPES.items():  # str.replace: far faster than str.translate
        if chr(ch) in text:
            text = text.replace(chr(ch), escape)
    return text


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def web_link(url: object) -> str | None:
    """``url`` when it is an absolute http(s) URL that is safe to make clickable, else None."""
    if not isinstance(url, str) or not url or any(ch.isspace() for ch in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


def file_href(rel: str) -> str:
    """A relative, percent-encoded link to ``rel`` (a ``/``-separated path under the
    page's folder, or starting with ``../``). Never absolute, never a scheme. The name's
    bytes are encoded, so a name that is not valid UTF-8 still links to its file."""
    href = quote(os.fsencode(rel), safe="/")
    return href if rel.startswith("../") else "./" + href


def utf8(text: str) -> bytes:
    """``text`` as UTF-8; a lone surrogate (a name that was not valid UTF-8, an escaped
    one in a host's JSON) is written as its ``\\uXXXX`` escape instead of failing."""
    return text.encode("utf-8", "backslashreplace")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file, flushed, then renamed over it."""
    tmp = path.with_name(f".{path.name}.imgsync-tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", errors="backslashreplace", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def place_name(key: str) -> str:
    """A state key as people read it: ``gyazo:https://api.gyazo.com`` (the account
    fingerprint after ``#`` left out), ``local:/path``."""
    return key.partition("#")[0]


def iso_date(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def human_size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):  # decimal units, as the summary line
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


GENERATOR = f"imgsync {__version__}"


def page_start(title: str, kind: str, count: int) -> str:
    """The start of every page imgsync writes, up to its opened ``<header>`` and heading:
    the document head (offline: the one stylesheet inline) and ``<body data-kind
    data-count>``, which the tests and scripts read."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="{esc(GENERATOR)}">
<title>{esc(title)}</title>
<style>{CSS}</style>
</head>
<body data-kind="{esc(kind)}" data-count="{count}">
<header>
<h1>{esc(title)}</h1>
"""


INDEX_BITS = 1 << 16  # bits per data file in a search index (8 KB, about 11 KB as text)
GRAM = 4  # characters per indexed piece
TOKEN_MARK = "\x01"  # an indexed whole word (a run of a-z0-9) is hashed after this mark


def gram_bit(gram: str, bits: int = INDEX_BITS) -> int:
    """The index bit of a piece of text: the CRC-32 of its UTF-8, as the pages' script
    computes it (``gramBit``), in a bitmap of ``bits``."""
    return zlib.crc32(gram.encode("utf-8", "surrogatepass")) & (bits - 1)


def text_bitmap(texts: Iterable[str], size: int = INDEX_BITS) -> bytes:
    """A data file's search bitmap: every :data:`GRAM`-character piece of ``texts``,
    lower-cased, and every whole word (run of a-z0-9: a word typed between two
    separators, "1249" in "shot-1249-x", must be one of them, not just its pieces), in a
    bitmap of ``size`` bits (a power of two)."""
    bits = bytearray(size // 8)
    seen: set[str] = set()
    words = re.compile(r"[a-z0-9]+").findall
    for value in texts:
        text = value.lower()
        seen.update([text[k : k + GRAM] for k in range(len(text) - GRAM + 1)])
        seen.update(TOKEN_MARK + t for t in words(text))
    crc, mask = zlib.crc32, size - 1
    for gram in seen:
        b = crc(gram.encode("utf-8", "surrogatepass")) & mask
        bits[b >> 3] |= 1 << (b & 7)
    return bytes(bits)


def page_end(script: str) -> str:
    """The end of every page: the shared script and the page's own, then the closing tags."""
    return f"""<script>{JS_COMMON}{script}</script>
</body>
</html>
"""


# One style sheet for both pages: system fonts only (no web fonts, nothing fetched).
CSS = """
:root { color-scheme: light dark; --bg: #f6f6f4; --fg: #1d1d1b; --muted: #6b6b66;
  --card: #fff; --line: #deded8; --accent: #2f6fd0; --bad: #b3261e; --ok: #1e7a34; }
@media (prefers-color-scheme: dark) { :root { --bg: #161615; --fg: #ecece8;
  --muted: #a3a39c; --card: #222220; --line: #3a3a36; --accent: #7aa7ff; --bad: #ff8a80;
  --ok: #7bd88f; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  background: var(--bg); color: var(--fg); }
header { position: sticky; top: 0; z-index: 2; background: var(--bg);
  border-bottom: 1px solid var(--line); padding: 10px 16px; }
h1 { font-size: 18px; margin: 0 0 4px; overflow-wrap: anywhere; }
.sub { color: var(--muted); margin: 0 0 8px; overflow-wrap: anywhere; }
.bar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
.bar input[type=search] { flex: 1 1 260px; padding: 6px 8px; font: inherit;
  border: 1px solid var(--line); border-radius: 6px; background: var(--card); color: var(--fg); }
.bar select, .bar button, .pager button { font: inherit; padding: 5px 10px;
  border: 1px solid var(--line); border-radius: 6px; background: var(--card); color: var(--fg);
  cursor: pointer; }
.pager { display: flex; gap: 6px; align-items: center; justify-content: center; padding: 12px; }
.pager button[disabled] { opacity: .4; cursor: default; }
main { padding: 12px 16px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(180px, 1fr)); gap: 12px; }
.card { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  overflow: hidden; cursor: pointer; display: flex; flex-direction: column; }
.card:focus { outline: 2px solid var(--accent); }
.thumb { display: block; width: 100%; aspect-ratio: 4 / 3; object-fit: contain;
  background: repeating-conic-gradient(#8881 0 25%, transparent 0 50%) 0 0 / 16px 16px; }
.card .cap { padding: 6px 8px; }
.card .t { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.card .m { color: var(--muted); font-size: 12px; }
.broken .thumb { visibility: hidden; }
.broken .cap::after { content: "image file missing"; color: var(--bad); font-size: 12px; }
.empty { color: var(--muted); text-align: center; padding: 40px; }
dialog { max-width: min(1100px, 96vw); width: 96vw; border: 1px solid var(--line);
  border-radius: 10px; background: var(--card); color: var(--fg); padding: 0; }
dialog::backdrop { background: #0009; }
.detail { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 16px;
  padding: 16px; }
@media (max-width: 760px) { .detail { grid-template-columns: 1fr; } }
.detail img { max-width: 100%; max-height: 75vh; display: block; margin: auto; }
.detail h2 { font-size: 16px; margin: 0 0 8px; overflow-wrap: anywhere; }
.kv { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: 4px 12px;
  margin: 0; }
.kv dt { color: var(--muted); }
.kv dd { margin: 0; overflow-wrap: anywhere; white-space: pre-wrap; }
.close { float: right; margin: 8px; }
a { color: var(--accent); }
table.totals { border-collapse: collapse; margin: 4px 0 8px; }
table.totals td, table.totals th { border: 1px solid var(--line); padding: 3px 10px;
  text-align: right; }
.ok { color: var(--ok); } .bad { color: var(--bad); }
.rows { display: flex; flex-direction: column; gap: 8px; }
.row { display: grid; grid-template-columns: 120px minmax(0, 1fr); gap: 12px;
  background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px; }
.row .thumb { aspect-ratio: 1; border-radius: 4px; }
.row .urls { font-family: ui-monospace, monospace; font-size: 12px; overflow-wrap: anywhere; }
.tag { display: inline-block; padding: 0 6px; border-radius: 4px; font-size: 12px;
  border: 1px solid currentColor; margin-right: 6px; }
.st-copied { color: var(--ok); } .st-failed { color: var(--bad); }
.st-pending { color: var(--muted); }
"""

# Helpers both page scripts use. Host text only ever goes through textContent/setAttribute.
JS_COMMON = r"""
"use strict";
function el(tag, attrs, kids) {
  const node = document.createElement(tag);
  if (attrs) for (const k in attrs) {
    const v = attrs[k];
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = String(v);
    else if (k === "cls") node.className = v;
    else node.setAttribute(k, String(v));
  }
  if (kids) for (const kid of kids) if (kid) node.append(kid);
  return node;
}
function fmtSize(n) {
  if (n === null || n === undefined) return "";
  const u = ["B", "KB", "MB", "GB", "TB"]; let i = 0; let s = n;
  while (s >= 1000 && i < u.length - 1) { s /= 1000; i++; }
  return i ? s.toFixed(1) + " " + u[i] : s + " B";
}
// search indexes (see text_bitmap): base64 bitmaps, the bits of what a filter types, and
// whether a data file's bitmap can hold an item that matches
function decodeMaps(maps) {
  return maps.map((b) => {
    if (b === null) return null;
    const raw = atob(b), out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  });
}
let crcTable = null;
function gramBit(cps, bits) {  // the CRC-32 of the piece's UTF-8, as imgsync wrote the index
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (const byte of new TextEncoder().encode(cps.join("")))
    c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8);
  return ((c ^ 0xffffffff) >>> 0) & (bits - 1);
}
function wordBits(words, bits, gram) {
  const out = [];
  for (const w of words) {
    const cps = Array.from(w);
    for (let i = 0; i + gram <= cps.length; i++) out.push(gramBit(cps.slice(i, i + gram), bits));
    // a run of a-z0-9 with a separator on both sides is a whole word of the item
    for (const run of w.split(/[^a-z0-9]+/).slice(1, -1))
      if (run) out.push(gramBit(Array.from("\x01" + run), bits));
  }
  return out;
}
// a page's search index: its script (meta.index) calls window[name](bits, gram, maps);
// load(then) fetches it once, then calls then (a missing script drops meta.index, so every
// data file is loaded); .now is the decoded index, null until it came
function searchIndex(meta, name) {
  const idx = {now: null, load: null};
  let waiting = null;
  window[name] = function (bits, gram, maps) {
    idx.now = {bits: bits, gram: gram, maps: decodeMaps(maps)};
  };
  idx.load = function (then) {
    if (idx.now || !meta.index) { then(); return; }
    if (waiting) { waiting.push(then); return; }
    waiting = [then];
    const s = document.createElement("script");
    s.src = meta.index;
    s.onload = s.onerror = () => { const calls = waiting; waiting = null;
                                   if (!idx.now) meta.index = null;  // missing: load them all
                                   calls.forEach((f) => f()); };
    document.head.append(s);
  };
  return idx;
}
function mayHold(map, wanted) { return !map || wanted.every((b) => map[b >> 3] & (1 << (b & 7))); }
function indexable(words) {  // shorter words cannot be looked up: every file is loaded
  return words.some((w) => Array.from(w).length >= 4 || /[^a-z0-9][a-z0-9]+[^a-z0-9]/.test(w));
}
function fmtDate(t) {
  if (t === null || t === undefined) return "";
  return new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}
function webLink(u) {
  if (typeof u !== "string") return null;
  try { const p = new URL(u); return (p.protocol === "http:" || p.protocol === "https:") ? u : null; }
  catch (e) { return null; }
}
function linkOrText(u) {
  const ok = webLink(u);
  return ok ? el("a", {href: ok, text: u, rel: "noopener noreferrer", target: "_blank"})
            : document.createTextNode(u === null || u === undefined ? "" : String(u));
}
function unhref(h) {
  const bare = String(h).replace(/^\.\//, "");
  try { return decodeURIComponent(bare); } catch (e) { return bare; }
}
function kvList(pairs) {
  const dl = el("dl", {cls: "kv"});
  for (const [k, v] of pairs) {
    if (v === null || v === undefined || v === "" || (Array.isArray(v) && !v.length)) continue;
    dl.append(el("dt", {text: k}));
    const dd = el("dd");
    if (v instanceof Node) dd.append(v);
    else if (typeof v === "object") dd.textContent = JSON.stringify(v, null, 1);
    else dd.textContent = String(v);
    dl.append(dd);
  }
  return dl;
}
function readHash() {
  const out = {}; const h = location.hash.replace(/^#/, "");
  for (const part of h.split("&")) {
    if (!part) continue; const i = part.indexOf("=");
    try { out[decodeURIComponent(i < 0 ? part : part.slice(0, i))] =
            i < 0 ? "" : decodeURIComponent(part.slice(i + 1)); } catch (e) {}
  }
  return out;
}
function writeHash(state) {
  const parts = [];
  for (const k in state) if (state[k] !== "" && state[k] !== null && state[k] !== undefined)
    parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(state[k]));
  try { history.replaceState(null, "", parts.length ? "#" + parts.join("&") : location.pathname); }
  catch (e) { /* some browsers refuse it on file:// pages; the page works without */ }
}
function pager(box, page, pages, go) {
  box.replaceChildren(
    el("button", {type: "button", text: "« first", disabled: page <= 1 ? "" : null}),
    el("button", {type: "button", text: "‹ prev", disabled: page <= 1 ? "" : null}),
    el("span", {text: "page " + page + " of " + pages}),
    el("button", {type: "button", text: "next ›", disabled: page >= pages ? "" : null}),
    el("button", {type: "button", text: "last »", disabled: page >= pages ? "" : null}));
  const b = box.querySelectorAll("button");
  b[0].onclick = () => go(1); b[1].onclick = () => go(page - 1);
  b[2].onclick = () => go(page + 1); b[3].onclick = () => go(pages);
}
"""
