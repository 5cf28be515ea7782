"""Shared test set-up: every test gets its own state database and no user config."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgsync.fakehosts.images import seed_image


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point imgsync at a per-test state file and an empty user config dir (no config)."""
    monkeypatch.setenv("IMGSYNC_STATE", str(tmp_path / "state" / "state.db"))
    monkeypatch.delenv("IMGSYNC_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """A folder of 12 distinct images in nested folders, plus one text file."""
    root = tmp_path / "src"
    for i in range(12):
        data, ext = seed_image(i)
        folder = root / ("sub" if i % 3 == 0 else "") / ("deep" if i % 4 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i:02d}.{ext}").write_bytes(data)
    (root / "notes.txt").write_text("not an image")
    return root
