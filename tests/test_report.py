"""The migration report page: a Gyazo -> Chevereto migration with failures, its page read
with ``html.parser``, then the same page rebuilt from state by ``imgsync report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
from helpers import run_cli_async, start_fake, write_config
from pagecheck import (
    assert_offline,
    is_relative,
    parse,
    report_files,
    report_index,
    report_items,
    resolve,
)

from imgsync.fakehosts.chevereto import CheveretoFake
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import seed_image

GY = "report-gyazo-token-1"
CHV = "report_chv_key_2"
HOSTILE = "<script>alert(1)</script>"


def _totals(path: Path) -> dict[str, int]:
    """The totals table's cells, by their ``data-k``."""
    html = path.read_text()
    values = {}
    for tag, attrs in parse(path).tags:
        key = attrs.get("data-k")
        if tag == "td" and key:
            start = html.index(f'data-k="{key}">') + len(f'data-k="{key}">')
            values[key] = int(html[start : html.index("<", start)])
    return values


async def _gyazo_upload(url: str, title: str, seed: int) -> None:
    """One image with a title and a source URL, uploaded to the Gyazo emulator at ``url``."""
    form = aiohttp.FormData()
    form.add_field("access_token", GY)
    form.add_field("title", title)
    form.add_field("referer_url", "https://example.org/src")
    form.add_field("imagedata", seed_image(seed)[0], filename="t.png")
    async with aiohttp.ClientSession() as s, s.post(url + "/api/upload", data=form) as r:
        assert r.status == 200


async def test_migration_report_lists_every_item_with_both_urls_and_balanced_totals(
    tmp_path: Path,
) -> None:
    gyazo = await start_fake(GyazoFake(Knobs(token=GY, seed=20, rate="100000/second")))
    chv_host = CheveretoFake(Knobs(token=CHV, max_upload_bytes=3000, rate="100000/second"))
    chv = await start_fake(chv_host)
    try:
        await _gyazo_upload(gyazo.url, HOSTILE, 900)
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{gyazo.url}"\ntoken_env = "GY"\n'
            f'[remotes.chv]\ntype = "chevereto"\nbase_url = "{chv.url}"\ntoken_env = "CHV"\n',
        )
        env = {"GY": GY, "CHV": CHV}
        base = ("--config", str(cfg))
        backup = tmp_path / "backup"
        proc = await run_cli_async(*base, "backup", "gy:", str(backup), env=env)
        assert proc.returncode == 0, proc.stderr

        page = tmp_path / "reports" / "gy-to-chv.html"
        args = (*base, "migrate", "gy:", "chv:", "--map", str(tmp_path / "map.csv"))
        proc = await run_cli_async(*args, "--report", str(page), "--json", env=env)
        assert proc.returncode == 1, proc.stderr  # the larger images were refused
        summary = json.loads(proc.stdout)
        assert summary["report"] == str(page) and 0 < summary["failed"] < 21

        assert_offline(page)
        items = report_items(page)
        assert len(items) == 21  # every item of the source
        by_status: dict[str, list[dict[str, Any]]] = {}
        for it in items:
            by_status.setdefault(str(it["st"]), []).append(it)
        assert len(by_status["copied"]) == summary["copied"]
        assert len(by_status["failed"]) == summary["failed"]
        assert set(by_status) == {"copied", "failed"}
        for it in by_status["copied"]:
            assert str(it["o"]).startswith(gyazo.url) and str(it["n"]).startswith(chv.url)
            async with aiohttp.ClientSession() as s, s.get(str(it["n"])) as r:
                assert r.status == 200
        for it in by_status["failed"]:
            assert str(it["o"]).startswith(gyazo.url) and "n" not in it
            assert it.get("e")
        for it in items:  # the thumbnail is the backed-up file, linked from the report
            th = str(it["th"])
            assert is_relative(th) and th.startswith("../backup/")
            assert resolve(page.parent, th).is_file()
        assert all(it["o"] != it.get("n") for it in items)
        carried = [it for it in by_status["copied"] if it.get("m", {}).get("source_url")]
        assert carried
        for it in carried:  # Chevereto has no field for a source URL or a date
            assert "source_url" in it["x"] and "created_at" in it["x"]
            if it["m"].get("title"):
                assert "title" in it["c"]
        hostile = next(it for it in items if it.get("t") == HOSTILE)
        assert hostile["st"] in ("copied", "failed")
        assert "<script>alert" not in page.read_text()

        totals = _totals(page)
        assert totals["checked"] == 21
        assert totals["copied"] == summary["copied"] and totals["failed"] == summary["failed"]
        assert totals["checked"] == (
            totals["copied"] + totals["present"] + totals["skipped"] + totals["failed"]
        )
        assert 'id="balance">balances' in page.read_text()
        failures = parse(page).attr("details", "id")
        assert failures == ["failures"]

        # later, from state: the same items and totals
        again = tmp_path / "again.html"
        proc = await run_cli_async(
            *base, "report", str(again), "--src", "gy:", "--dst", "chv:", env=env
        )
        assert proc.returncode == 0, proc.stderr
        assert f"{summary['failed']} failed" in proc.stdout
        rebuilt = report_items(again)
        assert [(i["id"], i["st"], i.get("n")) for i in rebuilt] == [
            (i["id"], i["st"], i.get("n")) for i in items
        ]
        assert _totals(again) == totals

        # the rest moves on a second run; the report follows
        chv_host.knobs.max_upload_bytes = 50 * 1024 * 1024
        proc = await run_cli_async(*args, "--report", str(page), "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        second = json.loads(proc.stdout)
        items = report_items(page)
        assert {it["st"] for it in items} == {"copied"} and len(items) == 21
        totals = _totals(page)
        assert totals == {
            "checked": 21,
            "copied": second["copied"],
            "present": 21 - second["copied"],
            "skipped": 0,
            "failed": 0,
        }
    finally:
        await gyazo.close()
        await chv.close()


async def test_report_needs_a_run_and_a_real_one(tmp_path: Path) -> None:
    proc = await run_cli_async("report", str(tmp_path / "r.html"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "nothing has run yet" in proc.stderr
    cfg = write_config(
        tmp_path / "cfg.toml",
        '[remotes.gy]\ntype = "gyazo"\nbase_url = "http://127.0.0.1:9"\ntoken = "t"\n',
    )
    proc = await run_cli_async(
        *("--config", str(cfg), "migrate", "gy:", str(tmp_path / "d")),
        *("--map", str(tmp_path / "m.csv"), "--report", str(tmp_path / "r.html"), "--dry-run"),
    )
    assert proc.returncode == 2 and "--report needs a real run" in proc.stderr
    assert not (tmp_path / "r.html").exists()


async def test_a_large_report_is_a_small_page_that_loads_its_items_from_data_files(
    tmp_path: Path,
) -> None:
    """1,250 items: the page stays small (totals, pager, script) and the items are in data
    files beside it, 500 each; writing it again rewrites nothing that did not change and
    leaves no stale data file."""
    from imgsync.models import ItemMeta, RemoteItem
    from imgsync.pages.report import PER_FILE, build_items, data_dir, write_report
    from imgsync.state import queries
    from imgsync.state.reader import must_open
    from imgsync.state.store import StateStore

    state = tmp_path / "state.db"
    src, dst = "gyazo:https://api.gyazo.com#a", "chevereto:https://img.example/"

    async def record(start: int, count: int) -> None:
        async with StateStore(state) as store:
            shas = [f"{i:064x}" for i in range(start, start + count)]
            await queries.record_objects(
                store, [(s, 1000 + i, None, "image/png") for i, s in enumerate(shas)]
            )
            await queries.record_locations(
                store,
                src,
                [
                    (
                        s,
                        RemoteItem(
                            f"g{start + i}",
                            f"g{start + i}.png",
                            url=f"https://i.gyazo.com/{start + i}.png",
                            meta=ItemMeta(
                                title=f"shot {start + i} <b>", created_at=1.6e9 + start + i
                            ),
                        ),
                    )
                    for i, s in enumerate(shas)
                ],
            )
            await queries.record_locations(
                store,
                dst,
                [
                    (
                        s,
                        RemoteItem(
                            f"c{start + i}",
                            f"c{start + i}.png",
                            url=f"https://img.example/{start + i}.png",
                        ),
                    )
                    for i, s in enumerate(shas)
                ],
            )

    await record(0, 1250)
    page = tmp_path / "out" / "report.html"
    summary = {"verb": "migrate", "checked": 1250, "copied": 1250}
    with must_open(state) as db:
        res = write_report(db, page, job="j", source=src, dest=dst, summary=summary)
        expected = build_items(db, "j", src, dst, page.parent)
    assert res.items == 1250 and res.balanced
    assert page.stat().st_size < 40_000  # the page itself: no item data in it
    files = report_files(page)
    assert [f.parent for f in files] == [data_dir(page)] * 3
    assert report_items(page) == expected  # every item, newest first, in order
    assert report_items(page)[0]["t"] == "shot 1249 <b>"
    assert PER_FILE == 500 and all(f.stat().st_size < 400_000 for f in files)
    assert_offline(page)
    assert "shot 1249 <b>" not in page.read_text()

    stamps = {f: f.stat().st_mtime_ns for f in files}
    with must_open(state) as db:
        write_report(db, page, job="j", source=src, dest=dst, summary=summary)
    assert report_files(page) == files and {f: f.stat().st_mtime_ns for f in files} == stamps

    # pages beside it have folders of their own
    other = page.with_name("report.htm")
    odd = page.with_name("my report #1 é.html")
    with must_open(state) as db:
        write_report(db, other, job="j", source=src, dest=dst, summary=summary)
        write_report(db, odd, job="j", source=src, dest=dst, summary=summary)
    await record(1250, 10)  # newer items: every file shifts, the old ones go
    with must_open(state) as db:
        write_report(db, page, job="j", source=src, dest=dst, summary=summary)
    assert len(report_items(page)) == 1260
    assert len(report_items(other)) == 1250 and len(report_items(odd)) == 1250
    assert sorted(data_dir(page).iterdir()) == sorted([*report_files(page), report_index(page)])
    assert data_dir(other).name == "report.htm.files"
    assert data_dir(odd).name == "my report #1 é_files" and len(report_files(odd)) == 3


async def test_a_host_that_keeps_no_metadata_shows_it_dropped(tmp_path: Path) -> None:
    """Gyazo -> Discord Images: the host keeps no title, description, source URL or date
    of an upload, and its upload reply echoes none; the report says so (dropped), not
    "carried" as the upload's own metadata claimed."""
    from imgsync.fakehosts.discordimages import DiscordImagesFake

    gyazo = await start_fake(GyazoFake(Knobs(token=GY, seed=0, rate="100000/second")))
    di = await start_fake(DiscordImagesFake(Knobs(token=CHV)))
    try:
        await _gyazo_upload(gyazo.url, "a titled picture", 901)
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{gyazo.url}"\ntoken_env = "GY"\n'
            f'[remotes.di]\ntype = "discordimages"\nbase_url = "{di.url}"\ntoken_env = "DI"\n',
        )
        page = tmp_path / "gy-to-di.html"
        args = ("--config", str(cfg), "migrate", "gy:", "di:", "--map", str(tmp_path / "m.csv"))
        proc = await run_cli_async(*args, "--report", str(page), env={"GY": GY, "DI": CHV})
        assert proc.returncode == 0, proc.stderr
        [item] = report_items(page)
        assert item["st"] == "copied" and item["m"]["title"] == "a titled picture"
        assert {"title", "source_url", "created_at"} <= set(item["x"]), item
        assert not item.get("c"), item
    finally:
        await gyazo.close()
        await di.close()


def test_the_search_index_holds_every_piece_a_filter_can_ask_for() -> None:
    """No false negative: for every item, each 4-character piece and each whole word of
    its searched fields (lower-cased) is set in its data file's bitmap, so the page never
    skips a file that holds a match; and the page's per-file status counts add up."""
    import base64
    import random
    import re

    from imgsync.pages.report import (
        GRAM,
        PER_FILE,
        SEARCHED,
        STATUSES,
        TOKEN_MARK,
        file_counts,
        gram_bit,
        index_text,
    )

    rng = random.Random(5)
    alphabet = "abcXYZ019-_./ éÉßΣς漢字😀"
    items = [
        {
            "id": f"id{i}",
            "st": rng.choice(STATUSES),
            "o": "https://h.example/" + "".join(rng.choices(alphabet, k=12)),
            "t": "".join(rng.choices(alphabet, k=rng.randint(0, 20))),
            "e": rng.choice([None, "HTTP 503: Service Unavailable"]),
            "h": f"{rng.getrandbits(256):064x}",
        }
        for i in range(1200)
    ]
    text = index_text(items)
    head = "IMGSYNC_REPORT_INDEX(65536, 4, "
    assert text.startswith(head) and text.endswith(");\n")
    maps = [base64.b64decode(b) for b in json.loads(text[len(head) : -3])]
    assert len(maps) == 3
    for n, it in enumerate(items):
        bitmap = maps[n // PER_FILE]
        for key in SEARCHED:
            value = it.get(key)
            if not isinstance(value, str):
                continue
            low = value.lower()
            pieces = [low[k : k + GRAM] for k in range(len(low) - GRAM + 1)]
            pieces += [TOKEN_MARK + t for t in re.findall(r"[a-z0-9]+", low)]
            for piece in pieces:
                b = gram_bit(piece)
                assert bitmap[b >> 3] & (1 << (b & 7)), (it, piece)
    counts = file_counts(items)
    assert [sum(c) for c in counts] == [500, 500, 200]
    for k, st in enumerate(STATUSES):
        assert sum(c[k] for c in counts) == sum(it["st"] == st for it in items)
