"""The backup folder's ``index.html``: a static, offline gallery of everything backed up there.

Layout (all relative to the backup folder, so the folder can be moved or copied)::

    index.html                     the page: style and script inline, no server, no CDN
    .imgsync-gallery/c-<hash>.js   the items' data, up to CHUNK items per file
    .imgsync-gallery/i-<hash>.js   the search index: per data file, a bitmap of its text
    .imgsync-gallery/manifest.json which item is in which data file (for the next update)

The thumbnails are the backed-up images themselves, loaded lazily by the browser, and
only one page of them (60-240) exists in the document at a time, so 20,000 images open
as fast as 120 do. The page loads its data files itself: all of them to show the folder
in order (sorting needs every item), but a filter given in the address
(``index.html#q=words``, a link someone shared) first loads the search index (each data
file's bitmap of the hashed 4-character pieces and whole words of the text the filter
searches, as the migration report has) and then only the data files that can hold a
match; the rest are loaded when the filter is cleared. No thumbnails are generated: that would need an image library with
native code (Pillow) as a dependency, decoding every image once (minutes for a large
first backup on a small machine), and a second copy of the library on disk; browsers
already scale images well, and the files are local.

Updates are incremental and atomic: an item's data file is rewritten only when one of
its items changed, new items go into the last data file or new ones, every file is
written to a temp name and renamed, ``index.html`` is replaced last, and data files no
longer referenced are removed after that. A run that changed nothing writes nothing.
One update at a time per folder (a lock file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imgsync.pages.common as pages_common
from imgsync.localfs import display as printable_name
from imgsync.localfs import key_path, stage
from imgsync.models import is_image_name
from imgsync.pages.common import (
    GENERATOR,
    GRAM,
    esc,
    file_href,
    human_size,
    iso_date,
    js_data,
    page_end,
    page_start,
    place_name,
    text_bitmap,
    utf8,
    write_atomic,
)
from imgsync.state import reports
from imgsync.state.reader import StateReader

DATA_DIR = ".imgsync-gallery"
INDEX = "index.html"
CHUNK = 1000
MARKER = b'<meta name="generator" content="imgsync'
_MANIFEST_VERSION = 3
INDEX_PREFIX = "i-"
INDEX_FROM = 4  # data files (of CHUNK items) from which the page gets a search index
# bits per data file in the gallery's index (32 KB, 43 KB as text): a data file's 1,000
# items hold ~175,000 distinct pieces (checksums and ids are random text), which would
# fill the report's 65,536 bits and let most words through; here about half the bits are set
GALLERY_INDEX_BITS = 1 << 18
# a date the page shows (JavaScript's toISOString) the same way Python does: years 1970-9999
_DATE_RANGE = (0.0, 253402300799.0)


@dataclass
class GalleryResult:
    path: Path
    items: int = 0
    bytes: int = 0
    files_written: list[str] = field(default_factory=list)
    files_removed: list[str] = field(default_factory=list)


@dataclass
class _Chunk:
    keys: list[str]
    file: str | None  # None: (re)write it


_key_path = key_path  # a state key as a relative path
display = printable_name  # a relative path as people read it


def find_sidecar(
    root: Path, rel: str, sha256: str, present: Container[str] | None = None
) -> str | None:
    """The sidecar of the file ``rel`` if it is there and is that item's (its recorded
    checksum matches), as a path relative to ``root``; else None. It is ``<file>.json``
    unless that name held another file when the backup was made (see
    :func:`imgsync.localfs.sidecar_names`). ``present``: the names in ``rel``'s folder,
    when known (then a missing name costs no system call)."""
    if present is None:
        return stage.find_sidecar(root, rel, sha256)
    is_sidecar_of = stage.is_sidecar_of
    for name in stage.sidecar_names(rel):
        if name.rpartition("/")[2] not in present:
            return None
        if is_sidecar_of(os.path.join(root, name), sha256):
            return name
    return None


class _Listings:
    """The names in each folder of the backup, listed once per update (one ``listdir``
    instead of a ``stat`` per item and per sidecar name tried)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self._names: dict[str, frozenset[str]] = {}

    def names(self, folder: str) -> frozenset[str]:
        got = self._names.get(folder)
        if got is None:
            try:
                got = frozenset(os.listdir(os.path.join(self.root, folder)))
            except OSError:  # missing, not a folder, unreadable: nothing there
                got = frozenset()
            self._names[folder] = got
        return got


def _clean(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if v not in (None, "", [], {})}


def source_of(places: list[reports.Place], prefer: str | None) -> reports.Place | None:
    """Where a backed-up image came from: the run's source if it has it, else the latest."""
    if not places:
        return None
    chosen = [p for p in places if p.remote == prefer] or places
    return chosen[-1]


def build_record(
    item: reports.StoredItem, src: reports.Place | None, sidecar: str | None
) -> dict[str, Any]:
    """One item's data for the page (short keys: 20,000 of them are loaded at once)."""
    rel = _key_path(item.remote_id)
    meta = _clean(item.meta) or (_clean(src.meta) if src else {})
    created = meta.get("created_at")
    rec: dict[str, Any] = {
        "f": file_href(rel),
        "n": display(rel),
        "t": meta.get("title") or None,
        "d": created if isinstance(created, int | float) else None,
        "b": round(item.updated, 3),
        "s": item.size,
        "h": item.sha256,
    }
    if not is_image_name(rel):
        rec["x"] = 1  # not an image: no thumbnail
    if src is not None:
        rec["u"] = src.url
        if src.page_url:
            rec["p"] = src.page_url
        rec["r"] = place_name(src.remote)
        rec["i"] = src.remote_id
    if sidecar is not None:
        rec["j"] = file_href(sidecar)
    rest = {k: v for k, v in meta.items() if k not in ("title", "created_at")}
    if rest:  # the title and the date are shown from "t" and "d"
        rec["m"] = rest
    return {k: v for k, v in rec.items() if v is not None}


def searched(rec: dict[str, Any]) -> list[str] | None:
    """The texts the page's filter searches in an item (its ``_q``: title, name, URLs,
    checksum, date as shown, description, source URL, app, tags), or None when one of them
    is not plain text the page would turn into the same string (a number, a date out of
    range, a lone surrogate): that item's data file is then always loaded for a filter."""
    meta = rec.get("m") or {}
    texts: list[Any] = [rec.get(k) for k in ("t", "n", "u", "p", "h")]
    when = rec.get("d")
    if when is not None:
        if not isinstance(when, int | float) or not _DATE_RANGE[0] <= when <= _DATE_RANGE[1]:
            return None
        texts.append(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when)))
    texts += [meta.get("description"), meta.get("source_url"), meta.get("app")]
    tags = meta.get("tags")
    if tags:
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return None
        texts.append(" ".join(tags))
    out: list[str] = []
    for text in texts:
        if text is None or text == "":
            continue
        if not isinstance(text, str):
            return None
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return None
        out.append(text)
    return out


def chunk_bitmap(recs: list[dict[str, Any]]) -> str | None:
    """One data file's search bitmap (base64), or None: load it for every filter."""
    import base64

    texts: list[str] = []
    for rec in recs:
        got = searched(rec)
        if got is None:
            return None
        texts += got
    return base64.b64encode(text_bitmap(texts, GALLERY_INDEX_BITS)).decode("ascii")


def _check_ours(root: Path, data_dir: Path) -> None:
    """Refuse (``OSError``) to write over an ``index.html`` imgsync did not write (a file
    the user keeps there, or one backed up from a host) or through a symlink."""
    import errno

    index = root / INDEX
    if data_dir.is_symlink() or index.is_symlink():
        raise OSError(errno.EEXIST, f"{DATA_DIR} or {INDEX} is a symlink; not written through")
    if index.exists():
        try:
            with open(index, "rb") as fh:
                head = fh.read(2048)
        except OSError:
            head = b""
        if MARKER not in head:
            raise OSError(
                errno.EEXIST,
                f"{index} is not a gallery imgsync wrote; left as it is "
                "(move it away, or back up with --no-gallery)",
            )


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    import fcntl

    with open(data_dir / "lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _load_manifest(
    data_dir: Path,
) -> tuple[list[_Chunk], dict[str, list[Any]], Any, dict[str, Any]]:
    try:
        data = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))
        if data.get("version") != _MANIFEST_VERSION:
            return [], {}, None, {}
        chunks = [_Chunk([str(k) for k in c["keys"]], str(c["file"])) for c in data["chunks"]]
        items = {str(k): list(v) for k, v in data["items"].items()}
        # a data file's search bitmap (None: load it for every filter; False: none made)
        maps = {str(c["file"]): c.get("map", False) for c in data["chunks"]}
        if isinstance(data.get("index"), str):  # the search index's file: checked as intact
            chunks.append(_Chunk([], str(data["index"])))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [], {}, None, {}  # derived data: rebuilt from state
    return chunks, items, data.get("mark"), maps


def _mark(
    db: StateReader, root: Path, dest_key: str, source: str | None, index_from: int
) -> list[Any]:
    """What the page depends on, cheaply: the code that draws it, the state it shows, and
    the folder (a file deleted by hand changes its mtime)."""
    return [
        _TEMPLATE,
        source,
        index_from,
        *db.pages_generation(dest_key),
        root.stat().st_mtime_ns,
    ]


def _intact(root: Path, data_dir: Path, chunks: list[_Chunk]) -> bool:
    return (root / INDEX).is_file() and all((data_dir / (c.file or "")).is_file() for c in chunks)


def _chunk_text(texts: list[str]) -> str:
    return "IMGSYNC_ITEMS.push(...[\n" + ",\n".join(texts) + "\n]);\n"


def update_gallery(
    db: StateReader,
    root: Path,
    dest_key: str,
    *,
    source: str | None = None,
    chunk_size: int = CHUNK,
    index_from: int = INDEX_FROM,
) -> GalleryResult:
    """Write or update ``root/index.html`` for everything state records at ``dest_key``
    (with a search index when it has ``index_from`` data files or more).

    Raises ``OSError`` when the folder cannot be written.
    """
    data_dir = root / DATA_DIR
    _check_ours(root, data_dir)
    data_dir.mkdir(exist_ok=True)
    result = GalleryResult(root / INDEX)
    with _locked(data_dir):
        for stale in root.glob(f".{INDEX}.imgsync-tmp-*"):  # a writer killed mid-write
            with contextlib.suppress(OSError):
                stale.unlink()
        _update(db, root, data_dir, dest_key, source, chunk_size, index_from, result)
    return result


def _update(
    db: StateReader,
    root: Path,
    data_dir: Path,
    dest_key: str,
    source: str | None,
    chunk_size: int,
    index_from: int,
    result: GalleryResult,
) -> None:
    old_chunks, old_items, old_mark, old_maps = _load_manifest(data_dir)
    if old_mark == _mark(db, root, dest_key, source, index_from) and _intact(
        root, data_dir, old_chunks
    ):
        result.items = len(old_items)
        return  # nothing changed since the last update: not a byte to write
    old_chunks = [ch for ch in old_chunks if ch.keys]  # (the index's entry)
    if not (isinstance(old_mark, list) and old_mark and old_mark[0] == _TEMPLATE):
        old_chunks, old_items = [], {}  # drawn by other code: draw every item again
    stored = db.stored_items(dest_key)
    places = db.other_places(dest_key)

    # key -> [stamp, sidecar, digest, date, source]: an item whose stamp is unchanged is
    # not drawn again (its data file stays as it is unless a neighbour changed)
    entries: dict[str, list[Any]] = {}
    stored_by_key: dict[str, reports.StoredItem] = {}
    sources: dict[str, int] = {}
    texts: dict[str, str] = {}  # records drawn in this update, as page data
    recs: dict[str, dict[str, Any]] = {}  # ... and as records (for the search index)
    listings = _Listings(root)
    for item in stored:
        key = item.remote_id
        rel = _key_path(key)
        folder, _, base = rel.rpartition("/")
        present = listings.names(folder)
        if base not in present:
            continue  # deleted by hand since; the next backup fetches it again
        src = source_of(places.get(item.sha256, []), source)
        there = f"{src.remote}:{src.remote_id}:{src.updated}" if src else ""
        stamp = f"{item.sha256}:{item.updated}:{there}"
        prev = old_items.get(key)
        if prev and len(prev) == 5 and prev[0] == stamp:
            entries[key] = prev
        else:
            sidecar = find_sidecar(root, rel, item.sha256, present)
            rec = build_record(item, src, sidecar)
            js = js_data(rec)
            digest = hashlib.sha256(utf8(js)).hexdigest()[:20]
            texts[key] = js
            recs[key] = rec
            entries[key] = [stamp, sidecar, digest, rec.get("d"), rec.get("r")]
        stored_by_key[key] = item
        result.items += 1
        result.bytes += item.size or 0
        if entries[key][4]:
            sources[entries[key][4]] = sources.get(entries[key][4], 0) + 1

    def rec_of(key: str) -> dict[str, Any]:
        if key not in recs:  # unchanged, but in a data file that is rewritten
            item = stored_by_key[key]
            src = source_of(places.get(item.sha256, []), source)
            recs[key] = build_record(item, src, entries[key][1])
        return recs[key]

    def text_of(key: str) -> str:
        if key not in texts:
            texts[key] = js_data(rec_of(key))
        return texts[key]

    chunks: list[_Chunk] = []
    placed: set[str] = set()
    for ch in old_chunks:
        keys = [k for k in ch.keys if k in entries and k not in placed]
        if not keys:
            continue
        dirty = (
            len(keys) != len(ch.keys)
            or any((old_items.get(k) or [None] * 5)[2] != entries[k][2] for k in keys)
            or not (data_dir / (ch.file or "")).is_file()
        )
        chunks.append(_Chunk(keys, None if dirty else ch.file))
        placed.update(keys)
    fresh = [k for k in entries if k not in placed]
    if fresh and chunks and len(chunks[-1].keys) < chunk_size:
        room = chunk_size - len(chunks[-1].keys)
        chunks[-1] = _Chunk(chunks[-1].keys + fresh[:room], None)
        fresh = fresh[room:]
    step = chunk_size
    chunks.extend(_Chunk(fresh[i : i + step], None) for i in range(0, len(fresh), step))

    for ch in chunks:
        if ch.file is not None:
            continue
        text = _chunk_text([text_of(k) for k in ch.keys])
        name = f"c-{hashlib.sha256(utf8(text)).hexdigest()[:16]}.js"
        ch.file = name
        target = data_dir / name
        if not target.is_file():  # the same content under its hash name is already there
            write_atomic(target, text)
            result.files_written.append(f"{DATA_DIR}/{name}")

    files = [ch.file for ch in chunks if ch.file]
    # the search index, from index_from data files on (a few files load at once anyway,
    # and the bitmaps cost about as much CPU as drawing the items): each data file's
    # bitmap is computed when it is written, and kept in the manifest for later updates
    maps: dict[str, str | None] = {}
    index_name: str | None = None
    if len(files) >= index_from:
        for ch in chunks:
            kept = old_maps.get(ch.file or "", False)
            maps[ch.file or ""] = (
                kept
                if kept is None or isinstance(kept, str)
                else chunk_bitmap([rec_of(k) for k in ch.keys])
            )
        index_text = (
            f"IMGSYNC_GALLERY_INDEX({GALLERY_INDEX_BITS}, {GRAM}, "
            f"{js_data([maps[f] for f in files])});\n"
        )
        index_name = f"{INDEX_PREFIX}{hashlib.sha256(utf8(index_text)).hexdigest()[:16]}.js"
        if not (data_dir / index_name).is_file():
            write_atomic(data_dir / index_name, index_text)
            result.files_written.append(f"{DATA_DIR}/{index_name}")
    dates = [e[3] for e in entries.values() if isinstance(e[3], int | float)]
    page = render_index(root, files, result.items, result.bytes, dates, sources, index_name)
    index = root / INDEX
    if _read(index) != page:
        write_atomic(index, page)
        result.files_written.append(INDEX)
    manifest = json.dumps(
        {
            "version": _MANIFEST_VERSION,
            "mark": _mark(db, root, dest_key, source, index_from),
            "index": index_name,
            "chunks": [
                {
                    "file": ch.file,
                    "keys": ch.keys,
                    **({"map": maps[ch.file]} if ch.file in maps else {}),
                }
                for ch in chunks
            ],
            "items": entries,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    if _read(data_dir / "manifest.json") != manifest:
        write_atomic(data_dir / "manifest.json", manifest)
    keep = {*files, index_name}
    for name in os.listdir(data_dir):
        ours = name.startswith(("c-", INDEX_PREFIX)) and name.endswith(".js")
        stale_chunk = ours and name not in keep
        if stale_chunk or ".imgsync-tmp-" in name:
            with contextlib.suppress(OSError):
                os.unlink(data_dir / name)
                result.files_removed.append(f"{DATA_DIR}/{name}")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def render_index(
    root: Path,
    chunk_files: list[str],
    count: int,
    total: int,
    dates: list[float],
    sources: dict[str, int],
    index: str | None = None,
) -> str:
    """The page itself. Deterministic for the same data, so an unchanged folder is not
    rewritten. ``index``: the search index's file name in the data folder."""
    newest = max(dates) if dates else None
    oldest = min(dates) if dates else None
    title = f"Backup: {root.name or root}"
    src_text = ", ".join(f"{name} ({n})" for name, n in sorted(sources.items())) or "-"
    span = f"{iso_date(oldest)[:10]} … {iso_date(newest)[:10]}" if newest is not None else ""
    meta = {
        "count": count,
        "files": [file_href(f"{DATA_DIR}/{name}") for name in chunk_files],
        "index": file_href(f"{DATA_DIR}/{index}") if index else None,
    }
    return (
        page_start(title, "gallery", count)
        + f"""<p class="sub" id="summary">{count} files · {esc(human_size(total))} · from {esc(src_text)}
{(" · " + esc(span)) if span else ""}</p>
<div class="bar">
<input type="search" id="q" placeholder="Filter: title, name, URL, date, tag, description…"
 aria-label="Filter">
<select id="sort" aria-label="Order"><option value="new">newest first</option>
<option value="old">oldest first</option><option value="big">largest first</option>
<option value="name">by name</option></select>
<select id="per" aria-label="Per page"><option>60</option><option selected>120</option>
<option>240</option></select>
<span id="shown" class="sub"></span>
</div>
</header>
<main>
<noscript><p class="empty">This page needs JavaScript to list the images; they are the
files in this folder, each with a .json sidecar.</p></noscript>
<div class="grid" id="grid"></div>
<nav class="pager" id="pager"></nav>
</main>
<dialog id="detail"></dialog>
<script id="meta" type="application/json">{js_data(meta)}</script>
"""
        + page_end(JS_GALLERY)
    )


JS_GALLERY = r"""
(function () {
  const meta = JSON.parse(document.getElementById("meta").textContent);
  const files = meta.files, total = meta.count, items = [];
  const done = new Array(files.length).fill(false), waiting = {};
  let missing = 0, fetched = 0;
  const when = (it) => (it.d !== undefined ? it.d : it.b);
  // what a data file calls: IMGSYNC_ITEMS.push(...[items])
  window.IMGSYNC_ITEMS = {push: function () {
    for (let i = 0; i < arguments.length; i++) {
      const it = arguments[i], m = it.m || {};
      it._q = [it.t, it.n, it.u, it.p, it.h, fmtDate(it.d), m.description, m.source_url,
               m.app, (m.tags || []).join(" ")].filter(Boolean).join("\n").toLowerCase();
      items.push(it);
    }
  }};
  // the search index: per data file a bitmap of the hashed pieces of its text
  const search = searchIndex(meta, "IMGSYNC_GALLERY_INDEX");
  // load the data files numbered ``ids`` (each once), then call ``then``
  function load(ids, then) {
    let left = 1;
    const one = () => { if (--left === 0) then(); };
    for (const n of ids) {
      if (done[n]) continue;
      left++;
      if (waiting[n]) { waiting[n].push(one); continue; }
      waiting[n] = [one];
      const s = document.createElement("script");
      s.src = files[n];
      s.onload = s.onerror = (e) => {
        fetched++; document.body.dataset.files = String(fetched);
        if (e.type === "error") missing++;
        done[n] = true;
        const calls = waiting[n]; delete waiting[n]; calls.forEach((f) => f());
      };
      document.head.append(s);
    }
    one();
  }
  const every = () => files.map((_f, n) => n);
  function candidates(words) {  // the data files that can hold an item matching every word
    const index = search.now;
    if (!index) return every();
    const wanted = wordBits(words, index.bits, index.gram);
    return every().filter((n) => mayHold(index.maps[n], wanted));
  }
  const orders = {
    new: (a, b) => when(b) - when(a) || (a.n < b.n ? -1 : 1),
    old: (a, b) => when(a) - when(b) || (a.n < b.n ? -1 : 1),
    big: (a, b) => (b.s || 0) - (a.s || 0),
    name: (a, b) => (a.n < b.n ? -1 : a.n > b.n ? 1 : 0),
  };
  const $ = (id) => document.getElementById(id);
  const grid = $("grid"), pagerBox = $("pager"), shown = $("shown"), dlg = $("detail");
  const q = $("q"), sortSel = $("sort"), perSel = $("per");
  const st = readHash();
  q.value = st.q || ""; if (orders[st.sort]) sortSel.value = st.sort;
  if (["60", "120", "240"].includes(st.per)) perSel.value = st.per;
  let page = Math.max(1, parseInt(st.page || "1", 10) || 1);
  let sorted = null, sortedBy = null, sortedLen = -1, view = [], broken = 0, loaded = 0;
  let ticket = 0;
  let pending = (st.item || "").toLowerCase(), openItem = "";
  document.body.dataset.broken = "0"; document.body.dataset.loaded = "0";
  document.body.dataset.files = "0";
  function filtered() {
    if (sortedBy !== sortSel.value || sortedLen !== items.length) {
      sorted = items.slice().sort(orders[sortSel.value]);
      sortedBy = sortSel.value; sortedLen = items.length;
    }
    const words = q.value.toLowerCase().split(/\s+/).filter(Boolean);
    return words.length ? sorted.filter((it) => words.every((w) => it._q.includes(w))) : sorted;
  }
  function card(it, idx) {
    const c = el("figure", {cls: "card", tabindex: "0"});
    if (it.x) c.append(el("div", {cls: "thumb", text: it.n.split(".").pop()}));
    else {
      const img = el("img", {cls: "thumb", src: it.f, alt: it.t || it.n,
                             loading: "lazy", decoding: "async"});
      img.addEventListener("error", () => { c.classList.add("broken"); broken++;
                                            document.body.dataset.broken = String(broken); });
      img.addEventListener("load", () => { loaded++;
                                           document.body.dataset.loaded = String(loaded); });
      c.append(img);
    }
    c.append(el("figcaption", {cls: "cap"}, [
      el("div", {cls: "t", text: it.t || it.n, title: it.t || it.n}),
      el("div", {cls: "m", text: [fmtDate(it.d), fmtSize(it.s)].filter(Boolean).join(" · ")})]));
    c.addEventListener("click", () => openDetail(idx));
    c.addEventListener("keydown", (e) => { if (e.key === "Enter") openDetail(idx); });
    return c;
  }
  function render() {  // the data files the view needs first: all, or a filter's candidates
    const mine = ++ticket;
    const words = q.value.toLowerCase().split(/\s+/).filter(Boolean);
    const draw = (ids) => load(ids, () => { if (mine === ticket) show(); });
    if (done.every(Boolean)) { show(); return; }
    shown.textContent = "loading…";
    if (words.length && indexable(words)) search.load(() => { if (mine === ticket)
                                                             draw(candidates(words)); });
    else draw(every());
  }
  function show() {
    view = filtered();
    const per = parseInt(perSel.value, 10);
    const pages = Math.max(1, Math.ceil(view.length / per));
    const wanted = pending ? view.findIndex((it) => it.h.startsWith(pending)) : -1;
    pending = "";
    if (wanted >= 0) page = Math.floor(wanted / per) + 1;
    page = Math.min(Math.max(1, page), pages);
    const start = (page - 1) * per, slice = view.slice(start, start + per);
    grid.replaceChildren(...slice.map((it, i) => card(it, start + i)));
    if (!slice.length) grid.append(el("p", {cls: "empty", text: total ?
        "Nothing matches the filter." : "Nothing backed up yet."}));
    shown.textContent = (view.length ? (start + 1) + "–" + (start + slice.length) : "0") +
        " of " + view.length + (view.length !== total ? " (filtered from " +
        total + ")" : "") + (missing ? " · " + missing +
        " data file(s) missing: run imgsync backup again" : "");
    pager(pagerBox, page, pages, (p) => { page = p; render(); scrollTo(0, 0); });
    document.body.dataset.shown = String(slice.length);
    saveHash();
    if (wanted >= 0) openDetail(wanted);
  }
  function saveHash() {
    writeHash({q: q.value, sort: sortSel.value === "new" ? "" : sortSel.value,
               per: perSel.value === "120" ? "" : perSel.value, page: page > 1 ? page : "",
               item: openItem});
  }
  function openDetail(idx) {
    const it = view[idx]; if (!it) return;
    const m = Object.assign({}, it.m || {});
    const side = it.j ? el("a", {href: it.j, text: unhref(it.j)}) : null;
    const close = el("button", {cls: "close", type: "button", text: "close ✕"});
    close.onclick = () => dlg.close();
    const nav = el("div", {cls: "bar"}, [
      el("button", {type: "button", text: "‹ previous", disabled: idx <= 0 ? "" : null}),
      el("button", {type: "button", text: "next ›", disabled: idx >= view.length - 1 ? "" : null})]);
    nav.children[0].onclick = () => openDetail(idx - 1);
    nav.children[1].onclick = () => openDetail(idx + 1);
    const pic = it.x ? el("p", {cls: "empty", text: "not an image"}) :
        el("a", {href: it.f, target: "_blank"}, [el("img", {src: it.f, alt: it.t || it.n})]);
    dlg.replaceChildren(close, el("div", {cls: "detail"}, [
      el("div", null, [pic]),
      el("div", null, [el("h2", {text: it.t || it.n}), kvList([
        ["file", el("a", {href: it.f, text: it.n})],
        ["date", fmtDate(it.d)], ["backed up", fmtDate(it.b)], ["size", fmtSize(it.s)],
        ["original", it.u ? linkOrText(it.u) : null], ["page", it.p ? linkOrText(it.p) : null],
        ["from", it.r], ["id there", it.i], ["sha256", it.h], ["sidecar", side],
        ...Object.keys(m).sort().map((k) => ["metadata: " + k, m[k]])]), nav])]));
    dlg.dataset.index = String(idx);
    openItem = it.h.slice(0, 16); saveHash();
    if (!dlg.open) dlg.showModal();
  }
  dlg.addEventListener("close", () => { openItem = ""; saveHash(); });
  dlg.addEventListener("keydown", (e) => {
    const idx = parseInt(dlg.dataset.index || "0", 10);
    if (e.key === "ArrowRight") openDetail(Math.min(idx + 1, view.length - 1));
    if (e.key === "ArrowLeft") openDetail(Math.max(idx - 1, 0));
  });
  dlg.addEventListener("click", (e) => { if (e.target === dlg) dlg.close(); });
  let timer = null;
  q.addEventListener("input", () => { clearTimeout(timer);
                                      timer = setTimeout(() => { page = 1; render(); }, 120); });
  sortSel.onchange = () => { page = 1; render(); };
  perSel.onchange = () => { page = 1; render(); };
  render();
})();
"""


def _code_hash() -> str:
    """Changes with the code that draws the page: a new imgsync redraws it."""
    digest = hashlib.sha256()
    for mod in (__file__, pages_common.__file__):
        with contextlib.suppress(OSError):
            digest.update(Path(mod).read_bytes())
    digest.update(GENERATOR.encode())
    return digest.hexdigest()[:16]


_TEMPLATE = _code_hash()
