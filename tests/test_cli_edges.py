"""Command-line habits a hostile user brings (issue 12's CLI bullets, found still open by
a hostile run): global options after the verb, a remote named without its colon, and a
reader that closes the pipe early."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli, write_config


def test_global_options_are_accepted_after_the_verb(tmp_path: Path, image_tree: Path) -> None:
    cfg = write_config(tmp_path / "cfg.toml", "")
    dst = tmp_path / "out"
    proc = run_cli("copy", str(image_tree), str(dst), "-v", "--config", str(cfg), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert len([p for p in dst.rglob("*") if p.is_file()]) == 12


def test_a_remote_named_without_its_colon_is_a_usage_error_with_a_hint(
    tmp_path: Path, image_tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = write_config(
        tmp_path / "cfg.toml",
        '[remotes.gyazo]\ntype = "gyazo"\ntoken = "t0ken-for-the-hint-test"\n',
    )
    args = ("--config", str(cfg), "copy", str(image_tree), "gyazo", "--no-progress")
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert "gyazo:" in proc.stderr and "./gyazo" in proc.stderr
    assert not (tmp_path / "gyazo").exists()  # no folder created by mistake
    (tmp_path / "gyazo").mkdir()  # a folder of that name that exists is meant
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr


def test_a_reader_closing_the_pipe_early_ends_quietly(tmp_path: Path) -> None:
    """`imgsync ls FOLDER | head -1`: exit 0 and nothing on stderr (was exit 70,
    "internal error: BrokenPipeError")."""
    folder = tmp_path / "many"
    folder.mkdir()
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
    for i in range(3000):
        (folder / f"{'long-name-' * 6}{i:05d}.png").write_bytes(png)
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgsync", "ls", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""
