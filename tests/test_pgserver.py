"""The throwaway PostgreSQL of the fleet tests never outlives the process that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pgserver import PREFIX, pg_bindir, sweep_stale

HERE = Path(__file__).resolve().parent

STARTER = """
import sys, tempfile, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from pgserver import PgServer, pg_bindir
root = Path(tempfile.mkdtemp(prefix="imgsync-pg-", dir="/tmp"))
root.chmod(0o755)
PgServer(root, pg_bindir()).start()
print(root, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # a zombie (its parent has not reaped it yet) is gone too
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_a_cluster_whose_starter_is_killed_is_stopped_and_removed() -> None:
    bindir = pg_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        pytest.skip("PostgreSQL is not installed (initdb not found)")
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, str(HERE)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert starter.stdout is not None
        root = Path(starter.stdout.readline().strip())
        assert root.name.startswith(PREFIX), root
        postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
        assert not _gone(postmaster)
    finally:
        starter.send_signal(signal.SIGKILL)  # no finalizer, no atexit: only the reaper is left
        starter.wait()
    for _ in range(600):  # the reaper notices at once; this only bounds a broken one
        if _gone(postmaster) and not root.exists():
            break
        time.sleep(0.1)
    assert _gone(postmaster), "the cluster outlived the process that started it"
    assert not root.exists()


def test_starting_a_cluster_sweeps_the_ones_left_by_dead_processes(tmp_path: Path) -> None:
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    left = tmp_path / (PREFIX + "left")
    left.mkdir()
    (left / "owner.pid").write_text(str(dead_pid.pid))
    mine = tmp_path / (PREFIX + "mine")
    mine.mkdir()
    (mine / "owner.pid").write_text(str(os.getpid()))
    older = tmp_path / (PREFIX + "older")  # no owner recorded: maybe in use; left alone
    older.mkdir()
    if pg_bindir() is None:
        pytest.skip("PostgreSQL is not installed (initdb not found)")
    assert sweep_stale(tmp_path) == [left]
    assert not left.exists() and mine.exists() and older.exists()
