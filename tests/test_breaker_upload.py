"""Hostile uploads of a local folder: a file streamed from where it is (too large to hold
in memory) that is written again, same size, between its hash and its upload must not go
to the host under the checksum of its old bytes.

Real files, a real Chevereto emulator on 127.0.0.1, a real SQLite state.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

from imgsync.config import parse_config
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import seed_image
from imgsync.pipeline import transfer
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions
from imgsync.testing import serve_emulator

KEY = "gyazo_breaker_token_0123"


def _recorded(state: Path) -> set[str]:
    with sqlite3.connect(state) as conn:
        rows = conn.execute("SELECT sha256 FROM locations WHERE remote LIKE 'gyazo%'")
        return {r[0] for r in rows}


async def test_a_streamed_file_rewritten_with_the_same_size_before_its_upload(
    tmp_path: Path, monkeypatch: Any
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    big = src / "big.png"
    head = seed_image(1)[0][:64]
    assert head.startswith(b"\x89PNG")
    old = head + b"\x00" * 200_000
    new = head + b"\x01" * 200_000  # same size, same PNG head, other bytes
    big.write_bytes(old)
    made = transfer.Body.upload_source

    def rewritten_meanwhile(self: transfer.Body, *args: Any, **kw: Any) -> Any:
        if self.path is not None and big.read_bytes() == old:  # after the hash, once
            with open(big, "r+b") as fh:  # in place: same inode, same size, later mtime
                fh.write(new)
            st = big.stat()
            os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return made(self, *args, **kw)

    monkeypatch.setattr(transfer.Body, "upload_source", rewritten_meanwhile)
    host = GyazoFake(Knobs(token=KEY))  # a host that reports no checksum of what it got
    state = tmp_path / "state.db"
    async with serve_emulator(host) as emu:
        cfg = parse_config(
            {
                "state": {"path": str(state)},
                "remotes": {"gy": {"type": "gyazo", "base_url": emu.url, "token": KEY}},
            }
        )
        opts = CopyOptions(spool_threshold=64)  # streamed from the file
        first = await run_job(cfg, JobSpec("copy", str(src), "gy:", opts))
        # nothing recorded for bytes the host does not hold
        assert _recorded(state) <= set(host.stored_checksums()), first.line()
        again = await run_job(cfg, JobSpec("copy", str(src), "gy:", opts))
        assert again.failed == 0, again.line()
        stored = host.stored_checksums()
    assert stored == [hashlib.sha256(new).hexdigest()], (first.line(), again.line())
    assert _recorded(state) == set(stored)
