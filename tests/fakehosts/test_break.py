"""``POST /_fakehost/break`` on every emulator: an image it served disappears (404), its
bytes change, or it turns into the host's placeholder; a URL it never served is a 404."""

from __future__ import annotations

import hashlib

import aiohttp
import pytest
from helpers import start_fake

from imgsync.config import RemoteConfig
from imgsync.fakehosts import emulator_factory
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.images import seed_image
from imgsync.http import ApiClient
from imgsync.models import ItemMeta, UploadSource, guess_mime, sniff_image
from imgsync.providers import kinds, provider_class, provider_info
from imgsync.providers.base import ProviderContext

HOST_KINDS = [k for k in kinds() if provider_info(k).emulator is not None]
TOKEN = "break-test-token-1234"


async def _get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as s, s.request(method, url) as r:
        return r.status, r.content_type, await r.read()


async def _break(base: str, url: str, how: str) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{base}/_fakehost/break", json={"url": url, "how": how}) as r,
    ):
        return r.status, await r.json()


@pytest.mark.parametrize("kind", HOST_KINDS)
async def test_every_emulator_breaks_what_it_served(kind: str) -> None:
    info = provider_info(kind)
    assert info.emulator is not None
    fake = await start_fake(
        emulator_factory(info.emulator)(Knobs(token=TOKEN), **info.emulator_options)
    )
    try:
        remote = RemoteConfig(
            name="r", type=kind, base_url=fake.url, token=TOKEN, options=dict(info.full_options)
        )
        urls: list[tuple[str, bytes]] = []
        async with ApiClient() as http:
            ctx = ProviderContext()
            ctx.http = http
            async with provider_class(kind)(remote, ctx) as provider:
                for i in range(4):
                    data, ext = seed_image(i)
                    name = f"img{i}.{ext}"
                    src = UploadSource(
                        name=name,
                        size=len(data),
                        sha256=hashlib.sha256(data).hexdigest(),
                        md5=hashlib.md5(data).hexdigest(),
                        mime=guess_mime(name),
                        data=data,
                    )
                    item = await provider.upload(src, ItemMeta(title=f"img{i}"), rel_path=name)
                    assert item.url is not None
                    urls.append((item.url, data))
        served = []  # what the host serves (a host that re-encodes serves its own bytes)
        for url, data in urls:
            code, _ctype, body = await _get(url)
            assert code == 200
            assert body == data or provider_class(kind).features.reencodes_uploads
            served.append((url, body))
        (gone, _), (changed, orig), (held, _), (kept, kept_bytes) = served

        items = (await fake.stats())["items"]
        status, reply = await _break(fake.url, gone, "delete")
        # hosts whose store the emulator edits lose the image from their listing too
        dropped = 1 if kind in ("chevereto", "gyazo") else 0
        assert (await fake.stats())["items"] == items - dropped
        assert status == 200 and reply["how"] == "delete"
        assert (await _get(gone))[0] == 404
        assert (await _get(gone, "HEAD"))[0] == 404

        status, reply = await _break(fake.url, changed, "alter")
        assert status == 200
        code, _ctype, body = await _get(changed)
        assert code == 200 and body != orig and sniff_image(body) is not None
        assert reply["altered_sha256"] == hashlib.sha256(body).hexdigest()
        assert reply["sha256"] == hashlib.sha256(orig).hexdigest()

        status, _ = await _break(fake.url, held, "placeholder")
        assert status == 200
        code, ctype, body = await _get(held)
        assert code == 200 and ctype == "text/html" and sniff_image(body) is None

        assert await _get(kept) == (200, (await _get(kept))[1], kept_bytes)  # untouched
        status, _ = await _break(fake.url, fake.url + "/never/served.png", "delete")
        assert status == 404
        status, _ = await _break(fake.url, kept, "explode")
        assert status == 400
        # breaking is the emulator's own business: not counted as host requests
        assert (await fake.stats())["faults"] == 0
    finally:
        await fake.close()
