"""The one pid-alive check (``imgsync.pids``) and the places that use it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from imgsync.localfs import TMP_PREFIX
from imgsync.localfs.stage import sweep_stale
from imgsync.pids import pid_alive
from imgsync.state.db import owner_alive


def _dead_pid() -> int:
    """The pid of a process that has run and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_running_process_is_alive_and_a_reaped_one_is_not() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(_dead_pid())


def test_a_pid_no_process_can_have_is_not_alive() -> None:
    """A pid past what the kernel hands out (a damaged owner or folder name) is no
    process, not an OverflowError."""
    assert not pid_alive(2**31)
    assert not pid_alive(10**20)
    assert not pid_alive(0)  # kill(0) and kill(-1) would reach a whole process group
    assert not pid_alive(-1)


def test_a_lease_owner_on_this_host_is_alive_while_its_process_runs() -> None:
    import socket

    host = socket.gethostname()
    assert owner_alive(f"{host}:{os.getpid()}")
    assert not owner_alive(f"{host}:{_dead_pid()}")
    assert not owner_alive(f"{host}:not-a-pid")
    assert not owner_alive(f"{host}:{10**20}")
    assert not owner_alive(f"{host}:0")
    assert not owner_alive(f"{host}:-1")
    assert owner_alive(f"another-host.invalid:{_dead_pid()}")  # cannot tell: the TTL decides


def test_the_staging_sweep_removes_only_what_dead_processes_left(tmp_path: Path) -> None:
    """A live process's staging folder stays; a dead one's, and one whose name carries a
    pid no process can have, are removed (the sweep used to raise OverflowError on it)."""
    live = tmp_path / f"{TMP_PREFIX}{os.getpid()}-1"
    dead = tmp_path / f"{TMP_PREFIX}{_dead_pid()}-1"
    odd = tmp_path / f"{TMP_PREFIX}{10**20}-1"
    zero = tmp_path / f"{TMP_PREFIX}0-1"
    for d in (live, dead, odd, zero):
        d.mkdir()
        (d / "part").write_bytes(b"x")
    sweep_stale(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]
