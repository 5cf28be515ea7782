"""Downloads (backup, migrate, a repair's source copy) carry the remote's credential to its
own origin, as verify's checks do, and never to another origin: not to a CDN URL, not to
where a redirect from the own origin points (aiohttp itself would forward a custom header
such as ``X-API-Key`` or ``token`` there)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from imgsync.config import RemoteConfig, parse_config
from imgsync.fakehosts.images import seed_image
from imgsync.http import ApiClient
from imgsync.models import RemoteItem
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions
from imgsync.providers import provider_class
from imgsync.providers.base import ProviderContext
from imgsync.testing import serve_app, serve_emulator

TOKEN = "7|secret0download0token0aaaaaaaaaaaaaaaaaaaa"
IMAGES = [seed_image(i)[0] for i in range(3)]


@pytest.mark.parametrize("kind", ["chevereto", "discordimages", "gyazo", "guizhan", "lskypro"])
async def test_downloads_carry_the_token_on_the_remotes_own_origin_only(kind: str) -> None:
    cdn_seen: list[dict[str, str]] = []
    own_seen: list[dict[str, str]] = []

    async def cdn_file(request: web.Request) -> web.Response:
        cdn_seen.append(dict(request.headers))
        return web.Response(body=IMAGES[int(request.match_info["n"])], content_type="image/png")

    cdn = web.Application()
    cdn.router.add_get("/c/{n}.png", cdn_file)
    async with serve_app(cdn) as cdn_url:

        async def own_file(request: web.Request) -> web.StreamResponse:
            own_seen.append(dict(request.headers))
            if not any(TOKEN in v for v in request.headers.values()):
                return web.Response(status=404, text="<html>private image</html>")
            if request.match_info["n"] == "1":  # moved to the CDN
                raise web.HTTPFound(f"{cdn_url}/c/1.png")
            return web.Response(body=IMAGES[0], content_type="image/png")

        own = web.Application()
        own.router.add_get("/f/{n}.png", own_file)
        async with serve_app(own) as own_url:
            cfg = RemoteConfig(name="r", type=kind, base_url=own_url, token=TOKEN)
            async with ApiClient() as http:
                provider = provider_class(kind)(cfg, ProviderContext(http=http))
                got = []
                for url in (f"{own_url}/f/0.png", f"{own_url}/f/1.png", f"{cdn_url}/c/2.png"):
                    item = RemoteItem(remote_id="x", name="x.png", url=url)
                    got.append(b"".join([c async for c in provider.open(item)]))
    assert got == IMAGES
    assert len(own_seen) == 2
    assert len(cdn_seen) == 2  # the redirect's target and the CDN URL
    for headers in cdn_seen:
        assert not any(TOKEN in v for v in headers.values()), headers


async def test_a_backup_of_private_discord_images_files_works(tmp_path: Path) -> None:
    """An emulator that serves files to the token's holder only (``private_files``, an
    assumption: no recording shows a real host doing so for Discord Images): a backup
    gets every file, and the token appears in no output."""
    async with serve_emulator("discordimages", seed=4, private_files=True) as dis:
        cfg = parse_config(
            {"remotes": {"dis": {"type": "discordimages", "base_url": dis.url, "token": dis.token}}}
        )
        import aiohttp

        async with aiohttp.ClientSession() as s, s.get(f"{dis.url}/api/uploads",
                                                        headers={"token": dis.token}) as r:  # fmt: skip
            first = (await r.json())["files"][0]["file"]
        async with aiohttp.ClientSession() as s, s.get(first) as r:
            assert r.status == 404  # anonymous: hidden
        backup = tmp_path / "backup"
        done = await run_job(
            cfg, JobSpec("backup", "dis:", str(backup), CopyOptions(verb="backup"))
        )
        assert done.failed == 0 and done.copied == 4, done.line()
        assert len([p for p in backup.iterdir() if not p.name.endswith(".json")
                    and p.is_file() and not p.name.startswith(".")
                    and p.name != "index.html"]) == 4  # fmt: skip
