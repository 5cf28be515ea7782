"""The migration report: a small HTML page of what moved where, its items in data files.

Written by ``imgsync migrate --report FILE.html`` at the end of a run, or later from state
by ``imgsync report FILE.html``. It lists every item of the source that state knows for
that job: its thumbnail (a local backup of the same bytes when state knows one, linked
relatively from the report's folder; else the new URL; else the old one), old URL -> new
URL, which metadata fields the destination kept, dropped or changed, its status and the
reason of a failure; above that the run's totals, the same numbers as its summary line,
with the balance checked = copied + already there + skipped + failed shown.

Layout (relative to the page, so the two can be moved together; no server, no CDN)::

    report.html                   the totals, the failures, the pager; style and script inline
    report_files/r-<hash>.js      the items' data, PER_FILE items per file, newest first
    report_files/r-<hash>.js      (one more) the search index: a bitmap per data file

The page is small whatever the number of items (20,000 items made one 13 MB page that took
seconds to open): it loads only the data file(s) of the page of 100 rows it shows. A filter
loads only the data files that can hold a match: the page knows each file's count per
status, and a text filter first loads the index (about 11 KB per data file), a bitmap of the
4-character pieces (of the lower-cased searched fields, hashed by CRC-32) each file holds; a file that
lacks a piece of every word typed is skipped. Words shorter than 4 characters cannot be
looked up, and load every file (of that status). Data files are ``<script>`` files (a browser will not
``fetch`` a file: URL). Writing is atomic: data files under names made from their content
(one that exists already is left as it is), the page replaced last, then the data files
its earlier version named and it no longer does removed (nothing else in the folder).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgsync.pages.common import (
    GRAM,
    INDEX_BITS,
    TOKEN_MARK,
    esc,
    file_href,
    gram_bit,
    human_size,
    js_data,
    page_end,
    page_start,
    place_name,
    text_bitmap,
    utf8,
    write_atomic,
)
from imgsync.state.reader import StateReader

# the search index's pieces live in pages.common (the gallery's index is built the same way)
__all__ = ["GRAM", "INDEX_BITS", "TOKEN_MARK", "gram_bit", "index_bitmap", "write_report"]

PER_FILE = 500  # items per data file (about 300 KB)
DATA_PREFIX = "r-"
# the fields the page's text filter searches (its ``_q``), in its order
SEARCHED = ("id", "o", "op", "n", "np", "t", "e", "st", "h")


def data_dir(page: Path) -> Path:
    """The folder of a report page's data files, its own: ``report.html`` ->
    ``report_files`` (as a browser saves a page), any other name -> ``NAME.files``
    (``report.htm`` -> ``report.htm.files``), so no two pages share one."""
    if page.suffix.lower() == ".html":
        return page.with_name(f"{page.stem}_files")
    return page.with_name(f"{page.name}.files")


META_FIELDS = ("title", "description", "source_url", "app", "created_at", "tags")
STATUSES = ("copied", "failed", "skipped", "pending")


@dataclass
class ReportResult:
    path: Path
    items: int
    counts: dict[str, int]
    balanced: bool


def _same(field: str, a: Any, b: Any) -> bool:
    if field == "created_at":
        try:
            return abs(float(a) - float(b)) < 1.0
        except (TypeError, ValueError):
            return False
    if field == "tags":
        return sorted(map(str, a or ())) == sorted(map(str, b or ()))
    return bool(a == b)


def compare_meta(
    old: dict[str, Any], new: dict[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """(carried, dropped, changed) fields of ``old`` at the destination."""
    carried, dropped, changed = [], [], []
    for f in META_FIELDS:
        if old.get(f) in (None, "", [], ()):
            continue
        if new.get(f) in (None, "", [], ()):
            dropped.append(f)
        elif _same(f, old[f], new[f]):
            carried.append(f)
        else:
            changed.append(f)
    return carried, dropped, changed


def totals_of(summary: dict[str, Any]) -> dict[str, int]:
    """The run's totals as the summary reports them, with ``skipped`` (non-images and items
    not attempted after the destination failed as a whole)."""

    def num(key: str) -> int:
        value = summary.get(key, 0)
        return value if isinstance(value, int) else 0

    return {
        "checked": num("checked"),
        "copied": num("copied"),
        "present": num("already_present"),
        "skipped": num("non_images_skipped") + num("not_attempted"),
        "failed": num("failed"),
    }


def _local_href(remote: str, remote_id: str, base: Path) -> str | None:
    """A relative link from ``base`` to the file a folder location names, if it is there."""
    from imgsync.localfs import key_path

    path = Path(remote.removeprefix("local:")) / key_path(remote_id)
    if not path.is_file():
        return None
    return file_href(os.path.relpath(path, base).replace(os.sep, "/"))


def _thumb(
    sha: str | None,
    local: dict[str, tuple[str, str]],
    base: Path,
    new_url: str | None,
    old_url: str | None,
) -> str | None:
    if sha and sha in local:
        href = _local_href(*local[sha], base)
        if href is not None:
            return href
    return new_url or old_url


def build_items(
    db: StateReader, job: str, source: str, dest: str, base: Path
) -> list[dict[str, Any]]:
    """Every item of ``source`` known to state (or to the job's journal), as page data."""
    src = db.places_of(source)
    journal = {j.source_id: j for j in db.journal_of(job, source, dest)}
    at_dest = db.by_checksum(dest)
    shas = {p.sha256 for p in src.values()} | {j.sha256 for j in journal.values() if j.sha256}
    local = db.local_copies(shas)
    sizes = db.object_sizes(shas)
    out = []
    for rid in sorted(set(src) | set(journal)):
        place, j = src.get(rid), journal.get(rid)
        sha = place.sha256 if place else (j.sha256 if j else None)
        new = at_dest.get(sha) if sha else None
        if new is not None:
            status = "copied"
        elif j is not None and j.stage == "failed":
            status = "failed"
        elif j is not None and j.stage == "skipped":
            status = "skipped"
        else:
            status = "pending"
        old_meta = place.meta if place else {}
        rec: dict[str, Any] = {"id": rid, "st": status}
        if place is not None:
            rec["o"], rec["op"] = place.url, place.page_url
        if new is not None:
            rec["n"], rec["np"] = new.url, new.page_url
            if new.url is None and dest.startswith("local:"):  # a backup: the file
                rec["nf"] = _local_href(new.remote, new.remote_id, base)
            rec["c"], rec["x"], rec["ch"] = compare_meta(old_meta, new.meta)
        if j is not None and j.error and status != "copied":
            rec["e"] = j.error
        if j is not None and j.attempts:
            rec["a"] = j.attempts
        rec["th"] = _thumb(sha, local, base, new.url if new else None, rec.get("o"))
        rec["t"] = old_meta.get("title")
        rec["d"] = old_meta.get("created_at")
        rec["s"] = sizes.get(sha) if sha else None
        rec["h"] = sha
        if old_meta:
            rec["m"] = {k: v for k, v in old_meta.items() if v not in (None, "", [])}
        out.append({k: v for k, v in rec.items() if v not in (None, [], {})})
    out.sort(key=lambda r: -r["d"] if isinstance(r.get("d"), int | float) else 0.0)
    return out


def write_report(
    db: StateReader,
    out: Path,
    *,
    job: str,
    source: str,
    dest: str,
    summary: dict[str, Any],
) -> ReportResult:
    """Write the report page to ``out`` and its data files beside it (atomically).
    Raises ``OSError``."""
    out = out.expanduser().absolute()
    items = build_items(db, job, source, dest, out.parent)
    counts = dict.fromkeys(STATUSES, 0)
    for it in items:
        counts[it["st"]] += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = data_dir(out)
    before = _named_by(out)
    files = write_data_files(folder, items)
    index = write_index_file(folder, items)
    page, balanced = render_report(
        items,
        counts,
        job=job,
        source=source,
        dest=dest,
        summary=summary,
        files=[file_href(f"{folder.name}/{f}") for f in files],
        index=file_href(f"{folder.name}/{index}"),
        file_counts=file_counts(items),
    )
    write_atomic(out, page)
    for name in before - {*files, index}:  # what this page's earlier version loaded, only
        (folder / name).unlink(missing_ok=True)
    return ReportResult(out, len(items), counts, balanced)


def data_text(index: int, items: list[dict[str, Any]]) -> str:
    """One data file: ``IMGSYNC_REPORT(index, [...items...]);``."""
    return f"IMGSYNC_REPORT({index}, [\n" + ",\n".join(js_data(it) for it in items) + "\n]);\n"


def write_data_files(folder: Path, items: list[dict[str, Any]]) -> list[str]:
    """Write the items' data files into ``folder`` (those not there already); their names,
    in order."""
    folder.mkdir(exist_ok=True)
    names = []
    for n, start in enumerate(range(0, len(items), PER_FILE)):
        text = data_text(n, items[start : start + PER_FILE])
        name = f"{DATA_PREFIX}{hashlib.sha256(utf8(text)).hexdigest()[:20]}.js"
        if not (folder / name).is_file():
            write_atomic(folder / name, text)
        names.append(name)
    return names


def file_counts(items: list[dict[str, Any]]) -> list[list[int]]:
    """Per data file, how many of its items have each of :data:`STATUSES`."""
    out = []
    for start in range(0, len(items), PER_FILE):
        counts = dict.fromkeys(STATUSES, 0)
        for it in items[start : start + PER_FILE]:
            counts[it["st"]] += 1
        out.append([counts[st] for st in STATUSES])
    return out


def index_bitmap(items: list[dict[str, Any]]) -> bytes | None:
    """The bitmap of every :data:`GRAM`-character piece of ``items``' searched fields,
    lower-cased; None when a field is not text (the page then always loads that file)."""
    texts: list[str] = []
    for it in items:
        for key in SEARCHED:
            value = it.get(key)
            if value is None or value == "":
                continue
            if not isinstance(value, str):
                return None
            texts.append(value)
    return text_bitmap(texts)


def index_text(items: list[dict[str, Any]]) -> str:
    """The index file: ``IMGSYNC_REPORT_INDEX(bits, gram, [base64 bitmap | null, ...]);``."""
    import base64

    maps = []
    for start in range(0, len(items), PER_FILE):
        bitmap = index_bitmap(items[start : start + PER_FILE])
        maps.append(base64.b64encode(bitmap).decode("ascii") if bitmap is not None else None)
    return f"IMGSYNC_REPORT_INDEX({INDEX_BITS}, {GRAM}, {js_data(maps)});\n"


def write_index_file(folder: Path, items: list[dict[str, Any]]) -> str:
    """Write the search index into ``folder`` (unless there already); its name."""
    text = index_text(items)
    name = f"{DATA_PREFIX}{hashlib.sha256(utf8(text)).hexdigest()[:20]}.js"
    if not (folder / name).is_file():
        write_atomic(folder / name, text)
    return name


def _named_by(page: Path) -> set[str]:
    """The data files an existing report page at ``page`` loads (names in its folder);
    nothing for a page that is not an imgsync report. Another page's files (a report of
    the same stem, ``a.htm`` beside ``a.html``) are never among them."""
    import json
    import re

    try:
        text = page.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    m = re.search(r'<script id="meta" type="application/json">(.*?)</script>', text, re.DOTALL)
    if m is None or 'name="generator" content="imgsync' not in text:
        return set()
    try:
        meta = json.loads(m.group(1))
        hrefs = [*meta.get("files", []), meta.get("index")]
    except (ValueError, AttributeError, TypeError):
        return set()
    prefix = file_href(data_dir(page).name) + "/"
    return {
        h[len(prefix) :]
        for h in hrefs
        if isinstance(h, str)
        and h.startswith(prefix)
        and h[len(prefix) :].startswith(DATA_PREFIX)
        and "/" not in h[len(prefix) :]
    }


def render_report(
    items: list[dict[str, Any]],
    counts: dict[str, int],
    *,
    job: str,
    source: str,
    dest: str,
    summary: dict[str, Any],
    files: list[str],
    index: str | None = None,
    file_counts: list[list[int]] | None = None,
) -> tuple[str, bool]:
    """The page; ``files`` are the hrefs of its data files, ``PER_FILE`` items each,
    ``index`` the href of their search index and ``file_counts`` their items per status."""
    t = totals_of(summary)
    right = t["copied"] + t["present"] + t["skipped"] + t["failed"]
    balanced = t["checked"] == right
    mark = (
        '<span class="ok" id="balance">balances ✓</span>'
        if balanced
        else f'<span class="bad" id="balance">does not balance: {t["checked"]} ≠ {right}</span>'
    )
    verb = str(summary.get("verb") or "migrate")
    if "source_key" in summary:  # the run recorded the names the user gave
        names = (str(summary.get("source")), str(summary.get("dest")))
    else:
        names = (place_name(source), place_name(dest))
    title = f"{verb} report: {names[0]} → {names[1]}"
    failures = summary.get("failures") or []
    fail_rows = "\n".join(
        f"<li><code>{esc(f.get('item', ''))}</code>: {esc(f.get('error', ''))}</li>"
        for f in failures
        if isinstance(f, dict)
    )
    more = max(0, t["failed"] - len(failures))
    remote_failure = summary.get("remote_failure")
    stopped = (
        f'<p class="bad" id="stopped">Stopped early: {esc(remote_failure)}</p>'
        if remote_failure
        else ""
    )
    when = summary.get("_finished")
    when_text = (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))
        if isinstance(when, int | float)
        else ""
    )
    state_line = " · ".join(f"{counts[s]} {s}" for s in STATUSES)
    page = (
        page_start(title, "report", len(items))
        + f"""<p class="sub">job <code>{esc(job)}</code>{(" · " + esc(when_text)) if when_text else ""}
 · {esc(human_size(summary.get("bytes") if isinstance(summary.get("bytes"), int) else None))}
 moved in the last run</p>
<table class="totals" id="totals">
<tr><th>checked</th><th>copied</th><th>already there</th><th>skipped</th><th>failed</th></tr>
<tr><td data-k="checked">{t["checked"]}</td><td data-k="copied">{t["copied"]}</td>
<td data-k="present">{t["present"]}</td><td data-k="skipped">{t["skipped"]}</td>
<td data-k="failed">{t["failed"]}</td></tr>
</table>
<p class="sub">Last run: {t["checked"]} checked = {t["copied"]} copied + {t["present"]} already
there + {t["skipped"]} skipped + {t["failed"]} failed: {mark}</p>
<p class="sub" id="state-counts">All items of the source that state knows for this job:
{len(items)} ({esc(state_line)})</p>
{stopped}
<div class="bar">
<input type="search" id="q" placeholder="Filter: URL, title, id, error…" aria-label="Filter">
<select id="status" aria-label="Status"><option value="">every status</option>
{"".join(f'<option value="{s}">{s}</option>' for s in STATUSES)}</select>
<span id="shown" class="sub"></span>
</div>
</header>
<main>
{f'<details id="failures"{" open" if len(failures) <= 10 else ""}><summary>Failures in the last run ({t["failed"]})</summary><ul>{fail_rows}</ul>{f"<p>… and {more} more</p>" if more else ""}</details>' if failures else ""}
<noscript><p class="empty">The item list needs JavaScript; the totals above do not.</p></noscript>
<div class="rows" id="rows"></div>
<nav class="pager" id="pager"></nav>
</main>
<script id="meta" type="application/json">{js_data({"count": len(items), "per_file": PER_FILE, "files": files, "index": index, "counts": file_counts, "statuses": STATUSES})}</script>
"""
        + page_end(JS_REPORT)
    )
    return page, balanced


JS_REPORT = r"""
(function () {
  const meta = JSON.parse(document.getElementById("meta").textContent);
  const perFile = meta.per_file, files = meta.files, got = new Array(files.length);
  const statuses = meta.statuses || [], counts = meta.counts || null;
  const waiting = {};
  let missing = 0, fetched = 0;
  window.IMGSYNC_REPORT = function (n, list) {
    for (const it of list)
      it._q = [it.id, it.o, it.op, it.n, it.np, it.t, it.e, it.st, it.h].filter(Boolean)
              .join("\n").toLowerCase();
    got[n] = list;
  };
  // the search index: per data file a bitmap of the hashed GRAM-character pieces it holds
  const search = searchIndex(meta, "IMGSYNC_REPORT_INDEX");
  // the data files that can hold an item of status ``st`` matching every word
  function candidates(words, st) {
    const k = statuses.indexOf(st), index = search.now;
    const wanted = index ? wordBits(words, index.bits, index.gram) : [];
    const out = [];
    for (let n = 0; n < files.length; n++) {
      if (st && counts && k >= 0 && !counts[n][k]) continue;
      if (index && !mayHold(index.maps[n], wanted)) continue;
      out.push(n);
    }
    return out;
  }
  // load the data files numbered ``ids`` (each once), then call ``done``
  function load(ids, done) {
    let left = 1;
    const one = () => { if (--left === 0) done(); };
    for (const n of ids) {
      if (got[n]) continue;
      left++;
      if (waiting[n]) { waiting[n].push(one); continue; }
      waiting[n] = [one];
      const s = document.createElement("script");
      s.src = files[n];
      s.onload = s.onerror = () => {
        fetched++; document.body.dataset.files = String(fetched);
        if (!got[n]) { got[n] = []; missing++; document.body.dataset.missing = String(missing); }
        const calls = waiting[n]; delete waiting[n]; calls.forEach((f) => f());
      };
      document.head.append(s);
    }
    one();
  }
  const $ = (id) => document.getElementById(id);
  const rows = $("rows"), pagerBox = $("pager"), shown = $("shown"), q = $("q"), stSel = $("status");
  const st = readHash(); q.value = st.q || "";
  if (["copied", "failed", "skipped", "pending"].includes(st.status)) stSel.value = st.status;
  let page = Math.max(1, parseInt(st.page || "1", 10) || 1);
  const per = 100; let broken = 0, loaded = 0, ticket = 0;
  function row(it) {
    const thumb = it.th ? el("img", {cls: "thumb", src: it.th, alt: it.t || it.id,
                                     loading: "lazy", decoding: "async"})
                        : el("div", {cls: "thumb"});
    if (it.th) thumb.addEventListener("error", () => { broken++;
        document.body.dataset.broken = String(broken); thumb.style.visibility = "hidden"; });
    if (it.th) thumb.addEventListener("load", () => { loaded++;
        document.body.dataset.loaded = String(loaded); });
    const meta = [];
    if (it.c && it.c.length) meta.push("carried: " + it.c.join(", "));
    if (it.x && it.x.length) meta.push("dropped: " + it.x.join(", "));
    if (it.ch && it.ch.length) meta.push("changed: " + it.ch.join(", "));
    const urls = el("div", {cls: "urls"}, [
      el("div", null, [el("span", {text: "old: "}), it.o ? linkOrText(it.o) :
          document.createTextNode("(no URL recorded; id " + it.id + ")")]),
      it.op ? el("div", null, [el("span", {text: "old page: "}), linkOrText(it.op)]) : null,
      el("div", null, [el("span", {text: "new: "}), it.n ? linkOrText(it.n) :
          it.nf ? el("a", {href: it.nf, text: unhref(it.nf)}) :
          document.createTextNode("—")]),
      it.np ? el("div", null, [el("span", {text: "new page: "}), linkOrText(it.np)]) : null]);
    return el("div", {cls: "row", "data-status": it.st}, [
      it.th ? el("a", {href: it.th, target: "_blank"}, [thumb]) : thumb,
      el("div", null, [
        el("div", null, [el("span", {cls: "tag st-" + it.st, text: it.st}),
                         el("strong", {text: it.t || it.id})]),
        urls,
        el("div", {cls: "m", text: [fmtDate(it.d), fmtSize(it.s), it.a ? it.a + " attempt(s)" : ""]
                                   .filter(Boolean).join(" · ")}),
        meta.length ? el("div", {cls: "m", text: "metadata " + meta.join("; ")}) : null,
        it.e ? el("div", {cls: "bad", text: "error: " + it.e}) : null])]);
  }
  function show(slice, start, total, pages) {
    rows.replaceChildren(...slice.map(row));
    if (!slice.length) rows.append(el("p", {cls: "empty", text: "Nothing matches."}));
    if (missing) rows.prepend(el("p", {cls: "bad", text: missing +
        " data file(s) missing beside this page: write the report again"}));
    shown.textContent = (total ? (start + 1) + "–" + (start + slice.length) : "0") +
        " of " + total;
    pager(pagerBox, page, pages, (p) => { page = p; render(); scrollTo(0, 0); });
    document.body.dataset.shown = String(slice.length);
    writeHash({q: q.value, status: stSel.value, page: page > 1 ? page : ""});
  }
  function render() {
    const mine = ++ticket;
    const words = q.value.toLowerCase().split(/\s+/).filter(Boolean);
    if (!words.length && !stSel.value) {  // no filter: only this page's data file(s)
      const pages = Math.max(1, Math.ceil(meta.count / per));
      page = Math.min(Math.max(1, page), pages);
      const start = (page - 1) * per, end = Math.min(meta.count, start + per), ids = [];
      for (let n = Math.floor(start / perFile); n * perFile < end; n++) ids.push(n);
      load(ids, () => {
        if (mine !== ticket) return;
        const slice = [];
        for (let k = start; k < end; k++) {
          const it = (got[Math.floor(k / perFile)] || [])[k % perFile];
          if (it) slice.push(it);
        }
        show(slice, start, meta.count, pages);
      });
      return;
    }
    shown.textContent = "loading…";
    const st = stSel.value, k = statuses.indexOf(st);
    if (!words.length && counts && k >= 0) {  // a status alone: its count per file is known
      const total = counts.reduce((a, c) => a + c[k], 0);
      const pages = Math.max(1, Math.ceil(total / per));
      page = Math.min(Math.max(1, page), pages);
      const start = (page - 1) * per, ids = [];
      let before = 0, first = -1;
      for (let n = 0, acc = 0; n < files.length; acc += counts[n][k], n++) {
        if (!counts[n][k] || acc + counts[n][k] <= start || acc >= start + per) continue;
        if (first < 0) { first = n; before = acc; }
        ids.push(n);
      }
      load(ids, () => {
        if (mine !== ticket) return;
        const view = [].concat(...ids.map((n) => got[n] || [])).filter((it) => it.st === st);
        show(view.slice(start - before, start - before + per), start, total, pages);
      });
      return;
    }
    const filter = () => {
      const ids = candidates(words, st);
      load(ids, () => {
        if (mine !== ticket) return;
        const view = [].concat(...ids.map((n) => got[n] || [])).filter(
            (it) => (!st || it.st === st) && words.every((w) => it._q.includes(w)));
        const pages = Math.max(1, Math.ceil(view.length / per));
        page = Math.min(Math.max(1, page), pages);
        const start = (page - 1) * per;
        show(view.slice(start, start + per), start, view.length, pages);
      });
    };
    if (indexable(words)) search.load(filter);
    else filter();
  }
  let timer = null;
  q.addEventListener("input", () => { clearTimeout(timer);
                                      timer = setTimeout(() => { page = 1; render(); }, 120); });
  stSel.onchange = () => { page = 1; render(); };
  document.body.dataset.broken = "0"; document.body.dataset.loaded = "0";
  document.body.dataset.missing = "0"; document.body.dataset.files = "0";
  render();
})();
"""
