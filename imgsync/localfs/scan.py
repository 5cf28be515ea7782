"""Scanning a folder tree.

Follows symlinked directories once (a loop is reported, not followed again), keeps names
that are not valid UTF-8 (as surrogate escapes; see :func:`~imgsync.localfs.paths.path_key`),
and skips imgsync's own temp files.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import NamedTuple

from imgsync.errors import LocalIOError
from imgsync.localfs.paths import TMP_PREFIX
from imgsync.models import IMAGE_EXTENSIONS


class ScanEntry(NamedTuple):
    """One scanned file (a tuple: tens of thousands are built per scan)."""

    rel: str
    size: int
    mtime_ns: int
    inode: int


@dataclass(frozen=True, slots=True)
class ScanProblem:
    rel: str
    message: str


def matches(rel: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """Glob filter: a pattern without ``/`` matches the base name, else the whole path."""
    import fnmatch

    base = rel.rsplit("/", 1)[-1]

    def hit(pattern: str) -> bool:
        return fnmatch.fnmatchcase(rel if "/" in pattern else base, pattern)

    inc = list(include)
    if inc and not any(hit(p) for p in inc):
        return False
    return not any(hit(p) for p in exclude)


def scan_tree(
    root: Path, include: Iterable[str] = (), exclude: Iterable[str] = (), images_only: bool = True
) -> tuple[list[ScanEntry], list[ScanProblem], int]:
    """Walk ``root``: (files, problems, files skipped as non-images).

    Raises ``LocalIOError`` when ``root`` itself is missing or unreadable.
    """
    include, exclude = list(include), list(exclude)
    filtered = bool(include or exclude)
    entries: list[ScanEntry] = []
    problems: list[ScanProblem] = []
    skipped = 0
    try:
        top = os.stat(root)
    except OSError as exc:
        raise LocalIOError(f"cannot read folder {root}: {exc.strerror}", path=str(root)) from None
    if not stat.S_ISDIR(top.st_mode):
        raise LocalIOError(f"{root} is not a folder", path=str(root))
    seen_dirs = {(top.st_dev, top.st_ino)}
    # this loop runs once per file on every re-run: local names, no helper calls
    append = entries.append
    make = ScanEntry._make
    exts = IMAGE_EXTENSIONS
    stack: list[tuple[str, str]] = [(str(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            it = os.scandir(folder)
        except OSError as exc:
            problems.append(ScanProblem(prefix.rstrip("/") or ".", f"cannot read: {exc.strerror}"))
            continue
        with it:
            for de in it:
                name = de.name
                if name[0] == "." and name.startswith(TMP_PREFIX):
                    continue
                rel = prefix + name
                try:
                    if de.is_dir():  # follows symlinks
                        st = de.stat()
                        ident = (st.st_dev, st.st_ino)
                        if ident in seen_dirs:
                            problems.append(ScanProblem(rel, "symlink loop; not followed again"))
                            continue
                        seen_dirs.add(ident)
                        stack.append((de.path, rel + "/"))
                        continue
                    if images_only:
                        dot = name.rfind(".")
                        if dot <= 0 or name[dot:].lower() not in exts:
                            skipped += 1
                            continue
                    if filtered and not matches(rel, include, exclude):
                        continue
                    st = de.stat()
                except FileNotFoundError:
                    if de.is_symlink():
                        problems.append(ScanProblem(rel, "broken symlink"))
                    continue  # else it vanished during the scan
                except OSError as exc:
                    problems.append(ScanProblem(rel, f"cannot stat: {exc.strerror}"))
                    continue
                if S_ISREG(st.st_mode):
                    append(make((rel, st.st_size, st.st_mtime_ns, st.st_ino)))
    return entries, problems, skipped
