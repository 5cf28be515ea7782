"""`imgsync copy` between local folders, through the real CLI, real files and real SQLite."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from helpers import run_cli, run_json, tree_files

from imgsync.fakehosts.images import make_png


def test_copy_then_rerun_copies_nothing(image_tree: Path, tmp_path: Path) -> None:
    """A fresh copy keeps relative paths and bytes; the re-run copies nothing."""
    dst = tmp_path / "dst"
    code, first = run_json("copy", str(image_tree), str(dst))
    assert code == 0
    assert first["copied"] == 12
    assert first["non_images_skipped"] == 1
    expected = {k: v for k, v in tree_files(image_tree).items() if not k.endswith(".txt")}
    assert tree_files(dst) == expected

    code, second = run_json("copy", str(image_tree), str(dst))
    assert code == 0
    assert second["copied"] == 0
    assert second["already_present"] == 12
    assert tree_files(dst) == expected


def test_plain_output_is_one_summary_line(image_tree: Path, tmp_path: Path) -> None:
    """Without --json the run prints one summary line with counts."""
    proc = run_cli("copy", str(image_tree), str(tmp_path / "dst"), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "copied 12" in lines[0] and "0 failed" in lines[0]


def test_changed_file_is_rehashed_and_replaces_its_old_copy(
    image_tree: Path, tmp_path: Path
) -> None:
    """A file edited at the source replaces the version imgsync wrote before."""
    dst = tmp_path / "dst"
    assert run_json("copy", str(image_tree), str(dst))[0] == 0
    target = image_tree / "img01.png"
    new = make_png(40, 40, 999)
    target.write_bytes(new)
    code, summary = run_json("copy", str(image_tree), str(dst))
    assert code == 0
    assert summary["copied"] == 1
    assert (dst / "img01.png").read_bytes() == new
    assert not (dst / "img01 (1).png").exists()


def test_foreign_file_at_destination_is_never_overwritten(image_tree: Path, tmp_path: Path) -> None:
    """A file imgsync did not write keeps its name; the copy gets a numbered name."""
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "img01.png").write_bytes(b"user's own file")
    assert run_json("copy", str(image_tree), str(dst))[0] == 0
    assert (dst / "img01.png").read_bytes() == b"user's own file"
    assert (dst / "img01 (1).png").read_bytes() == (image_tree / "img01.png").read_bytes()


def test_unchanged_files_are_not_rehashed(image_tree: Path, tmp_path: Path) -> None:
    """Files whose size/mtime/inode did not change are trusted from state, not re-read."""
    dst = tmp_path / "dst"
    assert run_json("copy", str(image_tree), str(dst))[0] == 0
    state = Path(os.environ["IMGSYNC_STATE"])
    conn = sqlite3.connect(state)
    # poison the recorded checksum (and say the destination has it): if the file were
    # re-hashed, the poison would be replaced
    conn.execute("UPDATE local_files SET sha256 = 'feed' WHERE rel = 'img01.png'")
    conn.execute(
        "UPDATE locations SET sha256 = 'feed' WHERE remote = ? AND remote_id = 'img01.png'",
        (f"local:{dst.resolve()}",),
    )
    conn.execute("DELETE FROM scan_marks")
    conn.commit()
    assert run_json("copy", str(image_tree), str(dst))[0] == 0
    row = conn.execute("SELECT sha256 FROM local_files WHERE rel = 'img01.png'").fetchone()
    assert row[0] == "feed"
    os.utime(image_tree / "img01.png", ns=(1, 1))  # now it changed: re-hashed
    assert run_json("copy", str(image_tree), str(dst))[0] == 0
    row = conn.execute("SELECT sha256 FROM local_files WHERE rel = 'img01.png'").fetchone()
    assert row[0] != "feed" and len(row[0]) == 64


def test_identical_bytes_keep_both_paths_in_a_folder(tmp_path: Path) -> None:
    """Two source files with the same bytes: a folder destination gets both paths (a
    mirror; a host gets the bytes once), each hashed once."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    data = make_png(10, 10, 1)
    (src / "a" / "one.png").write_bytes(data)
    (src / "two.png").write_bytes(data)
    code, summary = run_json("copy", str(src), str(tmp_path / "dst"))
    assert code == 0
    assert summary["copied"] == 2 and summary["already_present"] == 0
    assert tree_files(tmp_path / "dst") == {"a/one.png": data, "two.png": data}


def test_dry_run_changes_nothing(image_tree: Path, tmp_path: Path) -> None:
    """--dry-run reports what it would copy and writes neither files nor state."""
    dst = tmp_path / "dst"
    code, summary = run_json("copy", str(image_tree), str(dst), "--dry-run")
    assert code == 0
    assert summary["copied"] == 12 and summary["dry_run"] is True
    assert not dst.exists() or tree_files(dst) == {}
    code, summary = run_json("copy", str(image_tree), str(dst))
    assert summary["copied"] == 12


def test_include_and_exclude(image_tree: Path, tmp_path: Path) -> None:
    """--include/--exclude filter by base name (or by path when the glob has a slash)."""
    dst = tmp_path / "dst"
    code, _ = run_json(
        "copy", str(image_tree), str(dst), "--include", "*.png", "--exclude", "sub/*"
    )
    assert code == 0
    names = set(tree_files(dst))
    assert names and all(n.endswith(".png") and not n.startswith("sub/") for n in names)


def test_hostile_names_round_trip(tmp_path: Path) -> None:
    """Names with a newline or bytes that are not UTF-8 are copied and recognised again."""
    src = tmp_path / "src"
    src.mkdir()
    weird = [b"new\nline.png", b"bad-\xff\xfe.png", "ünï cödé.png".encode()]
    for i, name in enumerate(weird):
        with open(os.path.join(os.fsencode(src), name), "wb") as fh:
            fh.write(make_png(8, 8, 50 + i))
    dst = tmp_path / "dst"
    code, summary = run_json("copy", str(src), str(dst))
    assert code == 0, summary
    assert summary["copied"] == 3
    assert sorted(os.listdir(os.fsencode(dst))) == sorted(weird)
    code, summary = run_json("copy", str(src), str(dst))
    assert summary["copied"] == 0 and summary["already_present"] == 3


def test_symlink_loop_and_broken_link_are_skipped_or_reported(
    image_tree: Path, tmp_path: Path
) -> None:
    """By default a folder loop and a broken link are links, skipped (exit 0); with
    --copy-links the loop is still not entered and the broken link is a failure."""
    (image_tree / "sub" / "loop").symlink_to(image_tree)
    (image_tree / "gone.png").symlink_to(image_tree / "nowhere.png")
    dst = tmp_path / "dst"
    code, summary = run_json("copy", str(image_tree), str(dst))
    assert code == 0 and summary["copied"] == 12 and summary["symlinks_skipped"] == 2
    code, summary = run_json("copy", str(image_tree), str(tmp_path / "d2"), "--copy-links")
    assert code == 1
    assert summary["copied"] == 12 and summary["symlinks_skipped"] == 1  # the loop
    errors = {f["item"]: f["error"] for f in summary["failures"]}
    assert errors == {"gone.png": "broken symlink"}


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without permission")
def test_unreadable_file_fails_alone(image_tree: Path, tmp_path: Path) -> None:
    """A file without read permission is one failure; the rest is copied."""
    (image_tree / "img01.png").chmod(0)
    code, summary = run_json("copy", str(image_tree), str(tmp_path / "dst"))
    assert code == 1
    assert summary["copied"] == 11 and summary["failed"] == 1


def test_missing_source_is_one_line_and_exit_66(tmp_path: Path) -> None:
    """A missing source folder gives a one-line error and exit code 66, no traceback."""
    proc = run_cli("copy", str(tmp_path / "nope"), str(tmp_path / "dst"))
    assert proc.returncode == 66
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_corrupt_state_database_exit_75(image_tree: Path, tmp_path: Path) -> None:
    """A state file that is not a database gives a clear message and exit 75."""
    state = Path(os.environ["IMGSYNC_STATE"])
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_bytes(b"this is not sqlite" * 100)
    proc = run_cli("copy", str(image_tree), str(tmp_path / "dst"))
    assert proc.returncode == 75
    assert "corrupt" in proc.stderr and "Traceback" not in proc.stderr
    assert state.read_bytes().startswith(b"this is not sqlite")  # nothing overwritten


def test_status_reports_what_state_knows(image_tree: Path, tmp_path: Path) -> None:
    """`imgsync status` shows the objects and the destination's item count."""
    dst = tmp_path / "dst"
    run_json("copy", str(image_tree), str(dst))
    proc = run_cli("status")
    assert proc.returncode == 0
    assert "12 distinct images" in proc.stdout
    assert f"  {dst.resolve()}: 12 items" in proc.stdout


def test_nested_folders_refused(image_tree: Path) -> None:
    """Copying a folder into itself is a usage error (exit 2)."""
    proc = run_cli("copy", str(image_tree), str(image_tree / "inside"))
    assert proc.returncode == 2
    assert "contain each other" in proc.stderr


def test_check_reports_what_is_missing_and_changes_nothing(
    image_tree: Path, tmp_path: Path
) -> None:
    """`check` lists what the destination lacks (exit 1), writes nothing, and exits 0 once
    the destination is complete."""
    dst = tmp_path / "dst"
    assert run_json("copy", str(image_tree), str(dst))[0] == 0
    new = make_png(12, 12, 777)
    (image_tree / "late.png").write_bytes(new)
    proc = run_cli("check", str(image_tree), str(dst))
    assert proc.returncode == 1
    assert "missing: late.png" in proc.stdout
    assert "1 missing at the destination" in proc.stdout
    assert not (dst / "late.png").exists()
    assert run_json("copy", str(image_tree), str(dst))[0] == 0
    assert run_cli("check", str(image_tree), str(dst)).returncode == 0


def test_file_deleted_by_hand_at_the_destination_is_copied_again(
    image_tree: Path, tmp_path: Path
) -> None:
    """State says the bytes are there, but the user deleted the file: the next copy
    notices (its folder changed) and puts it back."""
    dst = tmp_path / "dst"
    assert run_json("copy", str(image_tree), str(dst))[0] == 0
    assert run_json("copy", str(image_tree), str(dst))[1]["copied"] == 0  # the no-op mark
    (dst / "img01.png").unlink()
    (dst / "sub" / "deep" / "img00.png").unlink()
    code, summary = run_json("copy", str(image_tree), str(dst))
    assert code == 0 and summary["copied"] == 2
    assert (dst / "img01.png").read_bytes() == (image_tree / "img01.png").read_bytes()
    assert (dst / "sub" / "deep" / "img00.png").exists()


def test_an_existing_identical_copy_is_adopted_not_rewritten(
    image_tree: Path, tmp_path: Path
) -> None:
    """A destination that already holds the same files (made by another tool) is adopted:
    nothing is counted as copied, nothing is renamed, and the next run is a no-op."""
    import shutil

    dst = tmp_path / "dst"
    shutil.copytree(image_tree, dst)
    (dst / "notes.txt").unlink()
    before = {p: p.stat().st_ino for p in dst.rglob("*.png")}
    code, summary = run_json("copy", str(image_tree), str(dst))
    assert code == 0
    assert summary["copied"] == 0 and summary["already_present"] == 12
    assert {p: p.stat().st_ino for p in dst.rglob("*.png")} == before
    assert not list(dst.rglob("* (1).*"))
    assert run_json("copy", str(image_tree), str(dst))[1]["already_present"] == 12


def _bytes_written() -> int:
    """Bytes this process has handed to write() so far (``wchar`` of /proc/self/io)."""
    with open("/proc/self/io") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith("wchar:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="Linux /proc/self/io")
async def test_a_folder_already_holding_the_files_is_adopted_without_writing_them(
    tmp_path: Path,
) -> None:
    """A destination another tool filled (unrecorded, fresh state): files of the same
    size are compared with the source and adopted as they are, with nothing written for
    them (the copy used to stage every file, flush, compare and delete it: 24-58 s for
    20,000 files); a file of the same name but another size, or of the same size but
    other bytes, is written beside (`` (1)``) and the held one is left alone."""
    import shutil

    from imgsync.config import load_config
    from imgsync.pipeline.run import JobSpec, run_job
    from imgsync.pipeline.summary import CopyOptions

    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(40):
        folder = src / ("" if i % 2 else "sub")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"p{i:02d}.png").write_bytes(os.urandom(200_000))
    shutil.copytree(src, dst)
    (dst / "p01.png").write_bytes(b"another, shorter file")
    other = bytearray((src / "p03.png").read_bytes())
    other[-1] ^= 0xFF  # same size, other bytes
    (dst / "p03.png").write_bytes(bytes(other))
    inodes = {p: p.stat().st_ino for p in dst.rglob("*.png")}
    before = _bytes_written()
    summary = await run_job(load_config(None), JobSpec("copy", str(src), str(dst), CopyOptions()))
    written = _bytes_written() - before
    assert summary.exit_code == 0 and summary.copied == 2, summary
    assert summary.present == 38
    assert written < 3 * 400_000 + 1_000_000, written  # the two copies, and state
    assert (dst / "p01.png").read_bytes() == b"another, shorter file"
    assert (dst / "p01 (1).png").read_bytes() == (src / "p01.png").read_bytes()
    assert (dst / "p03.png").read_bytes() == bytes(other)
    assert (dst / "p03 (1).png").read_bytes() == (src / "p03.png").read_bytes()
    assert {p: p.stat().st_ino for p in inodes} == inodes  # nothing held was replaced
    again = await run_job(load_config(None), JobSpec("copy", str(src), str(dst), CopyOptions()))
    assert again.copied == 0 and again.present == 40
