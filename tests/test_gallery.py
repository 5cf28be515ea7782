"""The backup folder's ``index.html`` gallery: real backups of the Gyazo emulator, the pages
read with ``html.parser``, every link checked against the files in the folder."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import aiohttp
from helpers import run_cli, run_cli_async, start_fake, write_config
from pagecheck import (
    assert_offline,
    gallery_files,
    gallery_items,
    is_relative,
    parse,
    report_items,
    resolve,
)

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import seed_image
from imgsync.pages.gallery import DATA_DIR, update_gallery
from imgsync.state.reader import must_open

TOKEN = "gallery-token-123"
HOSTILE = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'


async def _upload(url: str, data: bytes, name: str, **fields: str) -> None:
    form = aiohttp.FormData()
    form.add_field("access_token", TOKEN)
    for k, v in fields.items():
        form.add_field(k, v)
    form.add_field("imagedata", data, filename=name, content_type="image/png")
    async with aiohttp.ClientSession() as s, s.post(url + "/api/upload", data=form) as r:
        assert r.status == 200, await r.text()


def _config(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path / "cfg.toml",
        f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{url}"\ntoken_env = "GY"\n',
    )


def _stats(root: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


async def test_backup_writes_a_gallery_of_every_image_and_updates_it(tmp_path: Path) -> None:
    """200 seeded images and one with a hostile title: index.html lists all 201 with
    relative links that resolve to the files and their sidecars, loads nothing from
    elsewhere, and keeps the hostile title as data; a second run adds new images without
    touching the files of the old ones; a run with nothing new writes nothing."""
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN, seed=200, rate="100000/second")))
    out = tmp_path / "backup"
    try:
        await _upload(
            fake.url,
            seed_image(500)[0],
            "x.png",
            title=HOSTILE,
            desc="</script><b>bold</b>",
            referer_url="javascript:alert(1)",
            created_at="2000000000",
        )
        cfg = _config(tmp_path, fake.url)
        args = ("--config", str(cfg), "backup", "gy:", str(out), "--json")
        env = {"GY": TOKEN}
        proc = await run_cli_async(*args, env=env)
        assert proc.returncode == 0, proc.stderr
        first = json.loads(proc.stdout)
        assert first["copied"] == 201 and first["gallery"] == str(out / "index.html")

        index = out / "index.html"
        page = parse(index)
        assert page.body()["data-count"] == "201"
        assert_offline(index)
        items = gallery_items(index)
        assert len(items) == 201
        images = {p.name for p in out.iterdir() if p.is_file() and not p.name.endswith(".json")}
        images.discard("index.html")
        assert len(images) == 201
        assert {resolve(out, it["f"]).name for it in items} == images
        for it in items:
            assert is_relative(it["f"]) and resolve(out, it["f"]).parent == out
            sidecar = json.loads(resolve(out, it["j"]).read_text())
            assert sidecar["sha256"] == it["h"] and sidecar["url"] == it["u"]
            assert it["r"] == f"gyazo:{fake.url}" and it["u"].startswith(fake.url)

        hostile = next(it for it in items if it.get("t") == HOSTILE)
        assert hostile["m"]["description"] == "</script><b>bold</b>"
        assert hostile["d"] == 2000000000
        # the host's text never reaches the markup as markup
        for f in [index, *(out / DATA_DIR).glob("c-*.js")]:
            text = f.read_text()
            assert "<script>alert" not in text and "</script><b>" not in text
            assert "<img src=x" not in text
        assert not any(a.get("onerror") == "alert(1)" for _t, a in page.tags)
        assert [t for t, _a in page.tags].count("script") == 1 + 1  # the data's names, code

        before = _stats(out)
        for i in range(3):
            await _upload(fake.url, seed_image(600 + i)[0], f"new{i}.png", title=f"new {i}")
        proc = await run_cli_async(*args, env=env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["copied"] == 3
        items = gallery_items(index)
        assert len(items) == 204
        assert {it.get("t") for it in items} >= {"new 0", "new 1", "new 2"}
        after = _stats(out)
        unchanged = [p for p in before if not p.startswith((DATA_DIR, "index.html"))]
        assert len(unchanged) == 402  # 201 images and their sidecars
        assert all(after[p] == before[p] for p in unchanged)

        settled = _stats(out)
        proc = await run_cli_async(*args, env=env)
        assert json.loads(proc.stdout)["copied"] == 0
        assert _stats(out) == settled  # nothing new: not a byte written
    finally:
        await fake.close()


async def test_no_gallery_leaves_the_folder_to_the_images(tmp_path: Path) -> None:
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN, seed=5)))
    out = tmp_path / "backup"
    try:
        cfg = _config(tmp_path, fake.url)
        proc = await run_cli_async(
            "--config", str(cfg), "backup", "gy:", str(out), "--no-gallery", env={"GY": TOKEN}
        )
        assert proc.returncode == 0, proc.stderr
        assert "; gallery:" not in proc.stdout
        assert not (out / "index.html").exists() and not (out / DATA_DIR).exists()
        assert len(list(out.glob("*.json"))) == 5
    finally:
        await fake.close()


async def _backup(tmp_path: Path, fake_url: str, out: Path, *extra: str) -> None:
    cfg = _config(tmp_path, fake_url)
    proc = await run_cli_async(
        "--config", str(cfg), "backup", "gy:", str(out), *extra, env={"GY": TOKEN}
    )
    assert proc.returncode == 0, proc.stderr


async def test_updates_rewrite_only_the_data_files_that_changed(tmp_path: Path) -> None:
    """With small data files: new items land in the last file or new ones, the others are
    not rewritten; an item whose file was deleted by hand drops out; a damaged manifest
    is rebuilt; files of old versions are removed."""
    host = GyazoFake(Knobs(token=TOKEN, seed=25, rate="100000/second"))
    fake = await start_fake(host)
    out = tmp_path / "backup"
    state = Path(os.environ["IMGSYNC_STATE"])
    key = f"local:{out.resolve()}"
    try:
        await _backup(tmp_path, fake.url, out, "--no-gallery")
        conn = must_open(state)
        res = update_gallery(conn, out, key, chunk_size=10)
        assert res.items == 25
        chunks = sorted((out / DATA_DIR).glob("c-*.js"))
        assert len(chunks) == 3 and len(gallery_items(out / "index.html")) == 25
        stamps = {c.name: c.stat().st_mtime_ns for c in chunks}

        for i in range(7):
            await _upload(fake.url, seed_image(700 + i)[0], f"n{i}.png")
        await _backup(tmp_path, fake.url, out, "--no-gallery")
        res = update_gallery(conn, out, key, chunk_size=10)
        items = gallery_items(out / "index.html")
        assert len(items) == 32 and len({it["h"] for it in items}) == 32
        now = {c.name: c.stat().st_mtime_ns for c in (out / DATA_DIR).glob("c-*.js")}
        kept = [n for n in now if n in stamps]
        assert len(now) == 4 and len(kept) == 2  # two full files kept, the last refilled
        assert all(now[n] == stamps[n] for n in kept)

        victim = resolve(out, items[0]["f"])
        victim.unlink()
        res = update_gallery(conn, out, key, chunk_size=10)
        assert res.items == 31
        assert victim.name not in {
            resolve(out, it["f"]).name for it in gallery_items(out / "index.html")
        }

        (out / DATA_DIR / "manifest.json").write_text("{not json")
        (out / DATA_DIR / "c-0000000000000000.js").write_text("stale")
        res = update_gallery(conn, out, key, chunk_size=10)
        assert len(gallery_items(out / "index.html")) == 31
        names = {p.name for p in (out / DATA_DIR).iterdir()}
        assert "c-0000000000000000.js" not in names
        srcs = {p.name for p in gallery_files(out / "index.html")}
        assert {n for n in names if n.startswith("c-")} == srcs
        conn.close()
    finally:
        await fake.close()


async def test_two_updates_at_once_leave_a_page_whose_data_is_all_there(tmp_path: Path) -> None:
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN, seed=30, rate="100000/second")))
    out = tmp_path / "backup"
    try:
        await _backup(tmp_path, fake.url, out)
    finally:
        await fake.close()
    state = Path(os.environ["IMGSYNC_STATE"])
    key = f"local:{out.resolve()}"
    errors: list[Exception] = []

    def work(size: int) -> None:
        conn = must_open(state)
        try:
            for _ in range(5):
                update_gallery(conn, out, key, chunk_size=size)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in (4, 7, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(gallery_items(out / "index.html")) == 30


def test_odd_file_names_link_to_their_files(tmp_path: Path) -> None:
    """Names with spaces, #, ?, %, a colon (a would-be scheme), markup, and bytes that are
    not UTF-8, in a subfolder too: every link of the page opens that very file."""
    src = tmp_path / "src"
    (src / "sub dir").mkdir(parents=True)
    names = ["a b#1?.png", "100%.png", "javascript:x.png", "<b>x<i>.png", "sub dir/é ü.png"]
    for i, name in enumerate(names):
        (src / name).write_bytes(seed_image(i)[0])
    odd = os.fsencode(src) + b"/\xff\xfe.png"
    with open(odd, "wb") as fh:
        fh.write(seed_image(9)[0])
    out = tmp_path / "backup"
    proc = run_cli("backup", str(src), str(out))  # a process: logging set up as a user's
    assert proc.returncode == 0, proc.stderr
    items = gallery_items(out / "index.html")
    assert len(items) == 6
    for it in items:
        assert it["f"].startswith("./") and is_relative(it["f"])
        target = resolve(out, it["f"])
        assert target.is_file() and target.is_relative_to(out.resolve())
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    linked = {resolve(out, it["f"]).relative_to(out.resolve()).as_posix() for it in items}
    assert linked == on_disk
    raw = (out / "index.html").read_text() + "".join(
        p.read_text() for p in (out / DATA_DIR).glob("c-*.js")
    )
    assert "<b>x<i>" not in raw


def test_escaping_helpers() -> None:
    from imgsync.pages.common import esc, file_href, js_data, web_link

    text = js_data({"t": "</script><script>alert(1)</script>\u2028&"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text)["t"] == "</script><script>alert(1)</script>\u2028&"
    assert json.loads(js_data({"d": float("nan"), "m": [float("inf"), 1.5]})) == {
        "d": None,
        "m": [None, 1.5],
    }
    assert esc("\"<a>'&") == "&quot;&lt;a&gt;&#x27;&amp;"
    for bad in (
        "javascript:alert(1)",
        "data:text/html,x",
        "//evil.example/x",
        "/etc/passwd",
        "http:/x",
        "https://a b/c",
        None,
        5,
    ):
        assert web_link(bad) is None
    assert web_link("https://i.gyazo.com/x.png") == "https://i.gyazo.com/x.png"
    assert file_href("javascript:x.png") == "./javascript%3Ax.png"
    assert file_href("a b#?.png") == "./a%20b%23%3F.png"
    assert file_href("../backup/x y.png") == "../backup/x%20y.png"


async def test_daemon_backup_and_migrate_jobs_write_their_pages(tmp_path: Path) -> None:
    """A daemon backup job keeps its folder's gallery; ``gallery = false`` turns it off; a
    migrate job with ``report`` writes the page after its run."""
    from imgsync.config import parse_config
    from imgsync.daemon import run_job_once
    from imgsync.fakehosts.chevereto import CheveretoFake

    gy = await start_fake(GyazoFake(Knobs(token=TOKEN, seed=6)))
    chv = await start_fake(CheveretoFake(Knobs(token="chv-key-1")))
    try:
        cfg = parse_config(
            {
                "state": {"path": os.environ["IMGSYNC_STATE"]},
                "remotes": {
                    "gy": {"type": "gyazo", "base_url": gy.url, "token": TOKEN},
                    "chv": {"type": "chevereto", "base_url": chv.url, "token": "chv-key-1"},
                },
                "jobs": [
                    {
                        "name": "b1",
                        "kind": "backup",
                        "source": "gy:",
                        "destinations": [str(tmp_path / "with")],
                    },
                    {
                        "name": "b2",
                        "kind": "backup",
                        "source": "gy:",
                        "gallery": False,
                        "destinations": [str(tmp_path / "without")],
                    },
                    {
                        "name": "m",
                        "kind": "migrate",
                        "source": "gy:",
                        "destinations": ["chv:"],
                        "map": str(tmp_path / "map.csv"),
                        "report": str(tmp_path / "r.html"),
                    },
                ],
            }
        )
        for job in cfg.jobs:
            ((_dest, summary),) = await run_job_once(cfg, job)
            assert summary.failed == 0
        assert len(gallery_items(tmp_path / "with" / "index.html")) == 6
        assert not (tmp_path / "without" / "index.html").exists()
        items = report_items(tmp_path / "r.html")
        assert len(items) == 6 and {it["st"] for it in items} == {"copied"}
        assert all(resolve(tmp_path, it["th"]).is_file() for it in items)  # the backup's files
    finally:
        await gy.close()
        await chv.close()


def test_config_keys_of_the_pages() -> None:
    import pytest

    from imgsync.config import parse_config
    from imgsync.errors import ConfigError

    base = {"remotes": {"gy": {"type": "gyazo", "token": "t"}}}
    bad = [
        {
            "name": "a",
            "kind": "backup",
            "source": "gy:",
            "destinations": ["/tmp/x"],
            "gallery": "yes",
        },
        {
            "name": "b",
            "kind": "mirror",
            "source": "gy:",
            "destinations": ["/tmp/y"],
            "gallery": True,
        },
        {
            "name": "c",
            "kind": "backup",
            "source": "gy:",
            "destinations": ["/tmp/z"],
            "report": "r.html",
        },
    ]
    with pytest.raises(ConfigError) as err:
        parse_config({**base, "jobs": bad})
    problems = " ".join(err.value.problems)
    assert "jobs[0].gallery" in problems and "jobs[1].gallery" in problems
    assert "jobs[2].report" in problems


async def test_the_gallery_links_each_image_to_its_own_sidecar(tmp_path: Path) -> None:
    """Where the user's own <image>.json was in the way, the sidecar went to
    <image>.imgsync.json: the page links there, never to the user's file."""
    host = GyazoFake(Knobs(token=TOKEN, seed=4))
    fake = await start_fake(host)
    out = tmp_path / "backup"
    out.mkdir()
    names = sorted(f"{i.image_id}.{i.type}" for i in host.images.values())
    for name in names[:2]:
        (out / f"{name}.json").write_text('{"my": "notes"}')
    try:
        await _backup(tmp_path, fake.url, out)
    finally:
        await fake.close()
    links = {it["n"]: it["j"] for it in gallery_items(out / "index.html")}
    assert links == {
        name: f"./{name}.imgsync.json" if name in names[:2] else f"./{name}.json" for name in names
    }
    for name in names:
        side = json.loads(resolve(out, links[name]).read_text())
        assert side["remote_id"] == name.rpartition(".")[0]
    assert all((out / f"{n}.json").read_text() == '{"my": "notes"}' for n in names[:2])


async def _seeded_gallery(tmp_path: Path, n: int, chunk_size: int, index_from: int = 1) -> Path:
    """A backup folder of ``n`` images recorded the way ``backup`` records them (titled
    ``shot-<k>-x``, dated an hour apart), its gallery written in data files of
    ``chunk_size``."""
    from imgsync.hashing import digest_bytes
    from imgsync.models import ItemMeta, RemoteItem
    from imgsync.state import queries
    from imgsync.state.store import StateStore

    out = tmp_path / "backup"
    out.mkdir()
    state = tmp_path / "pages-state.db"
    rows = []
    for k in range(n):
        data, ext = seed_image(k % 20)
        data += k.to_bytes(4, "big")
        d = digest_bytes(data, True)
        name = f"{d.md5}.{ext}"
        (out / name).write_bytes(data)
        rows.append((d.sha256, d.size, d.md5 or "", name, k))
    key = f"local:{out.resolve()}"
    async with StateStore(state) as store:
        await queries.record_objects(
            store, [(s, size, m, "image/png") for s, size, m, _, _ in rows]
        )
        src, dst = [], []
        for sha, size, md5, name, k in rows:
            meta = ItemMeta(title=f"shot-{k}-x", created_at=1.6e9 + k * 3600)
            src.append(
                (sha, RemoteItem(md5, name, size, url=f"https://i.gyazo.com/{name}", meta=meta))
            )
            dst.append((sha, RemoteItem(name, name, size, meta=meta)))
        await queries.record_locations(store, "gy", src)
        await queries.record_locations(store, key, dst)
    with must_open(state) as conn:
        update_gallery(conn, out, key, source="gy", chunk_size=chunk_size, index_from=index_from)
    return out


async def test_the_gallerys_search_index_names_the_data_files_a_filter_can_match(
    tmp_path: Path,
) -> None:
    """The gallery writes a search index beside its data files (one bitmap per file, of
    the text its filter searches): each item's words are in its own file's bitmap (a
    filter never skips a file holding a match), and a title's whole word is in no other
    file's, so a filter for it loads one file of three."""
    import base64
    import re

    from pagecheck import report_meta

    from imgsync.pages.common import GRAM, TOKEN_MARK, gram_bit
    from imgsync.pages.gallery import GALLERY_INDEX_BITS

    out = await _seeded_gallery(tmp_path, 30, 10)
    index = out / "index.html"
    meta = report_meta(index)
    files = gallery_files(index)
    assert len(files) == 3 and meta["count"] == 30
    text = resolve(out, meta["index"]).read_text(encoding="utf-8")
    head = f"IMGSYNC_GALLERY_INDEX({GALLERY_INDEX_BITS}, 4, "
    assert text.startswith(head) and text.endswith(");\n")
    maps = [base64.b64decode(m) for m in json.loads(text[len(head) : -3])]
    assert len(maps) == 3

    def has(bitmap: bytes, piece: str) -> bool:
        b = gram_bit(piece, GALLERY_INDEX_BITS)
        return bool(bitmap[b >> 3] & (1 << (b & 7)))

    def may_hold(bitmap: bytes, word: str) -> bool:  # as the page's mayHold(wordBits(...))
        pieces = [word[i : i + GRAM] for i in range(len(word) - GRAM + 1)]
        pieces += [TOKEN_MARK + r for r in re.split(r"[^a-z0-9]+", word)[1:-1] if r]
        return all(has(bitmap, p) for p in pieces)

    for n, path in enumerate(files):
        body = path.read_text(encoding="utf-8")
        items = json.loads("[" + body.split("[\n", 1)[1].rsplit("\n]", 1)[0] + "]")
        for it in items:
            for word in (it["t"], it["n"].lower(), it["h"][:20], "2020-09-", f"-{it['t'][5:-2]}-"):
                assert may_hold(maps[n], word), (n, word)
        k = int(items[0]["t"].split("-")[1])
        word = f"-{k}-"  # a whole word of one title: in one file's bitmap only
        assert [may_hold(m, word) for m in maps].count(True) == 1, word


async def test_a_gallery_search_index_deleted_by_hand_is_written_again(tmp_path: Path) -> None:
    """The next update with nothing new notices the index is missing and writes it (the
    page would still work without it, loading every data file for a filter)."""
    from pagecheck import report_meta

    out = await _seeded_gallery(tmp_path, 12, 5)
    index_file = resolve(out, report_meta(out / "index.html")["index"])
    index_file.unlink()
    key = f"local:{out.resolve()}"
    with must_open(tmp_path / "pages-state.db") as conn:
        update_gallery(conn, out, key, source="gy", chunk_size=5, index_from=1)
    assert index_file.is_file()
    assert resolve(out, report_meta(out / "index.html")["index"]) == index_file


async def test_a_small_gallery_has_no_search_index_and_gets_one_when_it_grows(
    tmp_path: Path,
) -> None:
    """Below ``index_from`` data files the page loads them all for a filter (no index,
    no CPU spent on one); from there on the index is written, the data files kept."""
    from pagecheck import report_meta

    out = await _seeded_gallery(tmp_path, 12, 5, index_from=4)
    assert report_meta(out / "index.html")["index"] is None
    assert not list((out / DATA_DIR).glob("i-*.js"))
    before = {p.name for p in gallery_files(out / "index.html")}
    key = f"local:{out.resolve()}"
    with must_open(tmp_path / "pages-state.db") as conn:
        update_gallery(conn, out, key, source="gy", chunk_size=5, index_from=3)
    assert {p.name for p in gallery_files(out / "index.html")} == before
    (index_file,) = (out / DATA_DIR).glob("i-*.js")
    assert resolve(out, report_meta(out / "index.html")["index"]) == index_file
