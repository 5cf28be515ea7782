"""The planning step of a run from a local folder: scan, compare with state, decide.

Synchronous on purpose: it is one pass of ``scandir`` plus three SQLite reads, and a run
whose plan is empty (the common no-op re-run) finishes without starting an event loop or
importing the HTTP stack.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from imgsync.localfs import ScanEntry, ScanProblem, display, key_path, missing_or_changed, path_key
from imgsync.localfs.scan import ScanRow, entries_of, scan_rows
from imgsync.state.queries import INT64_MAX, KnownFile, int64
from imgsync.state.reader import StateReader

try:  # BLAKE2 is built into Python: no OpenSSL to load for a no-op re-run
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import blake2b


@dataclass
class LocalPlan:
    """What a run from ``root`` has to do for one destination."""

    root: Path
    scanned: int = 0
    present: int = 0  # unchanged files whose bytes the destination already has
    to_hash: list[ScanEntry] = field(default_factory=list)  # new or changed files
    to_send: list[tuple[ScanEntry, KnownFile]] = field(default_factory=list)  # hashed, missing
    problems: list[ScanProblem] = field(default_factory=list)  # failures
    links: list[ScanProblem] = field(default_factory=list)  # symbolic links skipped
    non_images: int = 0
    filtered: int = 0  # image files --include/--exclude left out
    vanished: list[str] = field(default_factory=list)  # known rels no longer on disk
    dest_shas: set[str] = field(default_factory=set)
    dest_items: dict[str, str] = field(default_factory=dict)  # dest remote id -> sha256
    fingerprint: str = ""
    folders: set[str] = field(default_factory=set)  # relative folders holding the files
    dest_root: Path | None = None  # a folder destination (keeps the same relative paths)
    marked: bool = False  # the saved scan mark matched: nothing changed since the last run
    # the destination folders' mtimes, read before the plan looked for files deleted there
    dest_before: dict[str, int] = field(default_factory=dict)
    # destination files overwritten in place (not the size imgsync wrote): printable names
    altered: list[str] = field(default_factory=list)

    def dest_state(self, keys: Callable[[], Iterable[str]]) -> str | None:
        """The destination folders' state to save with a scan mark ("" for a host), or
        None when no mark may be saved: a file the state places (``keys``: the
        destination's item keys) in a folder whose mtime moved since the plan looked (the
        run wrote there, or the user deleted something meanwhile) is gone. Folders are
        read after their state, so a deletion later still changes what the next run sees.
        """
        if self.dest_root is None:
            return ""
        now = folder_mtimes(self.dest_root, self.folders)
        changed = {rel for rel, ns in now.items() if self.dest_before.get(rel) != ns}
        if changed and _gone_in(self.dest_root, changed, keys()):
            return None
        return json.dumps(now, separators=(",", ":"))

    @property
    def empty(self) -> bool:
        return not self.to_hash and not self.to_send and not self.vanished


def folder_mtimes(dest_root: Path, folders: Iterable[str]) -> dict[str, int]:
    """mtime of every destination folder the files go to: adding or removing a file by hand
    changes its folder's mtime, so a re-run notices without looking at each file."""
    state = {}
    for rel in sorted(folders):
        try:
            state[rel] = os.stat(os.path.join(dest_root, rel) if rel else dest_root).st_mtime_ns
        except OSError:
            state[rel] = -1
    return state


def folder_state(dest_root: Path, folders: Iterable[str]) -> str:
    """:func:`folder_mtimes` as the text saved with a scan mark."""
    return json.dumps(folder_mtimes(dest_root, folders), separators=(",", ":"))


def _gone_in(dest_root: Path, folders: set[str], keys: Iterable[str]) -> bool:
    """Whether a key in one of ``folders`` names no file there (one listing per folder)."""
    listed: dict[str, frozenset[str]] = {}
    for key in keys:
        folder, _, name = key_path(key).rpartition("/")
        if folder not in folders:
            continue
        names = listed.get(folder)
        if names is None:
            try:
                where = os.path.join(dest_root, folder) if folder else dest_root
                names = listed[folder] = frozenset(os.listdir(where))
            except OSError:
                return True
        if name not in names:
            return True
    return False


def look_at_dest(db: StateReader, dest_root: Path, dest_key: str) -> tuple[list[str], list[str]]:
    """(keys of the files recorded at the folder ``dest_key`` that are gone, keys of those
    overwritten with other bytes). A file of the recorded size whose mtime, ctime or inode
    moved since imgsync wrote it is read: other bytes are an overwrite (even one whose
    mtime was put back); the same bytes (a chmod, a copy of the same image) keep their
    place, with the file's new stamp."""
    recorded = db.stamps_at(dest_key)
    gone, altered, moved = missing_or_changed(dest_root, recorded)
    if moved:
        from imgsync.localfs import file_sha256

        same = []
        for k, now in moved:
            if file_sha256(os.path.join(dest_root, key_path(k))) == recorded[k][2]:
                same.append((k, now))
            else:
                altered.append(k)
        if same:
            db.refresh_stamps(dest_key, same)
    return gone, altered


def _folders_unchanged(dest_root: Path, saved: str) -> bool:
    try:
        folders = json.loads(saved)
    except ValueError:
        return False
    return isinstance(folders, dict) and folder_state(dest_root, folders) == saved


_REL, _SIZE, _MTIME, _INODE, _CTIME = (itemgetter(i) for i in range(5))
# (rel key, size, mtime_ns, inode, ctime_ns) of a local_files row, as a scan row is
_FILE = itemgetter(0, 1, 2, 3, 4)
_NUMBERS = itemgetter(2, 3, 4)


def fingerprint(
    entries: Sequence[ScanRow], include: tuple[str, ...], exclude: tuple[str, ...]
) -> str:
    """A digest of every scanned path, size, mtime, inode and ctime (and the filters), in
    order.

    Each column is taken out of the tuples by C-level loops: the paths joined by NUL
    (which no name holds), the numbers packed as 64-bit integers.
    """
    h = blake2b(repr((include, exclude)).encode(), digest_size=32)
    h.update("\0".join(map(_REL, entries)).encode("utf-8", "surrogateescape"))
    n = len(entries)
    try:
        h.update(
            struct.pack(
                f"<{n}q{n}q{n}Q{n}q",
                *map(_SIZE, entries),
                *map(_MTIME, entries),
                *map(_INODE, entries),
                *map(_CTIME, entries),
            )
        )
    except struct.error:  # an mtime past the year 2262: the numbers' digits instead
        h.update(
            " ".join(map("%d|%d|%d|%d".__mod__, map(itemgetter(1, 2, 3, 4), entries))).encode()
        )
    return h.hexdigest()


def plan_local(
    db: StateReader | None,
    root: Path,
    dest_key: str,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    dest_root: Path | None = None,
    follow_links: bool = False,
    fresh: bool = False,
) -> LocalPlan:
    """Scan ``root`` and sort its files by what a copy to ``dest_key`` must do with them.

    ``dest_root`` is given for a folder destination: files deleted there by hand are then
    noticed (their locations are dropped, so they are copied again), and so are files
    overwritten there with bytes of another size (``plan.altered``; their locations are
    dropped too). ``fresh`` (``check``) looks at every destination file even when the
    saved scan mark matches (the mark cannot see a file overwritten in place); when the
    look finds nothing and the mark matches, the source side is taken from the mark (no
    per-file comparison with state). Symbolic links are skipped (``plan.links``) unless
    ``follow_links`` (then those inside ``root`` are followed).
    Raises ``LocalIOError`` when ``root`` is missing or unreadable.
    """
    folders: set[str] = set()
    counts: dict[str, int] = {}
    rows, found, non_images = scan_rows(
        root, include, exclude, follow_links=follow_links, folders=folders, counts=counts
    )
    problems = [p for p in found if not p.skipped]
    plan = LocalPlan(root=root, scanned=len(rows), problems=problems, non_images=non_images)
    plan.filtered = counts.get("filtered", 0)
    plan.links = [p for p in found if p.skipped]
    plan.fingerprint = fingerprint(rows, include, exclude)
    plan.dest_root = dest_root
    plan.folders = folders
    if db is None:
        plan.to_hash = entries_of(rows)
        return plan
    root_key = str(root)
    mark, count, gen, saved_state = db.scan_mark(root_key, dest_key)
    # the same source files as the last complete run, and no location of the destination
    # written or forgotten since: every file's bytes are still recorded there
    same = mark == plan.fingerprint and (count, gen) == db.dest_generation(dest_key)
    if same and (dest_root is None or (not fresh and _folders_unchanged(dest_root, saved_state))):
        plan.present = len(rows)  # same files, same destination: nothing to do
        plan.marked = True
        return plan
    if dest_root is not None:
        plan.dest_before = folder_mtimes(dest_root, folders)  # before the look, not after
        gone, altered = look_at_dest(db, dest_root, dest_key)
        plan.altered = sorted(display(key_path(k)) for k in altered)
        if gone or altered:
            db.forget_locations(dest_key, gone + altered)
        elif same:  # ``check``: each recorded file is there as written, and the mark holds
            plan.present = len(rows)
            plan.marked = True
            return plan
    known = db.local_files(root_key, dest_key)
    # each file looked up by (rel key, size, mtime_ns, inode, ctime_ns) in one dict built
    # at C speed: a miss is a new or changed file; names are their own keys when ASCII
    recorded = dict(zip(map(_FILE, known.values()), known.values(), strict=True))
    keyed = rows
    if not all(map(str.isascii, map(_REL, rows))):
        keyed = [(path_key(r[0]), *r[1:]) for r in rows]
    if rows and max(map(max, map(_NUMBERS, keyed))) > INT64_MAX:  # as state holds them
        keyed = [(k, size, int64(m), int64(i), int64(c)) for k, size, m, i, c in keyed]
    new = tuple.__new__
    adopted: list[tuple[str, int]] = []
    for row, key, k in zip(rows, keyed, map(recorded.get, keyed), strict=True):
        if k is None:
            k = known.get(key[0])
            # a row from before ctimes were kept: the same size, mtime and inode are trusted
            # as they were then, and the ctime is taken now (no re-hash after an upgrade)
            if k is None or k[4] is not None or k[1:4] != key[1:4]:
                plan.to_hash.append(new(ScanEntry, row))
                continue
            adopted.append((key[0], key[4]))
        if k[7]:
            plan.present += 1
        else:
            plan.to_send.append(
                (new(ScanEntry, row), KnownFile(k[1], k[2], k[3], k[5], k[6], key[4]))
            )
    if adopted:
        db.adopt_ctimes(root_key, adopted)
    # a file gone shows as a count that differs, or (renamed: as many files as before) as a
    # new path among the files to read
    if not include and not exclude and (len(keyed) != len(known) or plan.to_hash):
        seen = set(map(_REL, keyed))
        plan.vanished = [rel for rel in known if rel not in seen]
    if not plan.empty:
        plan.dest_items = db.items_at(dest_key)
        plan.dest_shas = db.shas_at(dest_key)  # with what a converting host serves
    return plan
