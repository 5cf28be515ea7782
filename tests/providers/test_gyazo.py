"""GyazoProvider against the Gyazo emulator on 127.0.0.1, plus a CLI round trip.

What every provider must do (listing, resuming, byte-equal round trips, NotFound, tokens
never shown, faults) is the conformance suite's (tests/conformance); this file keeps Gyazo's
own wire quirks. Retries and limiter waits run on imgsync.testing's fake clock.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import RunningFake, backup_files, run_cli_async, start_fake, write_config
from multidict import CIMultiDict

from imgsync.config import RemoteConfig, parse_config
from imgsync.errors import (
    AuthError,
    ConfigError,
    ImgsyncError,
    NotFound,
    RateLimited,
    Rejected,
    RemotePaused,
    ResponseError,
    TransientError,
)
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import make_png, seed_image
from imgsync.http import ApiClient, ApiResponse
from imgsync.models import ItemMeta, RemoteItem
from imgsync.providers import provider_class
from imgsync.providers.base import ProviderContext
from imgsync.providers.gyazo import GyazoProvider, parse_created_at, parse_image
from imgsync.ratelimit import LimiterRegistry, next_utc_midnight
from imgsync.runtime import Runtime
from imgsync.testing import fast_client, read_all, upload_source

TOKEN = "gyazo-provider-token-7d3e91"


@dataclass
class Env:
    fake: RunningFake
    host: GyazoFake
    provider: GyazoProvider
    pauses: list[tuple[str, float, str]]


Start = Callable[..., Awaitable[Env]]


@pytest.fixture
async def gyazo() -> AsyncIterator[Start]:
    """``await gyazo(host=GyazoFake(...), token=..., **options)``: a served emulator and an
    open provider pointed at it; everything is closed after the test."""
    stack = AsyncExitStack()

    async def start(host: GyazoFake | None = None, token: str = TOKEN, **options: Any) -> Env:
        host = host if host is not None else GyazoFake(Knobs(token=TOKEN))
        fake = await start_fake(host)
        stack.push_async_callback(fake.close)
        pauses: list[tuple[str, float, str]] = []

        async def on_pause(authority: str, until: float, reason: str) -> None:
            pauses.append((authority, until, reason))

        http = fast_client(attempts=3, on_pause=on_pause)
        stack.push_async_callback(http.aclose)
        cfg = RemoteConfig(name="gy", type="gyazo", base_url=fake.url, token=token, options=options)
        provider = GyazoProvider(cfg, ProviderContext(http=http))
        await stack.enter_async_context(provider)
        return Env(fake, host, provider, pauses)

    yield start
    await stack.aclose()


# ---- listing ----------------------------------------------------------------------------


async def test_pages_cover_the_library_once(gyazo: Start) -> None:
    """45 images at per_page 20: pages of 20, 20, 5, each image once; the cursors name the
    next page and the last image handed out ("2@<created_at>@<id>", "3@...")."""
    env = await gyazo(GyazoFake(Knobs(token=TOKEN, seed=45)), per_page=20)
    pages = [(page, cursor) async for page, cursor in env.provider.iter_all()]
    lasts = [page.items[-1] for page, _ in pages[:-1]]
    assert [cursor for _page, cursor in pages] == [None] + [
        f"{n}@{item.meta.created_at!r}@{item.remote_id}"
        for n, item in zip((2, 3), lasts, strict=True)
    ]
    assert [len(page.items) for page, _ in pages] == [20, 20, 5]
    assert pages[-1][0].next_cursor is None
    ids = [item.remote_id for page, _ in pages for item in page.items]
    assert len(ids) == len(set(ids)) == 45
    assert set(ids) == set(env.host.images)
    first = pages[0][0].items[0]
    stored = env.host.images[first.remote_id]
    assert first.name == f"{stored.image_id}.{stored.type}"
    assert first.md5_hint == first.remote_id and first.md5 is None and first.is_image
    assert first.url == f"{env.fake.url}/{stored.image_id}.{stored.type}"


async def test_a_saved_cursor_resumes_after_its_image_even_after_deletions(gyazo: Start) -> None:
    """A run stopped after page 1 (20 of 45, newest first); the 10 newest are then deleted
    on the site, so every older image moves up 10 places. Resuming from the saved cursor
    still hands out all 25 images not seen yet (page 2 by number alone would skip 10); a
    bare page number (saved by an older version) lists again from page 1."""
    env = await gyazo(GyazoFake(Knobs(token=TOKEN, seed=45)), per_page=20)
    first = await env.provider.list_page(None)
    saved = first.next_cursor
    assert saved is not None
    for item in first.items[:10]:
        await env.provider.delete(item)
    later = GyazoProvider(env.provider.config, env.provider.ctx)
    rest = [i.remote_id async for page, _c in later.iter_all(saved) for i in page.items]
    assert len(rest) == len(set(rest)) == 25
    assert not {i.remote_id for i in first.items} & set(rest)
    legacy = await GyazoProvider(env.provider.config, env.provider.ctx).list_page("2")
    expected = [i.remote_id for i in first.items[10:]] + rest[:10]
    assert [i.remote_id for i in legacy.items] == expected


async def test_paging_follows_the_page_size_the_host_echoes(gyazo: Start) -> None:
    """Asked for 150 per page, the host serves 100 and says so in X-Per-Page: the listing
    counts with 100 and still reaches every image (250: pages of 100, 100, 50)."""
    env = await gyazo(GyazoFake(Knobs(token=TOKEN, seed=250)))
    env.provider.per_page = 150  # as if the host capped the page size below what was asked
    ids = [i.remote_id async for page, _ in env.provider.iter_all() for i in page.items]
    assert len(ids) == len(set(ids)) == 250


class NoTotalGyazo(GyazoFake):
    """The emulator without the X-Total-Count header."""

    def make_app(self) -> Any:
        app = super().make_app()

        async def strip(_request: Any, response: Any) -> None:
            response.headers.popall("X-Total-Count", None)

        app.on_response_prepare.append(strip)
        return app


async def test_paging_without_a_total_stops_at_a_short_or_empty_page(gyazo: Start) -> None:
    """No X-Total-Count: a full page means "maybe more"; a short or empty one ends it."""
    env = await gyazo(NoTotalGyazo(Knobs(token=TOKEN, seed=40)), per_page=20)
    pages = [page async for page, _ in env.provider.iter_all()]
    assert [len(p.items) for p in pages] == [20, 20, 0]
    env = await gyazo(NoTotalGyazo(Knobs(token=TOKEN, seed=30)), per_page=20)
    assert [len(page.items) async for page, _ in env.provider.iter_all()] == [20, 10]


# ---- upload, download, delete, metadata --------------------------------------------------


async def test_an_upload_is_named_by_its_md5_and_listed_first(gyazo: Start) -> None:
    """[OBS] the image id is the MD5 of the bytes (kept as a hint only); newest first."""
    env = await gyazo(GyazoFake(Knobs(token=TOKEN, seed=3)))
    data = make_png(40, 30, 9001)
    item = await env.provider.upload(upload_source(data), ItemMeta(), rel_path="a/shot.png")
    assert item.remote_id == hashlib.md5(data).hexdigest() == item.md5_hint
    assert item.name == f"{item.remote_id}.png" and item.size == len(data)
    assert (await env.provider.list_page(None)).items[0].remote_id == item.remote_id


async def test_metadata_round_trip_and_upload_options(gyazo: Start) -> None:
    """title/desc/source url/app/created_at survive upload + get + list; options are sent."""
    env = await gyazo(access_policy="only_me", metadata_is_public=True, collection_id="col-1")
    meta = ItemMeta(
        title="Über-Screenshot ✓",
        description="two\nlines",
        source_url="https://example.com/page?q=1&r=2",
        app="imgsync-tests",
        created_at=1_500_000_000.25,
    )
    uploaded = await env.provider.upload(
        upload_source(make_png(20, 20, 77)), meta, rel_path="x.png"
    )
    assert uploaded.meta == meta
    fetched = await env.provider.get(uploaded.remote_id)
    listed = (await env.provider.list_page(None)).items[0]
    for item in (fetched, listed):
        assert item.meta == meta
    stored = env.host.images[uploaded.remote_id]
    assert (stored.access_policy, stored.metadata_is_public, stored.collection_id) == (
        "only_me",
        True,
        "col-1",
    )
    # a source "url" that is not http(s) is dropped instead of risking a refused upload
    odd = ItemMeta(title="t", source_url="file:///home/me/x.png")
    item = await env.provider.upload(upload_source(make_png(21, 20, 78)), odd, rel_path="y.png")
    assert item.meta.source_url is None
    assert (await env.provider.get(item.remote_id)).meta.source_url is None


async def test_every_date_format_and_omitted_fields(gyazo: Start) -> None:
    """Mixed created_at formats all parse; items without metadata or urls do not break."""
    host = GyazoFake(Knobs(token=TOKEN, seed=16), mixed_dates=True, omit_metadata=True)
    env = await gyazo(host)
    items = [i async for page, _ in env.provider.iter_all() for i in page.items]
    assert len(items) == 16
    for item in items:
        stored = env.host.images[item.remote_id]
        assert item.meta.created_at == pytest.approx(stored.created_at, abs=1.0)
    bare = [i for i in items if env.host.images[i.remote_id].seq % 4 == 1]
    assert bare and all(i.meta == ItemMeta(created_at=i.meta.created_at) for i in bare)
    for when in (
        "2014-05-21 14:23:10+0900",
        "2018-07-24T07:33:24.771Z",
        "2023-02-24T08:50:18+0000",
        "2026-04-07T07:19:34.183Z",
    ):
        assert parse_created_at(when) is not None
    assert parse_created_at("2014-05-21 14:23:10+0900") == 1400649790.0
    assert parse_created_at("2018-07-24T07:33:24.771Z") == pytest.approx(1532417604.771)
    assert parse_created_at("2023-02-24T08:50:18+0000") == 1677228618.0
    for junk in (None, "", "yesterday", "2014-13-45", True, {"a": 1}, float("nan")):
        assert parse_created_at(junk) is None


async def test_items_without_urls(gyazo: Start) -> None:
    """A listed item with no url is looked up; when get has none either: a clear error."""
    env = await gyazo(GyazoFake(Knobs(token=TOKEN, seed=8), omit_urls=True))
    items = [i async for page, _ in env.provider.iter_all() for i in page.items]
    without = [i for i in items if i.url is None]
    assert without, "the emulator drops url from some items"
    with pytest.raises(ResponseError, match="no file URL"):
        await read_all(env.provider, without[0])
    # when get does know the url, the download goes ahead
    with_url = next(i for i in items if i.url is not None)
    data = await read_all(
        env.provider, RemoteItem(remote_id=with_url.remote_id, name=with_url.name)
    )
    assert data == env.host.images[with_url.remote_id].data


def test_parse_image_is_defensive() -> None:
    """Junk elements are skipped; wrong-typed fields become None; unknown keys ignored."""
    assert parse_image("nope") is None
    assert parse_image({"type": "png"}) is None
    item = parse_image(
        {
            "image_id": "abc",
            "type": "../../etc",
            "url": "https://i.example/abc.JPG",
            "metadata": "not an object",
            "ocr": None,
            "created_at": 12,
            "something_new": [1, 2],
        }
    )
    assert item is not None
    assert item.name == "abc.jpg" and item.md5_hint is None
    assert item.meta == ItemMeta(created_at=12.0)
    item = parse_image({"image_id": "abc", "metadata": {"title": 5, "original_title": "orig"}})
    assert item is not None and item.name == "abc" and item.meta.title == "orig"


# ---- errors ------------------------------------------------------------------------------


async def test_a_refused_token_shows_gyazos_message_and_is_not_retried(gyazo: Start) -> None:
    env = await gyazo(token="wrong-gyazo-token-4b1d0c9e")
    with pytest.raises(AuthError, match="You are not authorized"):
        await env.provider.list_page(None)
    assert (await env.fake.stats())["requests"] == 1  # a 401 is not retried


async def test_unknown_image_carries_gyazos_message(gyazo: Start) -> None:
    env = await gyazo()
    with pytest.raises(NotFound, match=r"image not found\."):
        await env.provider.get("0" * 32)


async def test_daily_budget_spent_pauses_the_remote(gyazo: Start) -> None:
    """429 without Retry-After: RemotePaused until next UTC midnight, recorded; later calls
    (list and upload) fail at once without reaching the host."""
    env = await gyazo(GyazoFake(Knobs(token=TOKEN, seed=2, rate="2/day")))
    await env.provider.list_page(None)
    await env.provider.get(next(iter(env.host.images)))
    with pytest.raises(RemotePaused) as info:
        await env.provider.list_page(None)
    assert info.value.until == pytest.approx(next_utc_midnight(), abs=2)
    assert [(a, u) for a, u, _ in env.pauses] == [(env.fake.authority, info.value.until)]
    before = await env.fake.stats()
    assert before["throttled"] == 1
    with pytest.raises(RemotePaused):
        await env.provider.list_page(None)
    with pytest.raises(RemotePaused):
        await env.provider.upload(upload_source(make_png(9, 9, 2)), ItemMeta(), rel_path="a.png")
    assert (await env.fake.stats())["requests"] == before["requests"]


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected", "text"),
    [
        (401, {}, {"message": "You are not authorized"}, AuthError, "not authorized"),
        (403, {}, {"message": "no permission"}, AuthError, "no permission"),
        (404, {}, {"message": "image not found."}, NotFound, "image not found"),
        (400, {}, {"message": "bad created_at"}, Rejected, "bad created_at"),
        (413, {}, {"message": "Image is too large"}, Rejected, "too large"),
        (422, {}, {"message": "Unprocessable image"}, Rejected, "Unprocessable"),
        (402, {}, {"message": "Upgrade to Pro"}, Rejected, "paid plan"),
        (429, {"Retry-After": "30"}, {"message": "slow down"}, RateLimited, "slow down"),
        (429, {}, {"message": "Too many requests"}, RemotePaused, "daily request budget"),
        (500, {}, "<html>oops</html>", TransientError, "oops"),
        (503, {}, None, TransientError, "server error"),
    ],
)
def test_status_mapping(
    status: int, headers: dict[str, str], body: Any, expected: type[Exception], text: str
) -> None:
    """Each documented status maps to its class, carrying the host's message."""
    provider = GyazoProvider(
        RemoteConfig(name="gy", type="gyazo", token=TOKEN), ProviderContext(http=ApiClient())
    )
    resp = ApiResponse(status, CIMultiDict(headers), "https://api.gyazo.com/api/images", body)
    err = provider._map_error(resp)
    assert type(err) is expected
    assert text in str(err)
    if isinstance(err, RateLimited):
        assert err.retry_after == 30
    ok = ApiResponse(200, CIMultiDict(), "https://api.gyazo.com/api/images", [])
    assert provider._map_error(ok) is None


@pytest.mark.parametrize("fault", ["malformed", "truncate"])
async def test_broken_replies_are_clear_errors(gyazo: Start, fault: str) -> None:
    """Malformed JSON -> ResponseError; a body cut short -> TransientError (after retries)."""
    env = await gyazo(GyazoFake(Knobs(token=TOKEN, seed=3, faults={fault: 1.0})))
    some_id = next(iter(env.host.images))
    expected = ResponseError if fault == "malformed" else TransientError
    for call in (lambda: env.provider.list_page(None), lambda: env.provider.get(some_id)):
        with pytest.raises(ImgsyncError) as info:
            await call()
        assert isinstance(info.value, expected), repr(info.value)
    if fault == "truncate":
        item = RemoteItem(some_id, "x", url=f"{env.fake.url}/{some_id}.png")
        with pytest.raises(TransientError, match="cut short"):
            await read_all(env.provider, item)


# ---- set-up ------------------------------------------------------------------------------


async def test_public_hosts_and_options() -> None:
    """Without base_url (or with the public API's): uploads go to upload.gyazo.com, both
    public authorities share one daily budget; bad options are config errors."""
    assert provider_class("gyazo") is GyazoProvider
    for base in (None, "https://api.gyazo.com/"):
        remote = {"type": "gyazo", "token": TOKEN, **({"base_url": base} if base else {})}
        cfg = parse_config({"remotes": {"gy": remote}})
        async with Runtime(cfg) as runtime:
            provider = await runtime.open(cfg.remotes["gy"])
            assert isinstance(provider, GyazoProvider)
            assert provider.upload_url == "https://upload.gyazo.com/api/upload"
            registry = provider.http.limiters
            for authority in ("api.gyazo.com", "upload.gyazo.com"):
                assert registry.for_authority(authority).rates == ("12500/day",)
            # one budget: the upload host uses the API host's limiter
            api = registry.for_authority("api.gyazo.com")
            assert registry.for_authority("upload.gyazo.com") is api
    async with ApiClient(LimiterRegistry()) as http:
        own = RemoteConfig(name="gy", type="gyazo", base_url="http://127.0.0.1:9/", token=TOKEN)
        assert GyazoProvider(own, ProviderContext(http=http)).upload_url == (
            "http://127.0.0.1:9/api/upload"
        )
        for options in ({"per_page": 0}, {"per_page": 101}, {"access_policy": "friends"}):
            bad = RemoteConfig(name="gy", type="gyazo", token=TOKEN, options=options)
            with pytest.raises(ConfigError):
                GyazoProvider(bad, ProviderContext(http=http))
    feats = GyazoProvider.features
    assert (feats.can_list, feats.can_get, feats.can_delete) == (True, True, True)
    assert feats.checksums == frozenset() and feats.page_size == (1, 100)
    assert not feats.listing_appends


# ---- the command line --------------------------------------------------------------------


def sha_set(folder: Path) -> set[str]:
    return {
        hashlib.sha256(p.read_bytes()).hexdigest()
        for p in backup_files(folder)
        if not p.name.endswith(".json")
    }


async def test_cli_copy_then_backup_round_trip(tmp_path: Path) -> None:
    """copy folder -> gy:, backup gy: -> dir: identical bytes, sidecars with metadata;
    running both again transfers nothing."""
    host = GyazoFake(Knobs(token=TOKEN))
    fake = await start_fake(host)
    try:
        folder = tmp_path / "folder"
        folder.mkdir()
        mtimes: dict[str, float] = {}
        for i in range(5):
            data, ext = seed_image(200 + i)
            path = folder / f"pic{i}.{ext}"
            path.write_bytes(data)
            mtime = 1_600_000_000.5 + i * 3600
            os.utime(path, (mtime, mtime))
            mtimes[hashlib.sha256(data).hexdigest()] = mtime
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\n'
            'token_env = "GYAZO_TEST_TOKEN"\n',
        )
        env = {"GYAZO_TEST_TOKEN": TOKEN}
        out = tmp_path / "backup"

        async def run(*args: str) -> dict[str, Any]:
            proc = await run_cli_async("--config", str(cfg), *args, "--json", env=env)
            assert proc.returncode == 0, proc.stderr
            summary: dict[str, Any] = json.loads(proc.stdout)
            return summary

        first = await run("copy", str(folder), "gy:")
        assert (first["copied"], first["failed"]) == (5, 0)
        assert (await fake.stats())["uploads"] == 5
        backup = await run("backup", "gy:", str(out))
        assert (backup["copied"], backup["failed"]) == (5, 0)
        assert sha_set(out) == sha_set(folder)
        for image in (p for p in backup_files(out) if not p.name.endswith(".json")):
            side = json.loads((out / f"{image.name}.json").read_text())
            sha = hashlib.sha256(image.read_bytes()).hexdigest()
            assert image.name == f"{hashlib.md5(image.read_bytes()).hexdigest()}{image.suffix}"
            assert side["sha256"] == sha
            assert side["metadata"]["title"].startswith("pic")
            assert side["metadata"]["created_at"] == pytest.approx(mtimes[sha], abs=0.01)

        stats = await fake.stats()
        again = await run("copy", str(folder), "gy:")
        assert again["copied"] == 0
        backup_again = await run("backup", "gy:", str(out))
        assert (backup_again["copied"], backup_again["already_present"]) == (0, 5)
        after = await fake.stats()
        assert after["uploads"] == stats["uploads"]
        assert after["requests"] - stats["requests"] == 1  # one listing page, no downloads
    finally:
        await fake.close()
