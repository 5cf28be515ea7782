"""Folder-to-folder copies under attack: SIGKILL mid-run, two processes into one folder.

Driven as a user would: the real CLI in real processes, real files, a real state file.
The SIGKILL run is big enough (4,500 small files) that a commit happens during the run
(every 4,096 files) while other folders are still being staged.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from helpers import tree_files

from imgsync.localfs import TMP_PREFIX

FILES, FOLDERS = 4500, 6


def _tree(root: Path, count: int = FILES) -> dict[str, bytes]:
    out = {}
    for i in range(count):
        folder = root / f"f{i % FOLDERS}"
        folder.mkdir(parents=True, exist_ok=True)
        data = b"\x89PNG\r\n\x1a\n" + i.to_bytes(4, "big") * 8
        (folder / f"img{i:05d}.png").write_bytes(data)
        out[f"f{i % FOLDERS}/img{i:05d}.png"] = data
    return out


def _recorded(db: Path) -> list[tuple[str, str]]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute(
                "SELECT remote_id, sha256 FROM locations WHERE remote LIKE 'local:%'"
            ).fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []


async def test_sigkill_mid_copy_leaves_only_recorded_files_that_are_on_disk(
    tmp_path: Path,
) -> None:
    """Whatever state records at the destination after a SIGKILL is there with the
    recorded bytes; the next run completes the copy with no second copy of anything and
    no staging left behind."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = _tree(src)
    db = Path(os.environ["IMGSYNC_STATE"])
    args = [sys.executable, "-m", "imgsync", "copy", str(src), str(dst), "--no-progress"]
    killed_mid_run = 0
    for _ in range(2):
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        before = len(_recorded(db))
        # kill once the first commit of this run is recorded (or when it ends by itself)
        while len(_recorded(db)) == before and proc.returncode is None:
            await asyncio.sleep(0.005)
        if proc.returncode is None:
            proc.kill()
            killed_mid_run += 1
        await proc.wait()
        for rel, sha in _recorded(db):
            assert hashlib.sha256((dst / rel).read_bytes()).hexdigest() == sha, rel
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert killed_mid_run >= 1  # the attack happened at least once
    assert tree_files(dst) == files  # everything, once, under its own name
    assert not [p for p in dst.rglob("*") if p.name.startswith(TMP_PREFIX)]
    assert len(_recorded(db)) == FILES


async def test_two_processes_copying_into_one_folder_write_each_file_once(
    tmp_path: Path,
) -> None:
    """Two runs with their own state into the same new folder: both finish cleanly, each
    file is there once under its own name (no ``name (1).png``), nothing is left staged."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = _tree(src, 1500)
    args = [sys.executable, "-m", "imgsync", "copy", str(src), str(dst), "--no-progress"]
    runs = []
    for n in (1, 2):
        env = {**os.environ, "IMGSYNC_STATE": str(tmp_path / f"state{n}" / "state.db")}
        runs.append(
            asyncio.create_subprocess_exec(
                *args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        )
    procs = await asyncio.gather(*runs)
    outs = await asyncio.gather(*(p.communicate() for p in procs))
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
    assert tree_files(dst) == files
    assert not [p for p in dst.rglob("*") if p.name.startswith(TMP_PREFIX)]
