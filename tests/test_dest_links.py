"""Writes never leave the destination tree through a symbolic link inside it."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_json

from imgsync.fakehosts.images import make_png
from imgsync.localfs import StagedFile, Unit, commit_units, stage_blobs


def test_folder_link_inside_the_destination_is_not_followed(tmp_path: Path) -> None:
    """d/sub -> elsewhere: copying A (with A/sub/...) into d writes nothing into
    elsewhere; those items fail with a message naming the link (exit 1); the rest copy."""
    src = tmp_path / "A"
    (src / "sub" / "deep").mkdir(parents=True)
    for i in range(10):
        (src / "sub" / f"s{i}.png").write_bytes(make_png(10, 10, i))
    (src / "sub" / "deep" / "x.png").write_bytes(make_png(11, 10, 99))
    (src / "top.png").write_bytes(make_png(12, 10, 50))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dst = tmp_path / "d"
    dst.mkdir()
    (dst / "sub").symlink_to(elsewhere, target_is_directory=True)

    code, summary = run_json("copy", str(src), str(dst))
    assert code == 1
    assert list(elsewhere.iterdir()) == []
    assert summary["copied"] == 1 and summary["failed"] == 11
    assert (dst / "top.png").exists()
    assert "is a symbolic link" in json.dumps(summary)


def test_link_made_between_staging_and_commit_is_refused(tmp_path: Path) -> None:
    """The check is made again at commit: a folder swapped for a link in between is not
    written through."""
    root, elsewhere = tmp_path / "d", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    unit = Unit("sub", [StagedFile("sub/a.png", approved=True)])
    stage_blobs(str(root), unit, [b"data"])
    (root / "sub").symlink_to(elsewhere, target_is_directory=True)
    commit_units(str(root), [unit])
    assert unit.files[0].error is not None and unit.files[0].final is None
    assert unit.staged == unit.files  # still listed, so the engine reports it as failed
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in root.iterdir()) == ["sub"]  # no staging left behind
