"""A source folder swapped for a symbolic link between the scan and the reads: files are
opened without following a link as their last part (O_NOFOLLOW), but a link in a folder
above them was followed, so a copy read files from outside the source folder.

In-process runs of the real CLI on real files and a real SQLite state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from imgsync.cli import main
from imgsync.config import parse_config
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import seed_image
from imgsync.pipeline import plan as plan_module
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.testing import serve_emulator

TOKEN = "gyazo_links_token_0123"


def _swap_after_the_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """src/a/p.png, and a private file of the same size and mtime outside src: once the
    plan is made, src/a becomes a link to the private folder. Returns the private bytes."""
    src, outside = tmp_path / "src", tmp_path / "private"
    (src / "a").mkdir(parents=True)
    outside.mkdir()
    head = seed_image(1)[0][:64]  # a PNG's head: the host takes it as an image
    mine = head + b"mine" * 200
    (src / "a" / "p.png").write_bytes(mine)
    secret = head + b"secret!!" * 100  # the same size
    assert len(secret) == len(mine)
    (outside / "p.png").write_bytes(secret)
    st = (src / "a" / "p.png").stat()
    os.utime(outside / "p.png", ns=(st.st_atime_ns, st.st_mtime_ns))  # the same mtime
    planned = plan_module.plan_local

    def swapped_after_the_scan(*args: Any, **kw: Any) -> Any:
        plan = planned(*args, **kw)
        shutil.rmtree(src / "a")
        (src / "a").symlink_to(outside, target_is_directory=True)
        return plan

    monkeypatch.setattr("imgsync.pipeline.run.plan_local", swapped_after_the_scan)
    return secret


def test_a_folder_swapped_for_a_link_after_the_scan_is_not_copied_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    secret = _swap_after_the_scan(tmp_path, monkeypatch)
    capsys.readouterr()
    main(["copy", str(src), str(dst), "--no-progress", "--json"])
    summary = json.loads(capsys.readouterr().out)
    copied = dst / "a" / "p.png"
    assert not copied.exists() or copied.read_bytes() != secret, summary


async def test_a_folder_swapped_for_a_link_after_the_scan_is_not_uploaded_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = _swap_after_the_scan(tmp_path, monkeypatch)
    host = GyazoFake(Knobs(token=TOKEN))
    async with serve_emulator(host) as emu:
        remote = {"type": "gyazo", "base_url": emu.url, "token": TOKEN}
        cfg = parse_config(
            {"state": {"path": str(tmp_path / "state.db")}, "remotes": {"gy": remote}}
        )
        await run_job(cfg, JobSpec("copy", str(tmp_path / "src"), "gy:"))
        stored = host.stored_checksums()
    assert hashlib.sha256(secret).hexdigest() not in stored
