"""A backup writes what was fetched as groups: staged, flushed, renamed, then recorded in
state in one commit. A crash between a group's rename and its state commit leaves files
that state does not know: the next run must take them as they are (same bytes under the
same name), never a second copy under another name, and every sidecar must be right."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import start_fake, write_config

from imgsync.config import load_config
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.localfs import file_sha256
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions
from imgsync.state import queries
from imgsync.state.reader import must_open

TOKEN = "group-crash-token-7"


class Crash(Exception):
    """Stands for the process dying at that point."""


async def test_a_crash_after_a_group_is_renamed_before_it_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 90
    monkeypatch.setenv("GY", TOKEN)
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN, seed=count)))
    dest = tmp_path / "backup"
    cfg = load_config(
        write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
        ),
        explicit=True,
    )
    spec = JobSpec("backup", "gy:", str(dest), CopyOptions(job="b", verb="backup", sidecars=True))
    real = queries.record_locations
    groups: list[int] = []

    async def dies_on_the_second_group(store, remote, rows, **kw):  # type: ignore[no-untyped-def]
        rows = list(rows)
        if remote.startswith("local:"):  # the folder's records of a group just renamed
            groups.append(len(rows))
            if len(groups) == 2:
                raise Crash
        await real(store, remote, rows, **kw)

    try:
        monkeypatch.setattr(queries, "record_locations", dies_on_the_second_group)
        with pytest.raises((Crash, BaseExceptionGroup)):
            await run_job(cfg, spec)
        monkeypatch.setattr(queries, "record_locations", real)
        assert len(groups) == 2 and groups[1] > 0
        on_disk = {p.name for p in dest.iterdir() if not p.name.startswith(".")}
        with must_open(cfg.state_path) as db:
            known = db.items_at(f"local:{dest.resolve()}")
        # the second group is in the folder (renamed, with its sidecars) but not in state
        unrecorded = {n for n in on_disk if not n.endswith(".json")} - set(known)
        assert len(unrecorded) == groups[1], (len(unrecorded), groups)
        summary = await run_job(cfg, spec)  # the next run
    finally:
        await fake.close()
    assert summary.exit_code == 0, summary
    files = sorted(p.name for p in dest.iterdir() if p.is_file())
    images = [n for n in files if not n.endswith(".json")]
    assert len(images) == count, images
    assert not [n for n in files if " (" in n]  # no second copy under another name
    assert not [n for n in files if n.startswith(".imgsync-tmp")]
    for name in images:
        side = json.loads((dest / f"{name}.json").read_bytes())
        assert side["file"] == name
        assert side["sha256"] == file_sha256(dest / name)
    with must_open(cfg.state_path) as db:
        known = db.items_at(f"local:{dest.resolve()}")
    assert sorted(known) == images
    assert all(known[n] == file_sha256(dest / n) for n in images)
