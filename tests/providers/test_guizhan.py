"""GuizhanProvider against the Guizhan emulator, over real loopback HTTP.

What every provider must do is the conformance suite's (tests/conformance); this file
keeps Guizhan's own wire quirks (the envelope, Laravel's throttle, paging oldest first, the
watermark cursor). Retries run on imgsync.testing's fake clock; the CLI tests run
``python -m imgsync`` against an emulator served by the test.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import RunningFake, run_cli_async, start_fake, tree_files, write_config
from multidict import CIMultiDict

from imgsync.config import LimitConfig, RemoteConfig
from imgsync.errors import (
    AuthError,
    ConfigError,
    RateLimited,
    Rejected,
    RemoteMisconfigured,
    ResponseError,
    TransientError,
)
from imgsync.fakehosts.common import Knobs, sha256_hex
from imgsync.fakehosts.guizhan import GuizhanFake
from imgsync.fakehosts.images import make_png
from imgsync.http import ApiResponse
from imgsync.models import ItemMeta
from imgsync.providers.base import ProviderContext
from imgsync.providers.guizhan import GuizhanProvider, parse_time
from imgsync.ratelimit import LimiterRegistry
from imgsync.testing import fast_client, upload_source

TOKEN = "gz-token-7c1f0e9a5b"
SEED_EPOCH = 1_610_214_723  # the emulator's first seeded upload_time (the docs' example)


class RecordingGuizhan(GuizhanFake):
    """The emulator, also logging each API request as it arrives (monotonic time, method,
    ``page``) and counting file downloads. ``refuse_after_page = N`` makes listings of
    pages past N answer as if the token had been revoked (1001, HTTP 401)."""

    def __init__(self, knobs: Knobs, **kw: Any) -> None:
        super().__init__(knobs, **kw)
        self.log: list[tuple[float, str, str | None]] = []
        self.downloads = 0
        self.refuse_after_page: int | None = None
        self.missing_files: set[str] = set()  # file names answered 404

    def admit(self, request: web.Request) -> web.Response | dict[str, str]:
        self.log.append((time.monotonic(), request.method, request.query.get("page")))
        page = request.query.get("page", "1")
        limit = self.refuse_after_page
        if request.method == "GET" and limit is not None and int(page) > limit:
            return self.fail(1001, "Unauthenticated.", 401)
        return super().admit(request)

    async def serve_file(self, request: web.Request) -> web.Response:
        self.downloads += 1
        if request.path.rpartition("/")[2] in self.missing_files:
            raise web.HTTPNotFound()
        return await super().serve_file(request)

    def pages_listed(self) -> list[str | None]:
        return [page for _t, method, page in self.log if method == "GET"]


@asynccontextmanager
async def emulator(**kw: Any) -> AsyncIterator[tuple[RunningFake, RecordingGuizhan]]:
    opts = {k: kw.pop(k) for k in ("clamp_paging", "errors_http_200") if k in kw}
    kw.setdefault("token", TOKEN)
    kw.setdefault("rate", "none")
    fake = RecordingGuizhan(Knobs(**kw), **opts)
    running = await start_fake(fake)
    try:
        yield running, fake
    finally:
        await running.close()


@asynccontextmanager
async def provider(
    url: str,
    *,
    token: str = TOKEN,
    per_page: int = 20,
    attempts: int = 5,
) -> AsyncIterator[GuizhanProvider]:
    cfg = RemoteConfig(
        name="gz", type="guizhan", base_url=url, token=token, options={"per_page": per_page}
    )
    async with (
        fast_client(attempts=attempts) as http,
        GuizhanProvider(cfg, ProviderContext(http=http)) as gz,
    ):
        yield gz


# --- contract ---------------------------------------------------------------------------


async def test_lists_every_page_oldest_first_and_stops_on_the_short_page() -> None:
    """45 images at 20 a page: pages 1-3 (20, 20, 5), cursors "2@20@<time>@<name>" (the
    next page and the last image handed out), "3@20@...", None, oldest first."""
    async with emulator(seed=45) as (_run, fake), provider(_run.url) as gz:
        pages = [(cursor, page) async for page, cursor in gz.iter_all()]
        last1, last2 = pages[0][1].items[-1], pages[1][1].items[-1]
        assert [c for c, _p in pages] == [
            None,
            f"2@20@{fake.render(fake.images[last1.remote_id], '')['upload_time']}@{last1.remote_id}",
            f"3@20@{fake.render(fake.images[last2.remote_id], '')['upload_time']}@{last2.remote_id}",
        ]
        assert [len(p.items) for _c, p in pages] == [20, 20, 5]
        assert pages[-1][1].next_cursor is None
        items = [i for _c, p in pages for i in p.items]
        assert len({i.remote_id for i in items}) == 45
        times = [i.meta.created_at for i in items]
        assert times[0] == SEED_EPOCH and times == sorted(times)  # type: ignore[type-var]
        first = items[0]
        assert first.name.startswith(first.remote_id + ".") and first.size and first.url
        assert first.is_image and first.mime == "image/png"
        assert fake.pages_listed() == ["1", "2", "3"]


@pytest.mark.parametrize("asked", [100, 1, 4, 21])
async def test_per_page_outside_the_documented_range_is_a_config_error(asked: int) -> None:
    """per_page outside 5-20 is refused before any request (the host would refuse it)."""
    with pytest.raises(ConfigError, match="per_page: must be from 5 to 20"):
        async with emulator(seed=7) as (run, _fake), provider(run.url, per_page=asked):
            pass


async def test_empty_account_is_one_empty_page() -> None:
    """No images: one request, an empty page, no next cursor."""
    async with emulator(seed=0) as (run, fake), provider(run.url) as gz:
        pages = [page async for page, _cursor in gz.iter_all()]
        assert len(pages) == 1 and pages[0].items == [] and pages[0].next_cursor is None
        assert fake.stats.requests == 1


async def test_upload_then_listed_last_and_downloaded_byte_for_byte() -> None:
    """Oldest first: an upload is listed last (the byte-equal round trip is conformance's)."""
    data = make_png(24, 24, 77)
    async with emulator(seed=3) as (run, fake), provider(run.url) as gz:
        item = await gz.upload(upload_source(data), ItemMeta(title="x"), rel_path="a/pic.png")
        assert fake.stats.uploads == 1
        assert item.size == len(data) and item.url and item.name.endswith(".png")
        assert item.meta.created_at is not None
        listed = [i async for p, _c in gz.iter_all() for i in p.items]
        assert [i.remote_id for i in listed][-1] == item.remote_id
        body = b"".join([chunk async for chunk in gz.open(listed[-1])])
        assert body == data and sha256_hex(body) == sha256_hex(data)


@pytest.mark.parametrize("http_200", [False, True], ids=["http-4xx", "http-200"])
async def test_envelope_errors_at_http_200_and_4xx(http_200: bool) -> None:
    """code != 0 is an error at either status: 1002 -> Rejected once (no retry); 1000 ->
    Rejected with the host's message; 1001 -> AuthError."""
    async with emulator(max_upload_bytes=100, errors_http_200=http_200) as (run, _fake):
        async with provider(run.url) as gz:
            with pytest.raises(Rejected) as big:
                await gz.upload(upload_source(make_png(40, 40, 1)), ItemMeta(), rel_path="big.png")
            assert big.value.code == 1002 and "exceeds the limit" in str(big.value)
            assert big.value.status == (200 if http_200 else 422)
            assert (await run.stats())["requests"] == 1  # one attempt, never retried

            with pytest.raises(Rejected, match="must be an image") as bad:
                await gz.upload(
                    upload_source(b"plain text, not a picture"), ItemMeta(), rel_path="a.png"
                )
            assert bad.value.code == 1000
        async with provider(run.url, token="wrong-token-123") as gz:
            with pytest.raises(AuthError) as auth:
                await gz.list_page(None)
            assert auth.value.code == 1001
        assert (await run.stats())["requests"] == 3


async def test_malformed_reply_is_a_response_error() -> None:
    """A cut-off JSON body is a ResponseError once its few retries (it claims to be JSON:
    an API glitch, not a website) are spent."""
    from imgsync.http import GARBLED_ATTEMPTS

    async with emulator(seed=2, faults={"malformed": 1.0}) as (run, fake), provider(run.url) as gz:
        with pytest.raises(ResponseError):
            await gz.list_page(None)
        assert fake.stats.requests == GARBLED_ATTEMPTS


async def test_non_envelope_429_is_rate_limited_with_its_retry_after() -> None:
    """Over the host's limit: Laravel's bare 429 + Retry-After -> RateLimited(retry_after)."""
    async with emulator(seed=2, rate="2/minute") as (run, fake):
        async with provider(run.url, attempts=1) as gz:
            await gz.list_page(None)
            await gz.list_page(None)
            with pytest.raises(RateLimited) as exc:
                await gz.list_page(None)
        assert exc.value.status == 429 and exc.value.retry_after is not None
        assert 1 <= exc.value.retry_after <= 60
        assert fake.stats.throttled == 1


def _reply(status: int, data: Any, **headers: str) -> ApiResponse:
    return ApiResponse(status, CIMultiDict(headers), "https://api.gzssimg.com/v1/images", data)


async def test_map_error_table() -> None:
    """Replies the emulator does not produce: 429 with only X-RateLimit-Reset, a 302 to the
    login page, a bare 404 (wrong base_url), an envelope at 5xx, a non-envelope 200."""
    gz = GuizhanProvider(
        RemoteConfig(name="gz", type="guizhan", token=TOKEN), ProviderContext(http=None)
    )
    assert gz.api_url == "https://api.gzssimg.com/v1/images"
    reset = str(int(time.time()) + 30)
    err = gz._map_error(
        _reply(429, {"message": "Too Many Attempts."}, **{"X-RateLimit-Reset": reset})
    )
    assert isinstance(err, RateLimited) and err.retry_after is not None
    assert 25 <= err.retry_after <= 30
    login = _reply(302, "", Location="https://www.gzssimg.com/login")
    assert isinstance(gz._map_error(login), AuthError)
    assert isinstance(gz._map_error(_reply(404, "Not Found")), RemoteMisconfigured)
    boom = _reply(500, {"code": 9, "message": "Server Error", "result": []})
    assert isinstance(gz._map_error(boom), TransientError)
    assert isinstance(gz._map_error(_reply(200, {"data": []})), ResponseError)
    assert gz._map_error(_reply(200, {"code": 0, "message": None, "result": []})) is None


def test_upload_time_is_parsed_leniently() -> None:
    """The documented format, other ISO forms, unix seconds and milliseconds; junk -> None."""
    assert parse_time("2021-01-09T17:52:03.000000Z") == SEED_EPOCH
    assert parse_time("2021-01-09 17:52:03") == SEED_EPOCH
    assert parse_time("2021-01-10T01:52:03+08:00") == SEED_EPOCH
    assert parse_time(SEED_EPOCH) == parse_time(SEED_EPOCH * 1000) == SEED_EPOCH
    assert parse_time("yesterday") is None and parse_time(None) is None


def test_features_and_default_rate_for_the_public_host() -> None:
    """Declared abilities; the runtime's default "60/minute" for the API of the host the
    remote names (api.gzssimg.com's /v1), which a [limits] table overrides."""
    f = GuizhanProvider.features
    assert (f.can_list, f.can_get, f.can_delete, f.checksums) == (True, False, False, frozenset())
    assert f.page_size == (5, 20) and f.listing_appends
    assert GuizhanProvider.default_base_url == "https://api.gzssimg.com"
    rate = GuizhanProvider.info.default_limits["/v1"]
    assert rate == "60/minute"
    reg = LimiterRegistry()
    reg.set_default("api.gzssimg.com/v1", rate)
    assert reg.for_url("https://api.gzssimg.com/v1/images").rates == ("60/minute",)
    reg = LimiterRegistry({"api.gzssimg.com": LimitConfig(rates=("30/minute",))})
    reg.set_default("api.gzssimg.com/v1", rate)
    assert reg.for_url("https://api.gzssimg.com/v1/images").rates == ("30/minute",)


# --- through the CLI --------------------------------------------------------------------


def _config(tmp_path: Path, url: str, authority: str, rate: str | None = None) -> Path:
    limits = f'\n[limits."{authority}"]\nrate = "{rate}"\n' if rate else ""
    text = f'[remotes.gz]\ntype = "guizhan"\nbase_url = "{url}"\ntoken_env = "GZ_TOKEN"\n{limits}'
    return write_config(tmp_path / "imgsync.toml", text)


async def test_cli_copy_into_guizhan_keeps_under_the_rate_limit(
    image_tree: Path, tmp_path: Path
) -> None:
    """12 uploads with host and config both at 4/second: the host, which enforces the
    limit on its own clock, refuses nothing. ``ls`` right after (a new process, which
    counts what the copy spent from state) lists all 12, again without a 429. How close
    to the limit the pace gets is measured by ``bench/bench_ratelimit.py``."""
    env = {"GZ_TOKEN": TOKEN}
    async with emulator(rate="4/second") as (run, fake):
        cfg = _config(tmp_path, run.url, run.authority, rate="4/second")
        proc = await run_cli_async(
            "--config", str(cfg), "copy", str(image_tree), "gz:", "--json", env=env
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["copied"] == 12
        posts = [t for t, method, _p in fake.log if method == "POST"]
        assert len(posts) == 12
        assert (await run.stats())["throttled"] == 0, fake.log

        proc = await run_cli_async("--config", str(cfg), "ls", "gz:", "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        listed = [json.loads(line) for line in proc.stdout.splitlines()]
        sizes = sorted(p.stat().st_size for p in image_tree.rglob("*.*") if p.suffix != ".txt")
        assert sorted(i["size"] for i in listed) == sizes

        assert (await run.stats())["throttled"] == 0, fake.log


async def test_cursor_saved_with_another_page_size_restarts() -> None:
    """A cursor saved with per_page 20 is not reused with per_page 10 (its page number
    would point at other images), nor a plain page number saved by an older version: the
    listing restarts at page 1."""
    async with emulator(seed=30) as (run, fake), provider(run.url, per_page=10) as gz:
        page = await gz.list_page("2@20")
        assert page.next_cursor is not None and page.next_cursor.startswith("2@10@")
        # a plain page number (an older version's cursor) cannot say what moved since:
        # the listing starts again rather than risk skipping images forever
        page = await gz.list_page("3@10")
        assert page.next_cursor is not None and page.next_cursor.startswith("2@10@")
        # while a listing goes on, the cursor it was just handed is read as it is
        page = await gz.list_page(page.next_cursor)
        assert page.next_cursor is not None and page.next_cursor.startswith("3@10@")
        assert fake.pages_listed() == ["1", "1", "2"]


async def test_cli_backup_resumes_an_interrupted_listing_from_its_cursor(tmp_path: Path) -> None:
    """60 images, 20 a page. The token is refused from page 2 on: page 1 is backed up and
    its cursor kept. The re-run reads page 1 once more (to find its watermark, the last
    image backed up), downloads nothing from it, and ends with all 60 images once; a third
    run reads the last full page and the empty one after it, and downloads nothing."""
    env = {"GZ_TOKEN": TOKEN}
    dest = tmp_path / "backup"
    async with emulator(seed=60) as (run, fake):
        cfg = _config(tmp_path, run.url, run.authority)
        args = ("--config", str(cfg), "backup", "gz:", str(dest), "--json")

        fake.refuse_after_page = 1
        first = await run_cli_async(*args, env=env)
        assert first.returncode != 0
        summary = json.loads(first.stdout)
        assert summary["copied"] == 20 and "listing the source" in summary["remote_failure"]
        assert fake.pages_listed() == ["1", "2"] and fake.downloads == 20

        fake.refuse_after_page = None
        fake.log.clear()
        second = await run_cli_async(*args, env=env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert json.loads(second.stdout)["copied"] == 40
        assert fake.pages_listed() == ["1", "2", "3", "4"] and fake.downloads == 60

        fake.log.clear()
        third = await run_cli_async(*args, env=env)
        assert third.returncode == 0, third.stderr
        assert json.loads(third.stdout)["copied"] == 0
        assert fake.pages_listed() == ["3", "4"] and fake.downloads == 60
        stored = sorted(image.sha256 for image in fake.images.values())

    images = {k: v for k, v in tree_files(dest).items() if not k.endswith(".json")}
    assert len(images) == 60
    assert sorted(sha256_hex(v) for v in images.values()) == stored


async def test_a_failed_item_keeps_its_page_for_the_next_run(tmp_path: Path) -> None:
    """An image that fails on page 1 of an ascending listing is not skipped forever: the
    cursor stays on its page, and the next run lists that page again and fetches it."""
    env = {"GZ_TOKEN": TOKEN}
    dest = tmp_path / "backup"
    async with emulator(seed=45) as (run, fake):
        cfg = _config(tmp_path, run.url, run.authority)
        args = ("--config", str(cfg), "backup", "gz:", str(dest), "--json")
        first_page = sorted(fake.images.values(), key=lambda i: (i.upload_time, i.seq))[:20]
        victim = first_page[3].fullname
        fake.missing_files.add(victim)
        first = await run_cli_async(*args, env=env)
        assert first.returncode == 1, first.stderr
        assert json.loads(first.stdout)["copied"] == 44

        fake.missing_files.clear()
        fake.log.clear()
        second = await run_cli_async(*args, env=env)
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout)["copied"] == 1
        assert fake.pages_listed()[0] == "1"
        assert (dest / victim).exists()


async def _upload_new(url: str, count: int, first_seed: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as s:
        for i in range(count):
            form = aiohttp.FormData()
            data = make_png(8 + i % 5, 9, first_seed + i)
            form.add_field("image", data, filename=f"new{i}.png", content_type="image/png")
            async with s.post(f"{url}/v1/images", data=form) as r:
                assert r.status == 200, await r.text()


async def _delete_oldest(url: str, count: int) -> None:
    import aiohttp

    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{url}/_fakehost/delete", json={"oldest": count}) as r,
    ):
        assert len((await r.json())["deleted"]) == count


async def test_backup_after_deletions_on_the_host_gets_every_new_image(tmp_path: Path) -> None:
    """40 images backed up (20 a page). On the website 10 old ones are deleted and 15 new
    ones uploaded: every later image moved up 10 places, so page 3 (where the last run
    stopped) now holds only 5 of the new ones. The next backup still gets all 15; after 25
    more deletions (more than a page) and 7 uploads, it gets those 7 too."""
    env = {"GZ_TOKEN": TOKEN}
    dest = tmp_path / "backup"
    async with emulator(seed=40) as (run, fake):
        cfg = _config(tmp_path, run.url, run.authority)
        args = ("--config", str(cfg), "backup", "gz:", str(dest), "--json")
        first = await run_cli_async(*args, env=env)
        assert json.loads(first.stdout)["copied"] == 40, first.stderr

        await _delete_oldest(run.url, 10)
        await _upload_new(run.url, 15, 1000)
        second = await run_cli_async(*args, env=env)
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout)["copied"] == 15

        await _delete_oldest(run.url, 25)
        await _upload_new(run.url, 7, 2000)
        fake.log.clear()
        third = await run_cli_async(*args, env=env)
        assert third.returncode == 0, third.stderr
        assert json.loads(third.stdout)["copied"] == 7
        assert len(fake.pages_listed()) <= 4  # looked back two pages, no more
        stored = {image.sha256 for image in fake.images.values()}

    images = {k: v for k, v in tree_files(dest).items() if not k.endswith(".json")}
    assert len(images) == 40 + 15 + 7
    assert stored <= {sha256_hex(v) for v in images.values()}


async def test_a_saved_cursor_looks_back_for_its_watermark() -> None:
    """A cursor from an earlier run re-reads the page before it (one overlapping request)
    and hands out only images after the watermark; a cursor it just handed out is read as
    is (no look-back in a listing going on)."""
    async with emulator(seed=45) as (run, fake):
        async with provider(run.url) as gz:
            cursors = [c async for _p, c in gz.iter_all()]
            assert fake.pages_listed() == ["1", "2", "3"]  # no look-back while listing
        saved = cursors[-1]
        assert saved is not None and saved.startswith("3@20@")
        fake.log.clear()
        async with provider(run.url) as gz:
            page = await gz.list_page(saved)
        assert fake.pages_listed() == ["2", "3"]
        assert len(page.items) == 5 and page.next_cursor is None
