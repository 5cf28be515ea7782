"""`imgsync run`: a watch job mirrors new files as they appear; SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import tree_files

from imgsync.fakehosts.images import make_png


def _wait_for(predicate: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def _start_watch_daemon(tmp_path: Path, src: Path, dst: Path) -> subprocess.Popen[str]:
    """`imgsync run` with one watch job from ``src`` to ``dst`` (short debounce/rescan).
    Its stderr goes to ``tmp_path / "daemon.err"`` (readable while it runs)."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"""
[daemon]
debounce = "0.2s"
rescan_interval = "1s"

[[jobs]]
name = "watched"
kind = "watch"
source = "{src}"
destinations = ["{dst}"]
"""
    )
    with (tmp_path / "daemon.err").open("w") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "imgsync", "--config", str(cfg), "run"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=dict(os.environ),
            text=True,
        )


def test_watch_job_copies_new_files_and_stops_on_sigterm(image_tree: Path, tmp_path: Path) -> None:
    """Existing files are copied at start, a new file shortly after it appears, and
    SIGTERM ends the daemon with exit code 0."""
    dst = tmp_path / "mirror"
    proc = _start_watch_daemon(tmp_path, image_tree, dst)
    try:
        assert _wait_for(lambda: len(tree_files(dst)) == 12 if dst.exists() else False)
        new = make_png(30, 30, 4242)
        (image_tree / "fresh.png").write_bytes(new)
        assert _wait_for(lambda: (dst / "fresh.png").exists())
        assert (dst / "fresh.png").read_bytes() == new
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    err = (tmp_path / "daemon.err").read_text()
    assert proc.returncode == 0, err
    assert "daemon_stopped" in err


def test_run_without_jobs_is_a_usage_error(tmp_path: Path) -> None:
    """`imgsync run` with no jobs explains itself and exits 2."""
    cfg = tmp_path / "config.toml"
    cfg.write_text("transfers = 2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "imgsync", "--config", str(cfg), "run"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "no [[jobs]]" in proc.stderr


async def test_interval_backup_job_picks_up_new_images(tmp_path: Path) -> None:
    """A backup job runs at start and again every interval: an image uploaded to the host
    while the daemon runs appears in the backup folder."""
    import asyncio

    import aiohttp
    from helpers import start_fake, write_config

    from imgsync.fakehosts.common import Knobs
    from imgsync.fakehosts.gyazo import GyazoFake

    token = "daemon-token-5678"
    fake = await start_fake(GyazoFake(Knobs(token=token, seed=3)))
    out = tmp_path / "backup"
    cfg = write_config(
        tmp_path / "cfg.toml",
        f"""
[remotes.gy]
type = "gyazo"
base_url = "{fake.url}"
token_env = "GY"

[[jobs]]
name = "gyazo-backup"
kind = "backup"
source = "gy:"
destinations = ["{out}"]
interval = "1s"
""",
    )

    async def images() -> int:
        return len(list(out.glob("*.json"))) if out.exists() else 0

    async def wait_for(count: int) -> bool:
        for _ in range(150):
            if await images() >= count:
                return True
            await asyncio.sleep(0.1)
        return False

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imgsync",
        "--config",
        str(cfg),
        "run",
        env={**os.environ, "GY": token},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert await wait_for(3)
        form = aiohttp.FormData()
        form.add_field("access_token", token)
        form.add_field("imagedata", make_png(20, 20, 31337), filename="new.png")
        async with aiohttp.ClientSession() as s, s.post(f"{fake.url}/api/upload", data=form) as r:
            assert r.status == 200
        assert await wait_for(4)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
        await fake.close()
    assert proc.returncode == 0, err.decode()


def test_watch_job_waits_for_a_missing_folder(tmp_path: Path) -> None:
    """A watched folder that does not exist yet (an unmounted drive) does not stop the
    daemon: once the folder appears, its images are mirrored."""
    src, dst = tmp_path / "later", tmp_path / "mirror"
    proc = _start_watch_daemon(tmp_path, src, dst)
    log = tmp_path / "daemon.err"
    try:
        # the daemon has met the missing folder (and said so), and is still running
        assert _wait_for(
            lambda: "watch_failed" in log.read_text() or "job_failed" in log.read_text()
        )
        assert proc.poll() is None
        src.mkdir()
        (src / "shot.png").write_bytes(make_png(10, 10, 5))
        assert _wait_for(lambda: (dst / "shot.png").exists())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, log.read_text()
