"""The planning step of a run from a local folder: scan, compare with state, decide.

Synchronous on purpose: it is one pass of ``scandir`` plus three SQLite reads, and a run
whose plan is empty (the common no-op re-run) finishes without starting an event loop or
importing the HTTP stack.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from imgsync.providers.local import ScanEntry, ScanProblem, path_key, scan_tree
from imgsync.state import queries
from imgsync.state.queries import KnownFile


@dataclass
class LocalPlan:
    """What a run from ``root`` has to do for one destination."""

    root: Path
    scanned: int = 0
    present: int = 0  # unchanged files whose bytes the destination already has
    to_hash: list[ScanEntry] = field(default_factory=list)  # new or changed files
    to_send: list[tuple[ScanEntry, KnownFile]] = field(default_factory=list)  # hashed, missing
    problems: list[ScanProblem] = field(default_factory=list)
    non_images: int = 0
    vanished: list[str] = field(default_factory=list)  # known rels no longer on disk
    dest_shas: set[str] = field(default_factory=set)
    dest_items: dict[str, str] = field(default_factory=dict)  # dest remote id -> sha256
    fingerprint: str = ""

    @property
    def empty(self) -> bool:
        return not self.to_hash and not self.to_send and not self.vanished


def fingerprint(
    entries: list[ScanEntry], include: tuple[str, ...], exclude: tuple[str, ...]
) -> str:
    """A digest of every scanned path, size, mtime and inode (and the filters)."""
    h = hashlib.sha256(repr((include, exclude)).encode())
    h.update(
        "\n".join([f"{e.rel}|{e.size}|{e.mtime_ns}|{e.inode}" for e in entries]).encode(
            "utf-8", "surrogateescape"
        )
    )
    return h.hexdigest()


def plan_local(
    conn: sqlite3.Connection | None,
    root: Path,
    dest_key: str,
    include: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
) -> LocalPlan:
    """Scan ``root`` and sort its files by what a copy to ``dest_key`` must do with them.

    Raises ``LocalIOError`` when ``root`` is missing or unreadable.
    """
    entries, problems, non_images = scan_tree(root, include, exclude)
    plan = LocalPlan(root=root, scanned=len(entries), problems=problems, non_images=non_images)
    plan.fingerprint = fingerprint(entries, include, exclude)
    if conn is None:
        plan.to_hash = entries
        return plan
    root_key = str(root)
    mark, count, latest = queries.scan_mark(conn, root_key, dest_key)
    if mark == plan.fingerprint and (count, latest) == queries.dest_generation(conn, dest_key):
        plan.present = len(entries)  # same files, same destination: nothing to do
        return plan
    known = queries.local_files(conn, root_key, dest_key)
    seen: set[str] = set()
    for e in entries:
        key = path_key(e.rel)
        seen.add(key)
        k = known.get(key)
        if k is None or k[1] != e.size or k[2] != e.mtime_ns or k[3] != e.inode:
            plan.to_hash.append(e)
        elif k[6]:
            plan.present += 1
        else:
            plan.to_send.append((e, KnownFile(*k[1:6])))
    if not include and not exclude and len(seen) != len(known):
        plan.vanished = [rel for rel in known if rel not in seen]
    if not plan.empty:
        plan.dest_items = queries.items_at(conn, dest_key)
        plan.dest_shas = set(plan.dest_items.values())
    return plan
