"""`imgsync check` on a folder destination: every destination file looked at (folder by
folder, two threads on a large one), the source side taken from the saved scan mark when
that look finds nothing. Real files, real SQLite, the real engine in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgsync.config import load_config
from imgsync.localfs import paths
from imgsync.localfs.paths import key_path, missing_or_changed, path_key
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions, Summary


def _tree(root: Path, n: int = 24) -> None:
    for i in range(n):
        rel = f"{('a', 'b/c', '')[i % 3]}/p{i:02d}.png".lstrip("/")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(os.urandom(1_000 + i))


async def _run(verb: str, src: Path, dst: Path) -> Summary:
    """``copy``, or ``check`` as the command line runs it (changing nothing)."""
    opts = CopyOptions(verb=verb, dry_run=verb == "check")
    return await run_job(load_config(None), JobSpec(verb, str(src), str(dst), opts))


async def test_check_after_a_clean_copy_and_after_each_kind_of_change(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    assert (await _run("copy", src, dst)).copied == 24
    assert (await _run("copy", src, dst)).present == 24  # saves the scan mark
    clean = await _run("check", src, dst)
    assert (clean.copied, clean.present, clean.altered, clean.exit_code) == (0, 24, [], 0)

    # the mark still matches the source: each destination change is found by the look
    (dst / "a" / "p00.png").unlink()
    gone = await _run("check", src, dst)
    assert gone.copied == 1 and gone.present == 23
    assert gone.would_copy == ["a/p00.png"]
    assert (await _run("copy", src, dst)).copied == 1

    target = dst / "b" / "c" / "p01.png"
    target.write_bytes(os.urandom(5))  # another size
    resized = await _run("check", src, dst)
    assert resized.altered == ["b/c/p01.png"] and resized.copied == 1

    same_size = dst / "p02.png"
    stamp = same_size.stat()
    same_size.write_bytes(os.urandom(stamp.st_size))  # same size, other bytes, mtime put back
    os.utime(same_size, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    rewritten = await _run("check", src, dst)
    assert "p02.png" in rewritten.altered

    # a file added at the source: the mark does not match, the files are compared
    assert (await _run("copy", src, dst)).failed == 0
    (src / "a" / "new.png").write_bytes(os.urandom(777))
    added = await _run("check", src, dst)
    assert added.would_copy == ["a/new.png"] and added.copied == 1


def _reference(
    root: Path, recorded: dict[str, tuple[int | None, tuple[int, int, int] | None, str]]
) -> tuple[set[str], set[str], set[tuple[str, tuple[int, int, int]]]]:
    """The answer one whole-path ``lstat`` per key gives."""
    import stat

    gone, resized, moved = set(), set(), set()
    for k, (size, st_then, _sha) in recorded.items():
        try:
            st = os.lstat(root / key_path(k))
        except OSError:
            gone.add(k)
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        if size is not None and st.st_size != size:
            resized.add(k)
        elif st_then is not None and (st.st_mtime_ns, st.st_ctime_ns, st.st_ino) != st_then:
            moved.add((k, (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)))
    return gone, resized, moved


@pytest.mark.parametrize("threaded", [True, False])
def test_the_folder_by_folder_look_answers_as_a_look_per_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threaded: bool
) -> None:
    """Gone files, a folder gone, a folder that is now a file, a link to a folder, a
    file that is now a link or a folder, other sizes, moved stamps, a name that is not
    UTF-8: the same answers as one ``lstat`` of each whole path, with one thread or two."""
    monkeypatch.setattr(paths, "_THREADED_LOOK", 1 if threaded else 10**9)
    root = tmp_path / "dst"
    recorded: dict[str, tuple[int | None, tuple[int, int, int] | None, str]] = {}
    names = [f"{d}/f{i}.png" for d in ("", "x", "x/y", "gone", "nowfile", "real") for i in range(5)]
    names += ["bad-\udcff.png", "x/bad-\udcfe.png"]
    for rel in names:
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"12345")
        st = path.stat()
        recorded[path_key(rel.lstrip("/"))] = (5, (st.st_mtime_ns, st.st_ctime_ns, st.st_ino), "s")
    recorded["never-there.png"] = (5, None, "s")
    recorded["x/unknown-size.png"] = (None, None, "s")
    (root / "x" / "unknown-size.png").write_bytes(b"abc")
    for i in range(5):
        (root / "gone" / f"f{i}.png").unlink()
    (root / "gone").rmdir()
    for i in range(5):
        (root / "nowfile" / f"f{i}.png").unlink()
    (root / "nowfile").rmdir()
    (root / "nowfile").write_bytes(b"a file where a folder was")
    (root / "real").rename(root / "elsewhere")
    (root / "real").symlink_to(root / "elsewhere")  # a link to a folder: followed, as before
    (root / "f0.png").unlink()
    (root / "f1.png").write_bytes(b"123456")  # another size
    os.chmod(root / "f2.png", 0o600)  # the ctime moves
    (root / "x" / "f3.png").unlink()
    (root / "x" / "f3.png").symlink_to(root / "x" / "f4.png")  # a link: not a file
    (root / "x" / "y" / "f4.png").unlink()
    (root / "x" / "y" / "f4.png").mkdir()  # a folder now
    gone, resized, moved = missing_or_changed(root, recorded)
    assert len(gone) == len(set(gone)) and len(resized) == len(set(resized))
    assert (set(gone), set(resized), set(moved)) == _reference(root, recorded)
    assert "f0.png" in gone and "gone/f0.png" in gone and "nowfile/f0.png" in gone
    assert "f1.png" in resized and "never-there.png" in gone
    assert [k for k, _ in moved] == ["f2.png"]
