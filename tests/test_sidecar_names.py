"""Backup sidecars and the user's files named like them.

* A user's file named like a sidecar (``<image>.json``, ``<image>.imgsync.json``,
  ``<image>.imgsync (N).json``) is never taken for imgsync's own sidecar (a deleted own
  sidecar is still noticed and made again) and never overwritten.
* A sidecar made again is counted in the run's summary.

A Guizhan emulator on 127.0.0.1, the real engine in-process, real files.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import write_config

from imgsync.config import load_config
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.guizhan import GuizhanFake
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions, Summary
from imgsync.testing import RunningEmulator, serve_emulator

TOKEN = "gz-sidecar-names-77"


@pytest.fixture
async def host(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningEmulator]:
    monkeypatch.setenv("GZ", TOKEN)
    async with serve_emulator(GuizhanFake(Knobs(token=TOKEN, seed=3, rate="none"))) as emu:
        yield emu


async def _names(emu: RunningEmulator) -> list[str]:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=auth) as s,
        s.get(f"{emu.url}/v1/images", params={"per_page": 20}) as r,
    ):
        return sorted(row["fullname"] for row in (await r.json())["result"])


async def _backup(tmp_path: Path, emu: RunningEmulator, dest: Path) -> Summary:
    cfg = load_config(
        write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gz]\ntype = "guizhan"\nbase_url = "{emu.url}"\ntoken_env = "GZ"\n',
        ),
        explicit=True,
    )
    return await run_job(cfg, JobSpec("backup", "gz:", str(dest), CopyOptions(sidecars=True)))


def _theirs(name: str, sha: str = "") -> bytes:
    """A user's JSON file, even one that looks much like a sidecar."""
    body: dict[str, Any] = {"my": f"notes on {name}"}
    if sha:
        body |= {"sha256": sha, "source": "my copy", "remote_id": "mine"}
    return json.dumps(body).encode()


async def test_a_deleted_own_sidecar_is_noticed_beside_users_files_named_like_it(
    tmp_path: Path, host: RunningEmulator
) -> None:
    """The user's <image>.json and <image>.imgsync.json were there first, so imgsync's
    sidecar went to <image>.imgsync (1).json. The user deletes that one: the next backup
    makes it again (and counts it) and leaves the user's two files as they were."""
    dest = tmp_path / "backup"
    dest.mkdir()
    name = (await _names(host))[0]
    mine = {f"{name}.json": _theirs(name), f"{name}.imgsync.json": _theirs(name + "!")}
    for n, data in mine.items():
        (dest / n).write_bytes(data)
    first = await _backup(tmp_path, host, dest)
    assert first.copied == 3
    own = dest / f"{name}.imgsync (1).json"
    side = json.loads(own.read_bytes())
    assert side["file"] == name
    own.unlink()
    again = await _backup(tmp_path, host, dest)
    assert again.copied == 0 and again.failed == 0
    assert json.loads(own.read_bytes()) == side
    assert again.sidecars_restored == 1
    assert "1 sidecar written again" in again.line()
    assert again.to_json()["sidecars_restored"] == 1
    for n, data in mine.items():
        assert (dest / n).read_bytes() == data
    third = await _backup(tmp_path, host, dest)
    assert third.sidecars_restored == 0 and "written again" not in third.line()


async def test_a_users_file_named_like_a_later_sidecar_is_never_overwritten(
    tmp_path: Path, host: RunningEmulator
) -> None:
    """<image>.json is the user's, and so is <image>.imgsync (1).json, which even holds
    the image's checksum with other keys: imgsync's sidecar goes to <image>.imgsync.json;
    when the user deletes it, it is made again there, and neither user file changes."""
    dest = tmp_path / "backup"
    dest.mkdir()
    name = (await _names(host))[1]
    (dest / f"{name}.json").write_bytes(_theirs(name))
    first = await _backup(tmp_path, host, dest)
    assert first.copied == 3
    own = dest / f"{name}.imgsync.json"
    sha = json.loads(own.read_bytes())["sha256"]
    lookalike = dest / f"{name}.imgsync (1).json"
    lookalike.write_bytes(_theirs(name, sha))
    own.unlink()
    again = await _backup(tmp_path, host, dest)
    assert again.sidecars_restored == 1
    assert json.loads(own.read_bytes())["sha256"] == sha
    assert lookalike.read_bytes() == _theirs(name, sha)
    assert (dest / f"{name}.json").read_bytes() == _theirs(name)
    listed = sorted(p.name for p in dest.iterdir() if p.name.startswith(name))
    assert listed == sorted(
        [name, f"{name}.json", f"{name}.imgsync.json", f"{name}.imgsync (1).json"]
    )


async def test_a_restored_sidecar_is_counted(tmp_path: Path, host: RunningEmulator) -> None:
    dest = tmp_path / "backup"
    await _backup(tmp_path, host, dest)
    for p in sorted(dest.glob("*.json"))[:2]:
        os.unlink(p)
    again = await _backup(tmp_path, host, dest)
    assert again.copied == 0 and again.sidecars_restored == 2
    assert "2 sidecars written again" in again.line()
