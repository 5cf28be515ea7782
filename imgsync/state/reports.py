"""Reads behind the pages imgsync writes: a backup folder's gallery and a migration report.

Plain reads on a ``sqlite3`` connection, returning typed rows; the pages themselves
(``imgsync.pages``) hold no SQL.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, NamedTuple


class Place(NamedTuple):
    """One recorded location of some bytes."""

    remote: str
    remote_id: str
    sha256: str
    url: str | None
    page_url: str | None
    meta: dict[str, Any]
    updated: float


class StoredItem(NamedTuple):
    """One item recorded at a destination, with its object's size and type."""

    remote_id: str
    sha256: str
    size: int | None
    mime: str | None
    meta: dict[str, Any]
    updated: float


class JournalRow(NamedTuple):
    source_id: str
    sha256: str | None
    stage: str
    error: str | None
    attempts: int
    updated: float


class RunRow(NamedTuple):
    job: str
    verb: str
    started: float
    finished: float | None
    summary: dict[str, Any]


def _meta(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}  # a damaged row costs its metadata on the page, nothing else
    return data if isinstance(data, dict) else {}


def items_at(conn: sqlite3.Connection, remote: str) -> list[StoredItem]:
    """Every item recorded at ``remote``, oldest record first (a stable order for appending)."""
    cur = conn.execute(
        "SELECT l.remote_id, l.sha256, o.size, o.mime, l.meta, l.updated FROM locations l "
        "LEFT JOIN objects o ON o.sha256 = l.sha256 WHERE l.remote = ? "
        "ORDER BY l.updated, l.remote_id",
        (remote,),
    )
    return [StoredItem(r[0], r[1], r[2], r[3], _meta(r[4]), r[5]) for r in cur]


def other_places(conn: sqlite3.Connection, remote: str) -> dict[str, list[Place]]:
    """sha256 -> the locations elsewhere (with a URL) of every checksum held at ``remote``:
    where a backed-up image came from."""
    cur = conn.execute(
        "SELECT o.sha256, o.remote, o.remote_id, o.url, o.page_url, o.meta, o.updated "
        "FROM locations o WHERE o.remote != ? AND o.url IS NOT NULL AND o.sha256 IN "
        "(SELECT sha256 FROM locations WHERE remote = ?) ORDER BY o.updated",
        (remote, remote),
    )
    out: dict[str, list[Place]] = {}
    for sha, *rest in cur:
        out.setdefault(sha, []).append(
            Place(rest[0], rest[1], sha, rest[2], rest[3], _meta(rest[4]), rest[5])
        )
    return out


def generation(conn: sqlite3.Connection, remote: str) -> tuple[Any, ...]:
    """Changes whenever what :func:`items_at` and :func:`other_places` return for
    ``remote`` may have changed: (count, latest update) of both."""
    here = conn.execute(
        "SELECT COUNT(*), MAX(updated) FROM locations WHERE remote = ?", (remote,)
    ).fetchone()
    there = conn.execute(
        "SELECT COUNT(*), MAX(o.updated) FROM locations o WHERE o.remote != ? AND "
        "o.url IS NOT NULL AND o.sha256 IN (SELECT sha256 FROM locations WHERE remote = ?)",
        (remote, remote),
    ).fetchone()
    return (here[0], here[1], there[0], there[1])


def places_of(conn: sqlite3.Connection, remote: str) -> dict[str, Place]:
    """remote id -> location, for every item recorded at ``remote``."""
    cur = conn.execute(
        "SELECT remote, remote_id, url, page_url, meta, updated, sha256 FROM locations "
        "WHERE remote = ?",
        (remote,),
    )
    return {r[1]: Place(r[0], r[1], r[6], r[2], r[3], _meta(r[4]), r[5]) for r in cur}


def by_checksum(conn: sqlite3.Connection, remote: str) -> dict[str, Place]:
    """sha256 -> one location at ``remote`` (the first recorded) for every checksum there."""
    cur = conn.execute(
        "SELECT sha256, remote, remote_id, url, page_url, meta, updated FROM locations "
        "WHERE remote = ? ORDER BY updated DESC",
        (remote,),
    )
    return {r[0]: Place(r[1], r[2], r[0], r[3], r[4], _meta(r[5]), r[6]) for r in cur}


def local_copies(conn: sqlite3.Connection, shas: set[str]) -> dict[str, tuple[str, str]]:
    """sha256 -> (folder remote key, path key) of a local copy of those bytes, if any."""
    out: dict[str, tuple[str, str]] = {}
    cur = conn.execute(
        "SELECT sha256, remote, remote_id FROM locations WHERE remote LIKE 'local:%' "
        "ORDER BY updated DESC"
    )
    for sha, remote, rid in cur:
        if sha in shas:
            out[sha] = (remote, rid)
    return out


def object_sizes(conn: sqlite3.Connection, shas: set[str]) -> dict[str, int]:
    """sha256 -> size in bytes, for the given checksums that state knows."""
    cur = conn.execute("SELECT sha256, size FROM objects")
    return {sha: size for sha, size in cur if sha in shas}


def journal_of(conn: sqlite3.Connection, job: str, source: str, dest: str) -> list[JournalRow]:
    """Every journal row of one job from ``source`` to ``dest``."""
    cur = conn.execute(
        "SELECT source_id, sha256, stage, error, attempts, updated FROM journal "
        "WHERE job = ? AND source = ? AND dest = ?",
        (job, source, dest),
    )
    return [JournalRow(*r) for r in cur]


def latest_run(
    conn: sqlite3.Connection,
    verbs: tuple[str, ...],
    source: str | None = None,
    dest: str | None = None,
) -> RunRow | None:
    """The most recent finished run of one of ``verbs`` (optionally from ``source`` to
    ``dest``, as its summary records them)."""
    marks = ",".join("?" * len(verbs))
    cur = conn.execute(
        f"SELECT job, verb, started, finished, summary FROM runs WHERE verb IN ({marks}) "
        "AND finished IS NOT NULL AND summary IS NOT NULL ORDER BY id DESC",
        verbs,
    )
    for job, verb, started, finished, text in cur:
        summary = _meta(text)
        # runs recorded since names are shown keep the keys under source_key/dest_key
        if source is not None and summary.get("source_key", summary.get("source")) != source:
            continue
        if dest is not None and summary.get("dest_key", summary.get("dest")) != dest:
            continue
        if summary.get("dry_run"):
            continue
        return RunRow(job, verb, started, finished, summary)
    return None
