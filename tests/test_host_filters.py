"""`--include`/`--exclude` on a host source: matched against the item's name (the file
name it gets in a folder), as a folder scan matches a file's base name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from helpers import backup_files, start_fake, write_config

from imgsync.cli import main
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake

TOKEN = "filters-token-1"


def _images(out: Path) -> list[str]:
    return sorted(p.suffix for p in backup_files(out) if p.suffix != ".json")


async def _backup(
    cfg: Path, out: Path, *extra: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    args = ["--config", str(cfg), "backup", "gy:", str(out), "--json", "--no-progress", *extra]
    code = await anyio.to_thread.run_sync(main, args)
    got: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert code == 0, got
    return got


async def test_include_and_exclude_filter_a_host_sources_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seed 10: six PNG, two JPEG, two GIF. ``--include '*.png'`` backs up only the PNGs,
    ``--exclude '*.png'`` only the rest; what a filter left out is not failed, not
    recorded as done, and a later run without the filter takes it."""
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN, seed=10)))
    monkeypatch.setenv("GY", TOKEN)
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
        )
        png, rest = tmp_path / "png", tmp_path / "rest"
        first = await _backup(cfg, png, "--include", "*.png", capsys=capsys)
        assert first["copied"] == 6 and first["failed"] == 0, first
        assert _images(png) == [".png"] * 6
        # the reverse, into another folder
        other = await _backup(cfg, rest, "--exclude", "*.png", capsys=capsys)
        assert other["copied"] == 4 and other["failed"] == 0, other
        assert _images(rest) == [".gif", ".gif", ".jpg", ".jpg"]
        # several globs: any --include, then no --exclude
        again = await _backup(
            cfg, png, "--include", "*.jpg", "--include", "*.gif", "--exclude", "*.gif",
            capsys=capsys,
        )  # fmt: skip
        assert again["copied"] == 2 and again["failed"] == 0, again
        # without a filter, the items left out before are taken now (and only those)
        full = await _backup(cfg, png, capsys=capsys)
        assert full["copied"] == 2 and full["already_present"] == 8, full
        assert _images(png) == sorted([".png"] * 6 + [".jpg"] * 2 + [".gif"] * 2)
    finally:
        await fake.close()


async def test_a_filtered_run_does_not_move_an_appending_listings_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A host listing oldest first (Guizhan) resumes from its saved place: the place a
    filtered run reached is its own, so the run without the filter still lists (and
    takes) the items that one left out. 50 items: three pages."""
    from imgsync.fakehosts.guizhan import GuizhanFake

    fake = await start_fake(GuizhanFake(Knobs(token=TOKEN, seed=50)))
    monkeypatch.setenv("GY", TOKEN)
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "guizhan"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
        )
        out = tmp_path / "out"
        first = await _backup(cfg, out, "--exclude", "*.png", capsys=capsys)
        assert first["copied"] == 20 and first["failed"] == 0, first
        full = await _backup(cfg, out, capsys=capsys)
        assert full["copied"] == 30 and full["already_present"] == 20, full
        assert _images(out) == sorted([".png"] * 30 + [".jpeg"] * 10 + [".gif"] * 10)
        # and the filtered run again: its own place, nothing new
        last = await _backup(cfg, out, "--exclude", "*.png", capsys=capsys)
        assert last["copied"] == 0 and last["failed"] == 0, last
    finally:
        await fake.close()
