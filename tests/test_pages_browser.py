"""The pages in a real headless browser (Debian's ``chromium``).

Opt-in (``IMGSYNC_BROWSER_TESTS=1`` with ``chromium`` installed): ``.ci/run`` installs
Debian's chromium when it can and turns them on; a plain ``pytest`` skips them, and the pages
are still checked with ``html.parser`` (test_gallery.py, test_report.py). This module checks what only a browser can: every thumbnail of the page
loads from the folder, no script error, and a hostile title is rendered as text.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import aiohttp
import pytest
from helpers import run_cli_async, start_fake, write_config

from imgsync.fakehosts.chevereto import CheveretoFake
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import seed_image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    not (os.environ.get("IMGSYNC_BROWSER_TESTS") and CHROMIUM),
    reason="browser tests are opt-in: IMGSYNC_BROWSER_TESTS=1 and chromium installed",
)
TOKEN = "browser-token-1"
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'


async def render(url: str) -> tuple[str, str]:
    """The DOM after scripts ran (a very tall window: every image is in view), and the
    browser's log."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1400,40000",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    return out.decode(), err.decode(errors="replace")


def body_data(dom: str, key: str) -> str:
    start = dom.index(f'data-{key}="') + len(f'data-{key}="')
    return dom[start : dom.index('"', start)]


def script_errors(log: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)
    ]


@pytest.mark.timeout(300)
async def test_gallery_and_report_in_a_browser(tmp_path: Path) -> None:
    gy = await start_fake(GyazoFake(Knobs(token=TOKEN, seed=200, rate="100000/second")))
    chv = await start_fake(CheveretoFake(Knobs(token="chv-browser", rate="100000/second")))
    try:
        form = aiohttp.FormData()
        form.add_field("access_token", TOKEN)
        form.add_field("title", HOSTILE)
        form.add_field("created_at", "2000000000")  # the newest: first on the page
        form.add_field("imagedata", seed_image(777)[0], filename="h.png")
        async with aiohttp.ClientSession() as s, s.post(gy.url + "/api/upload", data=form) as r:
            assert r.status == 200
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{gy.url}"\ntoken_env = "GY"\n'
            f'[remotes.chv]\ntype = "chevereto"\nbase_url = "{chv.url}"\ntoken_env = "CHV"\n',
        )
        env = {"GY": TOKEN, "CHV": "chv-browser"}
        out = tmp_path / "backup"
        proc = await run_cli_async("--config", str(cfg), "backup", "gy:", str(out), env=env)
        assert proc.returncode == 0, proc.stderr
        page = tmp_path / "report.html"
        proc = await run_cli_async(
            *("--config", str(cfg), "migrate", "gy:", "chv:", "--map", str(tmp_path / "m.csv")),
            *("--report", str(page)),
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
    finally:
        await gy.close()
        await chv.close()

    dom, log = await render((out / "index.html").as_uri() + "#per=240")
    assert body_data(dom, "shown") == "201"
    assert body_data(dom, "loaded") == "201" and body_data(dom, "broken") == "0"
    assert not script_errors(log), script_errors(log)
    assert "&lt;script&gt;document.title" in dom  # shown as text ...
    assert '<script>document.title="pwned"' not in dom  # ... never as an element
    assert "<title>Backup: backup</title>" in dom

    dom, log = await render(page.as_uri())
    assert body_data(dom, "shown") == "100"
    assert body_data(dom, "loaded") == "100" and body_data(dom, "broken") == "0"
    assert not script_errors(log), script_errors(log)
    assert "&lt;script&gt;document.title" in dom


@pytest.mark.timeout(300)
async def test_a_report_in_data_files_pages_and_filters_in_a_browser(tmp_path: Path) -> None:
    """1,250 items in three data files: the first page shows the newest 100; a later page
    and a filter load the other files (from file:, no server)."""
    from imgsync.models import ItemMeta, RemoteItem
    from imgsync.pages.report import write_report
    from imgsync.state import queries
    from imgsync.state.reader import must_open
    from imgsync.state.store import StateStore

    state = tmp_path / "state.db"
    src, dst = "gyazo:https://api.gyazo.com#a", "chevereto:https://img.example/"
    async with StateStore(state) as store:
        shas = [f"{i:064x}" for i in range(1250)]
        await queries.record_objects(store, [(s, 1000, None, "image/png") for s in shas])
        await queries.record_locations(
            store,
            src,
            [
                (
                    s,
                    RemoteItem(
                        f"g{i}",
                        f"g{i}.png",
                        meta=ItemMeta(title=f"shot-{i}-x", created_at=1.6e9 + i),
                    ),
                )
                for i, s in enumerate(shas)
            ],
        )
    page = tmp_path / "report.html"
    with must_open(state) as db:
        write_report(db, page, job="j", source=src, dest=dst, summary={"checked": 0})

    dom, log = await render(page.as_uri())
    assert body_data(dom, "shown") == "100" and body_data(dom, "missing") == "0"
    assert "shot-1249-x" in dom and "shot-1149-x" not in dom
    assert not script_errors(log), script_errors(log)
    dom, log = await render(page.as_uri() + "#page=12")  # items 1101-1200: the third file
    assert body_data(dom, "shown") == "100"
    assert "shot-149-x" in dom and "shot-49-x" not in dom
    dom, log = await render(page.as_uri() + "#q=shot-7-x")  # every file, then the filter
    assert body_data(dom, "shown") == "1" and "shot-7-x" in dom
    assert not script_errors(log), script_errors(log)


@pytest.mark.timeout(300)
async def test_a_report_filter_loads_only_the_data_files_it_needs(tmp_path: Path) -> None:
    """1,250 items in three data files (newest first: the oldest 250 in the third). A
    status that only the oldest items have, and a filter by one old item's title, load
    that third file only (the text filter through the page's small index); a word too
    short for the index loads them all."""
    from imgsync.models import ItemMeta, RemoteItem
    from imgsync.pages.report import write_report
    from imgsync.state import queries
    from imgsync.state.reader import must_open
    from imgsync.state.store import StateStore

    state = tmp_path / "state.db"
    src, dst = "gyazo:https://api.gyazo.com#a", "chevereto:https://img.example/"
    async with StateStore(state) as store:
        shas = [f"{i:064x}" for i in range(1250)]
        await queries.record_objects(store, [(s, 1000, None, "image/png") for s in shas])
        await queries.record_locations(
            store,
            src,
            [
                (
                    s,
                    RemoteItem(
                        f"g{i}",
                        f"g{i}.png",
                        url=f"https://i.gyazo.com/{s[-12:]}.png",
                        meta=ItemMeta(title=f"shot-{i}-x", created_at=1.6e9 + i),
                    ),
                )
                for i, s in enumerate(shas)
            ],
        )
        await queries.record_locations(  # the oldest 100 were copied
            store,
            dst,
            [
                (s, RemoteItem(f"c{i}", f"c{i}.png", url=f"https://img.example/c{i}.png"))
                for i, s in enumerate(shas[:100])
            ],
        )
    page = tmp_path / "report.html"
    with must_open(state) as db:
        write_report(db, page, job="j", source=src, dest=dst, summary={"checked": 0})

    dom, log = await render(page.as_uri())
    assert body_data(dom, "shown") == "100" and body_data(dom, "files") == "1"
    dom, log = await render(page.as_uri() + "#status=copied")
    assert body_data(dom, "shown") == "100" and body_data(dom, "files") == "1"
    assert "shot-99-x" in dom and "shot-100-x" not in dom
    assert not script_errors(log), script_errors(log)
    dom, log = await render(page.as_uri() + "#status=copied&page=2")  # past the end: last
    assert body_data(dom, "shown") == "100" and body_data(dom, "files") == "1"
    dom, log = await render(page.as_uri() + "#q=shot-7-x")
    assert body_data(dom, "shown") == "1" and "shot-7-x" in dom
    assert body_data(dom, "files") == "1"
    assert not script_errors(log), script_errors(log)
    dom, log = await render(page.as_uri() + "#q=SHOT-1249-X%20%20i.gyazo")  # two words
    assert body_data(dom, "shown") == "1" and body_data(dom, "files") == "1"
    dom, log = await render(page.as_uri() + "#q=0000000")  # a checksum fragment: all
    assert body_data(dom, "files") == "3"
    dom, log = await render(page.as_uri() + "#q=-x")  # too short for the index: all
    assert body_data(dom, "shown") == "100" and body_data(dom, "files") == "3"
    dom, log = await render(page.as_uri() + "#q=no-such-item")  # in no file: none loaded
    assert body_data(dom, "shown") == "0" and body_data(dom, "files") == "0"
    assert not script_errors(log), script_errors(log)


@pytest.mark.timeout(300)
async def test_a_gallery_filter_loads_only_the_data_files_it_needs(tmp_path: Path) -> None:
    """30 images in three data files of 10: the gallery opened without a filter loads all
    three; opened with a filter by one title (a link with ``#q=``), only the file that can
    hold it (through the page's small index); a word too short for the index, all."""
    from test_gallery import _seeded_gallery

    out = await _seeded_gallery(tmp_path, 30, 10)
    index = (out / "index.html").as_uri()
    dom, log = await render(index)
    assert body_data(dom, "shown") == "30" and body_data(dom, "files") == "3"
    assert not script_errors(log), script_errors(log)
    dom, log = await render(index + "#q=shot-7-x")
    assert body_data(dom, "shown") == "1" and "shot-7-x" in dom
    assert body_data(dom, "files") == "1", body_data(dom, "files")
    assert "(filtered from 30)" in dom
    assert not script_errors(log), script_errors(log)
    dom, log = await render(index + "#q=t-7")  # too short to look up: every file
    assert body_data(dom, "shown") == "1" and body_data(dom, "files") == "3"
    assert not script_errors(log), script_errors(log)
