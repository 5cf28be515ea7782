"""The Lsky Pro emulator over real loopback HTTP, checked against the 39 recorded Lsky Pro 2 exchanges."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.images import make_gif, make_jpeg, make_png, sniff
from imgsync.fakehosts.lskypro import (
    LskyProFake,
    _url_window,
    create,
    human_date,
    redirect_page,
    reencode,
)

# A copy of shared/fixtures/lsky-2 (recorded from a real Lsky Pro 2.1 server), so CI needs
# nothing beside the checkout.
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lsky-2"
INPUTS = FIXTURES / "inputs"
TOKEN = "TEST_TOKEN"  # the token the fixtures were recorded with
ACCOUNT: dict[str, Any] = {
    "name": "oracle",
    "email": "oracle@example.invalid",
    "password": "oracle-pass-123",
}

FILE_FIELD = re.compile(
    r"<file (?P<name>[^,]+), (?P<size>\d+) bytes, md5 (?P<md5>[0-9a-f]{32})> "
    r"\(part Content-Type (?P<ctype>[^)]+)\)"
)
BINARY = re.compile(r"<binary (?P<size>\d+) bytes, md5 (?P<md5>[0-9a-f]{32})>")
SHAPES = {
    "date": r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}",
    "human_date": r"\d+(秒|分钟|小时|天|周|个月|年)前",
    "token": r"\d+\|[A-Za-z0-9]{40}",
}
RATE_HEADERS = {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"}


class Replay:
    """Replays recorded exchanges in order, learning this run's keys, names and checksums."""

    def __init__(self, base: str, session: aiohttp.ClientSession, host: LskyProFake) -> None:
        self.base = base
        self.session = session
        self.host = host
        self.keys: dict[str, str] = {}
        self.texts: dict[str, str] = {"http://HOST": base}  # recorded text -> this run's
        self.md5s: dict[str, str] = {}
        self.sha1s: dict[str, str] = {}
        self.names: dict[str, str] = {}

    def sub(self, text: str) -> str:
        for old in sorted(self.texts, key=len, reverse=True):
            text = text.replace(old, self.texts[old])
        return text

    def path(self, recorded: str) -> str:
        if m := re.fullmatch(r"/api/v1/images/(\w+)", recorded):
            return "/api/v1/images/" + self.keys.get(m[1], m[1])
        return self.sub(recorded)

    def learn(self, rec: dict[str, Any], got: dict[str, Any], sent_md5: str | None) -> None:
        """An upload reply: map the recorded volatile values to this run's."""
        assert re.fullmatch(r"[A-Za-z0-9]{6}", got["key"]), got["key"]
        assert re.fullmatch(r"[0-9a-f]{13}\." + re.escape(got["extension"]), got["name"])
        assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/" + re.escape(got["name"]), got["pathname"])
        assert re.fullmatch(r"[0-9a-f]{32}", got["md5"]) and re.fullmatch(
            r"[0-9a-f]{40}", got["sha1"]
        )
        # stored as sent exactly when the real host stored it as sent (GIF), else re-encoded
        assert (got["md5"] == sent_md5) == (rec["md5"] == sent_md5), rec["origin_name"]
        stored = self.host.images[got["key"]].data
        assert got["size"] == len(stored) / 1024 and hashlib.md5(stored).hexdigest() == got["md5"]
        self.keys[rec["key"]] = got["key"]
        self.names[rec["name"]] = got["name"]
        self.texts[rec["pathname"]] = got["pathname"]
        self.texts[rec["md5"]] = got["md5"]
        self.md5s[rec["md5"]] = got["md5"]
        self.sha1s[rec["sha1"]] = got["sha1"]

    def compare(self, rec: Any, got: Any, where: str = "body") -> None:
        """Same keys in the same order and the same types; values equal once mapped."""
        key = where.rsplit(".", 1)[-1]
        if isinstance(rec, dict):
            assert isinstance(got, dict) and list(got) == list(rec), f"{where}: {list(got)}"
            for k in rec:
                self.compare(rec[k], got[k], f"{where}.{k}")
        elif isinstance(rec, list):
            assert isinstance(got, list) and len(got) == len(rec), f"{where}: {got!r}"
            for i, (r, g) in enumerate(zip(rec, got, strict=True)):
                self.compare(r, g, f"{where}.{i}")
        elif key in SHAPES:
            assert isinstance(got, str) and re.fullmatch(SHAPES[key], got), f"{where}: {got!r}"
        elif key == "key":
            assert got == self.keys[rec], f"{where}: {got!r}"
        elif key == "name" and rec in self.names:
            assert got == self.names[rec], where
        elif key == "md5":
            assert got == self.md5s[rec], where
        elif key == "sha1":
            assert got == self.sha1s[rec], where
        elif key == "used_capacity" and isinstance(rec, float):
            assert got == sum(image.size_kb for image in self.host.user_images()), where
        elif key == "size" and isinstance(rec, float):
            assert isinstance(got, float), where  # checked against the stored bytes in learn()
        elif isinstance(rec, str):
            assert got == self.sub(rec), f"{where}: {got!r} != {self.sub(rec)!r}"
        else:
            assert type(got) is type(rec) and got == rec, f"{where}: {got!r} != {rec!r}"

    async def send(self, fx: dict[str, Any]) -> None:
        req, rec = fx["request"], fx["response"]
        title = fx["title"]
        headers = {k: v for k, v in req["headers"].items() if k.lower() != "content-type"}
        sent_md5 = None
        body: Any = None
        if req["body_kind"] == "urlencoded":
            body = dict(req["fields"])
        elif req["body_kind"] == "multipart":
            body = aiohttp.MultipartWriter("form-data")
            for name, value in req["fields"].items():
                m = FILE_FIELD.fullmatch(value)
                if m is None:
                    body.append(value).set_content_disposition("form-data", name=name)
                    continue
                file_bytes = (INPUTS / m["name"]).read_bytes()
                assert hashlib.md5(file_bytes).hexdigest() == m["md5"]
                sent_md5 = m["md5"]
                part = body.append(file_bytes, {"Content-Type": m["ctype"]})
                part.set_content_disposition("form-data", name=name, filename=m["name"])
        async with self.session.request(
            req["method"],
            self.base + self.path(req["path"]),
            params=req["query"] or None,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as resp:
            raw = await resp.read()
            got_headers = {
                k.decode().lower(): (k.decode(), v.decode()) for k, v in resp.raw_headers
            }

        assert resp.status == rec["status"], f"{title}: {resp.status} {raw[:300]!r}"
        for name, value in rec["headers"].items():
            assert name.lower() in got_headers, f"{title}: no {name} header"
            got_name, got_value = got_headers[name.lower()]
            assert got_name == name, f"{title}: header spelled {got_name!r}"
            if name == "X-RateLimit-Remaining":
                limit = int(rec["headers"]["X-RateLimit-Limit"])
                assert 0 <= int(got_value) < limit, f"{title}: {got_value}"
            elif name == "Content-Length":
                assert int(got_value) == len(raw), title
            else:
                assert got_value == self.sub(value), f"{title}: {name}: {got_value!r}"
        recorded_names = {n.lower() for n in rec["headers"]}
        extra = (RATE_HEADERS | {"location"}) & set(got_headers) - recorded_names
        assert not extra, f"{title}: headers the host does not send: {extra}"

        recorded = rec["body"]
        if isinstance(recorded, dict):
            got = json.loads(raw)
            data = recorded.get("data")
            if recorded.get("status") and isinstance(data, dict) and "key" in data:
                self.learn(data, got["data"], sent_md5)
            self.compare(recorded, got)
            return
        m = BINARY.fullmatch(recorded)
        assert m is not None, title
        if resp.status == 302:
            assert raw.decode() == redirect_page(self.base + "/login"), title
        elif resp.status != 200:
            assert raw.lstrip().lower().startswith(b"<!doctype html"), title
        else:
            got_md5 = hashlib.md5(raw).hexdigest()
            assert got_md5 == self.md5s.get(m["md5"], m["md5"]), f"{title}: not the stored bytes"
            if "body_md5_matches_upload" in rec:
                assert (got_md5 == m["md5"]) == rec["body_md5_matches_upload"], title


@contextlib.asynccontextmanager
async def running(host: LskyProFake) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    runner = web.AppRunner(host.make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}", session
    finally:
        await runner.cleanup()


def load_fixtures() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, json.loads(p.read_text())) for p in sorted(FIXTURES.glob("*.json"))]


async def test_replay_every_recorded_exchange() -> None:
    """All 39 exchanges, replayed in order over HTTP to one emulator, answer as the real host did:
    the same status, the same header names (and no rate/redirect headers the host did not send),
    the same body shape, with this run's keys, names and checksums in the places the recording
    had its own."""
    fixtures = load_fixtures()
    assert len(fixtures) == 39
    host = LskyProFake(Knobs(token=TOKEN), **ACCOUNT)
    async with running(host) as (base, session):
        replay = Replay(base, session, host)
        for name, fx in fixtures:
            try:
                await replay.send(fx)
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}") from exc
        async with session.get(base + "/_fakehost/stats") as resp:
            stats = await resp.json()
    # 06, 07, 11-14 stored; 23 deleted one; 24 and 25 deleted nothing; 35 was throttled
    assert stats == {
        "requests": 39,
        "uploads": 6,
        "deletes": 1,
        "throttled": 1,
        "faults": 0,
        "items": 5,
        "distinct_checksums": 5,
        "max_concurrent_uploads": 1,  # replayed one after another
    }
    # 06 and 13 sent the same bytes and were stored differently
    assert (
        replay.md5s["2a014da684277ff9fbf37cd2dc04f794"]
        != replay.md5s["d4f0f5acddfb84d93845c9d3f3b4eb2f"]
    )


def test_redirect_page_is_symfonys_byte_for_byte() -> None:
    """The 302 body is the real one: with the recording's own host it has the recorded MD5."""
    body = redirect_page("http://127.0.0.1:18100/login").encode()
    assert (len(body), hashlib.md5(body).hexdigest()) == (358, "c4f2040065684cbfb11851f98968757c")


def png(i: int) -> bytes:
    return make_png(20 + i, 10, i)


async def upload(
    session: aiohttp.ClientSession,
    base: str,
    data: bytes,
    filename: str = "pic.png",
    token: str | None = TOKEN,
    **fields: str,
) -> tuple[int, dict[str, Any]]:
    body = aiohttp.MultipartWriter("form-data")
    for name, value in fields.items():
        body.append(value).set_content_disposition("form-data", name=name)
    body.append(data).set_content_disposition("form-data", name="file", filename=filename)
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with session.post(base + "/api/v1/upload", data=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def get_json(
    session: aiohttp.ClientSession, url: str, **params: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Accept": "application/json", "Authorization": f"Bearer {TOKEN}"}
    async with session.get(url, params=params, headers=headers) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def test_reencoding_differs_per_upload_and_is_deterministic() -> None:
    """PNG and JPEG come back changed, differently each time but the same in every run; the
    stored bytes are valid images served at the reply's URL; GIF is stored as sent."""
    sent = {"a.png": png(1), "b.jpg": make_jpeg(3), "c.gif": make_gif(4)}
    runs = []
    for _ in range(2):
        async with running(LskyProFake(Knobs(token=TOKEN))) as (base, session):
            md5s = []
            for name, data in [*sent.items(), ("a.png", sent["a.png"])]:
                status, body = await upload(session, base, data, filename=name)
                assert status == 200 and body["status"] is True
                async with session.get(body["data"]["links"]["url"]) as resp:
                    stored = await resp.read()
                assert hashlib.md5(stored).hexdigest() == body["data"]["md5"]
                assert sniff(stored) is not None and sniff(stored)[:2] == sniff(data)[:2]  # type: ignore[index]
                assert (stored == data) == name.endswith(".gif"), name
                md5s.append(body["data"]["md5"])
            runs.append(md5s)
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[0][3]  # the same PNG twice: two different stored files
    assert reencode(png(1), "png", 1) != reencode(png(1), "png", 2)


async def test_listing_pages_orders_and_filters() -> None:
    """40 a page whatever ``per_page`` says, with the paginator's URLs; the four orders; a page
    past the end is empty; ``permission`` and ``keyword`` filter."""
    host = LskyProFake(Knobs(token=TOKEN, seed=85, rate="none"))
    async with running(host) as (base, session):
        seen = []
        for page in (1, 2, 3):
            status, body, _ = await get_json(
                session, base + "/api/v1/images", page=str(page), per_page="5"
            )
            data = body["data"]
            assert status == 200 and data["per_page"] == 40 and data["total"] == 85
            assert data["last_page"] == 3 and data["current_page"] == page
            assert data["next_page_url"] == (
                f"{base}/api/v1/images?per_page=5&page={page + 1}" if page < 3 else None
            )
            seen += [item["key"] for item in data["data"]]
        assert [len(seen), len(set(seen))] == [85, 85]
        _, body, _ = await get_json(session, base + "/api/v1/images", page="4")
        assert body["data"]["data"] == [] and body["data"]["from"] is None
        dates = {}
        for order in ("newest", "earliest", "utmost", "least"):
            _, body, _ = await get_json(session, base + "/api/v1/images", order=order)
            dates[order] = [(i["date"], i["size"]) for i in body["data"]["data"]]
        assert dates["newest"] == sorted(dates["newest"], reverse=True)
        assert dates["earliest"] == sorted(dates["earliest"])
        assert [s for _, s in dates["utmost"]] == sorted(
            (s for _, s in dates["utmost"]), reverse=True
        )
        assert [s for _, s in dates["least"]] == sorted(s for _, s in dates["least"])
        await upload(session, base, png(2), filename="holiday.png", permission="1")
        _, body, _ = await get_json(session, base + "/api/v1/images", permission="public")
        assert [i["origin_name"] for i in body["data"]["data"]] == ["holiday.png"]
        _, body, _ = await get_json(session, base + "/api/v1/images", keyword="HOLI")
        assert body["data"]["total"] == 1


def test_url_window_is_laravels() -> None:
    assert _url_window(1, 3) == [1, 2, 3]
    assert _url_window(2, 20) == [*range(1, 11), None, 19, 20]
    assert _url_window(10, 20) == [1, 2, None, 7, 8, 9, 10, 11, 12, 13, None, 19, 20]
    assert _url_window(18, 20) == [1, 2, None, *range(11, 21)]


async def test_dates_and_paths_are_in_the_server_zone() -> None:
    """``date`` and the ``YYYY/MM/DD`` path are local to the server's zone, without an offset."""
    when = 1_795_464_000.0  # 2026-11-23T20:00:00Z
    for offset, day, date in ((8, "2026/11/24", "2026-11-24 04:00:00"), (0, "2026/11/23", None)):
        host = LskyProFake(Knobs(token=TOKEN), utc_offset_hours=offset, wall_clock=lambda: when)
        async with running(host) as (base, session):
            _, body = await upload(session, base, png(3))
            assert body["data"]["pathname"].startswith(day + "/")
            _, listing, _ = await get_json(session, base + "/api/v1/images")
        item = listing["data"]["data"][0]
        assert item["human_date"] == "1秒前"
        if date:
            assert item["date"] == date
    assert [human_date(s) for s in (0, 59, 61, 7200, 3 * 86400, 10 * 86400, 400 * 86400)] == [
        "1秒前",
        "59秒前",
        "1分钟前",
        "2小时前",
        "3天前",
        "1周前",
        "1年前",
    ]


async def test_upload_refusals_are_http_200_status_false() -> None:
    """Every refusal the service makes is HTTP 200 with ``status: false`` and its message."""
    host = LskyProFake(Knobs(token=TOKEN, max_upload_bytes=2000), guest_upload=False)
    async with running(host) as (base, session):
        cases = [
            (png(4), "x.png", None, {}, "管理员关闭了游客上传"),
            (png(4), "noext", TOKEN, {}, "不支持的文件类型"),
            (png(4) + bytes(3000), "big.png", TOKEN, {}, "图片大小超出限制"),
            (png(4), "x.png", TOKEN, {"strategy_id": "7"}, "选定的策略不存在"),
            (b"not an image at all", "x.PNG", TOKEN, {}, "服务异常，请稍后再试"),
        ]
        for data, name, token, fields, message in cases:
            status, body = await upload(session, base, data, filename=name, token=token, **fields)
            assert (status, body) == (200, {"status": False, "message": message, "data": {}})
        status, body = await upload(session, base, png(4), filename="x.png", token="9|nope")
        assert status == 401 and body["message"] == "Authentication failed."
        async with session.get(base + "/_fakehost/stats") as resp:
            assert (await resp.json())["uploads"] == 0


async def test_albums_and_guest_uploads() -> None:
    """An existing album is recorded and filterable; a guest upload is stored but not listed."""
    host = LskyProFake(Knobs(token=TOKEN), albums=2)
    async with running(host) as (base, session):
        await upload(session, base, png(5), album_id="2")
        await upload(session, base, png(6), album_id="9999")
        status, body = await upload(session, base, png(7), token=None)
        assert status == 200 and body["status"] is True
        _, listing, _ = await get_json(session, base + "/api/v1/images")
        _, in_album, _ = await get_json(session, base + "/api/v1/images", album_id="2")
        _, albums, _ = await get_json(session, base + "/api/v1/albums")
    assert listing["data"]["total"] == 2 and in_album["data"]["total"] == 1
    assert [a["image_num"] for a in albums["data"]["data"]] == [0, 1]


async def test_delete_says_success_whatever_happened() -> None:
    """Deleting one's own image, a missing key and a guest's key all answer the same success;
    only the first deletes anything."""
    host = LskyProFake(Knobs(token=TOKEN))
    async with running(host) as (base, session):
        _, mine = await upload(session, base, png(8))
        _, guest = await upload(session, base, png(9), token=None)
        headers = {"Accept": "application/json", "Authorization": f"Bearer {TOKEN}"}
        replies = []
        for key in (mine["data"]["key"], mine["data"]["key"], guest["data"]["key"]):
            async with session.delete(f"{base}/api/v1/images/{key}", headers=headers) as resp:
                replies.append((resp.status, await resp.json()))
        async with session.get(guest["data"]["links"]["url"]) as resp:
            guest_status = resp.status
        async with session.get(mine["data"]["links"]["url"]) as resp:
            mine_status = resp.status
    assert replies == [(200, {"status": True, "message": "删除成功", "data": {}})] * 3
    assert (mine_status, guest_status) == (404, 200)
    assert host.stats.deletes == 1


async def test_throttle_is_a_429_envelope() -> None:
    """Over ``--rate`` the answer is a 429 envelope; Lsky's handler drops Laravel's headers,
    ``throttle_headers=True`` puts them back; the window reopens after its period."""
    now = [1000.0]
    for with_headers in (False, True):
        host = LskyProFake(
            Knobs(token=TOKEN, rate="2/minute"), throttle_headers=with_headers, clock=lambda: now[0]
        )
        async with running(host) as (base, session):
            for remaining in ("1", "0"):
                status, _, headers = await get_json(session, base + "/api/v1/images")
                assert status == 200 and headers["X-RateLimit-Remaining"] == remaining
            status, body, headers = await get_json(session, base + "/api/v1/images")
            assert (status, body) == (
                429,
                {"status": False, "message": "Too Many Attempts.", "data": {}},
            )
            assert ("Retry-After" in headers) is with_headers
            assert ("X-RateLimit-Limit" in headers) is with_headers
            if with_headers:
                assert headers["Retry-After"] == "60" and headers["X-RateLimit-Remaining"] == "0"
            # an upload is counted by address, not by user: its budget is untouched
            status, _ = await upload(session, base, png(10))
            assert status == 200
            now[0] += 60
            status, _, _ = await get_json(session, base + "/api/v1/images")
            assert status == 200
        assert host.stats.throttled == 1


async def test_tokens_minted_refused_throttled_and_revoked() -> None:
    """Tokens: wrong password and bad input are HTTP 200 status false; 3 a minute; a minted
    token works; revoking clears every token, the initial one too."""
    host = LskyProFake(Knobs(token=TOKEN), email="a@b.example", password="pw")
    async with running(host) as (base, session):
        url = base + "/api/v1/tokens"
        accept = {"Accept": "application/json"}
        replies = []
        for form in ({"email": "a@b.example", "password": "no"}, {"password": "pw"}):
            async with session.post(url, data=form, headers=accept) as resp:
                replies.append((resp.status, (await resp.json())["message"]))
        async with session.post(
            url, data={"email": "a@b.example", "password": "pw"}, headers=accept
        ) as resp:
            token = (await resp.json())["data"]["token"]
            assert resp.headers["X-RateLimit-Remaining"] == "0"
        async with session.post(
            url, data={"email": "a@b.example", "password": "pw"}, headers=accept
        ) as resp:
            replies.append((resp.status, (await resp.json())["message"]))
            assert "Retry-After" not in resp.headers
        assert replies == [
            (200, "The email address or password is incorrect."),
            (200, "The email field is required."),
            (429, "Too Many Attempts."),
        ]
        assert re.fullmatch(r"2\|[A-Za-z0-9]{40}", token)
        auth = {**accept, "Authorization": f"Bearer {token}"}
        async with session.get(base + "/api/v1/profile", headers=auth) as resp:
            assert resp.status == 200 and (await resp.json())["data"]["email"] == "a@b.example"
        async with session.delete(url, headers=auth) as resp:
            assert resp.status == 200
        for t in (token, TOKEN):
            async with session.get(
                base + "/api/v1/profile", headers={**accept, "Authorization": f"Bearer {t}"}
            ) as resp:
                assert resp.status == 401


async def test_router_405_404_and_redirects() -> None:
    """A known path with the wrong method is Laravel's 405; without Accept JSON an auth failure
    redirects to /login, which answers."""
    async with running(create(Knobs(token=TOKEN))) as (base, session):
        accept = {"Accept": "application/json"}
        async with session.get(base + "/api/v1/upload", headers=accept) as resp:
            assert resp.status == 405
            assert (await resp.json())["message"] == (
                "The GET method is not supported for this route. Supported methods: POST."
            )
        async with session.get(base + "/api/v1/images") as resp:  # follows the redirect
            assert resp.status == 200 and str(resp.url) == base + "/login"
        async with session.get(base + "/nope") as resp:
            assert resp.status == 404 and resp.headers["Content-Type"] == "text/html; charset=UTF-8"
        xhr = {"X-Requested-With": "XMLHttpRequest"}
        async with session.get(base + "/api/v1/images", headers=xhr) as resp:
            assert resp.status == 401


async def test_seed_and_stats() -> None:
    """``--seed N`` gives the user N distinct listed images, served byte for byte."""
    host = create(Knobs(token=TOKEN, seed=7))
    async with running(host) as (base, session):
        _, listing, _ = await get_json(session, base + "/api/v1/images")
        items = listing["data"]["data"]
        for item in items:
            async with session.get(item["links"]["url"]) as resp:
                assert hashlib.md5(await resp.read()).hexdigest() == item["md5"]
        async with session.get(base + "/_fakehost/stats") as resp:
            stats = await resp.json()
    assert len(items) == 7 and len({i["md5"] for i in items}) == 7
    assert {i["extension"] for i in items} == {"png", "jpg", "gif"}
    assert stats["items"] == stats["distinct_checksums"] == 7
