"""The copy engine under faults: files vanishing mid-run, a full destination disk."""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import tree_files

from imgsync.config import RemoteConfig, load_config
from imgsync.localfs import TMP_PREFIX
from imgsync.pipeline.copy import CopyRun
from imgsync.pipeline.plan import plan_local
from imgsync.pipeline.progress import Progress
from imgsync.pipeline.summary import CopyOptions, Summary
from imgsync.runtime import Runtime
from imgsync.state.db import open_sync
from imgsync.state.reader import must_open
from imgsync.state.store import StateStore


async def _copy(src: Path, dst: Path, mutate: Any = None) -> Summary:
    cfg = load_config(None)
    dst_key = f"local:{dst}"
    with must_open(cfg.state_path) as db:
        plan = plan_local(db, src, dst_key, dest_root=dst)
    if mutate is not None:
        mutate()
    dst.mkdir(parents=True, exist_ok=True)
    async with StateStore(cfg.state_path) as store, Runtime(cfg) as rt:
        source = await rt.open(RemoteConfig(name=str(src), type="local", path=src))
        dest = await rt.open(RemoteConfig(name=str(dst), type="local", path=dst))
        run = CopyRun(store, source, f"local:{src}", dest, dst_key, CopyOptions(), Progress())
        summary = await run.run_local(plan)
        await run.finish()
    return summary


async def test_file_vanishing_mid_run_fails_alone(image_tree: Path, tmp_path: Path) -> None:
    """A file deleted between the scan and the copy is one failure; the rest is copied."""
    dst = tmp_path / "dst"
    summary = await _copy(image_tree, dst, mutate=(image_tree / "img01.png").unlink)
    assert summary.copied == 11
    assert summary.failed == 1
    assert "vanished" in summary.failures[0][1]
    conn = open_sync(load_config(None).state_path)
    assert conn is not None
    row = conn.execute("SELECT stage, error FROM journal WHERE source_id = 'img01.png'").fetchone()
    assert row[0] == "failed" and "vanished" in row[1]


async def test_full_disk_loses_nothing(
    image_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the destination disk fills up, each write fails cleanly: no temp files, no
    half-written images, nothing recorded as copied; a later run completes the copy."""
    dst = tmp_path / "dst"
    real_open = builtins.open
    disk_full = True

    def full_disk_open(file: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        name = os.fsdecode(file) if isinstance(file, str | bytes | os.PathLike) else ""
        staging = any(part.startswith(TMP_PREFIX) for part in name.split(os.sep))
        if disk_full and "w" in mode and staging:
            fh = real_open(file, mode, *args, **kw)
            fh.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *args, **kw)

    from imgsync.localfs import stage

    real_write_fd = stage._write_fd

    def full_disk_write(fd: int, data: bytes) -> None:  # (small files: bare descriptors)
        if not disk_full:
            real_write_fd(fd, data)
            return
        real_write_fd(fd, data[: len(data) // 2])  # half of it lands, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("imgsync.localfs.stage.open", full_disk_open, raising=False)
    monkeypatch.setattr(stage, "_write_fd", full_disk_write)
    summary = await _copy(image_tree, dst)
    assert summary.copied == 0
    assert summary.failed == 12
    assert all("disk is full" in msg for _, msg in summary.failures)
    assert tree_files(dst) == {}
    assert not [p for p in dst.rglob("*") if p.name.startswith(TMP_PREFIX)]

    # (not monkeypatch.undo(): that would also drop conftest's per-test state path and
    # send this run to the user's real state database)
    disk_full = False
    summary = await _copy(image_tree, dst)
    assert summary.copied == 12 and summary.failed == 0


async def test_staging_left_by_a_crashed_run_is_swept(image_tree: Path, tmp_path: Path) -> None:
    """Staging folders of a dead imgsync process are removed by the next copy; those of a
    live process are left alone."""
    dst = tmp_path / "dst"
    dead = dst / f"{TMP_PREFIX}999999999-3"
    dead.mkdir(parents=True)
    (dead / "half.png").write_bytes(b"half written")
    live = dst / f"{TMP_PREFIX}{os.getpid()}-77"
    live.mkdir()
    summary = await _copy(image_tree, dst)
    assert summary.copied == 12
    assert not dead.exists()
    assert live.exists()
    assert not (dst / "half.png").exists()
