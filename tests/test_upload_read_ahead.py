"""Uploading a folder: the next file is read and hashed while the one before it is being
sent (also with ``--transfers 1``), and no further ahead than one batch (memory stays flat).

Real files streamed from where they are (above the spool threshold), a real Gyazo emulator
on 127.0.0.1 whose first upload is held at the host until the test has seen what it needs,
a real SQLite state.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio.to_thread
from aiohttp import web

from imgsync.config import parse_config
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import make_png
from imgsync.pipeline import copy, sources, transfer
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions
from imgsync.testing import serve_emulator

KEY = "gyazo_read_ahead_token_42"
GUARD = 10.0  # turns a missing read-ahead into a failure instead of a hang


class FirstUploadHeld(GyazoFake):
    """Holds the first upload's reply until ``release`` is set (or the guard runs out),
    noting which files had been read by then."""

    def __init__(self, knobs: Knobs, read: list[str], release: threading.Event) -> None:
        super().__init__(knobs)
        self.read = read
        self.release = release
        self.read_while_first_held: list[str] | None = None

    async def upload(self, request: web.Request) -> web.Response:
        first = self.read_while_first_held is None
        if first:
            self.read_while_first_held = []
            await anyio.to_thread.run_sync(self.release.wait, GUARD)
            self.read_while_first_held = list(self.read)
        return await super().upload(request)


async def test_the_next_file_is_hashed_while_the_one_before_is_sent(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """``--transfers 1``, four files streamed from disk, one batch each: while the host holds
    the first upload, the second file is read and hashed (not only once the first upload
    is answered), and the third is not (one batch read ahead at most)."""
    src = tmp_path / "src"
    src.mkdir()
    head = make_png(64, 64, 7)[:33]
    names = [f"big{i}.png" for i in range(4)]
    for i, name in enumerate(names):
        (src / name).write_bytes(head + bytes([i]) * 300_000)
    read: list[str] = []
    release = threading.Event()
    real_read_local = transfer.read_local

    def read_local(path: Path, *args: Any, **kw: Any) -> Any:
        body = real_read_local(path, *args, **kw)
        read.append(path.name)
        if len(read) == 2:  # the second file is hashed: the held upload may be answered
            release.set()
        return body

    monkeypatch.setattr(sources, "read_local", read_local)
    monkeypatch.setattr(copy, "BATCH_BYTES", 200_000)  # as for files of many MB: one a batch
    host = FirstUploadHeld(Knobs(token=KEY), read, release)
    async with serve_emulator(host) as emu:
        cfg = parse_config(
            {
                "state": {"path": str(tmp_path / "state.db")},
                "remotes": {"gy": {"type": "gyazo", "token": KEY, "base_url": emu.url}},
            }
        )
        opts = CopyOptions(transfers=1, spool_threshold=64 * 1024)
        summary = await run_job(cfg, JobSpec("copy", str(src), "gy:", opts))
        stats = await emu.stats()
    assert summary.copied == 4 and not summary.failed, summary.line()
    assert stats["uploads"] == 4
    assert sorted(read) == names  # each file read once
    held_saw = host.read_while_first_held
    assert held_saw is not None and len(held_saw) == 2, held_saw
