"""Uploading a folder: the next file is read and hashed while the one before it is being
sent (also with ``--transfers 1``), and no further ahead than one batch (memory stays flat).

Real files streamed from where they are (above the spool threshold), a real Gyazo emulator
on 127.0.0.1 whose first upload is held at the host until the test has seen what it needs,
a real SQLite state.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from aiohttp import web

from imgsync.config import parse_config
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import make_png, seed_image
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


class Holding(GyazoFake):
    """Answers no upload until ``done`` (the first one arrives, then the test interrupts
    imgsync)."""

    def __init__(self, knobs: Knobs) -> None:
        super().__init__(knobs)
        self.arrived = asyncio.Event()
        self.done = asyncio.Event()

    async def upload(self, request: web.Request) -> web.Response:
        self.arrived.set()
        with anyio.move_on_after(GUARD):
            await self.done.wait()
        return await super().upload(request)


async def test_ctrl_c_gives_back_the_leases_of_uploads_not_started(tmp_path: Path) -> None:
    """Ctrl-C while the first of five leased files is at the host: the leases of the four
    never sent are given back (the next run would otherwise take them over as possibly
    sent by a run that did not finish, and report possible duplicates); only the one in
    flight stays held."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        data, ext = seed_image(i)
        (src / f"pic{i}.{ext}").write_bytes(data)
    state = tmp_path / "state.db"
    host = Holding(Knobs(token=KEY))
    async with serve_emulator(host) as emu:
        cfg = tmp_path / "cfg.toml"
        cfg.write_text(
            f'[state]\npath = "{state}"\n'
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{emu.url}"\ntoken = "{KEY}"\n'
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "imgsync", "--config", str(cfg), "copy", str(src), "gy:",
            "--transfers", "1", "--no-progress",
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            # a test run started in the background hands its children SIGINT ignored
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        try:
            with anyio.fail_after(GUARD):
                await host.arrived.wait()
            proc.send_signal(signal.SIGINT)
            with anyio.fail_after(GUARD):
                _, err = await proc.communicate()
        finally:
            host.done.set()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 130, err.decode()
    with sqlite3.connect(state) as conn:
        held = conn.execute("SELECT count(*) FROM claims").fetchone()[0]
    assert held == 1, held  # the upload in flight only
