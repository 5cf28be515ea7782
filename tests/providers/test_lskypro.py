"""LskyProProvider against the Lsky Pro emulator, over real loopback HTTP: the host's quirks.

The generic contract (paging, resume, round trips, NotFound, auth, faults) is the
conformance suite's; this file keeps what is particular to Lsky Pro.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp import web
from helpers import RunningFake, start_fake
from structlog.testing import capture_logs

from imgsync.config import RemoteConfig
from imgsync.errors import (
    AuthError,
    NotFound,
    RateLimited,
    Rejected,
    RemoteMisconfigured,
    TransientError,
)
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.images import make_png
from imgsync.fakehosts.lskypro import LskyProFake
from imgsync.hashing import digest_bytes
from imgsync.http import ApiClient, ApiResponse
from imgsync.models import ItemMeta, RemoteItem, UploadSource
from imgsync.providers.base import ProviderContext
from imgsync.providers.lskypro import LskyProProvider, parse_zone
from imgsync.retry import RetryPolicy

TOKEN = "7|lsky0token0for0tests0aaaaaaaaaaaaaaaaaaaaa"


async def _no_sleep(_seconds: float) -> None:
    return None


@asynccontextmanager
async def emulator(**kw: Any) -> AsyncIterator[tuple[RunningFake, LskyProFake]]:
    knobs = {k: kw.pop(k) for k in ("seed", "rate", "max_upload_bytes") if k in kw}
    knobs.setdefault("rate", "none")
    fake = LskyProFake(Knobs(token=TOKEN, **knobs), **kw)
    running = await start_fake(fake)
    try:
        yield running, fake
    finally:
        await running.close()


@asynccontextmanager
async def provider(
    url: str, *, token: str | None = TOKEN, attempts: int = 3, **options: Any
) -> AsyncIterator[LskyProProvider]:
    retry = RetryPolicy(attempts=attempts, sleep=_no_sleep)
    cfg = RemoteConfig(name="lsky", type="lskypro", base_url=url, token=token, options=options)
    async with (
        ApiClient(retry=retry) as http,
        LskyProProvider(cfg, ProviderContext(http=http)) as lsky,
    ):
        yield lsky


def source(data: bytes, name: str = "pic.png", mime: str = "image/png") -> UploadSource:
    d = digest_bytes(data, True)
    return UploadSource(name=name, size=len(data), sha256=d.sha256, md5=d.md5, mime=mime, data=data)


async def read_all(lsky: LskyProProvider, item: RemoteItem) -> bytes:
    return b"".join([chunk async for chunk in lsky.open(item)])


async def test_upload_is_stored_converted_and_reads_back_as_stored() -> None:
    """The reply describes the stored (re-encoded) file: its size and md5 are what a download
    returns, not what was sent; the same bytes twice are two different images."""
    data = make_png(40, 30, 1)
    async with emulator() as (running, _fake), provider(running.url) as lsky:
        first = await lsky.upload(source(data, "holiday.png"), ItemMeta(), rel_path="a/holiday.png")
        second = await lsky.upload(source(data, "holiday.png"), ItemMeta(), rel_path="holiday.png")
        stored = await read_all(lsky, first)
    assert first.name == "holiday.png" and first.remote_id != second.remote_id
    assert stored != data and first.size == len(stored)
    assert first.md5 == hashlib.md5(stored).hexdigest() != hashlib.md5(data).hexdigest()
    assert first.md5 != second.md5
    assert LskyProProvider.features.reencodes_uploads


async def test_guest_upload_needs_no_token_but_listing_does() -> None:
    async with emulator() as (running, fake), provider(running.url, token=None) as lsky:
        item = await lsky.upload(source(make_png(20, 20, 2)), ItemMeta(), rel_path="g.png")
        with pytest.raises(AuthError, match="needs a token"):
            await lsky.list_page(None)
        requests = fake.stats.requests
    assert item.url and fake.images[item.remote_id].user_id is None
    assert requests == 1  # the listing was refused before sending anything


async def test_a_bad_token_is_an_auth_error_never_a_guest_upload_and_never_shown() -> None:
    bad = "9|this0token0is0not0valid0at0all0bbbbbbbbbbbbbbb"
    async with emulator() as (running, fake), provider(running.url, token=bad) as lsky:
        with capture_logs() as logs, pytest.raises(AuthError) as info:
            await lsky.upload(source(make_png(20, 20, 3)), ItemMeta(), rel_path="x.png")
        with pytest.raises(AuthError):
            await lsky.list_page(None)
    assert fake.stats.uploads == 0
    assert "Authentication failed." in str(info.value)
    shown = [str(info.value), repr(info.value), *map(str, logs)]
    assert not any(bad in text or bad.split("|")[1] in text for text in shown)


async def test_listing_pages_of_forty_resume_and_convert_units() -> None:
    """85 items in pages of 40/40/5, each once; every cursor resumes where it says; sizes are
    bytes (KB * 1024) and dates are read in the server's zone."""
    async with emulator(seed=85) as (running, fake), provider(running.url) as lsky:
        pages, cursor, cursors = [], None, []
        while True:
            page = await lsky.list_page(cursor)
            pages.append(page)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
            cursors.append(cursor)
        resumed = await lsky.list_page(cursors[0])
    assert [len(p.items) for p in pages] == [40, 40, 5]
    ids = [i.remote_id for p in pages for i in p.items]
    assert len(set(ids)) == 85 and resumed.items == pages[1].items
    stored = sorted(fake.user_images(), key=lambda i: (i.created_at, i.seq))
    assert ids == [i.key for i in stored]  # earliest first
    first = pages[0].items[0]
    assert first.size == len(stored[0].data) and first.mtime == stored[0].created_at
    assert first.md5 == stored[0].md5 and first.name == stored[0].origin_name


async def test_a_cursor_saved_under_other_options_restarts_the_listing() -> None:
    async with emulator(seed=45) as (running, _fake):
        async with provider(running.url) as lsky:
            cursor = (await lsky.list_page(None)).next_cursor
        async with provider(running.url, order="newest") as lsky:
            assert not lsky.features.listing_appends
            page = await lsky.list_page(cursor)
            assert len(page.items) == 40  # page 1 again, not page 2 of another order


@pytest.mark.parametrize(("option", "server", "hours"), [("+08:00", 8, 8), ("UTC", 0, 0)])
async def test_dates_follow_the_timezone_option(option: str, server: int, hours: int) -> None:
    when = datetime(2026, 11, 23, 20, 0, 0, tzinfo=UTC).timestamp()
    async with (
        emulator(utc_offset_hours=server, wall_clock=lambda: when) as (running, _fake),
        provider(running.url, timezone=option) as lsky,
    ):
        await lsky.upload(source(make_png(20, 20, 4)), ItemMeta(), rel_path="d.png")
        (item,) = (await lsky.list_page(None)).items
    assert item.mtime == when and item.meta.created_at == when
    assert parse_zone(option) == timezone(timedelta(hours=hours))


def test_parse_zone() -> None:
    assert parse_zone("-05:30") == timezone(-timedelta(hours=5, minutes=30))
    assert parse_zone("+8") == timezone(timedelta(hours=8))
    assert parse_zone("nowhere/at_all") is None and parse_zone("+25:00") is None


async def test_refusals_at_http_200_map_to_the_tree() -> None:
    """status:false answers (HTTP 200) become the error they mean."""
    async with emulator(max_upload_bytes=3000, guest_upload=False) as (running, _fake):
        async with provider(running.url) as lsky:
            with pytest.raises(Rejected, match="size limit"):
                await lsky.upload(source(make_png(200, 200, 5)), ItemMeta(), rel_path="big.png")
            with pytest.raises(Rejected, match="file type"):
                await lsky.upload(
                    source(make_png(20, 20, 6), "x.psd2", "application/x"), ItemMeta(), rel_path="x"
                )
        async with provider(running.url, strategy_id=5) as lsky:
            with pytest.raises(RemoteMisconfigured, match="strategy"):
                await lsky.upload(source(make_png(20, 20, 7)), ItemMeta(), rel_path="s.png")
        async with provider(running.url, token=None) as lsky:
            with pytest.raises(AuthError, match="guest uploads are off"):
                await lsky.upload(source(make_png(20, 20, 8)), ItemMeta(), rel_path="g.png")
        async with provider(running.url, attempts=2) as lsky:
            with pytest.raises(TransientError, match="failed to store"):
                await lsky.upload(source(b"plain text, not an image"), ItemMeta(), rel_path="t.png")


def test_upload_frequency_limit_and_login_redirect_are_mapped() -> None:
    """Two answers the emulator does not produce: the group's upload frequency limit (a
    RateLimited for its unit) and a 302 to /login (an AuthError)."""
    lsky = LskyProProvider(
        RemoteConfig(name="l", type="lskypro", base_url="http://h", token=TOKEN), ProviderContext()
    )
    limited = ApiResponse(
        200,
        {"Content-Type": "application/json"},
        "http://h/api/v1/upload",
        {"status": False, "message": "每小时内你最多可以上传 100 张图片", "data": {}},
    )
    error = lsky._map_error(limited)
    assert isinstance(error, RateLimited) and error.retry_after == 3600
    redirect = ApiResponse(302, {"Location": "http://h/login"}, "http://h/api/v1/images", "")
    assert isinstance(lsky._map_error(redirect), AuthError)


async def test_a_name_without_an_image_extension_gets_one() -> None:
    """The server types a file by its name's extension: a bare name is sent with one."""
    async with emulator() as (running, _fake), provider(running.url) as lsky:
        item = await lsky.upload(
            source(make_png(20, 20, 9), "Screenshot"), ItemMeta(), rel_path="S"
        )
    assert item.name == "Screenshot.png"


async def test_options_reach_the_host() -> None:
    async with emulator(albums=3) as (running, fake):
        async with provider(running.url, album_id=2, permission="public") as lsky:
            item = await lsky.upload(source(make_png(20, 20, 10)), ItemMeta(), rel_path="a.png")
            listed = (await lsky.list_page(None)).items
        async with provider(running.url) as lsky:
            await lsky.upload(source(make_png(20, 20, 11)), ItemMeta(), rel_path="b.png")
            everything = (await lsky.list_page(None)).items
    stored = fake.images[item.remote_id]
    assert (stored.album_id, stored.permission) == (2, 1)
    assert [i.remote_id for i in listed] == [item.remote_id] and len(everything) == 2


async def test_delete_is_confirmed_by_absence() -> None:
    """Deleting one's own image works and a second delete is NotFound, although the host
    answers success both times; a key that is not the account's is refused, not reported
    deleted, and the image stays."""
    async with emulator() as (running, fake):
        async with provider(running.url, token=None) as guest:
            foreign = await guest.upload(source(make_png(20, 20, 12)), ItemMeta(), rel_path="f.png")
        async with provider(running.url) as lsky:
            mine = await lsky.upload(source(make_png(20, 20, 13)), ItemMeta(), rel_path="m.png")
            await lsky.delete(mine)
            with pytest.raises(NotFound):
                await read_all(lsky, mine)
            with pytest.raises(NotFound):
                await lsky.delete(mine)
            with pytest.raises(Rejected, match="not this account's"):
                await lsky.delete(foreign)
            # an item known only by its key (no URL) is looked for in the listing
            with pytest.raises(NotFound):
                await lsky.delete(RemoteItem(remote_id=mine.remote_id, name="m.png"))
    assert fake.stats.deletes == 1 and foreign.remote_id in fake.images


async def test_throttled_without_retry_after_is_rate_limited() -> None:
    """Lsky's 429 carries no Retry-After: still RateLimited (the limiter backs off)."""
    async with (
        emulator(seed=1, rate="1/minute") as (running, _fake),
        provider(running.url, attempts=1) as lsky,
    ):
        await lsky.list_page(None)
        with pytest.raises(RateLimited) as info:
            await lsky.list_page(None)
    assert info.value.retry_after is None


async def test_a_wrong_base_url_is_a_misconfiguration() -> None:
    async with emulator() as (running, _fake):
        async with provider(running.url + "/lsky") as lsky:
            with pytest.raises(RemoteMisconfigured, match="no Lsky Pro API"):
                await lsky.list_page(None)
        async with provider(running.url + "/api/v1/") as lsky:  # written with the API path
            assert (await lsky.list_page(None)).items == []


async def test_a_later_run_resumes_past_deletions_without_missing_new_images() -> None:
    """A finished listing resumed by a later run (a new provider, the saved cursor) finds every
    image added since, although images deleted on the website moved the rest up a page."""
    async with emulator(seed=85) as (running, fake):
        async with provider(running.url) as lsky:
            last = None
            async for _page, cursor in lsky.iter_all(None):
                last = cursor
        for image in sorted(fake.user_images(), key=lambda i: i.seq)[:10]:
            fake._remove(image)  # deleted on the website
        async with provider(running.url) as lsky:
            added = [
                (await lsky.upload(source(make_png(30, 20, 200 + i)), ItemMeta(), rel_path="n.png"))
                for i in range(15)
            ]
        async with provider(running.url) as later:
            seen = [item.remote_id async for page, _ in later.iter_all(last) for item in page.items]
    assert {a.remote_id for a in added} <= set(seen)
    assert len(seen) == len(set(seen)) and len(seen) < 85  # not a full relisting either


async def test_a_resume_whose_watermark_was_deleted_still_finds_what_follows() -> None:
    async with emulator(seed=85) as (running, fake):
        async with provider(running.url) as lsky:
            first = await lsky.list_page(None)
            second = await lsky.list_page(first.next_cursor)
        fake._remove(fake.images[first.items[-1].remote_id])  # the watermark itself
        async with provider(running.url) as later:
            seen = [
                item.remote_id
                async for page, _ in later.iter_all(first.next_cursor)
                for item in page.items
            ]
    assert [i.remote_id for i in second.items] == seen[: len(second.items)]
    assert len(seen) == 85 - 40


class S3StyleLsky(LskyProFake):
    """A Lsky whose storage answers 403 for a file it does not have, and (``refuse_head``)
    refuses HEAD."""

    refuse_head = False

    def serve_file(self, request: web.Request, key: str | None) -> web.Response:
        if request.method == "HEAD" and self.refuse_head:
            return web.Response(status=405)
        if key is None or key not in self.images:
            return web.Response(status=403, text="AccessDenied")
        return super().serve_file(request, key)


@pytest.mark.parametrize("refuse_head", [False, True])
async def test_delete_confirmation_copes_with_storage_that_answers_403_or_refuses_head(
    refuse_head: bool,
) -> None:
    fake = S3StyleLsky(Knobs(token=TOKEN, rate="none"))
    fake.refuse_head = refuse_head
    running = await start_fake(fake)
    try:
        async with provider(running.url) as lsky:
            mine = await lsky.upload(source(make_png(20, 20, 14)), ItemMeta(), rel_path="m.png")
            await lsky.delete(mine)
            with pytest.raises(NotFound):
                await lsky.delete(mine)
    finally:
        await running.close()
    assert fake.stats.deletes == 1


@pytest.mark.parametrize("order", ["newest", "utmost", "least"])
async def test_other_orders_resume_without_skipping_what_deletions_moved_up(order: str) -> None:
    """A listing in ``newest``/``utmost``/``least`` order stopped after page 1; ten images of
    that page are then deleted on the website, moving every later image up by ten. A later
    run given the saved cursor still lists every image the first run did not see (it lists
    from the start again, and says so)."""
    async with emulator(seed=85) as (running, fake):
        async with provider(running.url, order=order) as lsky:
            first = await lsky.list_page(None)
        assert len(first.items) == 40 and first.next_cursor
        for item in first.items[:10]:
            fake._remove(fake.images[item.remote_id])  # deleted on the website
        with capture_logs() as logs:
            async with provider(running.url, order=order) as later:
                seen = {
                    item.remote_id
                    async for page, _ in later.iter_all(first.next_cursor)
                    for item in page.items
                }
        remaining = {image.key for image in fake.user_images()}
    assert len(remaining) == 75
    assert remaining - {i.remote_id for i in first.items} <= seen
    assert any(e["event"] == "lskypro_listing_restarts" for e in logs)


async def _lost_upload(lsky: LskyProProvider, fake: LskyProFake, src: UploadSource) -> None:
    """Upload ``src`` with its reply cut off (the host stores it)."""
    from imgsync.errors import ReplyLost

    fake.fail_next("truncate")
    with pytest.raises(ReplyLost):
        await lsky.upload(src, ItemMeta(), rel_path=src.name)


@pytest.mark.parametrize("kind", ["png", "gif"])
async def test_the_lost_reply_search_never_takes_another_image_of_the_same_name_and_size(
    kind: str,
) -> None:
    """Our upload's reply is lost; right after it another client stores another image
    with the same name and the same width and height. A GIF is stored as sent, so the
    listing's md5 tells ours apart and it is found; a PNG is re-encoded (no checksum to
    match): two candidates are ambiguous, so it is not found (the caller sends it again
    and reports the possible copy) rather than taking the other one's URL."""
    from imgsync.fakehosts.images import make_gif

    if kind == "gif":
        ours, theirs, mime = make_gif(1), make_gif(2), "image/gif"
    else:
        ours, theirs, mime = make_png(40, 30, 1), make_png(40, 30, 2), "image/png"
    name = f"shot.{kind}"
    async with (
        emulator() as (running, fake),
        provider(running.url) as lsky,
        provider(running.url) as other,
    ):
        src = source(ours, name, mime)
        await _lost_upload(lsky, fake, src)
        await other.upload(source(theirs, name, mime), ItemMeta(), rel_path=name)
        found = await lsky.find_upload(src, rel_path=name)
        if kind == "gif":
            assert found is not None
            assert await read_all(lsky, found) == ours
        else:
            assert found is None


async def test_the_lost_reply_search_finds_a_lone_reencoded_upload() -> None:
    """With one candidate (name, width, height, time) a re-encoded upload is found."""
    data = make_png(40, 30, 3)
    async with emulator() as (running, fake), provider(running.url) as lsky:
        src = source(data, "alone.png")
        await _lost_upload(lsky, fake, src)
        found = await lsky.find_upload(src, rel_path="alone.png")
        assert found is not None and found.name == "alone.png"


async def test_a_takeover_search_goes_back_past_the_newest_page_to_its_time_bound() -> None:
    """Another run's upload (its lease taken over, sent at T) was followed by 50 more: it
    is on the second page of the newest-first listing (40 a page). The search goes back
    to T less the clock slack (not only the newest page) and finds it; a bound well after
    T reads only the newest page and stops."""
    wall = [1_800_000_000.0]
    async with (
        emulator(utc_offset_hours=8, wall_clock=lambda: wall[0]) as (running, fake),
        provider(running.url) as holder,
        provider(running.url) as taker,
    ):
        ours = source(make_png(41, 31, 77), "taken.png")
        sent_at = wall[0]
        await holder.upload(ours, ItemMeta(), rel_path="taken.png")
        for i in range(50):
            wall[0] += 10.0  # one upload every ten seconds after it
            other = source(make_png(20 + i % 7, 20, 100 + i), f"o{i}.png")
            await holder.upload(other, ItemMeta(), rel_path=other.name)
        fake.stats.by_path.clear()
        found = await taker.find_upload(ours, rel_path="taken.png", since=sent_at)
        assert found is not None and found.name == "taken.png"
        assert fake.stats.by_path["GET /api/v1/images"] == 2  # the two pages back to T
        fake.stats.by_path.clear()
        late = sent_at + 400.0  # after it: only the newest 35 images are that recent
        assert await taker.find_upload(ours, rel_path="taken.png", since=late) is None
        assert fake.stats.by_path["GET /api/v1/images"] == 1
