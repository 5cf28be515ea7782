"""A local folder tree as a provider.

* Scanning follows symlinked directories once (a loop is reported, not followed again),
  keeps names that are not valid UTF-8 (as surrogate escapes; see :func:`path_key`), and
  skips imgsync's own temp files.
* A local destination keeps relative paths. Every write goes to a hidden temp file in the
  target folder, is flushed to disk, then renamed: a crash never leaves a half-written
  image under its real name. Batches share one ``syncfs`` instead of one fsync per file.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import os
import stat
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Any, ClassVar, NamedTuple

from imgsync.errors import LocalIOError, NotFound, Rejected
from imgsync.hashing import CHUNK
from imgsync.models import IMAGE_EXTENSIONS, ItemMeta, Page, RemoteItem, UploadSource
from imgsync.providers.base import Features, Provider

TMP_PREFIX = ".imgsync-tmp-"


def path_key(rel: str) -> str:
    """A text key for a relative path that SQLite and JSON can hold, reversibly.

    Names that are valid UTF-8 are kept as they are; others are stored as ``b64:`` +
    the base64 of their bytes.
    """
    if rel.isascii():
        return rel
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "b64:" + base64.b64encode(os.fsencode(rel)).decode("ascii")
    return rel


def key_path(key: str) -> str:
    """The inverse of :func:`path_key`."""
    if key.startswith("b64:"):
        return os.fsdecode(base64.b64decode(key[4:]))
    return key


def display(rel: str) -> str:
    """A one-line, printable form of a file name (newlines and bad bytes escaped)."""
    text = os.fsencode(rel).decode("utf-8", "backslashreplace")
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


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


@functools.cache
def _syncfs() -> Any:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            return ctypes.CDLL(name, use_errno=True).syncfs
    return None


def sync_filesystem(folder: str | Path) -> None:
    """Flush every written file of ``folder``'s filesystem to disk (one call per batch)."""
    syncfs = _syncfs()
    if syncfs is None:
        os.sync()
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        syncfs(fd)
    finally:
        os.close(fd)


def io_error(exc: OSError, target: str | Path) -> LocalIOError:
    if exc.errno == errno.ENOSPC:
        return LocalIOError(
            f"destination disk is full writing {display(str(target))}", path=str(target)
        )
    return LocalIOError(f"cannot write {display(str(target))}: {exc.strerror}", path=str(target))


class LocalProvider(Provider):
    """A folder on this machine."""

    kind: ClassVar[str] = "local"
    description: ClassVar[str] = "a local folder tree (keeps relative paths)"
    features = Features(
        can_list=True, can_delete=True, can_get=True, keeps_paths=True, is_local=True
    )

    @property
    def root(self) -> Path:
        assert self.config.path is not None
        return self.config.path

    def full(self, rel: str) -> Path:
        """The path of an item; refuses keys that would leave the folder."""
        rel = key_path(rel)
        if rel.startswith("/") or ".." in rel.split("/"):
            raise Rejected(f"path escapes the folder: {display(rel)}", remote=self.name)
        return self.root / rel

    async def list_page(self, cursor: str | None) -> Page:
        import anyio.to_thread

        entries, _problems, _skipped = await anyio.to_thread.run_sync(scan_tree, self.root)
        items = [
            RemoteItem(
                remote_id=path_key(e.rel),
                name=e.rel.rsplit("/", 1)[-1],
                size=e.size,
                mtime=e.mtime_ns / 1e9,
            )
            for e in entries
        ]
        return Page(items=items, next_cursor=None)

    async def get(self, remote_id: str) -> RemoteItem:
        path = self.full(remote_id)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise NotFound(f"{display(remote_id)} not found", remote=self.name) from None
        return RemoteItem(
            remote_id=remote_id, name=path.name, size=st.st_size, mtime=st.st_mtime_ns / 1e9
        )

    async def open(self, item: RemoteItem) -> AsyncIterator[bytes]:
        import aiofiles

        path = self.full(item.remote_id)
        try:
            async with aiofiles.open(path, "rb") as fh:
                while chunk := await fh.read(CHUNK):
                    yield chunk
        except FileNotFoundError:
            raise NotFound(f"{display(item.remote_id)} vanished", remote=self.name) from None
        except OSError as exc:
            raise LocalIOError(
                f"cannot read {display(item.remote_id)}: {exc.strerror}", path=str(path)
            ) from None

    async def upload(self, src: UploadSource, meta: ItemMeta, *, rel_path: str) -> RemoteItem:
        """Write ``src`` at ``rel_path`` the way every local write goes (staged, flushed,
        renamed; never over a file imgsync did not write): :mod:`imgsync.pipeline.folders`.
        """
        import anyio.to_thread

        from imgsync.pipeline.folders import StagedFile, Unit, commit_units, stage_blobs

        self.full(rel_path)  # refuses paths that leave the folder
        data = await src.read()
        rel = key_path(rel_path)
        staged = StagedFile(rel, mtime=meta.created_at, approved=True)
        unit = Unit(rel.rpartition("/")[0], [staged])

        def write() -> None:
            stage_blobs(str(self.root), unit, [data])
            commit_units(str(self.root), [unit])

        await anyio.to_thread.run_sync(write)
        if staged.error is not None:
            raise staged.error
        assert staged.final is not None
        return RemoteItem(
            remote_id=path_key(staged.final),
            name=staged.final.rpartition("/")[2],
            size=len(data),
            sha256=src.sha256,
            md5=src.md5,
            meta=meta,
        )

    async def delete(self, item: RemoteItem) -> None:
        try:
            self.full(item.remote_id).unlink()
        except FileNotFoundError:
            raise NotFound(f"{display(item.remote_id)} already gone", remote=self.name) from None
