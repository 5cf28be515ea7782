"""The scan reads folders in two threads; what it returns is the one-thread walk's list.

The list's order feeds the no-op re-run's fingerprint, so the same tree must give the
same list however the threads happened to finish.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgsync.localfs import scan as scan_mod
from imgsync.localfs import scan_tree


def _tree(root: Path) -> None:
    for a in range(6):
        for b in range(3):
            folder = root / f"a{a}" / f"b{b}"
            folder.mkdir(parents=True)
            for i in range(4):
                (folder / f"img{i}.png").write_bytes(b"x" * (a * 100 + b * 10 + i + 1))
            (folder / "notes.txt").write_text("not an image")
        (root / f"a{a}" / "top.jpg").write_bytes(b"y" * (a + 1))
    (root / "loose.png").write_bytes(b"z")
    os.symlink(root / "a1", root / "link-to-a1")  # skipped with a warning
    os.symlink(root / "missing.png", root / "a2" / "broken.png")
    os.symlink(root / "a3", root / "a3" / "b0" / "loop")  # followed with -L: a loop


def test_threads_and_one_thread_give_the_same_list_and_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "t"
    _tree(root)
    for follow in (False, True):
        monkeypatch.setattr(scan_mod, "SCAN_THREADS", 1)
        serial = scan_tree(root, follow_links=follow)
        monkeypatch.setattr(scan_mod, "SCAN_THREADS", 2)
        threaded = [scan_tree(root, follow_links=follow) for _ in range(5)]
        assert all(t == serial for t in threaded)
    entries, problems, skipped = serial  # with links followed
    assert len(entries) == 6 * 3 * 4 + 6 + 1  # a1 once: not again through its link
    assert skipped == 18
    assert {p.rel for p in problems} == {"a2/broken.png", "a3/b0/loop", "link-to-a1"}


def test_the_order_is_the_one_thread_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each folder's own files, then its subfolders, last listed first (the fingerprint of
    a tree scanned before this change stays the same)."""
    root = tmp_path / "t"
    (root / "x" / "y").mkdir(parents=True)
    (root / "x" / "y" / "deep.png").write_bytes(b"1")
    (root / "x" / "mid.png").write_bytes(b"2")
    (root / "top.png").write_bytes(b"3")
    (root / "w").mkdir()
    (root / "w" / "side.png").write_bytes(b"4")
    monkeypatch.setattr(scan_mod, "SCAN_THREADS", 2)
    rels = [e.rel for e in scan_tree(root)[0]]
    listed = [d.name for d in os.scandir(root) if d.is_dir()]
    expected = ["top.png"]
    for top in reversed(listed):
        expected += ["x/mid.png", "x/y/deep.png"] if top == "x" else ["w/side.png"]
    assert rels == expected
