"""Checks through the account's credential: a host that serves private images only to
their owner is checked with the remote's token, which never goes to another origin (a CDN,
a storage a redirect points at) and never appears in the output."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from aiohttp import web

from imgsync.config import parse_config
from imgsync.fakehosts.images import seed_image
from imgsync.models import RemoteItem
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions
from imgsync.pipeline.verify import VerifyOptions, run_verify
from imgsync.runtime import resolve_spec
from imgsync.state import queries
from imgsync.state.store import StateStore
from imgsync.testing import serve_app, serve_emulator

KEY = "chv_secret_api_key_0123456789"


async def test_private_images_are_checked_with_the_token(tmp_path: Path) -> None:
    """Lsky Pro hides a private image's file from anyone but its owner (404): checked
    anonymously, every private image looked gone (and a repair would have re-hosted them)."""
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(3):
        data, ext = seed_image(i)
        (folder / f"p{i}.{ext}").write_bytes(data)
    async with serve_emulator("lskypro", private_files=True) as lsky:
        cfg = parse_config(
            {
                "remotes": {
                    "lsky": {
                        "type": "lskypro",
                        "base_url": lsky.url,
                        "token": lsky.token,
                        "permission": "private",
                    }
                }
            }
        )
        s = await run_job(cfg, JobSpec("copy", str(folder), "lsky:", CopyOptions(verb="copy")))
        assert s.copied == 3
        lsky.host.file_requests.clear()  # type: ignore[attr-defined]
        report = await run_verify(cfg, ["lsky:"], VerifyOptions(full=True))
        assert report.remotes[0].counts == {"alive": 3, "gone": 0, "altered": 0, "unreachable": 0}
        sent = lsky.host.file_requests  # type: ignore[attr-defined]
        assert len(sent) == 3
        assert all(h.get("Authorization") == f"Bearer {lsky.token}" for h in sent)


async def test_the_token_stays_on_its_own_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Own origin: sent (the host wants it). A CDN URL, and a redirect from the own origin
    to the CDN: never sent there, not even in the custom header aiohttp would forward."""
    images = [seed_image(i)[0] for i in range(3)]
    cdn_seen: list[dict[str, str]] = []
    own_seen: list[dict[str, str]] = []

    async def cdn_file(request: web.Request) -> web.Response:
        cdn_seen.append(dict(request.headers))
        return web.Response(body=images[int(request.match_info["n"])], content_type="image/png")

    cdn = web.Application()
    cdn.router.add_get("/c/{n}.png", cdn_file)
    async with serve_app(cdn) as cdn_url:

        async def own_file(request: web.Request) -> web.StreamResponse:
            own_seen.append(dict(request.headers))
            if request.headers.get("X-API-Key") != KEY:
                return web.Response(status=404, text="<html>not found</html>")
            if request.match_info["n"] == "1":  # moved to the CDN
                raise web.HTTPFound(f"{cdn_url}/c/1.png")
            return web.Response(body=images[0], content_type="image/png")

        own = web.Application()
        own.router.add_get("/images/{n}.png", own_file)
        async with serve_app(own) as own_url:
            cfg = parse_config(
                {"remotes": {"chv": {"type": "chevereto", "base_url": own_url, "token": KEY}}}
            )
            _remote, key = resolve_spec(cfg, "chv:")
            urls = [f"{own_url}/images/0.png", f"{own_url}/images/1.png", f"{cdn_url}/c/2.png"]
            async with StateStore(cfg.state_path) as store:
                shas = [hashlib.sha256(d).hexdigest() for d in images]
                await queries.record_objects(
                    store,
                    [(s, len(d), None, "image/png") for s, d in zip(shas, images, strict=True)],
                )
                await queries.record_locations(
                    store,
                    key,
                    [
                        (s, RemoteItem(remote_id=str(i), name=f"{i}.png", url=u))
                        for i, (s, u) in enumerate(zip(shas, urls, strict=True))
                    ],
                )
            report = await run_verify(cfg, ["chv:"], VerifyOptions(transfers=1))
    assert report.remotes[0].counts == {"alive": 3, "gone": 0, "altered": 0, "unreachable": 0}
    assert len(own_seen) == 2 and all(h.get("X-API-Key") == KEY for h in own_seen)
    assert len(cdn_seen) == 2  # the redirect's target and the CDN URL
    for headers in cdn_seen:
        assert not any(KEY in v for v in headers.values()), headers
    out = capsys.readouterr()
    assert KEY not in out.out and KEY not in out.err


def test_credentials_go_to_the_remotes_own_origin_only() -> None:
    from imgsync.providers import provider_class
    from imgsync.providers.base import ProviderContext
    from imgsync.testing import remote_for

    gyazo = provider_class("gyazo")(remote_for("gyazo", token="gy-token-1234"), ProviderContext())
    assert gyazo.credentials_for("https://api.gyazo.com/api/images/x") == {
        "Authorization": "Bearer gy-token-1234"
    }
    assert gyazo.credentials_for("https://i.gyazo.com/abc.png") == {}  # the CDN
    assert gyazo.credentials_for("http://api.gyazo.com/x.png") == {}  # not over plain HTTP
    assert gyazo.credentials_for("https://api.gyazo.com.evil.example/x.png") == {}
    assert gyazo.credentials_for("not a url") == {}
    lsky = provider_class("lskypro")(
        remote_for("lskypro", base_url="https://img.example:8443", token=None), ProviderContext()
    )
    assert lsky.credentials_for("https://img.example:8443/i/a.png") == {}  # no token: none
