"""``imgsync demo`` end to end, in-process: the emulator served by imgsync.testing, the
real engine, the backup with sidecars."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgsync.demo import run_demo
from imgsync.models import is_image_name


def test_demo_copies_then_backs_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "demo"
    assert run_demo(base) == 0
    backup = [p for p in (base / "backup").iterdir() if p.is_file()]
    images = [p for p in backup if is_image_name(p.name)]
    sidecars = [p for p in backup if p.suffix == ".json"]
    assert len(images) == 12 and len(sidecars) == 12
    shots = sorted(p.read_bytes() for p in (base / "screenshots").iterdir())
    assert shots == sorted(p.read_bytes() for p in images)
    out, err = capsys.readouterr()
    assert "Gyazo emulator at http://127.0.0.1:" in out
    assert "warning" not in err  # its state has a private folder of its own
    # a second demo starts from scratch again (fresh emulator, fresh state) and still works
    assert run_demo(base) == 0
