"""The ``--rate`` knob: ``none`` (no limit) works for every emulator, from code and from
``imgsync fakehost``; a bad rate is a one-line usage error."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import aiohttp
import pytest
from helpers import run_cli

from imgsync.fakehosts import emulator_factory, emulators
from imgsync.fakehosts.chevereto import CheveretoFake
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.images import seed_image
from imgsync.testing import serve_emulator

TOKEN = "rate-knob-token-1234"


@pytest.mark.parametrize("kind", emulators())
@pytest.mark.parametrize("rate", ["none", "off", "0/second", "30/minute"])
def test_every_emulator_takes_none_and_a_rate(kind: str, rate: str) -> None:
    emulator_factory(kind)(Knobs(token=TOKEN, rate=rate))


async def test_chevereto_without_a_flood_limit_stores_every_upload() -> None:
    """--rate none on Chevereto: no flood guard (10 uploads in a row all stored)."""
    async with (
        serve_emulator(CheveretoFake(Knobs(token=TOKEN, rate="none"))) as emu,
        aiohttp.ClientSession() as session,
    ):
        codes = []
        for i in range(10):
            data, ext = seed_image(i)
            form = aiohttp.FormData()
            form.add_field("source", data, filename=f"p{i}.{ext}")
            async with session.post(
                f"{emu.url}/api/1/upload", data=form, headers={"X-API-Key": TOKEN}
            ) as resp:
                codes.append(resp.status)
        assert codes == [200] * 10
        assert (await emu.stats())["uploads"] == 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_fakehost_command_runs_with_rate_none() -> None:
    """`imgsync fakehost chevereto --rate none` serves (it used to exit 2, "bad rate")."""
    port = _free_port()
    args = ["fakehost", "chevereto", "--rate", "none", "--port", str(port), "--token", TOKEN]
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgsync", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
        text=True,
        # a test run started in the background (`cmd &` in a script) hands its children
        # SIGINT ignored, and Python keeps it ignored: Ctrl-C is what this test sends
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 (one call)
    )
    try:

        async def stats() -> int:
            async with (
                aiohttp.ClientSession() as s,
                s.get(f"http://127.0.0.1:{port}/_fakehost/stats") as r,
            ):
                return r.status

        status = None
        deadline = time.monotonic() + 20
        while status is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                status = asyncio.run(stats())
            except aiohttp.ClientError:
                time.sleep(0.1)
        assert status == 200, f"no answer (exit {proc.poll()})"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:  # never leave an emulator behind, even on a failure
                proc.kill()
                proc.wait()


def test_fakehost_command_refuses_a_bad_rate_in_one_line() -> None:
    proc = run_cli("fakehost", "gyazo", "--rate", "lots", "--port", str(_free_port()))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "bad rate" in proc.stderr
