"""A backup's sidecars are on disk before state records their images as done.

Images are staged, flushed and renamed; the sidecars are written after the rename. A crash
between that and the next flush could leave a recorded image with a missing or empty
sidecar, which no later run re-creates: so the sidecars are flushed (one more flush per
group, not per file) before the group's items are recorded.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import start_fake, write_config

from imgsync.config import load_config
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.localfs import TMP_PREFIX
from imgsync.localfs import stage as stage_mod
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions
from imgsync.state import queries

TOKEN = "sidecar-durable-token-7"
IMAGES = 30


def _sidecars(root: Path) -> dict[str, dict[str, Any]]:
    """Every complete sidecar under ``root`` (name relative to it -> its JSON)."""
    out = {}
    for p in root.rglob("*.json"):
        if p.name.startswith(TMP_PREFIX) or TMP_PREFIX in str(p.parent):
            continue
        try:
            data = json.loads(p.read_bytes())
        except ValueError:
            continue
        if isinstance(data, dict) and "sha256" in data:
            out[p.relative_to(root).as_posix()] = data
    return out


async def test_every_recorded_image_has_a_flushed_sidecar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "backup"
    events: list[tuple[str, Any]] = []
    real_sync = stage_mod.sync_filesystem

    def sync(folder: str | Path) -> None:
        real_sync(folder)  # what is in place now is on disk after this
        events.append(("flush", set(_sidecars(dest)) if dest.exists() else set()))

    real_record = queries.record_locations

    async def record(store: Any, remote: str, rows: Any, **kw: Any) -> None:
        rows = list(rows)
        if remote.startswith("local:"):
            events.append(("record", [item.name for _, item in rows]))
        await real_record(store, remote, rows, **kw)

    monkeypatch.setattr(stage_mod, "sync_filesystem", sync)
    monkeypatch.setattr(queries, "record_locations", record)
    monkeypatch.setenv("GY", TOKEN)
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN, seed=IMAGES)))
    try:
        cfg = load_config(
            write_config(
                tmp_path / "cfg.toml",
                f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
            ),
            explicit=True,
        )
        opts = CopyOptions(job="b", verb="backup", sidecars=True)
        summary = await run_job(cfg, JobSpec("backup", "gy:", str(dest), opts))
        assert summary.exit_code == 0 and summary.copied == IMAGES, summary
        recorded = [name for kind, names in events if kind == "record" for name in names]
        assert len(recorded) == IMAGES
        # each recorded image's sidecar was in place, complete, at a flush before the record
        flushed: set[str] = set()
        for kind, what in events:
            if kind == "flush":
                flushed = what
            else:
                missing = [n for n in what if f"{n}.json" not in flushed]
                assert not missing, f"recorded before its sidecar was flushed: {missing}"
        sides = _sidecars(dest)
        for name in recorded:
            side = sides[f"{name}.json"]
            assert side["file"] == name.rpartition("/")[2]
            assert side["sha256"] == stage_mod.file_sha256(dest / name)
    finally:
        await fake.close()


def test_a_failed_sidecar_flush_fails_the_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flush after the sidecars reports a write-back error (EIO): every written file
    carries the error, so none of them is recorded as done."""
    png = b"\x89PNG fake image bytes"
    unit = stage_mod.Unit(
        "",
        [
            stage_mod.StagedFile("a.png", sidecar={"sha256": "x"}, approved=True),
            stage_mod.StagedFile("b.png", sidecar={"sha256": "y"}, approved=True),
        ],
    )
    stage_mod.stage_blobs(str(tmp_path), unit, [png, png + b"2"])
    stage_mod.commit_units(str(tmp_path), [unit])
    assert [f.final for f in unit.files] == ["a.png", "b.png"]

    def failing(folder: str | Path) -> None:
        raise OSError(errno.EIO, "Input/output error", str(folder))

    monkeypatch.setattr(stage_mod, "sync_filesystem", failing)
    stage_mod.write_sidecars(str(tmp_path), unit)
    assert all("Input/output error" in str(f.error) for f in unit.files), unit.files
