"""The provider contract, run against every registered remote type (rclone's fstests).

Each case runs once per type (``conftest.kind``). A case that needs an ability is
skipped when the type declares it absent (by ``Features``, never by type); the cases about
the wire (bad token, truncated bodies, 5xx, throttling) need a host and skip the types
that have none (local folders, memory).
"""

from __future__ import annotations

import dataclasses
import hashlib
import traceback
from urllib.parse import urlsplit, urlunsplit

import pytest
import structlog

from conformance.targets import Open, Target
from imgsync.errors import (
    AuthError,
    NotFound,
    RateLimited,
    RemotePaused,
    ReplyLost,
    TransientError,
    Unsupported,
)
from imgsync.fakehosts.images import seed_image
from imgsync.models import ItemMeta, Page, RemoteItem, sniff_image
from imgsync.providers import provider_class, provider_info
from imgsync.testing import read_all, upload_source

SEEDED = 7
MANY = 27  # more than one page of the small fixed page sizes (Discord Images: 25)
MAX_PAGES = 50  # a listing that has not ended by then cycles


async def _list_all(target: Target, cursor: str | None = None) -> list[tuple[Page, str | None]]:
    pages: list[tuple[Page, str | None]] = []
    async for page, at in target.provider.iter_all(cursor):
        pages.append((page, at))
        assert len(pages) <= MAX_PAGES, f"the listing did not end after {MAX_PAGES} pages"
    return pages


def _ids(pages: list[tuple[Page, str | None]]) -> list[str]:
    return [item.remote_id for page, _ in pages for item in page.items]


def _many(kind: str) -> int:
    """Enough items for more than one page, whatever the type's smallest page size."""
    sizes = provider_class(kind).features.page_size
    return max(MANY, sizes[0] + 7) if sizes else MANY


async def _reads_back(target: Target, item: RemoteItem, sent: bytes) -> bytes:
    """The item's bytes, checked against what was sent. A host that re-encodes what it
    stores (``reencodes_uploads``) serves its own bytes: then they must be an image of the
    same type, of the size and MD5 the host reported for the item."""
    got = await read_all(target.provider, item)
    if not target.provider.features.reencodes_uploads:
        assert got == sent
        return got
    assert sniff_image(got) == sniff_image(sent), "not the same type of image"
    if item.size is not None:
        assert len(got) == item.size, "the host reported another size"
    if item.md5 is not None:
        assert hashlib.md5(got).hexdigest() == item.md5, "the host reported another MD5"
    return got


def _needs(target: Target, ability: str) -> None:
    if not getattr(target.provider.features, ability):
        pytest.skip(f"declares no {ability}")


def _needs_wire(target: Target) -> None:
    if target.emulator is None:
        pytest.skip("no host on the other end of a wire")


async def _upload(target: Target, index: int = 100, name: str = "conformance.png") -> RemoteItem:
    data, _ext = seed_image(index)
    return await target.provider.upload(
        upload_source(data, name), ItemMeta(title="conformance"), rel_path=name
    )


def _gone_twin(item: RemoteItem) -> RemoteItem:
    """An item like ``item`` that the host has never had (same host, unknown id/file)."""
    url = item.url
    if url:
        parts = urlsplit(url)
        head, _, last = parts.path.rpartition("/")
        url = urlunsplit(parts._replace(path=f"{head}/gone0{last}", query=""))
    return dataclasses.replace(item, remote_id=f"gone0{item.remote_id}", url=url)


# ---- listing --------------------------------------------------------------------------------


async def test_listing_ends_and_yields_each_item_once(open_target: Open) -> None:
    async with open_target(seed=SEEDED) as target:
        _needs(target, "can_list")
        pages = await _list_all(target)
        ids = _ids(pages)
        assert len(ids) == len(set(ids)), "an item was listed twice"
        assert len(ids) == await target.stored() >= SEEDED
        assert pages[-1][0].next_cursor is None


async def test_resuming_from_every_cursor_yields_the_rest(open_target: Open, kind: str) -> None:
    """The same provider, resumed from any cursor it handed out, lists exactly the pages
    from there on; a new provider (a later run) resumed there misses none of them."""
    async with open_target(seed=_many(kind)) as target:
        _needs(target, "can_list")
        pages = await _list_all(target)
        if len(pages) < 2:
            pytest.skip("the seeded items fit on one page")
        ids = _ids(pages)
        for index in range(1, len(pages)):
            cursor = pages[index - 1][0].next_cursor
            assert cursor is not None and pages[index][1] == cursor
            rest = _ids(await _list_all(target, cursor))
            assert rest == ids[len(_ids(pages[:index])) :], f"resumed at {cursor!r}"
        later = dataclasses.replace(target.provider.config)
        fresh = type(target.provider)(later, target.provider.ctx)
        async with fresh:
            for index in range(1, len(pages)):
                cursor = pages[index - 1][0].next_cursor
                seen: list[str] = []
                async for page, _at in fresh.iter_all(cursor):
                    seen += [item.remote_id for item in page.items]
                    assert len(seen) <= 2 * len(ids)
                expected = ids[len(_ids(pages[:index])) :]
                assert set(expected) <= set(seen)
                assert len(seen) == len(set(seen)), f"duplicates resuming at {cursor!r}"


# ---- transfer -------------------------------------------------------------------------------


async def test_upload_then_open_returns_the_same_bytes(open_target: Open) -> None:
    async with open_target(seed=2) as target:
        before = await target.stored()
        data, _ext = seed_image(100)
        up = await _upload(target)
        assert await target.stored() == before + 1
        stored = await _reads_back(target, up, data)
        if target.provider.features.can_list:
            listed = [
                item
                for page, _ in await _list_all(target)
                for item in page.items
                if item.remote_id == up.remote_id or item.name == up.name
            ]
            assert len(listed) == 1
            assert await _reads_back(target, listed[0], data) == stored
        if target.provider.features.can_get:
            got = await target.provider.get(up.remote_id)
            assert await _reads_back(target, got, data) == stored


async def test_missing_items_are_not_found(open_target: Open) -> None:
    async with open_target() as target:
        provider = target.provider
        up = await _upload(target)
        if provider.features.can_delete:
            await provider.delete(up)
            gone = up
            with pytest.raises(NotFound):
                await provider.delete(gone)
        else:
            gone = _gone_twin(up)
        with pytest.raises(NotFound):
            await read_all(provider, gone)
        if provider.features.can_get:
            with pytest.raises(NotFound):
                await provider.get(gone.remote_id)


async def test_declared_abilities_never_raise_unsupported(open_target: Open) -> None:
    """What ``features`` declares works; what it declares absent raises ``Unsupported``."""
    async with open_target(seed=1) as target:
        provider, feats = target.provider, target.provider.features
        up = await _upload(target)
        checks = {
            "can_list": provider.list_page(None),
            "can_get": provider.get(up.remote_id),
            "can_delete": provider.delete(up),
        }
        for ability, call in checks.items():
            if getattr(feats, ability):
                await call  # raises if it fails, Unsupported included
            else:
                with pytest.raises(Unsupported):
                    await call


async def test_names_arrive_as_the_same_text(open_target: Open) -> None:
    """Non-ASCII and spaces are sent as they are, not percent-encoded (Chevereto
    fixtures 47/48: the host stores whatever text it receives)."""
    name = "ñandú é 日本 shot.png"
    async with open_target() as target:
        up = await _upload(target, name=name)
        if target.emulator is not None:
            assert target.emulator.host.received_names == [name]
        else:
            assert up.name == name


async def test_a_backslash_in_a_name_arrives(open_target: Open) -> None:
    """A backslash is sent as it is (as browsers do: WHATWG escapes only ``"``, CR and
    LF) and arrives as it is: the hosts' servers (PHP, Go, Rack) keep a backslash that
    escapes neither a quote nor a backslash; only a parser that drops every backslash
    (aiohttp's) lost it."""
    name = r"back\slash ñ\x.png"
    async with open_target() as target:
        up = await _upload(target, name=name)
        if target.emulator is not None:
            assert target.emulator.host.received_names == [name]
        else:
            assert up.name == name


# ---- the wire -------------------------------------------------------------------------------


async def test_a_wrong_token_is_an_auth_error_shown_nowhere(open_target: Open) -> None:
    wrong = "wrong-token-SECRET-8c1d4e2f"
    async with open_target(seed=1, token=wrong) as target:
        _needs_wire(target)
        if provider_info(target.kind).token == "none":
            pytest.skip("takes no token")
        with structlog.testing.capture_logs() as logs, pytest.raises(AuthError) as info:
            if target.provider.features.can_list:
                await target.provider.list_page(None)
            else:
                await _upload(target)
        shown = [
            str(info.value),
            repr(info.value),
            "".join(traceback.format_exception(info.value)),
            repr(target.provider),
            repr(target.provider.config),
            *(repr(entry) for entry in logs),
        ]
        for text in shown:
            assert wrong not in text
            assert "SECRET" not in text


async def test_a_truncated_body_is_a_transient_error(open_target: Open) -> None:
    async with open_target(seed=1) as target:
        _needs_wire(target)
        assert target.emulator is not None
        up = await _upload(target)
        host = target.emulator.host
        host.fail_next("truncate", times=10)
        with pytest.raises(TransientError):
            await read_all(target.provider, up)
        if target.provider.features.can_list:
            with pytest.raises(TransientError):
                await target.provider.list_page(None)
        else:  # the host got the upload: it is never re-sent blindly (the engine decides)
            with pytest.raises(ReplyLost):
                await _upload(target, index=101)


async def test_a_5xx_during_upload_resends_the_complete_body(open_target: Open) -> None:
    async with open_target() as target:
        _needs_wire(target)
        assert target.emulator is not None
        before = await target.emulator.stats()
        target.emulator.host.fail_next("5xx")
        data, _ext = seed_image(102)
        up = await _upload(target, index=102)
        after = await target.emulator.stats()
        assert after["faults"] == before["faults"] + 1
        assert after["uploads"] == before["uploads"] + 1
        assert after["items"] == before["items"] + 1
        await _reads_back(target, up, data)
        assert target.clock.sleeps, "the retry waited (on the fake clock)"


async def test_a_throttle_reply_is_rate_limited_or_a_pause(open_target: Open) -> None:
    async with open_target(rate="1/minute") as target:
        _needs_wire(target)
        assert target.emulator is not None
        await _upload(target)
        with pytest.raises((RateLimited, RemotePaused)):
            await _upload(target, index=103)
        assert (await target.emulator.stats())["throttled"] >= 1
