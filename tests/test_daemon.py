"""`imgsync run`: a watch job mirrors new files as they appear; SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import tree_files

from imgsync.fakehosts.images import make_png


def _wait_for(predicate: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_watch_job_copies_new_files_and_stops_on_sigterm(image_tree: Path, tmp_path: Path) -> None:
    """Existing files are copied at start, a new file shortly after it appears, and
    SIGTERM ends the daemon with exit code 0."""
    dst = tmp_path / "mirror"
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"""
[daemon]
debounce = "0.2s"

[[jobs]]
name = "shots"
kind = "watch"
source = "{image_tree}"
destinations = ["{dst}"]
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgsync", "--config", str(cfg), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
        text=True,
    )
    try:
        assert _wait_for(lambda: len(tree_files(dst)) == 12 if dst.exists() else False)
        new = make_png(30, 30, 4242)
        (image_tree / "fresh.png").write_bytes(new)
        assert _wait_for(lambda: (dst / "fresh.png").exists())
        assert (dst / "fresh.png").read_bytes() == new
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "daemon_stopped" in err


def test_run_without_jobs_is_a_usage_error(tmp_path: Path) -> None:
    """`imgsync run` with no jobs explains itself and exits 2."""
    cfg = tmp_path / "config.toml"
    cfg.write_text("transfers = 2\n")
    proc = subprocess.run(
        [sys.executable, "-m", "imgsync", "--config", str(cfg), "run"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "no [[jobs]]" in proc.stderr
