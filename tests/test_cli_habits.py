"""Habits users bring from rclone and gallery-dl: options after the verb, a remote name
without its colon, ``| head``, dry runs that list, a progress line that says how long."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_cli

from imgsync.cli import build_parser, main
from imgsync.fakehosts.images import seed_image


def _images(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        data, ext = seed_image(i)
        (root / f"img{i:02d}.{ext}").write_bytes(data)
    return root


def test_ls_into_a_closed_pipe_ends_quietly_with_exit_0(tmp_path: Path) -> None:
    """``imgsync ls REMOTE | head``: the reader has gone before imgsync writes a line."""
    folder = _images(tmp_path / "pics", 3)
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgsync", "ls", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `head` after its lines: nobody reads any more
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert err == ""


def test_global_options_after_the_verb() -> None:
    parser = build_parser()
    args = parser.parse_args(["copy", "a", "b", "-v", "--config", "c.toml"])
    assert args.verbose is True and args.config == Path("c.toml")
    args = parser.parse_args(["-v", "--config", "c.toml", "copy", "a", "b"])
    assert args.verbose is True and args.config == Path("c.toml")  # not reset by the verb
    args = parser.parse_args(["config", "check", "-v"])
    assert args.verbose is True and args.config is None
    args = parser.parse_args(["ls", "x:"])
    assert args.verbose is False and args.config is None


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "imgsync.toml"
    cfg.write_text(f'[remotes.shots]\ntype = "local"\npath = "{tmp_path / "configured"}"\n')
    return cfg


def test_remote_name_without_colon_is_refused_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _images(tmp_path / "src", 2)
    monkeypatch.chdir(tmp_path)
    assert main(["--config", str(_config(tmp_path)), "copy", str(src), "shots"]) == 2
    err = capsys.readouterr().err
    assert "shots:" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "shots").exists()
    assert not (tmp_path / "configured").exists()


def test_remote_name_without_colon_uses_an_existing_folder_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _images(tmp_path / "src", 2)
    (tmp_path / "shots").mkdir()
    monkeypatch.chdir(tmp_path)  # the process below starts here
    proc = run_cli("--config", str(_config(tmp_path)), "copy", str(src), "shots", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "shots:" in proc.stderr
    assert len(list((tmp_path / "shots").iterdir())) == 2


def _ok(*args: str) -> list[str]:
    proc = run_cli(*args, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_dry_run_lists_each_item_it_would_copy_or_delete(tmp_path: Path) -> None:
    src = _images(tmp_path / "src", 4)
    dst = tmp_path / "dst"
    out = _ok("copy", str(src), str(dst), "--dry-run")
    names = sorted(p.name for p in src.iterdir())
    assert sorted(line.removeprefix("would copy: ") for line in out[:-1]) == names
    assert "would copy 4" in out[-1] and "B/s" not in out[-1]  # no rate for work not done
    assert not dst.exists()

    _ok("sync", str(src), str(dst))
    (src / names[0]).unlink()  # dropped: a real sync deletes its copy
    (src / names[1]).rename(src / "renamed.png")  # moved: its copy is kept
    out = _ok("sync", str(src), str(dst), "--dry-run")
    assert [line for line in out if line.startswith("would ")] == [f"would delete: {names[0]}"]
    assert "would delete 1" in out[-1]
    assert (dst / names[0]).exists()  # a dry run changes nothing
    before = {p.name for p in dst.iterdir()}
    _ok("sync", str(src), str(dst))  # the real run does what it listed
    assert before - {p.name for p in dst.iterdir()} == {names[0]}


def _screen(raw: str) -> list[str]:
    """What a terminal shows for ``raw``: each line's text after its last carriage return,
    with erase-line codes applied."""
    return [seg.rsplit("\r", 1)[-1].replace("\x1b[K", "") for seg in raw.split("\n")]


def test_progress_shows_percent_eta_elapsed_item_and_puts_logs_above() -> None:
    import io

    from imgsync.pipeline.progress import Progress

    now = [100.0]
    out = io.StringIO()
    held = [""]
    p = Progress(
        enabled=True, stream=out, clock=lambda: now[0], width=200, throttle=lambda: held[0]
    )
    p.total = 10
    p.tick(done=2)  # already there: instant, not part of the pace
    for i in range(4):
        now[0] += 2.0
        p.current = f"img{i}.png"
        p.tick(done=1, copied=1, nbytes=1000)
    line = p.text()
    assert line.startswith(" 60% 6/10")
    assert "elapsed 0:08" in line and "ETA 0:08" in line  # 4 items in 8 s, 4 left
    assert line.endswith("| img3.png")
    held[0] = "api.example paused 0:30"
    assert "| api.example paused 0:30 |" in p.text()

    logs = p.log_stream()
    logs.write("2026-11-30 host_paused host=api.example")
    logs.write("\n")
    p.close()
    shown = [s for s in _screen(out.getvalue()) if s]
    assert shown[0] == "2026-11-30 host_paused host=api.example"  # its own line, above
    assert shown[1].startswith(" 60% 6/10")  # the progress line, drawn again below it
