"""Staging and committing into a folder, at the level of :mod:`imgsync.localfs.stage`.

The commit gives a staged file its name with one system call that never replaces
(``renameat2`` with ``RENAME_NOREPLACE`` where the system has it), and a whole staging folder
its folder's name when that folder does not exist yet; whatever appears at a name between
staging and commit is kept. The one flush before any rename must really have worked.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

import pytest

from imgsync.fakehosts.images import make_png
from imgsync.localfs import TMP_PREFIX, Unit, commit_units, make_units, scan_tree, stage_unit
from imgsync.localfs import stage as stage_mod


def _tree(root: Path, names: list[str]) -> dict[str, bytes]:
    out = {}
    for i, rel in enumerate(names):
        data = make_png(5, 5, i + 1)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        out[rel] = data
    return out


def _stage_all(src: Path, dst: Path) -> list[Unit]:
    entries, problems, _ = scan_tree(src)
    assert not problems
    units = make_units(entries)
    for unit in units:
        stage_unit(str(src), str(dst), unit, with_md5=False)
        for f in unit.staged:
            f.approved = True
    return units


def _litter(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TMP_PREFIX)]


def test_a_whole_new_folder_is_renamed_into_place(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = _tree(src, [f"album/{i:02d}.png" for i in range(5)] + ["top.png"])
    dst.mkdir()
    units = _stage_all(src, dst)
    commit_units(str(dst), units)
    finals = sorted(f.final for u in units for f in u.staged if f.final)
    assert finals == sorted(files)
    for rel, data in files.items():
        assert (dst / rel).read_bytes() == data
        assert (dst / rel).stat().st_mtime_ns == (src / rel).stat().st_mtime_ns
    assert not _litter(dst)


def test_names_taken_between_staging_and_commit_are_kept(tmp_path: Path) -> None:
    """A folder made and a file put at a staged name after staging (by the user, another
    program) survive the commit; the copy gets a numbered name beside them."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = _tree(src, ["album/a.png", "album/b.png", "c.png"])
    dst.mkdir()
    units = _stage_all(src, dst)
    (dst / "album").mkdir()  # the whole-folder rename is no longer possible
    (dst / "album" / "a.png").write_bytes(b"the user's own a.png")
    (dst / "c.png").write_bytes(b"the user's own c.png")
    commit_units(str(dst), units)
    assert (dst / "album" / "a.png").read_bytes() == b"the user's own a.png"
    assert (dst / "c.png").read_bytes() == b"the user's own c.png"
    assert (dst / "album" / "a (1).png").read_bytes() == files["album/a.png"]
    assert (dst / "album" / "b.png").read_bytes() == files["album/b.png"]
    assert (dst / "c (1).png").read_bytes() == files["c.png"]
    finals = {f.rel: f.final for u in units for f in u.staged}
    assert finals == {"album/a.png": "album/a (1).png", "album/b.png": "album/b.png",
                      "c.png": "c (1).png"}  # fmt: skip
    assert not _litter(dst)


def test_the_same_bytes_already_at_the_name_are_kept_as_they_are(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = _tree(src, ["a.png"])
    dst.mkdir()
    units = _stage_all(src, dst)
    (dst / "a.png").write_bytes(files["a.png"])
    commit_units(str(dst), units)
    (f,) = units[0].staged
    assert f.final == "a.png" and f.already_there
    assert sorted(p.name for p in dst.iterdir()) == ["a.png"]


def test_a_failed_flush_makes_nothing_visible(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the flush before the renames reports a write-back error (EIO), no staged file
    gets its name and each one carries the error: bytes that may not be on disk never count
    as copied."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, ["album/a.png", "b.png"])
    dst.mkdir()
    units = _stage_all(src, dst)

    def failing_syncfs(fd: int) -> int:  # what the C function does on a write-back error
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(stage_mod, "_syncfs", lambda: failing_syncfs)
    commit_units(str(dst), units)
    staged = [f for u in units for f in u.files]
    assert all(f.final is None and f.error is not None for f in staged)
    assert all("Input/output error" in str(f.error) for f in staged)
    assert os.listdir(dst) == []  # nothing under a real name, no staging left


def test_a_file_that_shrank_since_the_scan_is_not_staged(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, ["a.png", "b.png"])
    dst.mkdir()
    entries, _, _ = scan_tree(src)
    (src / "a.png").write_bytes(b"\x89PNG")  # cut short after the scan
    (unit,) = make_units(entries)
    stage_unit(str(src), str(dst), unit, with_md5=False)
    by_rel = {f.rel: f for f in unit.files}
    assert by_rel["a.png"].error is not None and by_rel["a.png"] not in unit.staged
    assert "changed while it was read" in str(by_rel["a.png"].error)
    assert by_rel["b.png"] in unit.staged and by_rel["b.png"].digest is not None


def test_files_over_the_item_size_cap_are_not_staged_whichever_way_they_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--max-item-size`` for a folder source: a file scanned larger fails, and so does one
    that grew past the cap while it was streamed; smaller ones stage on both paths."""
    monkeypatch.setattr(stage_mod, "STREAM_ABOVE", 1_000)  # files above 1,000 B are streamed
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for name, size in (("small.png", 500), ("streamed.png", 3_000), ("big.png", 9_000)):
        (src / name).write_bytes(b"\x89PNG" + bytes(size - 4))
    (src / "grows.png").write_bytes(bytes(3_000))
    entries, _, _ = scan_tree(src)
    (src / "grows.png").write_bytes(bytes(20_000))  # grew after the scan
    (unit,) = make_units(entries)
    stage_unit(str(src), str(dst), unit, with_md5=False, max_bytes=5_000)
    by_rel = {f.rel: f for f in unit.files}
    for rel in ("big.png", "grows.png"):
        assert by_rel[rel] not in unit.staged
        assert "larger than the per-item size cap of 5000 bytes" in str(by_rel[rel].error)
    assert {f.rel for f in unit.staged} == {"small.png", "streamed.png"}
    assert sorted(os.listdir(unit.stage_dir)) == ["small.png", "streamed.png"]


def test_a_held_file_changed_before_the_commit_fails_the_item(tmp_path: Path) -> None:
    """A destination file found holding the source's bytes is not staged again; if it
    changes between that comparison and the commit, the item fails (tried again next run)
    instead of counting a file that no longer holds those bytes; the unchanged one is
    adopted as it is."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for name in ("a.png", "b.png"):
        data = make_png(6, 6, len(name) + ord(name[0]))
        (src / name).write_bytes(data)
        (dst / name).write_bytes(data)
    entries, _, _ = scan_tree(src)
    (unit,) = make_units(entries)
    stage_unit(str(src), str(dst), unit, False)
    assert [f.held is not None for f in unit.staged] == [True, True]
    assert os.listdir(unit.stage_dir) == []  # nothing written for them
    (dst / "a.png").write_bytes(b"replaced by the user meanwhile")
    for f in unit.staged:
        f.approved = True
    commit_units(str(dst), [unit])
    by_rel = {f.rel: f for f in unit.staged}
    assert by_rel["a.png"].error is not None and by_rel["a.png"].final is None
    assert "changed while imgsync compared it" in str(by_rel["a.png"].error)
    assert by_rel["b.png"].error is None and by_rel["b.png"].already_there
    assert by_rel["b.png"].final == "b.png"
    assert (dst / "a.png").read_bytes() == b"replaced by the user meanwhile"
    assert sorted(os.listdir(dst)) == ["a.png", "b.png"]
