"""Two runs at once and uploads in parallel, through the real engine in-process: real
SQLite files, a Chevereto emulator on 127.0.0.1, real files.

* A run never counts an item another live imgsync holds a lease on as "already there":
  it waits (on an injectable clock) for the lease to resolve, takes over a dead owner's
  lease, and reports what is still held at its deadline as not done.
* A folder source uploads up to ``--transfers`` files at once, within the host's limiter.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from imgsync.config import load_config
from imgsync.fakehosts.chevereto import CheveretoFake
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.images import seed_image
from imgsync.models import RemoteItem
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions
from imgsync.runtime import resolve_spec
from imgsync.state import queries
from imgsync.state.store import StateStore
from imgsync.testing import FakeClock, serve_emulator

TOKEN = "chv_concurrency_key_9876"


def _images(folder: Path, count: int) -> list[str]:
    """``count`` distinct images in ``folder``; their SHA-256s."""
    folder.mkdir(parents=True, exist_ok=True)
    shas = []
    for i in range(count):
        data, ext = seed_image(i)
        (folder / f"pic{i:03d}.{ext}").write_bytes(data)
        shas.append(hashlib.sha256(data).hexdigest())
    return shas


def _config(tmp_path: Path, url: str, extra: str = "") -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(
        f'[state]\npath = "{tmp_path / "state.db"}"\n'
        f'[remotes.chv]\ntype = "chevereto"\nbase_url = "{url}"\ntoken = "{TOKEN}"\n' + extra
    )
    return path


class OtherRun:
    """Another imgsync holding leases: a real live process whose pid owns them."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        self.owner = f"{socket.gethostname()}:{self.proc.pid}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def lease(self, state: Path, dest: str, shas: list[str]) -> None:
        async with StateStore(state) as store:
            store.owner = self.owner
            mine, present = await store.lease(dest, shas)
            assert mine == set(shas) and not present

    async def store_some(self, state: Path, dest: str, shas: list[str]) -> None:
        """Record ``shas`` as uploaded to ``dest`` and release their leases (as run A does
        after each upload)."""
        async with StateStore(state) as store:
            store.owner = self.owner
            await queries.record_objects(store, [(s, 10, None, "image/png") for s in shas])
            await queries.record_locations(
                store,
                dest,
                [(s, RemoteItem(remote_id=f"a{i}", name=f"a{i}.png")) for i, s in enumerate(shas)],
            )
            await store.release(dest, shas)


def _opts(clock: FakeClock, sleep: Callable[[float], Awaitable[None]] | None = None) -> CopyOptions:
    return CopyOptions(
        transfers=4, lease_wait=60.0, lease_poll=1.0, clock=clock.clock, sleep=sleep or clock.sleep
    )


async def test_items_leased_by_a_live_run_are_not_counted_as_already_there(
    tmp_path: Path,
) -> None:
    """Run A holds leases on all 40 and outlives B's deadline: B uploads nothing, claims
    nothing is there, and exits non-zero naming the holder."""
    shas = _images(tmp_path / "shots", 40)
    other = OtherRun()
    try:
        async with serve_emulator(CheveretoFake(Knobs(token=TOKEN))) as emu:
            cfg = load_config(_config(tmp_path, emu.url))
            _cfg, dest = resolve_spec(cfg, "chv:")
            await other.lease(cfg.state_path, dest, shas)
            clock = FakeClock()
            summary = await run_job(
                cfg, JobSpec("copy", str(tmp_path / "shots"), "chv:", _opts(clock))
            )
            stats = await emu.stats()
        assert summary.present == 0, summary.line()
        assert summary.copied == 0 and stats["uploads"] == 0
        assert summary.exit_code != 0
        assert f"40 held by another running imgsync (pid {other.proc.pid})" in summary.line()
        assert 60.0 <= clock.elapsed <= 62.0  # waited to its deadline, on the virtual clock
    finally:
        other.kill()


async def test_a_run_waits_for_leases_and_takes_over_a_killed_owners(tmp_path: Path) -> None:
    """The reported case: A stores 18 of 40 and is killed while B waits. B counts the 18
    as there and uploads the other 22; nothing is claimed that is not recorded."""
    shas = _images(tmp_path / "shots", 40)
    other = OtherRun()
    try:
        async with serve_emulator(CheveretoFake(Knobs(token=TOKEN))) as emu:
            cfg = load_config(_config(tmp_path, emu.url))
            _cfg, dest = resolve_spec(cfg, "chv:")
            await other.lease(cfg.state_path, dest, shas)
            clock = FakeClock()

            async def sleep(seconds: float) -> None:
                await clock.sleep(seconds)
                if other.proc.poll() is None and clock.elapsed >= 5:
                    await other.store_some(cfg.state_path, dest, shas[:18])
                    other.kill()

            summary = await run_job(
                cfg,
                JobSpec("copy", str(tmp_path / "shots"), "chv:", _opts(clock, sleep)),
            )
            stats = await emu.stats()
        assert (summary.present, summary.copied, summary.failed) == (18, 22, 0), summary.line()
        assert stats["uploads"] == 22
        assert summary.exit_code == 0
        assert clock.elapsed < 10  # took over as soon as the owner was gone
    finally:
        other.kill() if other.proc.poll() is None else None


@pytest.mark.parametrize(
    ("files", "cap", "slow"),
    [
        pytest.param(16, 8, 0.5, id="transfers-bound"),  # the host allows 8: 8 in flight
        pytest.param(8, 2, 0.3, id="host-cap-bound"),  # --transfers 8, the host allows 2
    ],
)
async def test_parallel_uploads_stay_within_transfers_and_the_hosts_cap(
    tmp_path: Path, files: int, cap: int, slow: float
) -> None:
    """``--transfers 8``, every upload answered slowly: as many are in flight at once as
    the smaller of ``--transfers`` and the host's connection cap allows, never more."""
    _images(tmp_path / "shots", files)
    host = CheveretoFake(Knobs(token=TOKEN, faults={"slow": 1.0}, slow_seconds=slow))
    async with serve_emulator(host) as emu:
        extra = f'[limits."{emu.authority}"]\nconcurrency = {cap}\n'
        cfg = load_config(_config(tmp_path, emu.url, extra))
        summary = await run_job(
            cfg, JobSpec("copy", str(tmp_path / "shots"), "chv:", CopyOptions(transfers=8))
        )
        stats = await emu.stats()
    assert summary.copied == files, summary.line()
    assert stats["max_concurrent_uploads"] == cap, stats


async def test_a_daemon_job_waits_for_leases_as_long_as_its_config_says(tmp_path: Path) -> None:
    """``[daemon] lease_wait = 0``: a job run finds every item held by another live imgsync
    and reports them at once (the built-in 300 s would hold it for five minutes)."""
    from imgsync.daemon import run_job_once

    shas = _images(tmp_path / "shots", 5)
    other = OtherRun()
    try:
        async with serve_emulator(CheveretoFake(Knobs(token=TOKEN))) as emu:
            job = (
                f'[daemon]\nlease_wait = "0s"\n[[jobs]]\nname = "up"\nkind = "mirror"\n'
                f'source = "{tmp_path / "shots"}"\ndestinations = ["chv:"]\n'
            )
            cfg = load_config(_config(tmp_path, emu.url, job))
            _cfg, dest = resolve_spec(cfg, "chv:")
            await other.lease(cfg.state_path, dest, shas)
            [(_dest, summary)] = await run_job_once(cfg, cfg.jobs[0])
            stats = await emu.stats()
        assert stats["uploads"] == 0 and summary.held == 5, summary.line()
        assert f"5 held by another running imgsync (pid {other.proc.pid})" in summary.line()
    finally:
        other.kill()
