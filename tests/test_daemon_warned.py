"""The daemon's "said once" memory survives SIGHUP: a skipped symbolic link is warned about
once for the life of the daemon, across reloads that keep or restart its job, unless the
job's source folder itself changed. In process, on a virtual clock, real files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from daemonclock import VirtualClock, eventually

from imgsync.config import load_config
from imgsync.daemon import Daemon
from imgsync.fakehosts.images import make_png


def _write(path: Path, tmp_path: Path, src: Path, dst: Path, *, retry: str = "30s") -> None:
    path.write_text(
        f"""
[state]
path = "{tmp_path / "state" / "state.db"}"

[daemon]
debounce = "2s"
retry = "{retry}"
retry_max = "2m"
rescan_interval = "60s"

[[jobs]]
name = "w"
kind = "watch"
source = "{src}"
destinations = ["{dst}"]
"""
    )


async def test_a_link_is_warned_once_across_reloads(tmp_path: Path) -> None:
    clock = VirtualClock()
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    src.mkdir()
    outside.mkdir()
    (src / "a.png").write_bytes(make_png(8, 8, 1))
    (outside / "x.png").write_bytes(make_png(8, 8, 2))
    (src / "link.png").symlink_to(outside / "x.png")
    path = tmp_path / "config.toml"
    _write(path, tmp_path, src, dst)
    daemon = Daemon(load_config(path), clock=clock, signals=False, watch_events=False)

    def warned() -> list[str]:
        return [e["path"] for e in logs if e["event"] == "symlink_skipped"]

    async def another_run(after: int = 0) -> None:
        """Wait for the job's next run (its health, and so its run count, outlives a
        restart); a rescan is due every 60 virtual seconds."""
        runs = daemon.stats.jobs["w"].runs if "w" in daemon.stats.jobs else after
        while True:
            await eventually(lambda: clock.waiters > 0)
            if daemon.stats.jobs["w"].runs > runs:
                return
            clock.advance(60)
            await asyncio.sleep(0.05)

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(daemon.run())
        try:
            await eventually(lambda: daemon.ready.is_set() or task.done())
            await eventually(lambda: daemon.stats.jobs["w"].runs == 1)
            assert warned() == ["link.png"]
            kept = daemon.loops["w"]
            assert await daemon.reload() is True  # nothing changed: the job goes on
            assert daemon.loops["w"] is kept
            await another_run()
            _write(path, tmp_path, src, dst, retry="45s")  # the job restarts
            assert await daemon.reload() is True
            assert daemon.loops["w"] is not kept
            await another_run()
            await another_run()
            assert warned() == ["link.png"]  # still once
            other = tmp_path / "other"  # another source folder: its links are news
            other.mkdir()
            (other / "link.png").symlink_to(outside / "x.png")
            _write(path, tmp_path, other, dst)
            assert await daemon.reload() is True
            await another_run()
            assert warned() == ["link.png", "link.png"]
        finally:
            daemon.request_stop()
            assert await task == 0
