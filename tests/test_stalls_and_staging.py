"""Issue 13 leftovers: a download that stalls mid-body is fetched again like one cut off;
names from hosts are safe on FAT/exFAT/SMB folders; a folder writer drops the staging
of batches it never committed (a cancelled run in the long-lived daemon)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from imgsync.config import RemoteConfig
from imgsync.errors import CutShort
from imgsync.fakehosts.images import make_png
from imgsync.http import ApiClient
from imgsync.localfs import TMP_PREFIX, ScanEntry, StagedFile, Unit, safe_name
from imgsync.providers.base import ProviderContext
from imgsync.providers.local import LocalProvider
from imgsync.retry import RetryPolicy


@pytest.fixture
async def stalling() -> AsyncIterator[str]:
    """A server whose image announces 10,000 bytes, sends 100 and then goes quiet."""
    release = asyncio.Event()

    async def image(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "image/png", "Content-Length": "10000"})
        await resp.prepare(request)
        await resp.write(b"\x89PNG" + b"x" * 96)
        await asyncio.wait_for(release.wait(), 30)
        return resp

    app = web.Application()
    app.router.add_get("/a.png", image)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/a.png"
    finally:
        release.set()
        await runner.cleanup()


async def test_a_body_that_stalls_midway_is_cut_short(stalling: str) -> None:
    """No byte for longer than the read timeout after the body began: ``CutShort`` (which
    the engine fetches again within the run), not a bare timeout that the engine took for
    its own per-item deadline."""
    async with ApiClient(read_timeout=0.2, retry=RetryPolicy(attempts=1)) as client:
        with pytest.raises(CutShort, match="stalled") as info:
            async with client.stream(stalling, remote="r") as body:
                async for _chunk in body:
                    pass
    assert not isinstance(info.value, TimeoutError)


def test_host_names_are_safe_on_fat_and_smb_folders() -> None:
    """``<>:"|?*`` (and backslash) are replaced, a trailing dot or space is dropped; the
    extension is kept, a Windows device name gets `_`, and the same name always maps the same way."""
    for name, want in [
        ('a<b>:c"d|e?f*.png', "a_b__c_d_e_f_.png"),
        ("CON.png", "CON_.png"),  # a name Windows keeps for a device
        ("notes. ", "notes"),
        ("shot.png.", "shot.png"),
        ("what?.jpg", "what_.jpg"),
    ]:
        got = safe_name(name)
        assert got == want, (name, got)
        assert not set('<>:"|?*\\') & set(got) and not got.endswith((".", " "))


async def test_staging_of_a_batch_never_committed_is_removed_on_close(tmp_path: Path) -> None:
    """A folder copy staged a batch and was cancelled before committing it: closing the
    destination (as every run does, cancelled or not) removes that staging, so a daemon
    that lives on leaves no ``.imgsync-tmp-*`` behind; committed files stay."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    data = make_png(9, 9, 3)
    (src / "a.png").write_bytes(data)
    (src / "b.png").write_bytes(make_png(9, 9, 4))
    st = (src / "a.png").stat()
    st_b = (src / "b.png").stat()
    cfg = RemoteConfig(name=str(dst), type="local", path=dst)
    async with LocalProvider(cfg, ProviderContext()) as dest:
        done = Unit("", [StagedFile("b.png", approved=True)])
        done.files[0].scan = ScanEntry("b.png", st_b.st_size, st_b.st_mtime_ns, st_b.st_ino)
        await dest.stage_copy(src, done, False)
        await dest.commit([done])
        unit = Unit("", [StagedFile("a.png", approved=True)])
        unit.files[0].scan = ScanEntry("a.png", st.st_size, st.st_mtime_ns, st.st_ino)
        await dest.stage_copy(src, unit, False)
        assert [p for p in dst.iterdir() if p.name.startswith(TMP_PREFIX)]
    assert sorted(p.name for p in dst.iterdir()) == ["b.png"]
