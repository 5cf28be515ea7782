"""CheveretoProvider against the Chevereto emulator (and tiny test servers) on 127.0.0.1.

Provider tests use an ApiClient whose retry sleeps are no-ops and whose limiter penalties
are milliseconds; the CLI tests run the real ``imgsync`` process against an emulator
served by the test (``run_cli_async`` keeps the event loop answering).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from aiohttp import web
from helpers import RunningFake, run_cli_async, start_fake, write_config
from vclock import VirtualClock

from imgsync.config import RemoteConfig
from imgsync.errors import (
    AuthError,
    ConfigError,
    Duplicate,
    NotFound,
    ProviderError,
    RateLimited,
    Rejected,
    RemoteMisconfigured,
    RemotePaused,
    ResponseError,
    TransientError,
    Unsupported,
)
from imgsync.fakehosts.chevereto import CheveretoFake
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.images import make_png, seed_image
from imgsync.http import ApiClient, ApiResponse
from imgsync.models import ItemMeta, RemoteItem, UploadSource
from imgsync.providers.base import ProviderContext
from imgsync.providers.chevereto import CheveretoProvider, _map_error, error_for_code
from imgsync.ratelimit import LimiterRegistry
from imgsync.retry import RetryPolicy
from imgsync.testing import serve_app

KEY = "chv_test_key_5d1c0ffee"


async def _no_sleep(_seconds: float) -> None:
    await asyncio.sleep(0)


def fast_client(attempts: int = 3) -> ApiClient:
    """Retries without waiting; throttle penalties of a few milliseconds."""
    limiters = LimiterRegistry(min_penalty=0.001, max_penalty=0.004)
    return ApiClient(limiters, retry=RetryPolicy(attempts=attempts, sleep=_no_sleep))


def provider(base_url: str, http: ApiClient, key: str = KEY, **options: Any) -> CheveretoProvider:
    cfg = RemoteConfig(name="chv", type="chevereto", base_url=base_url, token=key, options=options)
    return CheveretoProvider(cfg, ProviderContext(http=http))


def source(data: bytes, name: str = "photo.png", mime: str = "image/png") -> UploadSource:
    sha = hashlib.sha256(data).hexdigest()
    return UploadSource(name=name, size=len(data), sha256=sha, md5=None, mime=mime, data=data)


@contextlib.asynccontextmanager
async def fake(host: CheveretoFake) -> AsyncIterator[RunningFake]:
    running = await start_fake(host)
    try:
        yield running
    finally:
        await running.close()


@contextlib.asynccontextmanager
async def tiny_server(routes: Callable[[web.Application], object]) -> AsyncIterator[str]:
    """A test-local aiohttp app for replies the emulator never gives; yields its base URL."""
    app = web.Application()
    routes(app)
    async with serve_app(app) as url:
        yield url


async def upload_png(p: CheveretoProvider, seed: int, **meta: Any) -> tuple[bytes, RemoteItem]:
    data = make_png(24, 16, seed)
    item = await p.upload(source(data), ItemMeta(**meta), rel_path=f"album/pic{seed}.png")
    return data, item


# --- the upload contract ----------------------------------------------------------------------


async def test_upload_verifies_md5_and_returns_url_and_hidden_delete_url() -> None:
    """An upload gives url, id, md5 and a delete_url that is neither in repr nor in any log."""
    host = CheveretoFake(Knobs(token=KEY))
    with structlog.testing.capture_logs() as logs:
        async with fake(host) as running, fast_client() as http:
            p = provider(running.url + "/", http, nsfw=True, album_id="a1", expiration="P3D")
            data, item = await upload_png(p, 1, title="Harbour", description="dusk", tags=("a",))
            fetched = b"".join([chunk async for chunk in p.open(item)])
            await p.delete(item)
    assert item.url is not None and item.url.startswith(running.url + "/images/")
    assert item.md5 == hashlib.md5(data).hexdigest() and fetched == data
    assert item.name == "pic1.png" and item.meta.title == "Harbour" and item.meta.tags == ("a",)
    assert item.delete_url is not None and "/delete/" in item.delete_url
    token = item.delete_url.rsplit("/", 1)[-1]
    assert token not in repr(item) and token not in repr(logs)
    assert any(e["event"] == "http_request" and e["url"] == "***" for e in logs)
    assert host.images() == []  # deleted again


async def test_metadata_and_options_reach_the_site() -> None:
    """Title, description, tags, nsfw and expiration are sent as Chevereto's form fields."""
    host = CheveretoFake(Knobs(token=KEY))
    async with fake(host) as running, fast_client() as http:
        p = provider(running.url, http, nsfw=True, expiration=3600, category_id=2)
        await upload_png(p, 2, title="T", description="D", tags=("x", "y,z"))
        (img,) = host.images()
    assert (img.title, img.description, img.tags, img.nsfw) == ("T", "D", ["x", "y z"], 1)
    assert img.expires is not None and 3590 < img.expires - img.uploaded <= 3600


async def test_checksum_field_variant_is_verified() -> None:
    """Sites that call the field ``checksum`` (imgz.io's page) are verified the same way."""
    async with (
        fake(CheveretoFake(Knobs(token=KEY), checksum_field="checksum")) as running,
        fast_client() as http,
    ):
        data, item = await upload_png(provider(running.url, http), 3)
    assert item.md5 == hashlib.md5(data).hexdigest()


async def test_moderation_reply_without_urls_is_a_success() -> None:
    """``is_approved`` 0: no URL in the reply, still an upload with a delete_url."""
    async with (
        fake(CheveretoFake(Knobs(token=KEY), moderation=True)) as running,
        fast_client() as http,
    ):
        p = provider(running.url, http)
        _, item = await upload_png(p, 4)
        with pytest.raises(NotFound, match="moderation"):
            [chunk async for chunk in p.open(item)]
        await p.delete(item)
        assert (await running.stats())["deletes"] == 1
    assert item.url is None and item.delete_url


async def test_md5_mismatch_is_an_item_error_and_the_copy_is_deleted() -> None:
    """A reply whose md5 is not the MD5 of the bytes sent -> Rejected; the copy is removed."""
    seen: list[str] = []
    token = "f" * 48

    async def upload(request: web.Request) -> web.Response:
        await request.post()
        base = f"{request.scheme}://{request.host}"
        image = {"id_encoded": "ab", "md5": "0" * 32, "url": base + "/images/x.png"}
        image["delete_url"] = f"{base}/image/ab/delete/{token}"
        return web.json_response({"status_code": 200, "image": image, "status_txt": "OK"})

    async def delete(request: web.Request) -> web.Response:
        seen.append(request.method)
        raise web.HTTPMovedPermanently("/image/ab?deleted")

    def routes(app: web.Application) -> None:
        app.router.add_post("/api/1/upload", upload)
        app.router.add_get("/image/ab/delete/{token}", delete)

    async with tiny_server(routes) as base, fast_client() as http:
        with pytest.raises(Rejected, match="checksum mismatch") as info:
            await upload_png(provider(base, http), 5)
    assert "stored copy was deleted" in str(info.value) and seen == ["GET"]
    assert token not in str(info.value)


# --- errors, keyed on error.code ------------------------------------------------------------


async def test_bad_key_is_auth_error_without_the_key_anywhere() -> None:
    """Code 100 -> AuthError, not retried; the key is in no exception text or log event."""
    bad = "chv_wrong_key_9a8b7c6d"
    with structlog.testing.capture_logs() as logs:
        async with fake(CheveretoFake(Knobs(token=KEY))) as running, fast_client() as http:
            with pytest.raises(AuthError) as info:
                await upload_png(provider(running.url, http, key=bad), 6)
            assert (await running.stats())["requests"] == 1
    assert info.value.code == 100 and info.value.scope == "remote"
    assert bad not in str(info.value) and bad not in repr(logs)


async def test_request_denied_is_auth_error() -> None:
    """The stock free edition's code 401 "Request denied" -> AuthError, sent once."""
    host = CheveretoFake(Knobs(token=KEY), request_denied=True)
    async with fake(host) as running, fast_client() as http:
        with pytest.raises(AuthError, match="request denied"):
            await upload_png(provider(running.url, http), 7)
        assert (await running.stats())["requests"] == 1


async def test_site_rejecting_duplicates_gives_duplicate() -> None:
    """Code 101 on a site that forbids re-uploads -> Duplicate (the engine skips the item)."""
    host = CheveretoFake(Knobs(token=KEY), reject_duplicates=True)
    async with fake(host) as running, fast_client() as http:
        p = provider(running.url, http)
        await upload_png(p, 8)
        with pytest.raises(Duplicate):
            await upload_png(p, 8)


async def test_non_image_is_rejected() -> None:
    """Code 610 for bytes that are not an image -> Rejected for that item only."""
    async with fake(CheveretoFake(Knobs(token=KEY))) as running, fast_client() as http:
        with pytest.raises(Rejected) as info:
            await provider(running.url, http).upload(
                source(b"just some text, named .png"), ItemMeta(), rel_path="note.png"
            )
    assert info.value.code == 610 and info.value.scope == "item"


async def test_flooding_waits_out_the_window_then_succeeds() -> None:
    """Code 130 "Flooding detected ... per minute" -> the host is held back a whole minute (on
    a virtual clock), then the same upload goes through: one refusal, no failure."""
    clock = VirtualClock()
    host = CheveretoFake(Knobs(token=KEY, rate="1/minute"), clock=clock.time)
    async with fake(host) as running, clock.client(attempts=3) as http:
        p = provider(running.url, http)
        await upload_png(p, 9)
        _, item = await upload_png(p, 10)
        stats = await running.stats()
    assert item.md5 and stats["throttled"] == 1 and stats["uploads"] == 2
    assert 60 <= clock.elapsed < 120


async def test_redirecting_base_url_is_misconfigured_and_not_followed() -> None:
    """A 301 on the upload POST (http -> https here) -> RemoteMisconfigured; nothing is GET."""
    methods: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        methods.append(request.method)
        raise web.HTTPMovedPermanently("https://chv.example" + request.path)

    async with (
        tiny_server(lambda app: app.router.add_route("*", "/{tail:.*}", moved)) as base,
        fast_client() as http,
    ):
        with pytest.raises(RemoteMisconfigured, match="base_url redirects uploads") as info:
            await upload_png(provider(base, http), 11)
    assert methods == ["POST"] and "https://chv.example/api/1/upload" in str(info.value)


async def test_trailing_slash_api_path_in_base_url_is_trimmed() -> None:
    """base_url copied from the API page (``.../api/1/upload``) still uploads to the right path."""
    async with fake(CheveretoFake(Knobs(token=KEY))) as running, fast_client() as http:
        _, item = await upload_png(provider(running.url + "/api/1/upload/", http), 12)
    assert item.url


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (413, "<html>413 Request Entity Too Large</html>", "text/html", Rejected),
        (502, "<html>502 Bad Gateway</html>", "text/html", TransientError),
        (200, "<html>maintenance</html>", "text/html", ResponseError),
        (400, "<html>Bad Request</html>", "text/html", Rejected),
    ],
)
async def test_non_json_replies(
    status: int, body: str, content_type: str, expected: type[ProviderError]
) -> None:
    """HTML error pages map by HTTP status: 413/400 Rejected, 5xx transient, 200 HTML bad reply."""

    async def reply(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, text=body, content_type=content_type)

    async with (
        tiny_server(lambda app: app.router.add_post("/api/1/upload", reply)) as base,
        fast_client() as http,
    ):
        with pytest.raises(expected):
            await upload_png(provider(base, http), 13)


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (100, "Invalid API key.", AuthError),
        (100, "No key provided", AuthError),
        (401, "Request denied", AuthError),
        (110, "Invalid API version.", RemoteMisconfigured),
        (120, "Invalid API action", RemoteMisconfigured),
        (130, "Flooding detected. You can only upload 50 images per minute", RateLimited),
        (130, "检测到洪水攻击", RateLimited),  # translated: our request is valid, so a flood
        (130, "Empty upload source", Rejected),
        (130, "Empty source", Rejected),
        (101, "重复上传", Duplicate),
        (102, "Duplicated upload", Duplicate),
        (103, "Duplicated upload", Duplicate),
        (200, "Can't get temp file", TransientError),
        (400, "File too big - max 10 MB", Rejected),
        (403, "Suspected inappropriate content", Rejected),
        (313, "File too big - max 500 KB", Rejected),
        (610, "Can't get target upload source info", Rejected),
        (612, "Invalid mimetype", Rejected),
    ],
)
def test_error_codes(code: int, message: str, expected: type[ProviderError]) -> None:
    """Each error.code maps to its class whatever the (translated) message says."""
    envelope = {"status_code": 400, "error": {"message": message, "code": code}}
    err = _map_error(ApiResponse(400, {}, "http://h/api/1/upload", envelope, "POST"))
    assert type(err) is expected and err.code == code
    assert type(error_for_code(code, "")) is (expected if code != 130 else RateLimited)


def test_bad_expiration_option_is_a_config_error() -> None:
    """An unparsable expiration (the site would read it as 5 minutes) is refused up front."""
    with pytest.raises(ConfigError, match="expiration"):
        provider("http://h", fast_client(), expiration="three days")
    for ok in ("PT5M", "P3D", "P1DT2H", "3600", 600):
        provider("http://h", fast_client(), expiration=ok)


# --- delete -----------------------------------------------------------------------------------


async def test_delete_by_stored_link_then_gone() -> None:
    """delete() GETs the stored link: the image 404s after, a second delete is NotFound."""
    host = CheveretoFake(Knobs(token=KEY))
    async with fake(host) as running, fast_client() as http:
        p = provider(running.url, http)
        _, item = await upload_png(p, 14)
        await p.delete(item)
        with pytest.raises(NotFound):
            [chunk async for chunk in p.open(item)]
        with pytest.raises(NotFound):
            await p.delete(item)
        with pytest.raises(Unsupported, match="no delete link") as info:
            await p.delete(RemoteItem(remote_id="zz", name="z.png"))
        stats = await running.stats()
    assert stats["deletes"] == 1 and stats["items"] == 0 and info.value.scope == "item"


# --- through the CLI --------------------------------------------------------------------------


def chv_config(tmp_path: Path, running: RunningFake, limits: str = "") -> Path:
    text = f"""
[remotes.chv]
type = "chevereto"
base_url = "{running.url}"
token_env = "CHV_TEST_KEY"
{limits}
"""
    return write_config(tmp_path / "imgsync.toml", text)


def make_folder(root: Path, count: int) -> Path:
    root.mkdir()
    for i in range(count):
        data, ext = seed_image(i)
        (root / f"img{i:02d}.{ext}").write_bytes(data)
    return root


async def test_cli_copy_twice_uploads_each_image_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``copy ./folder chv:`` twice: every image uploaded once, delete links kept in state."""
    monkeypatch.setenv("CHV_TEST_KEY", KEY)
    folder = make_folder(tmp_path / "pics", 5)
    async with fake(CheveretoFake(Knobs(token=KEY))) as running:
        cfg = chv_config(tmp_path, running)
        first = await run_cli_async("--config", str(cfg), "copy", str(folder), "chv:", "--json")
        second = await run_cli_async("--config", str(cfg), "copy", str(folder), "chv:", "--json")
        stats = await running.stats()
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["copied"] == 5
    assert second.returncode == 0 and json.loads(second.stdout)["copied"] == 0
    assert stats["uploads"] == 5 == stats["distinct_checksums"]
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    rows = db.execute("SELECT delete_url FROM locations WHERE remote LIKE 'chevereto:%'").fetchall()
    db.close()
    assert len(rows) == 5 and all(r[0] and "/delete/" in r[0] for r in rows)
    for out in (first.stdout, first.stderr, second.stdout, second.stderr):
        assert "/delete/" not in out and KEY not in out


async def test_cli_flooded_copy_slows_down_and_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Site floods after 3 uploads/s, config allows 10/s: the run backs off and finishes."""
    monkeypatch.setenv("CHV_TEST_KEY", KEY)
    folder = make_folder(tmp_path / "pics", 10)
    async with fake(CheveretoFake(Knobs(token=KEY, rate="3/second"))) as running:
        limits = f'[limits."{running.authority}"]\nrate = "10/second"\n'
        cfg = chv_config(tmp_path, running, limits)
        proc = await run_cli_async("--config", str(cfg), "copy", str(folder), "chv:", "--json")
        stats = await running.stats()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["copied"] == 10
    assert stats["uploads"] == 10 and stats["throttled"] > 0


async def test_cli_refuses_chevereto_as_a_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``copy chv: ./x``: a Chevereto site cannot be listed, so the CLI refuses with exit 2."""
    monkeypatch.setenv("CHV_TEST_KEY", KEY)
    async with fake(CheveretoFake(Knobs(token=KEY))) as running:
        cfg = chv_config(tmp_path, running)
        proc = await run_cli_async("--config", str(cfg), "copy", "chv:", str(tmp_path / "x"))
        requests = (await running.stats())["requests"]
    assert proc.returncode == 2 and "cannot be listed" in proc.stderr and requests == 0


# --- issue 14: conversions, floods, a wrong path ----------------------------------------------

BMP = (
    Path(__file__).resolve().parents[1] / "fixtures/chevereto-4.2.0/inputs/bitmap1.bmp"
).read_bytes()


async def test_bmp_converted_to_png_is_an_expected_conversion() -> None:
    """The site stores a BMP as a new PNG (fixtures 35, 36): the upload succeeds, the item
    carries the stored PNG's md5 beside the source's sha256, and nothing is deleted."""
    host = CheveretoFake(Knobs(token=KEY))
    async with fake(host) as running, fast_client() as http:
        src = source(BMP, "bitmap1.bmp", "image/bmp")
        item = await provider(running.url, http).upload(src, ItemMeta(), rel_path="a/bitmap1.bmp")
        stats = await running.stats()
    stored = host.images()[0]
    assert item.md5 == stored.md5 != hashlib.md5(BMP).hexdigest()
    assert item.sha256 == hashlib.sha256(BMP).hexdigest()
    assert item.mime == "image/png" and item.name == "bitmap1.png" and item.delete_url
    assert stats["uploads"] == 1 and stats["deletes"] == 0 and stats["items"] == 1


async def test_conversion_must_describe_the_source() -> None:
    """A converted reply is accepted when ``source_md5`` vouches for the bytes sent, or for a
    BMP whose dimensions it keeps; a PNG reply with other dimensions is a mismatch."""
    replies: list[dict[str, Any]] = []
    deleted: list[str] = []

    async def upload(request: web.Request) -> web.Response:
        await request.post()
        base = f"{request.scheme}://{request.host}"
        image = {"id_encoded": "cd", "md5": "1" * 32, "mime": "image/png", **replies.pop(0)}
        image["delete_url"] = f"{base}/image/cd/delete/{'e' * 48}"
        return web.json_response({"status_code": 200, "image": image, "status_txt": "OK"})

    async def delete(request: web.Request) -> web.Response:
        deleted.append(request.path)
        raise web.HTTPMovedPermanently("/image/cd?deleted")

    def routes(app: web.Application) -> None:
        app.router.add_post("/api/1/upload", upload)
        app.router.add_get("/image/cd/delete/{token}", delete)

    png = make_png(24, 16, 3)
    async with tiny_server(routes) as base, fast_client() as http:
        p = provider(base, http)
        replies.append({"source_md5": hashlib.md5(png).hexdigest(), "width": 12})
        resized = await p.upload(source(png), ItemMeta(), rel_path="x.png")
        replies.append({"source_md5": None, "width": 32, "height": 24})
        bmp = await p.upload(source(BMP, "b.bmp", "image/bmp"), ItemMeta(), rel_path="b.bmp")
        replies.append({"source_md5": None, "width": 31, "height": 24})
        with pytest.raises(Rejected, match="checksum mismatch"):
            await p.upload(source(BMP, "b.bmp", "image/bmp"), ItemMeta(), rel_path="b.bmp")
    assert resized.md5 == bmp.md5 == "1" * 32 and len(deleted) == 1


@pytest.mark.parametrize(
    ("message", "window"),
    [
        ("Flooding detected. You can only upload 3 images per minute", 60),
        ("Flooding detected. You can only upload 500 images per hour", 3600),
        ("Flooding detected. You can only upload 1000 images per day", 86400),
        ("Flooding detected. You can only upload 5000 images per week", 604800),
        ("Flooding detected. You can only upload 10000 images per month", 2592000),
        ("Flooding detected. You can only upload 2 images per 2 minutes", 120),
        ("检测到洪水攻击", 60),
    ],
)
def test_flood_names_its_window(message: str, window: float) -> None:
    """Code 130 waits the period its message names; a minute when it names none."""
    err = error_for_code(130, message)
    assert isinstance(err, RateLimited) and err.retry_after == window


async def test_flood_under_ten_per_minute_loses_nothing() -> None:
    """15 uploads, 4 at a time, into a site that floods at 10 per minute (on a virtual clock
    shared by the emulator and the client): all 15 arrive, none fails, and the client waited
    out the site's window instead of hammering it."""
    clock = VirtualClock()
    host = CheveretoFake(Knobs(token=KEY, rate="10/minute"), clock=clock.time)
    async with fake(host) as running, clock.client() as http:
        p = provider(running.url, http)
        send, recv = anyio.create_memory_object_stream[int](15)
        for i in range(15):
            send.send_nowait(i)
        send.close()
        items: list[RemoteItem] = []

        async def worker() -> None:
            async for i in recv.clone():
                data = make_png(20, 10 + i, i)
                items.append(await p.upload(source(data), ItemMeta(), rel_path=f"p{i}.png"))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(worker)
        recv.close()
        stats = await running.stats()
    assert len(items) == 15 and stats["uploads"] == 15 == stats["distinct_checksums"]
    assert 1 <= stats["throttled"] <= 4  # the workers in flight when the guard tripped
    assert clock.elapsed >= 60


async def test_hourly_flood_pauses_the_host() -> None:
    """A flood whose window is an hour pauses the host (a remote-wide stop), not a long sleep."""
    clock = VirtualClock()
    host = CheveretoFake(Knobs(token=KEY, rate="1/hour"), clock=clock.time)
    async with fake(host) as running, clock.client() as http:
        p = provider(running.url, http)
        await upload_png(p, 1)
        with pytest.raises(RemotePaused) as info:
            await upload_png(p, 2)
        with pytest.raises(RemotePaused):  # the next one is refused without a request
            await upload_png(p, 3)
        stats = await running.stats()
    assert info.value.until == pytest.approx(clock.now + 3600, abs=5)
    assert stats["throttled"] == 1 and stats["requests"] == 2


async def test_cli_bmp_copies_with_exit_0_and_a_second_run_uploads_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder with a BMP: copied (exit 0), the stored PNG's md5 recorded beside the BMP's
    checksum; the second run uploads nothing, and no copy was deleted."""
    monkeypatch.setenv("CHV_TEST_KEY", KEY)
    folder = make_folder(tmp_path / "pics", 2)
    (folder / "bitmap1.bmp").write_bytes(BMP)
    async with fake(CheveretoFake(Knobs(token=KEY))) as running:
        cfg = chv_config(tmp_path, running)
        first = await run_cli_async("--config", str(cfg), "copy", str(folder), "chv:", "--json")
        second = await run_cli_async("--config", str(cfg), "copy", str(folder), "chv:", "--json")
        stats = await running.stats()
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout)["copied"] == 3
    assert second.returncode == 0 and json.loads(second.stdout)["copied"] == 0
    assert stats["uploads"] == 3 and stats["deletes"] == 0
    db = sqlite3.connect(tmp_path / "state" / "state.db")
    row = db.execute(
        "SELECT stored_md5 FROM locations WHERE sha256 = ?",
        (hashlib.sha256(BMP).hexdigest(),),
    ).fetchone()
    db.close()
    assert isinstance(running.host, CheveretoFake)
    stored = [i for i in running.host.images() if i.original_filename == "bitmap1.bmp"]
    assert row[0] == stored[0].md5 != hashlib.md5(BMP).hexdigest() and stored[0].extension == "png"


async def test_cli_wrong_base_url_path_exits_3_after_one_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``base_url = https://site/chevereto`` answers Chevereto's HTML 404 (fixture 45): exit 3
    after at most 2 requests, one line naming the URL tried, no HTML in the output."""
    monkeypatch.setenv("CHV_TEST_KEY", KEY)
    folder = make_folder(tmp_path / "pics", 8)
    async with fake(CheveretoFake(Knobs(token=KEY))) as running:
        wrong = RunningFake(running.host, running.runner, running.url + "/chevereto")
        cfg = chv_config(tmp_path, wrong)
        proc = await run_cli_async(
            "--config", str(cfg), "copy", str(folder), "chv:", "--json", "--transfers", "4"
        )
        stats = await running.stats()
    assert proc.returncode == 3, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)
    assert stats["requests"] <= 2 and stats["uploads"] == 0
    assert f"{running.url}/chevereto/api/1/upload" in summary["remote_failure"]
    assert "<" not in proc.stdout + proc.stderr
    assert summary["copied"] == 0 and summary["failed"] == 1 and summary["not_attempted"] == 7


async def test_cli_same_site_under_a_second_remote_name_uploads_nothing_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same site configured again under another name, its base_url written with a
    trailing slash (and the API path the site's page shows): the destination is the same,
    so copying the folder there uploads nothing."""
    monkeypatch.setenv("CHV_TEST_KEY", KEY)
    folder = make_folder(tmp_path / "pics", 4)
    async with fake(CheveretoFake(Knobs(token=KEY))) as running:
        cfg = chv_config(
            tmp_path,
            running,
            f'[remotes.again]\ntype = "chevereto"\nbase_url = "{running.url}/"\n'
            'token_env = "CHV_TEST_KEY"\n'
            f'[remotes.api]\ntype = "chevereto"\nbase_url = "{running.url}/api/1/upload"\n'
            'token_env = "CHV_TEST_KEY"\n',
        )
        first = await run_cli_async("--config", str(cfg), "copy", str(folder), "chv:", "--json")
        again = await run_cli_async("--config", str(cfg), "copy", str(folder), "again:", "--json")
        api = await run_cli_async("--config", str(cfg), "copy", str(folder), "api:", "--json")
        stats = await running.stats()
    assert first.returncode == 0 and json.loads(first.stdout)["copied"] == 4
    for proc in (again, api):
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["copied"] == 0
    assert stats["uploads"] == 4


async def test_accented_and_spaced_names_are_stored_as_the_real_site_slugs_them() -> None:
    """Through the provider, as fixture 47 recorded a real 4.2.0 site: ``ñandú é.png`` (NFC,
    or NFD as macOS writes it) is stored as ``nandu-e.png``, the name arrives unchanged
    (raw UTF-8) and the next upload under the same name gets a 16-hex suffix."""
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "chevereto-4.2.0"
    recorded = json.loads((fixture / "47-filename-raw-utf8.json").read_text(encoding="utf-8"))
    stored = recorded["response"]["body"]["image"]["name"]  # "nandu-e" + 16 hex: name taken
    host = CheveretoFake(Knobs(token=KEY))
    async with fake(host) as running, fast_client() as http:
        p = provider(running.url, http)
        names = []
        for i, rel in enumerate(["ñandú é.png", "n\u0303andu\u0301 e\u0301.png"]):
            data = make_png(20, 12, 900 + i)
            item = await p.upload(source(data, name=rel), ItemMeta(), rel_path=rel)
            names.append(item.name)
    assert names[0] == "nandu-e.png" == stored[:-16] + ".png"
    assert names[1].startswith("nandu-e") and len(names[1]) == len("nandu-e.png") + 16
    assert host.received_names == ["ñandú é.png", "n\u0303andu\u0301 e\u0301.png"]
