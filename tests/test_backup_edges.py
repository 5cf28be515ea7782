"""A backup's counts and leftovers when something other than an item goes wrong: the
gallery cannot be written, the host refuses the token before anything is copied, a
config mistake is reported once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import run_cli_async, start_fake, write_config

from imgsync.config import load_config
from imgsync.errors import ConfigError
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions

TOKEN = "backup-edges-token-5"


def _config(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path / "cfg.toml",
        f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{url}"\ntoken_env = "GY"\n'
        f'[remotes.wrong]\ntype = "gyazo"\nbase_url = "{url}"\ntoken_env = "GY_WRONG"\n',
    )


ENV = {"GY": TOKEN, "GY_WRONG": "not-the-token-0"}


async def test_a_gallery_that_cannot_be_written_is_not_an_item(tmp_path: Path) -> None:
    """The user's own index.html in the backup folder: all 30 images are backed up and
    counted as such (copied + failed = 30, not 31); the gallery is reported on its own
    (a line, ``gallery_error`` in --json) and the run exits 1."""
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN, seed=30)))
    try:
        cfg = _config(tmp_path, fake.url)
        dest = tmp_path / "backup"
        dest.mkdir()
        (dest / "index.html").write_text("<p>my own page</p>")
        args = ("--config", str(cfg), "backup", "gy:", str(dest))
        proc = await run_cli_async(*args, "--json", env=ENV)
        plain = await run_cli_async(*args, "--no-progress", env=ENV)
    finally:
        await fake.close()
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["copied"] == 30 and summary["failed"] == 0, summary
    assert "not a gallery imgsync wrote" in summary["gallery_error"]
    assert (dest / "index.html").read_text() == "<p>my own page</p>"
    assert not (dest / ".imgsync-gallery").exists()
    assert plain.returncode == 1
    assert "0 failed" in plain.stdout and "gallery not written" in plain.stdout, plain.stdout


async def test_a_backup_refused_before_copying_leaves_no_folder_behind(tmp_path: Path) -> None:
    """A wrong token: exit 3; the destination folder the run would have created does not
    exist afterwards (no empty gallery in it); an existing empty folder gets no gallery."""
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN, seed=3)))
    for name, value in ENV.items():
        os.environ[name] = value
    try:
        cfg = load_config(_config(tmp_path, fake.url), explicit=True)
        new = tmp_path / "new" / "backup"
        opts = CopyOptions(job="b", verb="backup", sidecars=True)
        summary = await run_job(cfg, JobSpec("backup", "wrong:", str(new), opts, gallery=True))
        existing = tmp_path / "existing"
        existing.mkdir()
        again = await run_job(cfg, JobSpec("backup", "wrong:", str(existing), opts, gallery=True))
    finally:
        await fake.close()
        for name in ENV:
            del os.environ[name]
    assert summary.exit_code == 3 and summary.copied == 0
    assert not (tmp_path / "new").exists()
    assert again.exit_code == 3 and list(existing.iterdir()) == []


def test_a_bad_base_url_is_one_config_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``base_url = "ftp://x"`` on a remote that needs a base_url: one problem, not two."""
    monkeypatch.setenv("CHV", "chv-key-1234")
    cfg = write_config(
        tmp_path / "cfg.toml",
        '[remotes.chv]\ntype = "chevereto"\nbase_url = "ftp://x"\ntoken_env = "CHV"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(cfg, explicit=True)
    assert len(info.value.problems) == 1, info.value.problems
    assert "http(s) URL" in info.value.problems[0]
