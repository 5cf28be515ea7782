"""The Discord Images emulator over real loopback HTTP, against hosts.md §4."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.discordimages import DiscordImagesFake, create
from imgsync.fakehosts.images import make_jpeg, make_png, sniff
from imgsync.testing import serve_emulator

TOKEN = "images_api"
LIST_KEYS = [
    "id",
    "name",
    "userid",
    "albumid",
    "timestamp",
    "size",
    "file",
    "date",
    "album",
    "extname",
    "thumb",
]


@contextlib.asynccontextmanager
async def running(host: DiscordImagesFake) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """Serve ``host`` on a free loopback port; yield its base URL and a session sending the token."""
    async with (
        serve_emulator(host) as emulator,
        aiohttp.ClientSession(headers={"token": TOKEN}) as session,
    ):
        yield emulator.url, session


def files_form(*files: tuple[str, bytes], field: str = "files[]") -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, data in files:
        form.add_field(field, data, filename=name, content_type="application/octet-stream")
    return form


async def upload(
    session: aiohttp.ClientSession, base: str, *files: tuple[str, bytes], field: str = "files[]"
) -> tuple[int, Any]:
    async with session.post(base + "/api/upload", data=files_form(*files, field=field)) as resp:
        return resp.status, await resp.json()


async def listing(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with session.get(url) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["success"] is True and list(body) == ["success", "files"]
    files: list[dict[str, Any]] = body["files"]
    return files


async def test_token_header_is_required() -> None:
    """No ``token`` header -> 401 "No token provided"; a wrong one -> 401 "Invalid token"."""
    host = DiscordImagesFake(Knobs(token=TOKEN))
    async with running(host) as (base, _), aiohttp.ClientSession() as anon:
        for method, path in (("GET", "/api/uploads"), ("POST", "/api/upload")):
            async with anon.request(method, base + path) as resp:
                assert resp.status == 401
                assert await resp.json() == {"success": False, "description": "No token provided"}
            async with anon.request(method, base + path, headers={"token": "nope"}) as resp:
                assert resp.status == 401
                assert await resp.json() == {"success": False, "description": "Invalid token"}


async def test_upload_reply_list_entry_and_served_bytes() -> None:
    """An upload answers lolisafe-style, is listed with the documented fields and served as sent."""
    now = 1_543_940_602  # 2018-12-04, the docs' era
    host = DiscordImagesFake(Knobs(token=TOKEN), clock=lambda: now)
    picture = make_jpeg(3)
    assert len(picture) == 1623
    async with running(host) as (base, session):
        status, body = await upload(session, base, ("Holiday.JPG", picture))
        assert status == 200 and body["success"] is True and len(body["files"]) == 1
        item = body["files"][0]
        assert list(item) == ["name", "size", "url"]
        assert re.fullmatch(r"[A-Za-z0-9]{5}\.jpg", item["name"]) and item["size"] == len(picture)
        assert item["url"] == f"{base}/{item['name']}"
        async with session.get(item["url"]) as resp:
            assert resp.status == 200 and resp.content_type == "image/jpeg"
            assert await resp.read() == picture
        (entry,) = await listing(session, base + "/api/uploads")
        thumb_url = f"{base}/thumbs/{item['name'][:-4]}.png"
        async with session.get(thumb_url) as resp:
            thumb = await resp.read()
    assert list(entry) == LIST_KEYS
    local = time.localtime(now)
    assert entry == {
        "id": 1,
        "name": item["name"],
        "userid": 1,
        "albumid": None,
        "timestamp": now,
        "size": "1.62 kB",  # 1623 bytes
        "file": item["url"],
        "date": f"{local.tm_year}-{local.tm_mon}-{local.tm_mday} "
        f"{local.tm_hour:02d}:{local.tm_min:02d}:{local.tm_sec:02d}",
        "album": "",
        "extname": ".jpg",
        "thumb": thumb_url,
    }
    assert re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2} \d{2}:\d{2}:\d{2}", entry["date"])
    info = sniff(thumb)
    assert info is not None and info[0] == "image/png"


async def test_size_text_and_non_image_files() -> None:
    """List sizes read like the docs ("14 B", "8.12 kB", "508 kB"); a .txt has no ``thumb``."""
    async with running(DiscordImagesFake(Knobs(token=TOKEN))) as (base, session):
        status, body = await upload(
            session,
            base,
            ("notes.txt", b"fourteen bytes"),
            ("a.png", make_png(8, 8, 1)[:33] + bytes(8120 - 33)),
            ("b.png", bytes(508_000)),
            ("c.bin", bytes(1_234_567)),
        )
        assert status == 200 and [f["size"] for f in body["files"]] == [14, 8120, 508_000, 1234567]
        files = await listing(session, base + "/api/uploads")
        async with session.get(files[-1]["file"]) as resp:
            note = (resp.status, resp.content_type, await resp.read())
    assert [f["size"] for f in files] == ["1.23 MB", "508 kB", "8.12 kB", "14 B"]
    assert [f["id"] for f in files] == [4, 3, 2, 1]  # newest first
    assert "thumb" not in files[-1] and files[-1]["extname"] == ".txt"
    assert "thumb" not in files[0] and files[0]["extname"] == ".bin"
    assert note == (200, "text/plain", b"fourteen bytes")


async def test_upload_failures_are_http_200_with_success_false() -> None:
    """No files, a blocked extension, an oversized file or a wrong field name -> success:false."""
    host = DiscordImagesFake(Knobs(token=TOKEN, max_upload_bytes=100))
    async with running(host) as (base, session):
        async with session.post(base + "/api/upload", data={"note": "no file here"}) as resp:
            assert resp.status == 200
            assert await resp.json() == {"success": False, "description": "No files."}
        status, body = await upload(session, base, ("setup.EXE", b"MZ"))
        assert status == 200 and body["success"] is False and "EXE" in body["description"]
        status, body = await upload(session, base, ("big.png", bytes(101)))
        assert body == {"success": False, "description": "File too large"}
        status, body = await upload(session, base, ("a.png", b"x"), field="file")
        assert body == {"success": False, "description": "Unexpected field"}
        assert await listing(session, base + "/api/uploads") == []


async def test_paging_is_off_by_default_and_25_per_page_when_on() -> None:
    """Without ``paging`` the list is whole and ``/api/uploads/1`` is a 404; with it, 25 a page."""
    async with running(DiscordImagesFake(Knobs(token=TOKEN, seed=30))) as (base, session):
        assert len(await listing(session, base + "/api/uploads")) == 30
        async with session.get(base + "/api/uploads/1") as resp:
            assert resp.status == 404
    paged = DiscordImagesFake(Knobs(token=TOKEN, seed=30), paging=True)
    async with running(paged) as (base, session):
        first = await listing(session, base + "/api/uploads/0")
        second = await listing(session, base + "/api/uploads/1")
        assert await listing(session, base + "/api/uploads/2") == []
        assert await listing(session, base + "/api/uploads") == first
    assert len(first) == 25 and len(second) == 5
    ids = [f["id"] for f in first + second]
    assert ids == sorted(ids, reverse=True) == list(range(30, 0, -1))


async def test_delete_when_enabled() -> None:
    """With ``delete`` a file is removed by id (then 404); without it the route does not exist."""
    host = DiscordImagesFake(Knobs(token=TOKEN, seed=3), delete=True)
    async with running(host) as (base, session):
        victim = (await listing(session, base + "/api/uploads"))[0]
        async with session.post(base + "/api/upload/delete", json={"id": victim["id"]}) as resp:
            assert await resp.json() == {"success": True}
        async with session.get(victim["file"]) as resp:
            assert resp.status == 404
        async with session.get(victim["thumb"]) as resp:
            assert resp.status == 404
        async with session.post(base + "/api/upload/delete", json={"id": victim["id"]}) as resp:
            assert (await resp.json())["success"] is False
        assert victim["id"] not in [f["id"] for f in await listing(session, base + "/api/uploads")]
        async with session.get(base + "/_fakehost/stats") as resp:
            stats = await resp.json()
    assert stats["deletes"] == 1 and stats["items"] == 2
    plain = DiscordImagesFake(Knobs(token=TOKEN, seed=3))
    async with (
        running(plain) as (base, session),
        session.post(base + "/api/upload/delete", json={"id": 1}) as resp,
    ):
        assert resp.status == 404


async def test_rate_limit_is_http_429() -> None:
    """Past ``knobs.rate`` an API call gets 429 "Rate limited" and counts as throttled."""
    async with running(DiscordImagesFake(Knobs(token=TOKEN, rate="2/minute"))) as (base, session):
        await listing(session, base + "/api/uploads")
        await upload(session, base, ("a.png", make_png(4, 4, 1)))
        async with session.get(base + "/api/uploads") as resp:
            assert resp.status == 429
            assert await resp.json() == {"success": False, "description": "Rate limited"}
        async with session.get(base + "/_fakehost/stats") as resp:
            stats = await resp.json()
    assert stats["throttled"] == 1 and stats["uploads"] == 1 and stats["requests"] == 3


async def test_seed_is_deterministic_with_a_few_text_files() -> None:
    """``--seed 10`` gives ten files, two of them .txt, the same names on every start."""
    host = create(Knobs(token=TOKEN, seed=10))
    async with running(host) as (base, session):
        files = await listing(session, base + "/api/uploads")
        for f in files:
            async with session.get(f["file"]) as resp:
                assert resp.status == 200
        async with session.get(base + "/_fakehost/stats") as resp:
            stats = await resp.json()
    assert len(files) == 10 and sorted(f["extname"] for f in files).count(".txt") == 2
    assert {f["album"] for f in files} == {"", "Screenshots"}
    assert all(isinstance(f["albumid"], int) == bool(f["album"]) for f in files)
    assert [f.name for f in create(Knobs(token=TOKEN, seed=10)).files()] == [
        f["name"] for f in files
    ]
    assert stats["items"] == stats["distinct_checksums"] == 10 and stats["uploads"] == 0
    small = DiscordImagesFake(Knobs(token=TOKEN, seed=4)).files()
    assert all(f.is_image for f in small)
