"""Writing into a folder: staged, flushed once, renamed; never over a file imgsync did not write.

Staging (``stage_unit``, run in a worker thread per source folder, so concurrent workers
touch different destination folders and do not queue on one folder's lock): each file is
read once, hashed, and written under its final name into a hidden staging folder beside
its destination folder, keeping the source's modification time. ``stage_blobs`` stages
bytes already in memory or spooled to a temporary file (downloads, uploads to a folder).

Commit (``commit_units``, one call at a time): one filesystem flush for everything staged
so far, then each staging folder is renamed to its destination folder when that folder
does not exist yet (one rename for the whole folder), or its files are renamed into the
existing folder one by one. Nothing appears under a real name before its bytes are on
disk, and a file imgsync did not write is never overwritten.

``sweep_stale`` removes what a crashed process left in staging (names carry the pid).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import itertools
import json
import json.encoder
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgsync.errors import ImgsyncError, LinkSkipped, LocalIOError, Rejected
from imgsync.hashing import CHUNK, Digest, digest_bytes
from imgsync.localfs.paths import TMP_PREFIX, display, io_error, open_source
from imgsync.localfs.scan import ScanEntry
from imgsync.pids import pid_alive


@functools.cache
def _libc_function(name: str) -> Any:
    """A C library function through ctypes (errno kept), or None where there is none.

    Looked up in the running process first: ``find_library`` starts a subprocess."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    lib = ctypes.util.find_library("c")
    if lib:
        with contextlib.suppress(OSError, AttributeError):
            return getattr(ctypes.CDLL(lib, use_errno=True), name)
    return None


def _syncfs() -> Any:
    return _libc_function("syncfs")


def sync_filesystem(folder: str | Path) -> None:
    """Flush every written file of ``folder``'s filesystem to disk (one call per batch)."""
    syncfs = _syncfs()
    if syncfs is None:
        os.sync()
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:  # a write-back error (EIO): nothing may count as on disk
            import ctypes

            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(folder))
    finally:
        os.close(fd)


UNIT_FILES = 2048  # a whole folder of this size is renamed into place at once
_counter = itertools.count()
_swept: set[str] = set()
_sweep_lock = threading.Lock()


def sweep_stale(parent: str) -> None:
    """Remove staging folders and files a crashed imgsync process left in ``parent``.

    Each name carries its process id; only those of processes no longer running are
    removed. Done once per folder per process.
    """
    with _sweep_lock:
        if parent in _swept:
            return
        _swept.add(parent)
    try:
        names = [n for n in os.listdir(parent) if n.startswith(TMP_PREFIX)]
    except OSError:
        return
    for name in names:
        pid = name[len(TMP_PREFIX) :].partition("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
            continue
        path = os.path.join(parent, name)
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                for inner in os.listdir(path):
                    os.unlink(os.path.join(path, inner))
                os.rmdir(path)
            else:
                os.unlink(path)


@dataclass(slots=True)
class StagedFile:
    rel: str  # relative path at the destination (the source's, for a folder)
    scan: ScanEntry | None = None  # a source file to read; None for bytes in memory
    mtime: float | None = None  # modification time to give bytes from memory
    sidecar: dict[str, Any] | None = None  # JSON written beside the committed file
    staged_name: str = ""  # name inside the staging folder (default: the base name)
    already_there: bool = False  # the destination held these bytes under that name already
    # (size, mtime_ns) of the file found at the destination holding these bytes when it was
    # staged (nothing was staged for it): checked again at commit, then ``already_there``
    held: tuple[int, int] | None = None
    digest: Digest | None = None
    error: ImgsyncError | None = None
    approved: bool = False  # set by the engine after dedupe and claim
    ours: str | None = None  # sha256 imgsync wrote at this destination path before
    final: str | None = None  # relative path it was committed under
    # (mtime_ns, ctime_ns, inode) of the file as committed, when imgsync wrote it (not when
    # it found the bytes there already): a later overwrite with the same size changes it
    stamp: tuple[int, int, int] | None = None
    sidecar_final: str | None = None  # relative path its sidecar was written to
    sidecar_staged: str = ""  # its sidecar's name in the staging folder (stage_blobs)


@dataclass(slots=True)
class Unit:
    """Files of one source folder on their way to one destination folder."""

    folder: str  # relative folder ("" for the top)
    files: list[StagedFile]
    stage_dir: str = ""
    final_dir: str = ""
    staged: list[StagedFile] = field(default_factory=list)


def make_units(files: list[ScanEntry]) -> list[Unit]:
    """Group scanned files by folder, at most ``UNIT_FILES`` per unit."""
    by_folder: dict[str, list[StagedFile]] = {}
    for entry in files:
        folder = entry.rel.rpartition("/")[0]
        by_folder.setdefault(folder, []).append(StagedFile(entry.rel, entry))
    return [
        Unit(folder, staged[start : start + UNIT_FILES])
        for folder, staged in by_folder.items()
        for start in range(0, len(staged), UNIT_FILES)
    ]


def linked_folder(dst_root: str, folder: str) -> str | None:
    """The first folder of ``folder`` (relative to ``dst_root``) that is a symbolic link,
    or None. Writes never go through one: a link inside the destination could send them
    anywhere on the machine (``dst_root`` itself may be a link: the user named it)."""
    path = dst_root
    for part in folder.split("/") if folder else ():
        path = os.path.join(path, part)
        try:
            if os.path.islink(path):
                return path
            if not os.path.isdir(path):
                return None  # missing (created as a real folder) or a file (fails later)
        except OSError:
            return None
    return None


def _refuse_links(dst_root: str, unit: Unit, files: list[StagedFile]) -> bool:
    """Fail ``files`` of ``unit`` when its folder goes through a link; True if so."""
    link = linked_folder(dst_root, unit.folder)
    if link is None:
        return False
    err = LocalIOError(
        f"{display(link)} in the destination is a symbolic link; imgsync does not write "
        "through links (replace it with a real folder, or copy into the folder it points to)",
        path=link,
    )
    for f in files:
        f.error = err
    return True


def _open_stage(unit: Unit, parent: str) -> bool:
    """Create ``unit``'s staging folder in ``parent``; on failure every file gets the error."""
    unit.stage_dir = os.path.join(parent, f"{TMP_PREFIX}{os.getpid()}-{next(_counter)}")
    try:
        os.makedirs(parent, exist_ok=True)
        sweep_stale(parent)
        os.makedirs(unit.stage_dir)
    except OSError as exc:
        err = io_error(exc, unit.stage_dir)
        for f in unit.files:
            f.error = err
        return False
    return True


def _put(dst_root: str, unit: Unit, f: StagedFile, data: bytes | Path, ns: int | None) -> None:
    """Write one file into the staging folder, with mtime ``ns`` (or ``f.mtime``).

    ``data`` is the bytes, or a spooled temporary file that is moved (or copied, across
    filesystems) into the staging folder.
    """
    tmp = os.path.join(unit.stage_dir, _staged_name(f))
    try:
        if isinstance(data, Path):
            try:
                os.replace(data, tmp)
            except OSError:
                shutil.copyfile(data, tmp)
            if ns is not None:
                os.utime(tmp, ns=(ns, ns))
            elif f.mtime:
                os.utime(tmp, (f.mtime, f.mtime))
        else:
            # a bare descriptor (``open()`` adds a status call and a file object), the
            # times set through it: four system calls per file (each one lets another
            # thread take the GIL, and waits to get it back). A new name only: two files
            # the destination's filesystem sees as one name (``A.png``, ``a.png`` on a
            # case-insensitive disk) fail instead of one silently replacing the other.
            fd = os.open(tmp, _NEW_FILE, 0o666)
            try:
                _write_fd(fd, data)
                if ns is not None:
                    os.utime(fd, ns=(ns, ns))
                elif f.mtime:
                    os.utime(fd, (f.mtime, f.mtime))
            finally:
                os.close(fd)
    except OSError as exc:
        f.error = io_error(exc, os.path.join(dst_root, f.rel))
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return
    unit.staged.append(f)


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_fd(fd: int, data: bytes) -> None:
    """Every byte of ``data`` through the descriptor ``fd`` (a write may be partial)."""
    done = os.write(fd, data)
    if done == len(data):
        return
    view = memoryview(data)
    while done < len(data):
        n = os.write(fd, view[done:])
        if not n:
            raise OSError(errno.EIO, "short write")
        done += n


def _read_small(
    src: str, expect: int | None, follow_root: str | None = None
) -> tuple[bytes, os.stat_result]:
    """The whole of a small file and its status read *after* the bytes (so a change made
    while it was read shows in size or mtime). Asks for one byte more than ``expect`` (the
    scanned size): a file that grew since gives itself away. Never read through a link
    (see :func:`~imgsync.localfs.paths.open_source`)."""
    fd = open_source(src, follow_root)
    try:
        if expect is None:
            chunks = []
            while chunk := os.read(fd, CHUNK):
                chunks.append(chunk)
            data = b"".join(chunks)
        else:
            data = os.read(fd, expect + 1)
            if 0 < len(data) < expect:  # a short read (some filesystems): read on
                parts = [data]
                got = len(data)
                while got <= expect and (chunk := os.read(fd, expect + 1 - got)):
                    parts.append(chunk)
                    got += len(chunk)
                data = b"".join(parts)
        return data, os.fstat(fd)
    finally:
        os.close(fd)


STREAM_ABOVE = 8 * 1024 * 1024  # larger files are copied and hashed in chunks


def _stage_streamed(
    src: str,
    dst_root: str,
    unit: Unit,
    f: StagedFile,
    with_md5: bool,
    max_bytes: int | None,
    follow_root: str | None = None,
) -> None:
    """Copy and hash a large file in chunks into the staging folder (bounded memory); one
    that grows past ``max_bytes`` while it is read fails."""
    tmp = os.path.join(unit.stage_dir, _staged_name(f))
    sha = hashlib.sha256()
    md5 = hashlib.md5() if with_md5 else None
    size = 0
    try:
        fin = os.fdopen(open_source(src, follow_root), "rb")
    except LinkSkipped as exc:
        f.error = exc
        return
    except FileNotFoundError:
        f.error = LocalIOError("file vanished before it could be read", path=src)
        return
    except OSError as exc:
        f.error = LocalIOError(f"cannot read: {exc.strerror}", path=src)
        return
    try:
        with fin, open(tmp, "wb") as fout:
            while chunk := fin.read(CHUNK):
                sha.update(chunk)
                if md5 is not None:
                    md5.update(chunk)
                fout.write(chunk)
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    break
            st = os.fstat(fin.fileno())
        if max_bytes is not None and size > max_bytes:  # grew past the cap since the scan
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            f.error = _too_large(max_bytes)
            return
        scan = f.scan
        if scan is not None and (
            size != scan.size
            or st.st_size != scan.size
            or st.st_mtime_ns != scan.mtime_ns
            or st.st_ino != scan.inode  # another file: a folder above swapped for a link
        ):  # written while it was copied, or not the file the scan saw
            os.unlink(tmp)
            f.error = LocalIOError("file changed while it was read; tried again later", path=src)
            return
        if scan is not None:
            os.utime(tmp, ns=(scan.mtime_ns, scan.mtime_ns))
    except OSError as exc:
        f.error = io_error(exc, os.path.join(dst_root, f.rel))
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return
    f.digest = Digest(sha.hexdigest(), md5.hexdigest() if md5 is not None else None, size)
    unit.staged.append(f)


def _too_large(max_bytes: int) -> Rejected:
    return Rejected(f"larger than the per-item size cap of {max_bytes} bytes")


def stage_unit(
    src_root: str,
    dst_root: str,
    unit: Unit,
    with_md5: bool,
    max_bytes: int | None = None,
    follow_links: bool = False,
) -> Unit:
    """Read, hash and stage every file of ``unit``; per-file errors are kept on the file.

    A file larger than ``max_bytes`` (``--max-item-size``) fails with ``Rejected``; the
    check rides on the size test that already picks streamed files, so it costs nothing
    per file. A file that is a symbolic link by now gets ``LinkSkipped`` (not read) unless
    ``follow_links`` and it stays inside ``src_root``."""
    unit.final_dir = os.path.join(dst_root, unit.folder) if unit.folder else dst_root
    if _refuse_links(dst_root, unit, unit.files):
        return unit
    if not _open_stage(unit, os.path.dirname(unit.final_dir) if unit.folder else dst_root):
        return unit
    join = os.path.join
    big = STREAM_ABOVE if max_bytes is None else min(STREAM_ABOVE, max_bytes)
    follow_root = os.path.realpath(src_root) if follow_links else None
    there = _names_in(unit.final_dir)  # None: a new folder (nothing to compare with)
    for f in unit.files:
        src = join(src_root, f.rel)
        if f.scan is not None and f.scan.size > big:
            if max_bytes is not None and f.scan.size > max_bytes:
                f.error = _too_large(max_bytes)
                continue
            _stage_streamed(src, dst_root, unit, f, with_md5, max_bytes, follow_root)
            continue
        try:
            data, st = _read_small(src, f.scan.size if f.scan is not None else None, follow_root)
        except LinkSkipped as exc:
            f.error = exc
            continue
        except FileNotFoundError:
            f.error = LocalIOError("file vanished before it could be read", path=src)
            continue
        except OSError as exc:
            f.error = LocalIOError(f"cannot read: {exc.strerror}", path=src)
            continue
        scan = f.scan
        if scan is not None and (
            len(data) != scan.size
            or st.st_size != scan.size
            or st.st_mtime_ns != scan.mtime_ns
            or st.st_ino != scan.inode  # another file: a folder above swapped for a link
        ):  # still being written: a truncated copy must not land
            f.error = LocalIOError("file changed while it was read; tried again later", path=src)
            continue
        f.digest = digest_bytes(data, with_md5)
        name = f.rel.rpartition("/")[2]
        if there and name in there and _already_holds(join(unit.final_dir, name), data, f):
            unit.staged.append(f)  # nothing to write: adopted at commit
            continue
        _put(dst_root, unit, f, data, f.scan.mtime_ns if f.scan else None)
    return unit


def _names_in(folder: str) -> frozenset[str] | None:
    """The names in ``folder`` (one listing, no status per file), or None when it is not
    there: a fresh copy into new folders pays nothing more."""
    try:
        return frozenset(os.listdir(folder))
    except OSError:
        return None


def _already_holds(path: str, data: bytes, f: StagedFile) -> bool:
    """Does the destination file ``path`` (which imgsync has no record of) hold exactly
    ``data``? Sizes first (one status); the bytes are read and compared only when they
    match. On a match ``f.held`` keeps the file's size and time, checked again at commit."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size != len(data):
            return False
        with os.fdopen(open_source(path), "rb") as fh:
            same = fh.read(len(data) + 1) == data
    except (OSError, LinkSkipped):
        return False
    if same:
        f.held = (st.st_size, st.st_mtime_ns)
    return same


def stage_blobs(dst_root: str, unit: Unit, blobs: list[bytes | Path]) -> Unit:
    """Stage bytes in memory or spooled to temporary files (downloads, uploads to a folder)
    for ``unit.folder``.

    Staged names carry an index, so two items that want the same name can share a unit
    (the second one gets ``name (1).ext`` at commit).

    A file's sidecar is staged beside it, as it will read when the file keeps its name:
    it is flushed with the images and renamed into place by :func:`commit_units` (no
    second write after the commit); when the file gets another name, or the sidecar's
    name is taken, :func:`write_sidecars` writes it the careful way.
    """
    unit.final_dir = os.path.join(dst_root, unit.folder) if unit.folder else dst_root
    if _refuse_links(dst_root, unit, unit.files):
        return unit
    if not _open_stage(unit, dst_root):
        return unit
    for i, (f, data) in enumerate(zip(unit.files, blobs, strict=True)):
        f.staged_name = f"{i}-{f.rel.rpartition('/')[2]}"
        _put(dst_root, unit, f, data, None)
        if f.sidecar is not None and f.error is None:
            _stage_sidecar(unit, f, f"s{i}-{f.rel.rpartition('/')[2]}.json")
    return unit


def _sidecar_bytes(f: StagedFile, final: str) -> bytes:
    assert f.sidecar is not None
    record = {**f.sidecar, "file": final.rpartition("/")[2]}
    # a lone surrogate (a host's "\\ud800" escape, a name that was not UTF-8) can only
    # be inside a JSON string: written as that escape, it reads back the same
    return pretty_json(record).encode("utf-8", "backslashreplace")


_STRING = json.encoder.encode_basestring  # the C function json uses (ensure_ascii=False)
_CONSTANTS = {True: "true", False: "false", None: "null"}
_FLOATS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


class _Unusual(Exception):
    """A key that is not a string, or a value of another type: left to json.dumps."""


def _pretty(value: Any, pad: str) -> str:
    if isinstance(value, str):
        return _STRING(value)
    if value is None or value is True or value is False:
        return _CONSTANTS[value]
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        text = float.__repr__(value)
        return _FLOATS.get(text, text)
    inner = pad + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        parts = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Unusual
            parts.append(f"{inner}{_STRING(k)}: {_pretty(v, inner)}")
        return "{\n" + ",\n".join(parts) + "\n" + pad + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + _pretty(v, inner) for v in value) + "\n" + pad + "]"
    raise _Unusual


def pretty_json(value: Any) -> str:
    """``json.dumps(value, indent=2, ensure_ascii=False)``, character for character, in
    a fraction of its time (with ``indent`` the standard library encodes through its
    pure-Python generators: about 20 us per sidecar, 5 here)."""
    try:
        return _pretty(value, "")
    except _Unusual:
        return json.dumps(value, indent=2, ensure_ascii=False)


def _stage_sidecar(unit: Unit, f: StagedFile, name: str) -> None:
    """Write ``f``'s sidecar into the staging folder (``name`` starts with a letter: no
    staged image's name does). On any failure nothing is left there and the sidecar is
    written after the commit instead, where a failure fails the item."""
    path = os.path.join(unit.stage_dir, name)
    try:
        data = _sidecar_bytes(f, f.rel)
        fd = os.open(path, _NEW_FILE, 0o666)
        try:
            _write_fd(fd, data)
        finally:
            os.close(fd)
    except (OSError, ValueError):
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    f.sidecar_staged = name


SIDECAR_TRIES = 100
_SIDECAR_MAX_BYTES = 1 << 20


def sidecar_names(rel: str) -> Iterator[str]:
    """Where the sidecar of the file ``rel`` may be, in the order they are tried:
    ``<file>.json``, then ``<file>.imgsync.json``, ``<file>.imgsync (1).json`` ... for when
    a file imgsync did not write as that image's sidecar holds the name (made as needed:
    nearly always only the first is)."""
    yield f"{rel}.json"
    yield f"{rel}.imgsync.json"
    for n in range(1, SIDECAR_TRIES):
        yield f"{rel}.imgsync ({n}).json"


def is_sidecar_of(path: str | Path, sha256: str) -> bool:
    """Is ``path`` a sidecar imgsync wrote for the image with these bytes? (A regular
    file, a JSON object with that ``sha256`` and imgsync's ``source``/``remote_id`` keys.)
    A user's own ``.json`` file, or a host's item that happens to end in ``.json``, is not."""
    try:  # one open that refuses a link, and its status: no separate lstat and stat
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _SIDECAR_MAX_BYTES:
            return False
        parts = [os.read(fd, st.st_size + 1)]
        while parts[-1] and sum(map(len, parts)) <= _SIDECAR_MAX_BYTES:  # short reads
            parts.append(os.read(fd, _SIDECAR_MAX_BYTES))
        data = json.loads(b"".join(parts))
    except (OSError, ValueError):
        return False
    finally:
        os.close(fd)
    return (
        isinstance(data, dict)
        and data.get("sha256") == sha256
        and "source" in data
        and "remote_id" in data
    )


def find_sidecar(root: str | Path, rel: str, sha256: str) -> str | None:
    """The sidecar imgsync wrote for ``rel`` (relative to ``root``), or None."""
    for name in sidecar_names(rel):
        path = os.path.join(root, name)
        if not os.path.lexists(path):
            return None
        if is_sidecar_of(path, sha256):
            return name
    return None


def _place_new(tmp: str, target: str) -> bool:
    """Give ``tmp`` the name ``target`` only if nothing has it (never replaces); True if
    done. A hard link is atomic; where the filesystem has none, a rename checked first."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError:
        if os.path.lexists(target):
            return False
        os.rename(tmp, target)
        return True
    os.unlink(tmp)
    return True


def write_sidecars(dst_root: str, unit: Unit) -> None:
    """A JSON sidecar beside every committed file that has sidecar metadata, then one
    filesystem flush when any was written (so the caller records no file as done whose
    sidecar a crash could still lose, and the files' own renames are on disk too); a
    failed flush fails the unit's committed files.

    It goes to ``<file>.json`` when that name is free or holds this image's own sidecar
    from an earlier run (updated in place); otherwise to the first free (or own) name of
    :func:`sidecar_names`. A file imgsync did not write as this image's sidecar (the
    user's own, or a host item named like one) is never replaced.
    """
    _write_sidecars(dst_root, unit)
    if not any(f.sidecar_final for f in unit.staged):
        return
    try:
        sync_filesystem(dst_root)
    except OSError as exc:
        err = io_error(exc, dst_root)
        for f in unit.staged:
            if f.final is not None and f.error is None:
                f.error = err


def _write_sidecars(dst_root: str, unit: Unit) -> None:
    for f in unit.staged:
        if f.final is None or f.sidecar is None or f.sidecar_final is not None:
            continue  # no file, no sidecar, or placed by commit_units already
        sha = str(f.sidecar.get("sha256") or "")
        folder = os.path.dirname(os.path.join(dst_root, f.final))
        tmp = os.path.join(folder, f"{TMP_PREFIX}{os.getpid()}-{next(_counter)}")
        side = os.path.join(dst_root, f.final + ".json")
        try:
            with open(tmp, "wb") as fh:
                fh.write(_sidecar_bytes(f, f.final))
            for name in sidecar_names(f.final):
                side = os.path.join(dst_root, name)
                if not os.path.lexists(side):
                    if _place_new(tmp, side):
                        f.sidecar_final = name
                        break
                elif is_sidecar_of(side, sha):
                    os.replace(tmp, side)
                    f.sidecar_final = name
                    break
            else:
                f.error = LocalIOError(
                    f"no free name for the sidecar of {display(f.final)}", path=side
                )
        except OSError as exc:
            f.error = io_error(exc, side)
        with contextlib.suppress(OSError):  # a full disk must not leave the temp file
            os.unlink(tmp)


def _same_file(a: str, b: str) -> bool:
    try:
        if os.lstat(a).st_size != os.lstat(b).st_size:
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                ca, cb = fa.read(CHUNK), fb.read(CHUNK)
                if ca != cb:
                    return False
                if not ca:
                    return True
    except OSError:
        return False


def file_sha256(path: str | Path) -> str | None:
    """SHA-256 of a file, read in chunks; None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _holds(path: str, sha: str | None) -> bool:
    return sha is not None and file_sha256(path) == sha


def _target_for(tmp: str, target: str, ours: str | None) -> tuple[str, bool]:
    """Where ``tmp`` goes, and whether that file already holds these bytes.

    ``target`` if free, or holding an unchanged older version imgsync wrote there;
    a name that already holds the same bytes (kept as it is); else ``name (N).ext``.
    """
    if not os.path.lexists(target):
        return target, False
    if _same_file(tmp, target):
        return target, True
    if _holds(target, ours):
        return target, False
    stem, ext = os.path.splitext(target)
    for n in range(1, 10_000):
        candidate = f"{stem} ({n}){ext}"
        if not os.path.lexists(candidate):
            return candidate, False
        if _same_file(tmp, candidate):
            return candidate, True
    raise LocalIOError(f"no free name for {display(target)}", path=target)


def commit_units(dst_root: str, units: list[Unit]) -> None:
    """Flush once, then make every approved staged file visible under its final name.

    Sets ``final`` (or ``error``) on each approved file; unapproved ones are dropped.
    """
    try:
        sync_filesystem(dst_root)
    except OSError as exc:
        err = io_error(exc, dst_root)
        for unit in units:
            for f in unit.staged:
                f.error = err
            _drop(unit)
        return
    for unit in units:
        for f in unit.staged:
            if not f.approved:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(unit.stage_dir, _staged_name(f)))
        if unit.staged and _refuse_links(dst_root, unit, unit.staged):  # made since staging
            _drop(unit)
            continue
        if _rename_whole(unit):
            _stamp(dst_root, unit)
            continue
        for f in unit.staged:
            if f.approved:
                _commit_file(dst_root, unit, f)
        _stamp(dst_root, unit)
        _place_sidecars(dst_root, unit)
        _drop(unit)


def _stamp(dst_root: str, unit: Unit) -> None:
    """Each file of ``unit`` imgsync wrote, as it is under its final name (after the
    rename, which moves a file's ctime on some filesystems)."""
    lstat = os.lstat
    for f in unit.staged:
        if f.approved and f.final is not None and f.error is None and not f.already_there:
            try:
                st = lstat(os.path.join(dst_root, f.final))
            except OSError:
                continue
            f.stamp = (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _place_sidecars(dst_root: str, unit: Unit) -> None:
    """Rename each staged sidecar to ``<file>.json`` when its file kept the name it was
    staged for and nothing has that name (one system call that never replaces); the
    others are left to :func:`write_sidecars`. After every file of the unit, so a host's
    own ``<file>.json`` item in the same unit keeps its name, as it would without this."""
    for f in unit.staged:
        if f.sidecar_staged and f.error is None and f.final is not None and f.final == f.rel:
            name = f"{f.final}.json"
            tmp = os.path.join(unit.stage_dir, f.sidecar_staged)
            if _rename_new(tmp, os.path.join(dst_root, name)):
                f.sidecar_final = name


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


@functools.cache
def _renameat2() -> Any:
    import ctypes

    fn = _libc_function("renameat2")
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
    return fn


def _rename_new(src: str, dst: str) -> bool | None:
    """Rename ``src`` to ``dst`` only if nothing has that name, in one atomic system call:
    True if done, False if ``dst`` exists, None when this cannot be done here (no
    ``renameat2``, a filesystem without it, a missing folder, any other error): the caller
    then takes the slower checked way, which reports real errors."""
    fn = _renameat2()
    if fn is None:
        return None
    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    import ctypes

    return False if ctypes.get_errno() == errno.EEXIST else None


def _rename_whole(unit: Unit) -> bool:
    # staged under other names, or found already there (the folder exists then anyway)
    staged_as_other = any(f.staged_name or f.held for f in unit.staged)
    if staged_as_other or unit.final_dir == os.path.dirname(unit.stage_dir):
        return False
    done = _rename_new(unit.stage_dir, unit.final_dir)
    if done is None:
        if os.path.lexists(unit.final_dir):
            return False
        try:
            os.rename(unit.stage_dir, unit.final_dir)
        except OSError:
            return False
    elif not done:
        return False
    for f in unit.staged:
        if f.approved:
            f.final = f.rel
    return True


def _staged_name(f: StagedFile) -> str:
    return f.staged_name or f.rel.rpartition("/")[2]


def _commit_file(dst_root: str, unit: Unit, f: StagedFile) -> None:
    name = f.rel.rpartition("/")[2]
    if f.held is not None:  # nothing staged: the destination already held these bytes
        _commit_held(unit, f, name)
        return
    tmp = os.path.join(unit.stage_dir, _staged_name(f))
    target = os.path.join(unit.final_dir, name)
    # the common case, a name nothing has yet: one system call that never replaces
    if f.ours is None and _rename_new(tmp, target):
        f.final = f"{unit.folder}/{name}" if unit.folder else name
        return
    try:
        os.makedirs(unit.final_dir, exist_ok=True)
        target, already = _target_for(tmp, target, f.ours)
        if already:
            os.unlink(tmp)
            f.already_there = True
        else:
            os.replace(tmp, target)
    except LocalIOError as exc:
        f.error = exc
        return
    except OSError as exc:
        f.error = io_error(exc, os.path.join(dst_root, f.rel))
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return
    f.final = os.path.relpath(target, dst_root).replace(os.sep, "/")


def _commit_held(unit: Unit, f: StagedFile, name: str) -> None:
    """A file found holding these bytes when it was staged counts as already there if it
    is still what was compared (its size and time); else the item fails for this run."""
    target = os.path.join(unit.final_dir, name)
    try:
        st = os.lstat(target)
        now: tuple[int, int] | None = (st.st_size, st.st_mtime_ns)
        if not stat.S_ISREG(st.st_mode):
            now = None
    except OSError:
        now = None
    if now != f.held:
        f.error = LocalIOError(
            f"{display(target)} changed while imgsync compared it; tried again next run",
            path=target,
        )
        return
    f.already_there = True
    f.final = f"{unit.folder}/{name}" if unit.folder else name


def discard_stage(unit: Unit) -> None:
    """Remove ``unit``'s staging folder and what is left in it (idempotent)."""
    if unit.stage_dir:
        _drop(unit)


def _drop(unit: Unit) -> None:
    with contextlib.suppress(OSError):
        for name in os.listdir(unit.stage_dir):
            os.unlink(os.path.join(unit.stage_dir, name))
        os.rmdir(unit.stage_dir)
