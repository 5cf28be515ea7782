"""Scanning a folder tree.

Symbolic links are not followed (as rclone does without ``-L``): each one that would
otherwise be considered (a folder, or a file passing the name filters) is reported as a
skipped link, so nothing outside the folder is ever copied through one. With
``follow_links`` a link whose target stays inside the folder is followed; a link leading
outside is still skipped. Each real folder is read once, whatever number of links lead to
it: folders are known by (device, inode), the real tree is read first, then the linked
folders not read yet (in path order, so the same tree always gives the same list); a
link to a folder already read (a second name, or a loop) is reported and not entered. Names that are
not valid UTF-8 are kept (as surrogate escapes; see
:func:`~imgsync.localfs.paths.path_key`), and imgsync's own temp files are skipped.
"""

from __future__ import annotations

import functools
import gc
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from stat import S_ISREG
from typing import Any, NamedTuple

from imgsync.errors import LocalIOError
from imgsync.imagetypes import IMAGE_EXTENSIONS
from imgsync.localfs.paths import LINK_OUTSIDE, LINK_SKIPPED, TMP_PREFIX
from imgsync.localfs.paths import inside as _inside


class ScanEntry(NamedTuple):
    """One scanned file (a tuple: tens of thousands are built per scan)."""

    rel: str
    size: int
    mtime_ns: int
    inode: int
    # moved by any change to the file, content or not (chmod, rename, a link), and never
    # set back: an edit whose size and mtime were put back (``touch -r``) still moves it
    ctime_ns: int = 0


# A scanned file as the walk makes it: (rel, size, mtime_ns, inode, ctime_ns), a plain tuple. A
# no-op re-run only digests these; making each a ScanEntry (a tuple subclass, allocated
# the slow way) cost a tenth of its scan, so only the files with work to do become one.
ScanRow = tuple[str, int, int, int, int]


def entries_of(rows: Iterable[ScanRow]) -> list[ScanEntry]:
    """``rows`` as ``ScanEntry`` values (one C-level pass)."""
    return list(map(tuple.__new__, repeat(ScanEntry), rows))


@dataclass(frozen=True, slots=True)
class ScanProblem:
    """A path the scan could not take: an error (``skipped=False``: the run counts it as
    failed) or a symbolic link left alone on purpose (``skipped=True``: a warning)."""

    rel: str
    message: str
    skipped: bool = False


LINK_LOOP = "not followed: a folder loop"
LINK_TWICE = "not followed: that folder is copied once, under another path"


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
    root: Path,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    images_only: bool = True,
    *,
    follow_links: bool = False,
    folders: set[str] | None = None,
) -> tuple[list[ScanEntry], list[ScanProblem], int]:
    """:func:`scan_rows` with each file as a :class:`ScanEntry`."""
    rows, problems, skipped = scan_rows(
        root, include, exclude, images_only, follow_links=follow_links, folders=folders
    )
    return entries_of(rows), problems, skipped


def scan_rows(
    root: Path,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    images_only: bool = True,
    *,
    follow_links: bool = False,
    folders: set[str] | None = None,
    counts: dict[str, int] | None = None,
) -> tuple[list[ScanRow], list[ScanProblem], int]:
    """Walk ``root``: (files as ``(rel, size, mtime_ns, inode, ctime_ns)``, problems, files skipped
    as non-images).

    Symbolic links are skipped (listed in problems with ``skipped=True``) unless
    ``follow_links``, which follows those whose target is inside ``root``. ``folders``,
    when given, receives every relative folder holding at least one of the files (``""``
    for ``root`` itself), known per folder read instead of per file. ``counts``, when
    given, receives ``"filtered"``: the image files ``include``/``exclude`` left out.
    Raises ``LocalIOError`` when ``root`` itself is missing or unreadable.
    """
    include, exclude = list(include), list(exclude)
    filtered = bool(include or exclude)
    try:
        top = os.stat(root)
    except OSError as exc:
        raise LocalIOError(f"cannot read folder {root}: {exc.strerror}", path=str(root)) from None
    if not stat.S_ISDIR(top.st_mode):
        raise LocalIOError(f"{root} is not a folder", path=str(root))
    real_root = os.path.realpath(root)
    opts = _Walk(real_root, images_only, include, exclude, filtered, follow_links)
    first = (str(root), "", frozenset({(top.st_dev, top.st_ino)}))
    workers = min(SCAN_THREADS, os.cpu_count() or 1)
    walk = _walk_serially if workers < 2 else functools.partial(_walk_in_threads, workers=workers)
    # Three objects per file and none of them in a cycle: the cyclic garbage collector
    # would only walk the growing heap again and again (about an eighth of a no-op
    # re-run's own work on 20,000 files), so it waits until the scan is over.
    collecting = gc.isenabled()
    gc.disable()
    try:
        scanned = walk(first, opts)
        if follow_links:
            _walk_linked(scanned, walk, opts, (top.st_dev, top.st_ino))
    finally:
        if collecting:
            gc.enable()
    # assembled in the order of a one-thread walk (a stack of folders, the last found
    # first): the same tree always gives the same list, so its fingerprint holds
    entries: list[ScanRow] = []
    problems: list[ScanProblem] = []
    skipped = filtered_out = 0
    stack = [""]
    while stack:
        done = scanned[stack.pop()]
        if done.entries:
            entries += done.entries
            if folders is not None:
                folders.add(done.prefix[:-1])
        problems += done.problems
        skipped += done.skipped
        filtered_out += done.filtered
        stack.extend(sub[1] for sub in done.folders)
    if counts is not None:
        counts["filtered"] = filtered_out
    return entries, problems, skipped


SCAN_THREADS = 2  # folders read at once: most of a file's cost is its stat, done unlocked

_Folder = tuple[str, str, frozenset[tuple[int, int]]]  # path, relative prefix, ids above
_Ident = tuple[int, int]  # (st_dev, st_ino) of a folder


# (plain classes, not dataclasses: each dataclass is generated code compiled at import,
# which a no-op re-run pays at start-up)
class _Walk:
    """What every folder read of one scan shares."""

    __slots__ = ("exclude", "filtered", "follow_links", "images_only", "include", "real_root")

    def __init__(
        self,
        real_root: str,
        images_only: bool,
        include: list[str],
        exclude: list[str],
        filtered: bool,
        follow_links: bool,
    ) -> None:
        self.real_root = real_root
        self.images_only = images_only
        self.include = include
        self.exclude = exclude
        self.filtered = filtered
        self.follow_links = follow_links


class _Scanned:
    """One folder's own files, problems and subfolders (in the order the folder lists them)."""

    __slots__ = ("entries", "filtered", "folders", "linked", "prefix", "problems", "skipped")

    def __init__(
        self,
        prefix: str,
        entries: list[ScanRow],
        problems: list[ScanProblem],
        skipped: int,
        folders: list[_Folder],
    ) -> None:
        self.prefix = prefix
        self.entries = entries
        self.problems = problems
        self.skipped = skipped
        self.filtered = 0  # image files --include/--exclude left out
        self.folders = folders
        # folder links to follow once the real tree is read (``follow_links``): folder, ident
        self.linked: list[tuple[_Folder, _Ident]] = []


def _walk_linked(scanned: dict[str, _Scanned], walk: Any, opts: _Walk, top: _Ident) -> None:
    """Read the folders reached only through links (``follow_links``), each real folder
    once: a link to a folder read already (under its own path, or through an earlier
    link) is reported, not entered. Links are taken in path order, round by round, so
    the same tree always gives the same list."""
    seen = {top}  # every folder read: each one's ``above`` holds its own ident
    for done in scanned.values():
        for sub in done.folders:
            seen |= sub[2]
    pending = sorted(
        (link for done in scanned.values() for link in done.linked), key=lambda x: x[0][1]
    )
    while pending:
        found: list[tuple[_Folder, _Ident]] = []
        for folder, ident in pending:
            rel = folder[1].rstrip("/")
            parent = scanned[rel.rpartition("/")[0] + "/" if "/" in rel else ""]
            if ident in seen:
                parent.problems.append(ScanProblem(rel, LINK_TWICE, skipped=True))
                continue
            seen.add(ident)
            more: dict[str, _Scanned] = walk(folder, opts)
            for done in more.values():
                for sub in done.folders:
                    seen |= sub[2]
                found += done.linked
            scanned.update(more)
            parent.folders.append(folder)
        pending = sorted(found, key=lambda x: x[0][1])


def _walk_serially(first: _Folder, opts: _Walk) -> dict[str, _Scanned]:
    out: dict[str, _Scanned] = {}
    todo = [first]
    while todo:
        folder = todo.pop()
        done = _scan_folder(folder, opts)
        out[folder[1]] = done
        todo.extend(done.folders)
    return out


def _walk_in_threads(first: _Folder, opts: _Walk, workers: int) -> dict[str, _Scanned]:
    """Folders read by ``workers`` threads (plain threads and queues: a no-op re-run does
    not otherwise import ``concurrent.futures`` and the logging it pulls in)."""
    import threading
    from queue import SimpleQueue

    todo: SimpleQueue[_Folder | None] = SimpleQueue()
    results: SimpleQueue[_Scanned | BaseException] = SimpleQueue()

    def reader() -> None:
        while (folder := todo.get()) is not None:
            try:
                results.put(_scan_folder(folder, opts))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
                results.put(exc)

    threads = [
        threading.Thread(target=reader, name=f"imgsync-scan-{i}", daemon=True)
        for i in range(workers)
    ]
    for t in threads:
        t.start()
    out: dict[str, _Scanned] = {}
    todo.put(first)
    waiting = 1
    try:
        while waiting:
            done = results.get()
            waiting -= 1
            if isinstance(done, BaseException):
                raise done
            out[done.prefix] = done
            for sub in done.folders:
                todo.put(sub)
                waiting += 1
    finally:
        for _ in threads:
            todo.put(None)
        for t in threads:
            t.join()
    return out


def _scan_folder(where: _Folder, opts: _Walk) -> _Scanned:
    """Read one folder: its files (status read relative to the open folder, no walk down
    the whole path per file), problems, non-images skipped, and subfolders to read."""
    folder, prefix, above = where
    entries: list[ScanRow] = []
    problems: list[ScanProblem] = []
    folders: list[_Folder] = []
    done = _Scanned(prefix, entries, problems, 0, folders)
    skipped = 0
    images_only, filtered, follow_links = opts.images_only, opts.filtered, opts.follow_links
    include, exclude, real_root = opts.include, opts.exclude, opts.real_root
    # this loop runs once per file on every re-run: local names, no helper calls
    append = entries.append
    exts = IMAGE_EXTENSIONS
    lstat = os.stat
    ends = _IMAGE_ENDINGS
    fd = -1
    try:
        if _RELATIVE:
            fd = os.open(folder, _DIR_FLAGS)
            it = os.scandir(fd)
        else:
            it = os.scandir(folder)
    except OSError as exc:
        if fd >= 0:
            os.close(fd)
        problems.append(ScanProblem(prefix.rstrip("/") or ".", f"cannot read: {exc.strerror}"))
        return done
    try:
        with it:
            for de in it:
                name = de.name
                if name[0] == "." and name.startswith(TMP_PREFIX):
                    continue
                # the common case first: a name with a lower-case image extension (no
                # filters), whose one status read (links not followed) finds a plain file
                if not filtered and (
                    not images_only or (name.endswith(ends) and (len(name) > 5 or name not in exts))
                ):
                    try:
                        st = (
                            lstat(name, dir_fd=fd, follow_symlinks=False)
                            if fd >= 0
                            else de.stat(follow_symlinks=False)
                        )
                        if S_ISREG(st.st_mode):
                            append(
                                (
                                    prefix + name,
                                    st.st_size,
                                    st.st_mtime_ns,
                                    st.st_ino,
                                    st.st_ctime_ns,
                                )
                            )
                            continue
                    except OSError:
                        pass  # told below as for any other entry (vanished, a link...)
                    # a folder, a link or another kind of file by that name: as below
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
                        path = os.path.join(folder, name)
                        if link and not _inside(real_root, path):
                            problems.append(ScanProblem(rel, LINK_OUTSIDE, skipped=True))
                            continue
                        st = de.stat()
                        ident = (st.st_dev, st.st_ino)
                        if ident in above:
                            problems.append(ScanProblem(rel, LINK_LOOP, skipped=True))
                            continue
                        if link:  # read after the real tree, if it is not read by then
                            done.linked.append(((path, rel + "/", above | {ident}), ident))
                            continue
                        folders.append((path, rel + "/", above | {ident}))
                        continue
                    if images_only:
                        dot = name.rfind(".")
                        if dot <= 0 or name[dot:].lower() not in exts:
                            skipped += 1
                            continue
                    if filtered and not matches(rel, include, exclude):
                        done.filtered += 1
                        continue
                    if link:
                        if not _inside(real_root, os.path.join(folder, name)):
                            problems.append(ScanProblem(rel, LINK_OUTSIDE, skipped=True))
                            continue
                        st = de.stat()
                    elif fd >= 0:
                        st = lstat(name, dir_fd=fd, follow_symlinks=False)
                    else:
                        st = de.stat(follow_symlinks=False)
                except FileNotFoundError:
                    if de.is_symlink():
                        problems.append(ScanProblem(rel, "broken symlink"))
                    continue  # else it vanished during the scan
                except OSError as exc:
                    problems.append(ScanProblem(rel, f"cannot stat: {exc.strerror}"))
                    continue
                if S_ISREG(st.st_mode):
                    append((rel, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
    finally:
        if fd >= 0:
            os.close(fd)
    done.skipped = skipped
    return done


_IMAGE_ENDINGS = tuple(sorted(IMAGE_EXTENSIONS))  # for str.endswith: no slice, no lower()
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_RELATIVE = os.stat in os.supports_dir_fd and os.scandir in os.supports_fd


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
