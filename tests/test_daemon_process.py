"""`imgsync run` as operators run it (a real process, real signals, a host emulator):
a slowly written file is uploaded once, SIGTERM drains, SIGHUP reloads, `status` sees it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from daemonclock import eventually
from helpers import run_cli_async, start_fake

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import make_png

TOKEN = "daemon-ops-token-1234"


def _config(tmp_path: Path, url: str, jobs: str, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[state]
path = "{tmp_path / "state" / "state.db"}"

[daemon]
debounce = "1s"
shutdown_grace = "60s"
{extra}

[remotes.gy]
type = "gyazo"
base_url = "{url}"
token_env = "GY_TOKEN"

{jobs}
"""
    )
    return path


def _job(name: str, src: Path, dest: str = "gy:") -> str:
    return f"""
[[jobs]]
name = "{name}"
kind = "watch"
source = "{src}"
destinations = ["{dest}"]
"""


async def _start(cfg: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imgsync",
        "--config",
        str(cfg),
        "run",
        env={**os.environ, "GY_TOKEN": TOKEN},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _stop(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def _until(fake: object, key: str, at_least: int) -> int:
    while True:
        stats = await fake.stats()  # type: ignore[attr-defined]
        if stats[key] >= at_least:
            return int(stats[key])
        await asyncio.sleep(0.05)


def _old(path: Path) -> None:
    then = time.time() - 3600
    os.utime(path, (then, then))


async def test_a_slowly_written_file_is_uploaded_once_complete(tmp_path: Path) -> None:
    """Five chunks written over about two seconds (each pause shorter than ``debounce``)
    and a hidden half-written temp file: one upload, of the complete file, logged with
    its new URL."""
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN)))
    src = tmp_path / "shots"
    src.mkdir()
    proc = await _start(_config(tmp_path, fake.url, _job("shots", src)))
    try:
        await asyncio.sleep(0)  # the writer below is the stimulus, not synchronisation
        full = make_png(120, 90, 77)
        (src / ".~partial.png").write_bytes(full[:300])
        step = len(full) // 5 + 1
        with (src / "slow.png").open("wb") as fh:
            for i in range(5):
                fh.write(full[i * step : (i + 1) * step])
                fh.flush()
                await asyncio.sleep(0.4)
        await asyncio.wait_for(_until(fake, "uploads", 1), 30)
        rc, err = await _stop(proc)
        stats = await fake.stats()
        assert rc == 0, err
        assert stats["uploads"] == 1, err
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        sent = [x for x in lines if x.get("event") == "transferred"]
        assert len(sent) == 1 and sent[0]["item"] == "slow.png"
        assert sent[0]["url"].startswith(fake.url)
        import aiohttp

        async with aiohttp.ClientSession() as http, http.get(sent[0]["url"]) as r:
            assert await r.read() == full
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await fake.close()


async def test_sigterm_during_uploads_starts_no_new_upload_and_exits_0(tmp_path: Path) -> None:
    """Forty files paced at 4 uploads a second: SIGTERM after the first few lets at most
    the in-flight ones (transfers = 4) finish, records them, and exits 0 without needing
    its grace period."""
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN)))
    src = tmp_path / "many"
    src.mkdir()
    for i in range(40):
        (src / f"img{i:02d}.png").write_bytes(make_png(16, 16, 500 + i))
        _old(src / f"img{i:02d}.png")
    cfg = _config(
        tmp_path,
        fake.url,
        _job("many", src),
        extra=f'\n[limits."{fake.authority}"]\nrate = "4/second"\n',
    )
    proc = await _start(cfg)
    try:
        at_signal = await asyncio.wait_for(_until(fake, "uploads", 3), 30)
        proc.send_signal(signal.SIGTERM)
        rc, err = await _stop(proc)
        stats = await fake.stats()
    finally:
        if proc.returncode is None:
            proc.kill()
        await fake.close()
    assert rc == 0, err
    assert stats["uploads"] <= at_signal + 4 < 40
    assert "daemon_cancelled_in_flight" not in err  # drained, not cut off by the grace
    # every upload that happened is recorded, so the next run sends only the rest
    status = await run_cli_async("--config", str(cfg), "status", "--json", env={"GY_TOKEN": TOKEN})
    assert json.loads(status.stdout)["remotes"]["gy"]["items"] == stats["uploads"]


async def test_sighup_adds_a_job_and_status_shows_the_daemon(tmp_path: Path) -> None:
    """SIGHUP reloads the config (a new job starts; the daemon is the same process); a bad
    config is logged and the old one kept. `imgsync status` shows the running daemon and
    works without the token variable."""
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN)))
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, seed in ((a, 1), (b, 2)):
        folder.mkdir()
        (folder / f"{folder.name}.png").write_bytes(make_png(12, 12, seed))
        _old(folder / f"{folder.name}.png")
    cfg = _config(tmp_path, fake.url, _job("a", a))
    proc = await _start(cfg)
    try:
        await asyncio.wait_for(_until(fake, "uploads", 1), 30)
        status = await run_cli_async("--config", str(cfg), "status", env={"GY_TOKEN": ""})
        assert status.returncode == 0, status.stderr
        assert f"daemon: running, pid {proc.pid}" in status.stdout
        assert "jobs: a" in status.stdout

        cfg.write_text(cfg.read_text() + "\n[[jobs]]\nname = 'broken'\nkind = 'sometimes'\n")
        proc.send_signal(signal.SIGHUP)
        cfg.write_text(_config(tmp_path, fake.url, _job("a", a) + _job("b", b)).read_text())
        proc.send_signal(signal.SIGHUP)
        await asyncio.wait_for(_until(fake, "uploads", 2), 30)
        assert proc.returncode is None
    finally:
        rc, err = await _stop(proc)
        await fake.close()
    assert rc == 0, err
    assert '"reloaded"' in err
    status = await run_cli_async("--config", str(cfg), "status")
    assert "daemon: not running" in status.stdout
    await eventually(lambda: True)
