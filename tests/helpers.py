"""Small helpers shared by tests (imported as ``from helpers import ...``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from imgsync.fakehosts.common import FakeHostBase
from imgsync.testing import RunningEmulator, serve_emulator


def tree_files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every regular file under ``root``; temp files and a backup
    folder's gallery (``index.html`` and ``.imgsync-gallery/``) excluded."""
    gallery = (root / ".imgsync-gallery").is_dir()
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or p.name.startswith(".imgsync-tmp-"):
            continue
        if gallery and (rel == "index.html" or rel.startswith(".imgsync-gallery/")):
            continue
        out[rel] = p.read_bytes()
    return out


def backup_files(root: Path) -> list[Path]:
    """The files a backup wrote into ``root`` for its items (images and sidecars), without
    the folder's gallery (``index.html`` and its ``.imgsync-gallery`` data)."""
    return [
        p
        for p in sorted(root.iterdir())
        if p.is_file() and not (p.name == "index.html" and (root / ".imgsync-gallery").is_dir())
    ]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m imgsync ARGS`` as a real process (inherits the test's environment)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "imgsync", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def run_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """Run a verb with ``--json`` and parse its summary."""
    proc = run_cli(*args, "--json", env=env)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


async def run_cli_async(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m imgsync ARGS`` as a real process without blocking the event loop
    (so an emulator served by the test keeps answering)."""
    import asyncio

    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imgsync",
        *args,
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())


class RunningFake(RunningEmulator):
    """An emulator served for one test, closed with :meth:`close` (for tests that cannot
    use ``imgsync.testing.serve_emulator`` as an ``async with`` block). ``closer`` is what
    :meth:`close` shuts (an ``AsyncExitStack``); ``url`` may point below the emulator."""

    def __init__(self, host: FakeHostBase, closer: AsyncExitStack | None, url: str) -> None:
        super().__init__(host, url)
        self.runner = closer

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.aclose()


async def start_fake(host: FakeHostBase) -> RunningFake:
    """Serve an emulator instance on a free loopback port until ``close()``."""
    stack = AsyncExitStack()
    running = await stack.enter_async_context(serve_emulator(host))
    return RunningFake(host, stack, running.url)


def write_config(path: Path, text: str) -> Path:
    """Write a config file for a CLI test and return its path."""
    path.write_text(text)
    return path
