"""Benchmark: the backup gallery (``index.html``) for a large backup folder.

Builds a real backup folder of N distinct image files with their JSON sidecars, records
them in a real state database the way ``backup`` does (objects, the host's locations, the
folder's locations), then prints:

* the time to write the gallery from scratch, the size of ``index.html`` and of its data
* the time of an update with nothing new (it writes nothing) and after 100 new images
  (which data files it rewrote)
* the per-item cost at 1,000 vs N items (ratio; flat is the goal)
* the time and size of a report page listing all N items (the page, and its data files)
* when Debian's ``chromium`` is installed: how long a headless browser takes to open the
  page (load, parse the data, lay out the first page) for 1,000 and for N items, and
  the report (its first 100 rows)

Usage: python bench/bench_gallery.py [--items 20000] [--work DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imgsync.fakehosts.images import seed_image
from imgsync.hashing import digest_bytes
from imgsync.models import ItemMeta, RemoteItem
from imgsync.pages.gallery import DATA_DIR, update_gallery
from imgsync.pages.report import data_dir, write_report
from imgsync.state import queries
from imgsync.state.reader import must_open
from imgsync.state.store import StateStore

BASES = [seed_image(i) for i in range(40)]


def make_folder(root: Path, start: int, count: int) -> list[tuple[str, int, str, str]]:
    """Write ``count`` distinct images (+ sidecars); (sha256, size, md5, name) each."""
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + count):
        base, ext = BASES[i % len(BASES)]
        data = base + i.to_bytes(4, "big")  # distinct bytes, still a valid image
        d = digest_bytes(data, True)
        name = f"{d.md5}.{ext}"
        (root / name).write_bytes(data)
        side = {"source": "gy", "remote_id": d.md5, "name": name, "sha256": d.sha256}
        (root / f"{name}.json").write_text(json.dumps(side))
        out.append((d.sha256, d.size, d.md5 or "", name))
    return out


async def record(state: Path, dest: str, rows: list[tuple[str, int, str, str]], t0: int) -> None:
    async with StateStore(state) as store:
        await queries.record_objects(store, [(s, n, m, "image/png") for s, n, m, _ in rows])
        src, dst = [], []
        for k, (sha, size, md5, name) in enumerate(rows):
            meta = ItemMeta(
                title=f"Screenshot {t0 + k} <of> a window",
                description="seeded" if k % 3 else None,
                source_url=f"https://example.com/page/{k}",
                created_at=1.6e9 + (t0 + k) * 3600,
            )
            src.append(
                (
                    sha,
                    RemoteItem(
                        md5,
                        name,
                        size,
                        url=f"https://i.gyazo.com/{name}",
                        page_url=f"https://gyazo.com/{md5}",
                        meta=meta,
                    ),
                )
            )
            dst.append((sha, RemoteItem(name, name, size, meta=meta)))
        await queries.record_locations(store, "gy", src)
        await queries.record_locations(store, dest, dst)
        await store.flush()


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(work: Path, n: int) -> tuple[Path, float, int]:
    """A folder of n items; (folder, seconds for the first gallery, bytes of index)."""
    root = work / f"backup-{n}"
    state = work / f"state-{n}.db"
    rows = make_folder(root, 0, n)
    asyncio.run(record(state, f"local:{root.resolve()}", rows, 0))
    conn = must_open(state)
    started = time.perf_counter()
    update_gallery(conn, root, f"local:{root.resolve()}", source="gy")
    took = time.perf_counter() - started
    conn.close()
    return root, took, (root / "index.html").stat().st_size


def browser_ms(index: Path, expect: bytes = b'data-shown="120"') -> float | None:
    """Wall milliseconds for headless chromium to load the page and dump its DOM."""
    got = browser_run(index, expect)
    return None if got is None else got[0]


def browser_run(index: Path, expect: bytes, fragment: str = "") -> tuple[float, bytes] | None:
    """Wall milliseconds for headless chromium to load the page (``#fragment``: its state
    in the address, a filter) and dump its DOM, best of 3; and that DOM."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        return None
    dom = b""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--dump-dom",
            index.as_uri() + (f"#{fragment}" if fragment else ""),
        ]
        subprocess.run(cmd, capture_output=True, timeout=120, check=False)  # warm-up
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
            best = min(best, time.perf_counter() - started)
            assert expect in proc.stdout, "the page did not render its first page"
            dom = proc.stdout
    return best * 1000, dom


def body_data(dom: bytes, key: str) -> str:
    """A ``data-KEY`` attribute of the dumped page's body ("?" when it has none)."""
    import re

    m = re.search(rb"<body[^>]*\sdata-" + key.encode() + rb'="([^"]*)"', dom)
    return m.group(1).decode() if m else "?"


def report_filters(report: Path) -> None:
    """Filtering the report: how long the browser takes and what it loads, for a filter by
    one item's id (the oldest: in the last data file), against loading every data file."""
    import json
    import re

    from imgsync.pages.report import data_dir

    text = report.read_text(encoding="utf-8")
    found = re.search(r'<script id="meta"[^>]*>(.*?)</script>', text, re.DOTALL)
    assert found is not None, "not a report page"
    meta = json.loads(found.group(1))
    folder = data_dir(report)
    sizes = [(folder / Path(href).name).stat().st_size for href in meta["files"]]
    index = (folder / Path(meta["index"]).name).stat().st_size
    last = (folder / Path(meta["files"][-1]).name).read_text(encoding="utf-8")
    oldest = json.loads("[" + last.split("[\n", 1)[1].rsplit("\n]", 1)[0] + "]")[-1]["id"]
    got = browser_run(report, b'data-shown="1"', f"q={oldest}")
    if got is None:
        return
    ms, dom = got
    loaded = int(body_data(dom, "files"))
    took = index + sum(sizes[-loaded:]) if loaded else index
    print(
        f"  filter by one item's id: {ms:.0f} ms, loaded the index ({index / 1000:.0f} KB) + "
        f"{loaded} of {len(sizes)} data files = {took / 1e6:.2f} MB of "
        f"{(index + sum(sizes)) / 1e6:.2f} MB (ratio {took / sum(sizes):.3f} of loading all)"
    )
    got = browser_run(report, b'data-shown="100"', "q=screenshot")
    if got is not None:
        ms, dom = got
        print(
            f"  filter matching every item ('screenshot'): {ms:.0f} ms, "
            f"{body_data(dom, 'files')} of {len(sizes)} data files (no index can help)"
        )


def gallery_filters(root: Path) -> None:
    """Filtering the gallery from a link (``index.html#q=...``): what the browser loads
    for one item's checksum (an item of the last data file), against every data file.
    Without chromium, the data files the index names for it (what the page would load)."""
    import base64
    import re

    from imgsync.pages.common import GRAM, gram_bit

    page = (root / "index.html").read_text(encoding="utf-8")
    found = re.search(r'<script id="meta"[^>]*>(.*?)</script>', page, re.DOTALL)
    assert found is not None, "not a gallery page"
    meta = json.loads(found.group(1))
    paths = [root / href.removeprefix("./") for href in meta["files"]]
    sizes = [p.stat().st_size for p in paths]
    index_path = root / meta["index"].removeprefix("./")
    index = index_path.stat().st_size
    last = paths[-1].read_text(encoding="utf-8")
    word = json.loads("[" + last.split("[\n", 1)[1].rsplit("\n]", 1)[0] + "]")[-1]["h"][:16]
    text = index_path.read_text(encoding="utf-8")
    maps = json.loads(text[text.index("[") : text.rindex("]") + 1])
    size = int(text.split("(", 1)[1].split(",", 1)[0])  # IMGSYNC_GALLERY_INDEX(bits, ...
    bits = [gram_bit(word[i : i + GRAM], size) for i in range(len(word) - GRAM + 1)]
    named = 0
    for m in maps:
        raw = base64.b64decode(m) if m is not None else None
        named += raw is None or all(raw[b >> 3] & (1 << (b & 7)) for b in bits)
    got = browser_run(root / "index.html", b'data-shown="1"', f"q={word}")
    loaded = int(body_data(got[1], "files")) if got is not None else named
    took = index + sum(sorted(sizes)[:loaded])  # about: the data files are of one size
    how = f"{got[0]:.0f} ms, " if got is not None else "(no chromium: the index's answer) "
    print(
        f"  gallery filter by one item's checksum from a link: {how}loaded the index "
        f"({index / 1000:.0f} KB) + {loaded} of {len(sizes)} data files = "
        f"{took / 1e6:.2f} MB of {sum(sizes) / 1e6:.2f} MB (ratio {took / sum(sizes):.3f} of "
        "loading all, as the page did before)"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="imgsync-bench-gallery-"))
    try:
        small_root, small_t, _ = build(work, 1000)
        root, first, index_size = build(work, args.items)
        data = folder_bytes(root / DATA_DIR)
        print(f"gallery for {args.items} items: written in {first:.2f} s")
        print(f"  index.html {index_size / 1000:.1f} KB, data files {data / 1e6:.2f} MB")
        per_small, per_big = small_t / 1000, first / args.items
        print(
            f"  per item: {per_small * 1e6:.0f} us at 1,000 vs {per_big * 1e6:.0f} us at "
            f"{args.items} (ratio {per_big / per_small:.2f})"
        )

        state = work / f"state-{args.items}.db"
        key = f"local:{root.resolve()}"
        conn = must_open(state)
        started = time.perf_counter()
        res = update_gallery(conn, root, key, source="gy")
        noop = time.perf_counter() - started
        print(f"  update with nothing new: {noop:.2f} s, {len(res.files_written)} files written")
        conn.close()
        rows = make_folder(root, args.items, 100)
        asyncio.run(record(state, key, rows, args.items))
        conn = must_open(state)
        started = time.perf_counter()
        res = update_gallery(conn, root, key, source="gy")
        more = time.perf_counter() - started
        conn.close()
        written = sum((root / f).stat().st_size for f in res.files_written)
        print(
            f"  update after 100 new images: {more:.2f} s, rewrote {len(res.files_written)} "
            f"files ({written / 1000:.0f} KB) of {len(list((root / DATA_DIR).glob('c-*.js')))}"
            " data files + index"
        )
        conn = must_open(state)
        started = time.perf_counter()
        report = work / "report.html"
        res = write_report(
            conn,
            report,
            job="bench",
            source="gy",
            dest=key,
            summary={
                "verb": "backup",
                "checked": args.items + 100,
                "copied": 100,
                "already_present": args.items,
                "failed": 0,
            },
        )
        took = time.perf_counter() - started
        conn.close()
        side = data_dir(report)
        side_bytes = folder_bytes(side) if side.is_dir() else 0
        print(
            f"  report of {res.items} items: {took:.2f} s, page "
            f"{report.stat().st_size / 1e6:.3f} MB, side data {side_bytes / 1e6:.2f} MB, "
            f"balanced: {res.balanced}"
        )
        report_ms = browser_ms(report, b'data-shown="100"')
        if report_ms is not None:
            print(f"  headless chromium opens the report (first 100 rows): {report_ms:.0f} ms")
            report_filters(report)
        gallery_filters(root)
        small_ms = browser_ms(small_root / "index.html")
        big_ms = browser_ms(root / "index.html")
        if small_ms is None or big_ms is None:
            print("  (no chromium: page opening time not measured)")
        else:
            print(
                f"  headless chromium opens the page: {small_ms:.0f} ms at 1,000 items, "
                f"{big_ms:.0f} ms at {args.items + 100} (ratio {big_ms / small_ms:.2f})"
            )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
