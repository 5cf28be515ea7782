"""Folder -> folder copies keep every source path: a file renamed (or copied) in the
source gets its file at the new path, although its bytes are already at the destination
under another name (rclone copy does the same; a mirror must). Hosts still get each image
once. Real files, real state, the real CLI in-process."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

from helpers import tree_files

from imgsync.cli import main
from imgsync.fakehosts.images import make_png


def _run(*args: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*args, "--no-progress", "--json"])
    summary: dict[str, Any] = json.loads(out.getvalue())
    return code, summary


def _src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for i, rel in enumerate(["a.png", "b.png", "sub/c.png"]):
        (src / rel).write_bytes(make_png(12 + i, 9, i))
    return src


def test_a_file_renamed_in_the_source_is_copied_to_its_new_path(tmp_path: Path) -> None:
    src, dst = _src(tmp_path), tmp_path / "dst"
    assert _run("copy", str(src), str(dst))[1]["copied"] == 3
    os.rename(src / "a.png", src / "renamed.png")
    os.rename(src / "sub" / "c.png", src / "moved-up.png")
    code, missing = _run("check", str(src), str(dst))
    assert code == 1 and sorted(missing["missing"]) == ["moved-up.png", "renamed.png"]
    code, summary = _run("copy", str(src), str(dst))
    assert code == 0 and summary["copied"] == 2, summary
    files = tree_files(dst)
    assert files["renamed.png"] == files["a.png"] == (src / "renamed.png").read_bytes()
    assert files["moved-up.png"] == (src / "moved-up.png").read_bytes()
    assert _run("copy", str(src), str(dst))[1]["copied"] == 0
    assert _run("check", str(src), str(dst))[0] == 0


def test_sync_leaves_the_renamed_file_at_its_new_path_only(tmp_path: Path) -> None:
    """A mirror: the old path goes, the new one stays; a file the source still has
    under its old path is kept, and so are copies of the same bytes under other paths."""
    src, dst = _src(tmp_path), tmp_path / "dst"
    assert _run("sync", str(src), str(dst))[1]["copied"] == 3
    os.rename(src / "a.png", src / "renamed.png")
    code, summary = _run("sync", str(src), str(dst))
    assert code == 0 and summary["copied"] == 1 and summary["deleted"] == 1, summary
    assert sorted(tree_files(dst)) == ["b.png", "renamed.png", "sub/c.png"]
    assert tree_files(dst) == tree_files(src)


def test_identical_files_in_two_source_paths_both_arrive(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "a").mkdir(parents=True)
    data = make_png(10, 10, 1)
    (src / "a" / "one.png").write_bytes(data)
    (src / "two.png").write_bytes(data)
    code, summary = _run("copy", str(src), str(dst))
    assert code == 0 and summary["copied"] == 2
    assert tree_files(dst) == {"a/one.png": data, "two.png": data}


def test_sync_keeps_a_copy_written_under_another_name_beside_the_users_file(
    tmp_path: Path,
) -> None:
    """img.png at the destination is the user's own, so the source's img.png was written
    as ``img (1).png``. A second source file with the same bytes arrives later: the
    ``img (1).png`` copy still mirrors the source's img.png and is not deleted."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    data = make_png(20, 20, 7)
    (dst / "img.png").write_bytes(make_png(21, 20, 8))  # the user's
    (src / "img.png").write_bytes(data)
    assert _run("sync", str(src), str(dst))[1]["copied"] == 1
    assert (dst / "img (1).png").read_bytes() == data
    (src / "again.png").write_bytes(data)
    code, summary = _run("sync", str(src), str(dst))
    assert code == 0 and summary["copied"] == 1 and summary["deleted"] == 0, summary
    assert sorted(tree_files(dst)) == ["again.png", "img (1).png", "img.png"]
    os.rename(src / "again.png", src / "later.png")  # a real rename still cleans up
    code, summary = _run("sync", str(src), str(dst))
    assert summary["deleted"] == 1
    assert sorted(tree_files(dst)) == ["img (1).png", "img.png", "later.png"]


def test_sync_removes_the_old_path_when_the_new_one_held_a_users_file(tmp_path: Path) -> None:
    """``a.png`` renamed ``n.png`` in the source while the user keeps a ``n.png`` of their
    own at the destination: the copy is written as ``n (1).png`` (the user's file is never
    touched), and the old ``a.png`` goes, as for any rename; it stayed for ever. Re-runs
    delete nothing more: ``n (1).png`` holds the source's ``n.png``."""
    src, dst = _src(tmp_path), tmp_path / "dst"
    assert _run("sync", str(src), str(dst))[1]["copied"] == 3
    moved = (src / "a.png").read_bytes()
    (dst / "n.png").write_bytes(b"the user's own file")
    os.rename(src / "a.png", src / "n.png")
    code, summary = _run("sync", str(src), str(dst))
    assert code == 0 and summary["copied"] == 1 and summary["deleted"] == 1, summary
    files = tree_files(dst)
    assert sorted(files) == ["b.png", "n (1).png", "n.png", "sub/c.png"]
    assert files["n.png"] == b"the user's own file" and files["n (1).png"] == moved
    for _ in range(2):
        code, summary = _run("sync", str(src), str(dst))
        assert code == 0 and summary["copied"] == summary["deleted"] == 0, summary
    assert tree_files(dst) == files
