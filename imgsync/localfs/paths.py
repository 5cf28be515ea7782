"""Path keys, printable names and filesystem errors.

A relative path is stored in SQLite and JSON as a *key* (:func:`path_key`): the path itself
when it is valid UTF-8, else ``b64:`` and its raw bytes in base64, so names that are not
valid UTF-8 survive the round trip.
"""

from __future__ import annotations

import binascii
import errno
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from stat import S_ISREG

from imgsync.errors import LinkSkipped, LocalIOError

TMP_PREFIX = ".imgsync-tmp-"

LINK_SKIPPED = "not followed (--copy-links follows links that stay inside the folder)"
LINK_OUTSIDE = "not followed: it leads outside the folder"

_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def inside(real_root: str, path: str | Path) -> bool:
    """Does ``path``, every link resolved, lead to ``real_root`` or below it?"""
    target = os.path.realpath(path)
    return target == real_root or target.startswith(real_root.rstrip(os.sep) + os.sep)


def open_source(path: str | Path, follow_root: str | None = None) -> int:
    """A read-only descriptor of the source file ``path``, never opened through a symbolic
    link (``O_NOFOLLOW``): a file swapped for a link after the scan raises ``LinkSkipped``
    (with the scan's own words). With ``follow_root`` (``--copy-links``: the real path of
    the source folder) a link that stays inside that folder is followed, as the scan does.
    Other failures raise ``OSError``."""
    try:
        return os.open(path, _READ | _NOFOLLOW)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EMLINK) or not os.path.islink(path):
            raise
    if follow_root is None:
        raise LinkSkipped(LINK_SKIPPED, path=str(path))
    if not inside(follow_root, path):
        raise LinkSkipped(LINK_OUTSIDE, path=str(path))
    return os.open(os.path.realpath(path), _READ | _NOFOLLOW)


def file_stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    """(size, mtime, ctime, inode): any write to the file since changes it (ctime too,
    which no tool can set back the way ``touch -r`` sets back an mtime)."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


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
        # (binascii, not base64: the same encoding without base64's imports at start-up)
        return "b64:" + binascii.b2a_base64(os.fsencode(rel), newline=False).decode("ascii")
    return rel


def key_path(key: str) -> str:
    """The inverse of :func:`path_key`."""
    if key.startswith("b64:"):
        return os.fsdecode(binascii.a2b_base64(key[4:]))
    return key


def display(rel: str) -> str:
    """A one-line, printable form of a file name (newlines and bad bytes escaped)."""
    text = os.fsencode(rel).decode("utf-8", "backslashreplace")
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


# One path component is at most 255 *bytes* on common filesystems (ext4, btrfs, XFS, APFS
# counts UTF-8 bytes too). A name from a host is cut well below that, so that the
# collision suffix `` (NN)`` and the sidecar's ``.imgsync (N).json`` still fit after it.
NAME_MAX_BYTES = 255
HOST_NAME_BYTES = NAME_MAX_BYTES - len(".imgsync (99).json") - len(" (9999)")
_EXT_MAX_BYTES = 16


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def _cut(text: str, limit: int) -> str:
    """The longest prefix of ``text`` of at most ``limit`` UTF-8 bytes (whole characters)."""
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) <= limit:
        return text
    cut = raw[:limit]
    while cut and (cut[-1] & 0xC0) == 0x80:  # never end inside a character
        cut = cut[:-1]
    if cut and cut[-1] >= 0xC0:
        cut = cut[:-1]
    return cut.decode("utf-8", "surrogateescape")


# Characters FAT/exFAT/NTFS (a USB disk, an SMB share) refuse in a name: a name from a host
# is written the same on every filesystem, so a backup folder can be moved to one.
_NOT_ON_FAT = str.maketrans(dict.fromkeys('<>:"|?*', "_"))
# Names Windows keeps for devices, whatever the extension and case (``nul.tar.gz`` too):
# a file by one of them cannot be made or opened on an SMB share or by Windows itself.
_RESERVED_ON_WINDOWS = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"{dev}{n}" for dev in ("COM", "LPT") for n in ("0123456789" + "\u00b9\u00b2\u00b3")]
)


# A name that every rule below leaves as it is (the usual host name, ``abc123.png``): taken
# as it is, without the character-by-character pass (a backup names thousands of files)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\.[A-Za-z0-9]{1,16}")


def safe_name(name: str, limit: int = HOST_NAME_BYTES) -> str:
    """A host-given file name made safe to write as one file in one folder.

    No folders (``/`` and ``\\`` become ``_``), no control characters, none of
    ``<>:"|?*`` (``_``: FAT, exFAT and SMB refuse them) and no trailing dot or space, not
    hidden, not a name Windows keeps for a device (``CON``, ``NUL``, ``COM1``, ``LPT1`` ...
    with any extension, in any case: ``_`` is put after the word, ``con.png`` ->
    ``con_.png``); at most
    ``limit`` bytes, cut in the stem so the extension survives whatever the cut; ``.``,
    ``..``, an empty name, or one that is only dots and an extension (``...png``) become
    ``image`` with that extension. The same name always gives the same result.
    """
    if (
        len(name) <= limit
        and _PLAIN_NAME.fullmatch(name)
        and name.rpartition(".")[0].upper() not in _RESERVED_ON_WINDOWS
    ):
        return name
    return _safe_name_rules(name, limit)


def _safe_name_rules(name: str, limit: int) -> str:
    """:func:`safe_name`, every rule applied (its fast path gives the same result)."""
    name = name.replace("/", "_").replace("\\", "_").translate(_NOT_ON_FAT).strip()
    name = "".join(ch if ch.isprintable() else "_" for ch in name)
    stem, dot, ext = name.rpartition(".")
    if not dot or not ext.isalnum() or _bytes(ext) > _EXT_MAX_BYTES:
        stem, ext = name, ""
    stem = stem.lstrip(". ").rstrip(" ")
    suffix = f".{ext}" if ext else ""
    # no trailing dot or space at the end of the whole name (FAT, exFAT and SMB drop them)
    stem = _cut(stem, limit - _bytes(suffix)).rstrip(" " if suffix else " .") or "image"
    base = stem.partition(".")[0].rstrip(" ")
    if base.upper() in _RESERVED_ON_WINDOWS:  # CON.png -> CON_.png
        stem = _cut(f"{base}_{stem[len(base) :]}", limit - _bytes(suffix))
        stem = stem.rstrip(" " if suffix else " .")
    return stem + suffix


def io_error(exc: OSError, target: str | Path) -> LocalIOError:
    """A filesystem failure as the error tree's ``LocalIOError`` (disk full said plainly)."""
    if exc.errno == errno.ENOSPC:
        return LocalIOError(
            f"destination disk is full writing {display(str(target))}", path=str(target)
        )
    return LocalIOError(f"cannot write {display(str(target))}: {exc.strerror}", path=str(target))


def missing_and_bare(
    root: str | Path,
    keys: Iterable[str],
    sidecars: bool,
    recorded: Mapping[str, str | None] | None = None,
) -> tuple[list[str], list[str]]:
    """(the keys with no file under ``root`` any more, and with ``sidecars`` the keys whose
    file is there but has lost its sidecar). ``recorded``: key -> the name (relative to
    ``root``) its sidecar was written under: that name is looked for, so a user's file
    named like a sidecar (``<file>.json`` made before the backup) is not taken for it. A
    key with none recorded (a backup from before they were) has its sidecar when
    ``<file>.json`` or ``<file>.imgsync.json`` is there. One listing per folder instead of
    a status per file; a folder that cannot be listed has lost all its files."""
    by_folder: dict[str, list[tuple[str, str]]] = {}
    for k in keys:
        folder, _, name = key_path(k).rpartition("/")
        by_folder.setdefault(folder, []).append((k, name))
    known = recorded or {}
    gone: list[str] = []
    bare: list[str] = []
    for folder, items in by_folder.items():
        try:
            names = set(os.listdir(os.path.join(root, folder) if folder else root))
        except OSError:
            gone += [k for k, _ in items]
            continue
        for k, name in items:
            if name not in names:
                gone.append(k)
            elif not sidecars:
                continue
            elif (side := known.get(k)) is not None:
                if side.rpartition("/")[2] not in names:
                    bare.append(k)
            elif f"{name}.json" not in names and f"{name}.imgsync.json" not in names:
                bare.append(k)
    return gone, bare


def missing_or_changed(
    root: str | Path,
    recorded: Mapping[str, tuple[int | None, tuple[int, int, int] | None, str]],
) -> tuple[list[str], list[str], list[tuple[str, tuple[int, int, int]]]]:
    """Compare the files under ``root`` with what state recorded of them (key -> (size or
    None, the (mtime, ctime, inode) imgsync wrote it with or None, sha256)): (the keys with
    no file (or link) there any more, those whose regular file no longer has the recorded
    size (overwritten), and (key, its stamp now) for those of the recorded size whose
    mtime, ctime or inode moved since imgsync wrote them: rewritten, or only touched (a
    chmod): the caller reads those to tell). One ``lstat`` per key; no file is read.

    The keys are taken folder by folder: each file's status is read relative to its open
    folder (no walk down the whole path per file), and a large destination's folders are
    read by two threads (a status read lets the other thread run)."""
    by_folder: dict[str, list[tuple[str, str]]] = {}
    for k in recorded:
        folder, _, name = (key_path(k) if k.startswith("b64:") else k).rpartition("/")
        items = by_folder.get(folder)
        if items is None:
            items = by_folder[folder] = []
        items.append((k, name))
    found = _Found()
    groups = list(by_folder.items())
    if len(recorded) < _THREADED_LOOK or len(groups) < 2 or (os.cpu_count() or 1) < 2:
        _look(str(root), groups, recorded, found)
        return found.gone, found.resized, found.moved
    import threading

    other = _Found()

    def look_at_half() -> None:
        try:
            _look(str(root), groups[1::2], recorded, other)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            other.error = exc

    half = threading.Thread(target=look_at_half, name="imgsync-look", daemon=True)
    half.start()
    try:
        _look(str(root), groups[0::2], recorded, found)
    finally:
        half.join()
    if other.error is not None:
        raise other.error
    return found.gone + other.gone, found.resized + other.resized, found.moved + other.moved


_THREADED_LOOK = 4096  # keys from which a second thread pays for itself
_LOOK_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC
_RELATIVE_LSTAT = os.stat in os.supports_dir_fd and os.open in os.supports_dir_fd


class _Found:
    """What one thread of :func:`missing_or_changed` found."""

    __slots__ = ("error", "gone", "moved", "resized")

    def __init__(self) -> None:
        self.gone: list[str] = []
        self.resized: list[str] = []
        self.moved: list[tuple[str, tuple[int, int, int]]] = []
        self.error: BaseException | None = None


def _look(
    root: str,
    groups: list[tuple[str, list[tuple[str, str]]]],
    recorded: Mapping[str, tuple[int | None, tuple[int, int, int] | None, str]],
    found: _Found,
) -> None:
    gone, resized, moved = found.gone, found.resized, found.moved
    lstat = os.lstat
    join = os.path.join
    for folder, items in groups:
        where = join(root, folder) if folder else root
        fd = -1
        if _RELATIVE_LSTAT:
            try:  # O_PATH: a folder that may be searched but not listed opens too
                fd = os.open(where, _LOOK_FLAGS)
            except OSError:
                fd = -1  # each file by its whole path: the same answers as before
        try:
            for k, name in items:
                try:
                    st = lstat(name, dir_fd=fd) if fd >= 0 else lstat(join(where, name))
                except OSError:
                    gone.append(k)
                    continue
                if not S_ISREG(st.st_mode):
                    continue
                size, stamp, _sha = recorded[k]
                if size is not None and st.st_size != size:
                    resized.append(k)
                elif stamp is not None:
                    now = (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                    if now != stamp:
                        moved.append((k, now))
        finally:
            if fd >= 0:
                os.close(fd)


def missing(root: str | Path, keys: Iterable[str]) -> list[str]:
    """The keys of ``keys`` with no file (or link) under ``root`` any more."""
    return [k for k in keys if not os.path.lexists(os.path.join(root, key_path(k)))]
