"""Scanning a folder tree.

Symbolic links are not followed (as rclone does without ``-L``): each one that would
otherwise be considered (a folder, or a file passing the name filters) is reported as a
skipped link, so nothing outside the folder is ever copied through one. With
``follow_links`` a link whose target stays inside the folder is followed (a folder loop is
reported once and not entered); a link leading outside is still skipped. Names that are
not valid UTF-8 are kept (as surrogate escapes; see
:func:`~imgsync.localfs.paths.path_key`), and imgsync's own temp files are skipped.
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
    """A path the scan could not take: an error (``skipped=False``: the run counts it as
    failed) or a symbolic link left alone on purpose (``skipped=True``: a warning)."""

    rel: str
    message: str
    skipped: bool = False


LINK_SKIPPED = "not followed (--copy-links follows links that stay inside the folder)"
LINK_OUTSIDE = "not followed: it leads outside the folder"
LINK_LOOP = "not followed: a folder loop"


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


def _inside(real_root: str, path: str) -> bool:
    target = os.path.realpath(path)
    return target == real_root or target.startswith(real_root.rstrip(os.sep) + os.sep)


def scan_tree(
    root: Path,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    images_only: bool = True,
    *,
    follow_links: bool = False,
) -> tuple[list[ScanEntry], list[ScanProblem], int]:
    """Walk ``root``: (files, problems, files skipped as non-images).

    Symbolic links are skipped (listed in problems with ``skipped=True``) unless
    ``follow_links``, which follows those whose target is inside ``root``.
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
    real_root = os.path.realpath(root)
    # this loop runs once per file on every re-run: local names, no helper calls
    append = entries.append
    make = ScanEntry._make
    exts = IMAGE_EXTENSIONS
    # each folder carries the identities of the folders above it: a followed link back
    # to one of them is a loop (a link to a folder seen elsewhere is not)
    stack: list[tuple[str, str, frozenset[tuple[int, int]]]] = [
        (str(root), "", frozenset({(top.st_dev, top.st_ino)}))
    ]
    while stack:
        folder, prefix, above = stack.pop()
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
                    link = de.is_symlink()  # from the directory entry: no system call
                    if link and not follow_links:
                        if not de.is_dir() and not _wanted(
                            rel, name, images_only, include, exclude, filtered
                        ):
                            continue
                        problems.append(ScanProblem(rel, LINK_SKIPPED, skipped=True))
                        continue
                    if de.is_dir():  # a followed link to a folder too
                        if link and not _inside(real_root, de.path):
                            problems.append(ScanProblem(rel, LINK_OUTSIDE, skipped=True))
                            continue
                        st = de.stat()
                        ident = (st.st_dev, st.st_ino)
                        if ident in above:
                            problems.append(ScanProblem(rel, LINK_LOOP, skipped=True))
                            continue
                        stack.append((de.path, rel + "/", above | {ident}))
                        continue
                    if images_only:
                        dot = name.rfind(".")
                        if dot <= 0 or name[dot:].lower() not in exts:
                            skipped += 1
                            continue
                    if filtered and not matches(rel, include, exclude):
                        continue
                    if link and not _inside(real_root, de.path):
                        problems.append(ScanProblem(rel, LINK_OUTSIDE, skipped=True))
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


def _wanted(
    rel: str,
    name: str,
    images_only: bool,
    include: list[str],
    exclude: list[str],
    filtered: bool,
) -> bool:
    """Whether a file link would be taken if it were a file (only those get a warning:
    a link named ``notes.txt`` is as uninteresting as the file would be)."""
    if images_only:
        dot = name.rfind(".")
        if dot <= 0 or name[dot:].lower() not in IMAGE_EXTENSIONS:
            return False
    return not filtered or matches(rel, include, exclude)
