"""Typed queries. Reads take a ``sqlite3`` connection (planner, status) or the store;
writes are queued through :class:`~imgsync.state.db.StateStore` (the one writer)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from imgsync.models import RemoteItem
    from imgsync.state.store import StateStore


class KnownFile(NamedTuple):
    size: int
    mtime_ns: int
    inode: int
    sha256: str
    md5: str | None
    ctime_ns: int | None = None  # None: not known (recorded before schema 10)


# ---- reads (sync) ------------------------------------------------------------------


def local_files(conn: sqlite3.Connection, root: str, dest: str) -> dict[str, tuple[Any, ...]]:
    """What was hashed under ``root`` last time, and whether ``dest`` has those bytes (as
    sent, or as a host that converts uploads serves them).

    rel -> (rel, size, mtime_ns, inode, ctime_ns, sha256, md5, present_at_dest); ctime_ns
    is None for a row recorded before schema 10. Plain row tuples and one query with the
    lookup done inside SQLite: this runs on every re-run whose scan mark does not match.
    """
    cur = conn.execute(
        "SELECT lf.rel, lf.size, lf.mtime_ns, lf.inode, lf.ctime_ns, lf.sha256, lf.md5, EXISTS ("
        "SELECT 1 FROM locations l WHERE l.sha256 = lf.sha256 AND l.remote = ?) OR EXISTS ("
        "SELECT 1 FROM locations l WHERE l.stored_sha256 = lf.sha256 AND l.remote = ?) "
        "FROM local_files lf WHERE lf.root = ?",
        (dest, dest, root),
    )
    return {r[0]: r for r in cur}


def dest_generation(conn: sqlite3.Connection, remote: str) -> tuple[int, int]:
    """(count, generation) of ``remote``'s locations: the generation is a counter every
    write of them bumps (no clock: a clock set back cannot make two states look alike),
    the count is a second guard."""
    count = conn.execute("SELECT COUNT(*) FROM locations WHERE remote = ?", (remote,)).fetchone()
    gen = conn.execute("SELECT gen FROM generations WHERE remote = ?", (remote,)).fetchone()
    return int(count[0]), int(gen[0]) if gen else 0


def scan_mark(conn: sqlite3.Connection, root: str, dest: str) -> tuple[str, int, int, str]:
    """The saved (fingerprint, dest count, dest generation, dest folder state) of a
    complete run, or empty values."""
    row = conn.execute(
        "SELECT fingerprint, dest_count, dest_gen, dest_state FROM scan_marks "
        "WHERE root = ? AND dest = ?",
        (root, dest),
    ).fetchone()
    return (row[0], row[1], row[2], row[3]) if row else ("", -1, -1, "")


# every write of a destination's locations bumps its generation (see dest_generation)
_BUMP = (
    "INSERT INTO generations (remote, gen) VALUES (?, 1) "
    "ON CONFLICT (remote) DO UPDATE SET gen = generations.gen + 1"
)


def forget_locations_sync(conn: sqlite3.Connection, remote: str, remote_ids: list[str]) -> None:
    """Drop these locations of ``remote`` (files deleted there by hand, say)."""
    if remote_ids:
        with _transaction(conn):
            conn.executemany(
                "DELETE FROM locations WHERE remote = ? AND remote_id = ?",
                [(remote, rid) for rid in remote_ids],
            )
            conn.execute(_BUMP, (remote,))


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on an autocommit connection (the planner's)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def adopt_ctimes(conn: sqlite3.Connection, root: str, rows: list[tuple[str, int]]) -> None:
    """Record the ctime of files recorded before schema 10 ((rel key, ctime_ns)), whose
    size, mtime and inode still match: the planner takes them without re-hashing."""
    with _transaction(conn):
        conn.executemany(
            "UPDATE local_files SET ctime_ns = ? WHERE root = ? AND rel = ? AND ctime_ns IS NULL",
            [(int64(ns), root, rel) for rel, ns in rows],
        )


def refresh_stamps(
    conn: sqlite3.Connection, remote: str, rows: list[tuple[str, tuple[int, int, int]]]
) -> None:
    """New (mtime, ctime, inode) for files imgsync wrote at the folder ``remote`` whose
    bytes were read again and found unchanged (a chmod moved their ctime)."""
    with _transaction(conn):
        conn.executemany(
            "UPDATE locations SET file_mtime_ns = ?, file_ctime_ns = ?, file_inode = ? "
            "WHERE remote = ? AND remote_id = ?",
            [(int64(m), int64(c), int64(i), remote, rid) for rid, (m, c, i) in rows],
        )


def shas_at(conn: sqlite3.Connection, remote: str) -> set[str]:
    """Every checksum known to be stored at ``remote``: at a host that converts uploads, both
    the bytes sent there and the bytes it serves for them."""
    cur = conn.execute("SELECT sha256, stored_sha256 FROM locations WHERE remote = ?", (remote,))
    shas = set()
    for sent, stored in cur:
        shas.add(sent)
        if stored is not None:
            shas.add(stored)
    return shas


def stored_at(conn: sqlite3.Connection, remote: str) -> dict[str, str]:
    """remote id -> sha256 of the bytes served, for the items ``remote`` converted."""
    cur = conn.execute(
        "SELECT remote_id, stored_sha256 FROM locations "
        "WHERE remote = ? AND stored_sha256 IS NOT NULL",
        (remote,),
    )
    return {r[0]: r[1] for r in cur}


def items_at(conn: sqlite3.Connection, remote: str) -> dict[str, str]:
    """remote id -> sha256 of every known item of ``remote``."""
    cur = conn.execute("SELECT remote_id, sha256 FROM locations WHERE remote = ?", (remote,))
    return {r[0]: r[1] for r in cur}


def sidecars_at(conn: sqlite3.Connection, remote: str) -> dict[str, str]:
    """remote id -> the name its backup sidecar was written under, for the items of the
    folder ``remote`` that have one recorded."""
    cur = conn.execute(
        "SELECT remote_id, sidecar FROM locations WHERE remote = ? AND sidecar IS NOT NULL",
        (remote,),
    )
    return {r[0]: r[1] for r in cur}


async def record_sidecars(store: StateStore, remote: str, rows: Iterable[tuple[str, str]]) -> None:
    """(remote id, sidecar name) of sidecars written again beside files of ``remote``."""
    await store.write_many(
        "UPDATE locations SET sidecar = ? WHERE remote = ? AND remote_id = ?",
        [(name, remote, rid) for rid, name in rows],
    )


Stamp = tuple[int, int, int]  # (mtime_ns, ctime_ns, inode) of a file imgsync wrote


def stamps_at(
    conn: sqlite3.Connection, remote: str
) -> dict[str, tuple[int | None, Stamp | None, str]]:
    """remote id -> (size of the bytes recorded there or None, the (mtime, ctime, inode)
    of the file as imgsync wrote it or None (not written by imgsync, or before schema 10),
    sha256), for every item of the folder ``remote``."""
    cur = conn.execute(
        "SELECT l.remote_id, o.size, l.file_mtime_ns, l.file_ctime_ns, l.file_inode, l.sha256 "
        "FROM locations l LEFT JOIN objects o ON o.sha256 = l.sha256 WHERE l.remote = ?",
        (remote,),
    )
    return {r[0]: (r[1], (r[2], r[3], r[4]) if r[2] is not None else None, r[5]) for r in cur}


def cursor_of(conn: sqlite3.Connection, remote: str, scope: str) -> tuple[str | None, bool]:
    """The saved listing cursor of (remote, scope) and whether that listing finished."""
    row = conn.execute(
        "SELECT cursor, done FROM cursors WHERE remote = ? AND scope = ?", (remote, scope)
    ).fetchone()
    return (row[0], bool(row[1])) if row else (None, False)


def delete_candidates(
    conn: sqlite3.Connection, source: str, dest: str, src_root: str
) -> tuple[list[tuple[str, str, str | None, str | None]], set[str], set[str]]:
    """Locations at ``dest`` (remote id, sha256, delete url, url) whose bytes ``source``
    wrote there and no other source relies on, plus the folder ``src_root``'s current
    (rel keys, checksums)."""
    rows = conn.execute(
        "SELECT l.remote_id, l.sha256, l.delete_url, l.url FROM locations l "
        "JOIN owners o ON o.dest = l.remote AND o.sha256 = l.sha256 "
        "AND o.source = ? AND o.wrote = 1 "
        "WHERE l.remote = ? AND NOT EXISTS (SELECT 1 FROM owners x WHERE x.dest = l.remote "
        "AND x.sha256 = l.sha256 AND x.source != ?)",
        (source, dest, source),
    ).fetchall()
    rels, shas = set(), set()
    for rel, sha in conn.execute("SELECT rel, sha256 FROM local_files WHERE root = ?", (src_root,)):
        rels.add(rel)
        shas.add(sha)
    return [(r[0], r[1], r[2], r[3]) for r in rows], rels, shas


def url_map(conn: sqlite3.Connection, source: str, dest: str) -> list[tuple[str, str, str]]:
    """(old_url, new_url, sha256) for every source item already at ``dest``.

    Both the image file's URL and the host's page for it (Gyazo's permalink) are mapped:
    a file URL to the new file URL, a page to the new page (or the new file when the
    destination has no pages).
    """
    rows = conn.execute(
        "SELECT s.url, s.page_url, MIN(d.url), MIN(d.page_url), s.sha256 FROM locations s "
        "JOIN locations d ON d.sha256 = s.sha256 AND d.remote = ? "
        "WHERE s.remote = ? AND d.url IS NOT NULL GROUP BY s.remote_id",
        (dest, source),
    ).fetchall()
    out: dict[str, tuple[str, str, str]] = {}
    for old_file, old_page, new_file, new_page, sha in rows:
        if old_file:
            out.setdefault(old_file, (old_file, new_file, sha))
        if old_page:
            out.setdefault(old_page, (old_page, new_page or new_file, sha))
    return [out[k] for k in sorted(out)]


_KEYED = (
    ("locations", "remote"),
    ("claims", "dest"),
    ("journal", "source"),
    ("journal", "dest"),
    ("cursors", "remote"),
    ("scan_marks", "dest"),
    ("owners", "dest"),
    ("owners", "source"),
    ("checks", "remote"),
    ("verify_passes", "remote"),
    ("generations", "remote"),
)


def adopt_key(conn: sqlite3.Connection, old: str, new: str) -> bool:
    """Rename the key ``old`` to ``new`` everywhere, if ``new`` is unused (one transaction)."""
    if old == new:
        return False
    if conn.execute("SELECT 1 FROM locations WHERE remote = ? LIMIT 1", (new,)).fetchone():
        return False
    if not conn.execute(
        "SELECT 1 FROM locations WHERE remote = ? UNION ALL "
        "SELECT 1 FROM cursors WHERE remote = ? UNION ALL "
        "SELECT 1 FROM journal WHERE source = ? OR dest = ? LIMIT 1",
        (old, old, old, old),
    ).fetchone():
        return False
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column in _KEYED:
            conn.execute(
                f"UPDATE OR IGNORE {table} SET {column} = ? WHERE {column} = ?", (new, old)
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


def host_pauses(conn: sqlite3.Connection, now: float | None = None) -> dict[str, tuple[float, str]]:
    """Pauses still in force: authority -> (until, reason)."""
    now = time.time() if now is None else now
    cur = conn.execute("SELECT authority, until, reason FROM host_pauses WHERE until > ?", (now,))
    return {r[0]: (r[1], r[2]) for r in cur}


def host_usage(conn: sqlite3.Connection) -> dict[str, list[float]]:
    """Saved answer times per host authority (see ``LimiterRegistry.load_usage``)."""
    out: dict[str, list[float]] = {}
    for authority, times in conn.execute("SELECT authority, times FROM host_usage"):
        try:
            out[authority] = [float(t) for t in json.loads(times)]
        except (ValueError, TypeError):
            continue  # a damaged row only costs the carried-over budget
    return out


def save_host_usage(conn: sqlite3.Connection, usage: dict[str, list[float]]) -> None:
    """Replace the saved usage of every host in ``usage``."""
    conn.executemany(
        "INSERT INTO host_usage (authority, times) VALUES (?, ?) "
        "ON CONFLICT (authority) DO UPDATE SET times = excluded.times",
        [(a, json.dumps([round(t, 3) for t in times])) for a, times in usage.items()],
    )


def journal_overview(
    conn: Any, table: str
) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-job stage counts, the latest failures and possible duplicates of a journal.

    Shared by the SQLite state and the fleet's (``table`` is one of the two journals'
    names, never user input; ``conn`` is either database's connection).
    """
    jobs: dict[str, dict[str, int]] = {}
    for job, stage, n in conn.execute(
        f"SELECT job, stage, COUNT(*) FROM {table} GROUP BY job, stage ORDER BY 1, 2"
    ):
        jobs.setdefault(job, {})[stage] = int(n)
    failures = [
        {"job": r[0], "source": r[1], "item": r[2], "dest": r[3], "error": r[4], "attempts": r[5]}
        for r in conn.execute(
            f"SELECT job, source, source_id, dest, error, attempts FROM {table} "
            "WHERE stage = 'failed' ORDER BY updated DESC LIMIT 20"
        )
    ]
    duplicates = [
        {"job": r[0], "source": r[1], "item": r[2], "dest": r[3], "note": r[4]}
        for r in conn.execute(
            f"SELECT job, source, source_id, dest, error FROM {table} "
            "WHERE error LIKE '%possible duplicate:%' ORDER BY updated DESC LIMIT 20"
        )
    ]
    return jobs, failures, duplicates


def status(conn: sqlite3.Connection) -> dict[str, Any]:
    """What ``imgsync status`` prints: objects, per-remote and per-job counts, failures."""
    objects, total = conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM objects").fetchone()
    remotes = {
        r[0]: {"items": r[1]}
        for r in conn.execute("SELECT remote, COUNT(*) FROM locations GROUP BY remote ORDER BY 1")
    }
    jobs, failures, duplicates = journal_overview(conn, "journal")
    runs = [
        {
            "job": r[0],
            "verb": r[1],
            "started": r[2],
            "finished": r[3],
            "summary": json.loads(r[4]) if r[4] else None,
        }
        for r in conn.execute(
            "SELECT job, verb, started, finished, summary FROM runs ORDER BY id DESC LIMIT 5"
        )
    ]
    pauses = {a: {"until": u, "reason": why} for a, (u, why) in host_pauses(conn).items()}
    cursors = {
        f"{r[0]}/{r[1]}": {"cursor": r[2], "done": bool(r[3])}
        for r in conn.execute("SELECT remote, scope, cursor, done FROM cursors ORDER BY 1, 2")
    }
    return {
        "objects": objects,
        "bytes": total,
        "remotes": remotes,
        "jobs": jobs,
        "recent_failures": failures,
        "possible_duplicates": duplicates,
        "recent_runs": runs,
        "paused_hosts": pauses,
        "cursors": cursors,
    }


# ---- writes (through the writer) ---------------------------------------------------

_UPSERT_LOCAL = (
    "INSERT INTO local_files (root, rel, size, mtime_ns, inode, sha256, md5, ctime_ns) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (root, rel) DO UPDATE SET "
    "size = excluded.size, mtime_ns = excluded.mtime_ns, inode = excluded.inode, "
    "sha256 = excluded.sha256, md5 = excluded.md5, ctime_ns = excluded.ctime_ns"
)
_INSERT_OBJECT = (
    "INSERT OR IGNORE INTO objects (sha256, size, md5, mime, first_seen) VALUES (?, ?, ?, ?, ?)"
)
_UPSERT_LOCATION = (
    "INSERT INTO locations (remote, remote_id, sha256, url, delete_url, meta, updated, "
    "page_url, stored_md5) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (remote, remote_id) DO UPDATE SET "
    "sha256 = excluded.sha256, url = COALESCE(excluded.url, locations.url), "
    "delete_url = COALESCE(excluded.delete_url, locations.delete_url), "
    "meta = excluded.meta, updated = excluded.updated, "
    "page_url = COALESCE(excluded.page_url, locations.page_url), "
    "stored_md5 = COALESCE(excluded.stored_md5, locations.stored_md5), "
    "file_mtime_ns = NULL, file_ctime_ns = NULL, file_inode = NULL"
)
# a file imgsync wrote into a folder: its (mtime, ctime, inode) then, or NULL when it found
# the bytes there already (a file it did not write is compared by size only)
_UPSERT_WRITTEN = (
    "INSERT INTO locations (remote, remote_id, sha256, url, delete_url, meta, updated, "
    "page_url, stored_md5, file_mtime_ns, file_ctime_ns, file_inode, sidecar) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (remote, remote_id) DO UPDATE SET "
    "sha256 = excluded.sha256, url = COALESCE(excluded.url, locations.url), "
    "meta = excluded.meta, updated = excluded.updated, "
    "file_mtime_ns = excluded.file_mtime_ns, file_ctime_ns = excluded.file_ctime_ns, "
    "file_inode = excluded.file_inode, sidecar = COALESCE(excluded.sidecar, locations.sidecar)"
)
# A host that converts what it stores: a known location keeps the checksum of what was sent
# (what dedupe knows it by); other bytes read back from it are its stored checksum.
_UPSERT_CONVERTED_LOCATION = (
    "INSERT INTO locations (remote, remote_id, sha256, url, delete_url, meta, updated, "
    "page_url, stored_md5) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (remote, remote_id) DO UPDATE SET "
    "stored_sha256 = CASE WHEN excluded.sha256 = locations.sha256 "
    "THEN locations.stored_sha256 ELSE excluded.sha256 END, "
    "url = COALESCE(excluded.url, locations.url), "
    "delete_url = COALESCE(excluded.delete_url, locations.delete_url), "
    "meta = excluded.meta, updated = excluded.updated, "
    "page_url = COALESCE(excluded.page_url, locations.page_url), "
    "stored_md5 = COALESCE(excluded.stored_md5, locations.stored_md5)"
)
_UPSERT_JOURNAL = (
    "INSERT INTO journal (job, source, source_id, dest, sha256, stage, error, attempts, updated) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job, source, source_id, dest) DO UPDATE SET "
    "sha256 = COALESCE(excluded.sha256, journal.sha256), stage = excluded.stage, "
    "error = excluded.error, attempts = journal.attempts + excluded.attempts, "
    "updated = excluded.updated"
)


INT64_MAX = 2**63 - 1  # SQLite's INTEGER is 64-bit signed


def int64(n: int) -> int:
    """``n`` as SQLite can hold it: an mtime past the year 2262 (in nanoseconds) or an
    inode number past 2**63 becomes the largest INTEGER (the planner compares a scanned
    file the same way, so such a file is still recognised)."""
    return min(n, INT64_MAX)


async def record_local_files(
    store: StateStore, root: str, rows: Iterable[tuple[str, KnownFile]]
) -> None:
    out = [(root, rel, *kf) for rel, kf in rows]
    if out and max(map(max, map(_numbers, out))) > INT64_MAX:  # rare: one C-level pass
        out = [
            (r, rel, size, int64(m), int64(i), sha, md5, None if c is None else int64(c))
            for r, rel, size, m, i, sha, md5, c in out
        ]
    await store.write_many(_UPSERT_LOCAL, out)


def _numbers(row: tuple[Any, ...]) -> tuple[int, int, int]:
    return (row[3], row[4], row[7] or 0)


async def forget_local_files(store: StateStore, root: str, rels: Iterable[str]) -> None:
    await store.write_many(
        "DELETE FROM local_files WHERE root = ? AND rel = ?", [(root, r) for r in rels]
    )


async def record_objects(
    store: StateStore, rows: Iterable[tuple[str, int, str | None, str | None]]
) -> None:
    """(sha256, size, md5, mime) per object; existing rows are kept."""
    now = time.time()
    stamped = [(*r, now) for r in rows]
    await store.write_many(_INSERT_OBJECT, stamped)
    if store.fleet is not None:
        await store.fleet.queue("objects", stamped)


async def record_locations(
    store: StateStore,
    remote: str,
    rows: Iterable[tuple[str, RemoteItem]],
    *,
    converts: bool = False,
    later: bool = False,
    stamps: list[Stamp | None] | None = None,
    sidecars: list[str | None] | None = None,
) -> None:
    """(sha256, item) per location of ``remote`` (``item.md5``: what the host stored).

    ``stamps`` (a folder destination): per row, the (mtime, ctime, inode) of the file
    imgsync wrote, or None for bytes it found there already; ``sidecars`` (with ``stamps``):
    the name each one's backup sidecar was written under.

    ``later`` (fleet mode): the shared copy goes with the next lease release or finished
    page of this worker (see ``Fleet.record_locations``).

    ``converts``: ``remote`` stores other bytes than it is sent (``reencodes_uploads``), so
    a known location keeps its sha256 (the bytes imgsync sent, which dedupe knows) and
    different bytes read back from it are recorded as its ``stored_sha256``."""
    from imgsync.models import ItemMeta  # (not on a no-op re-run's path)

    no_meta = ItemMeta()
    now = time.time()
    rows = list(rows)
    values = [
        (
            remote,
            item.remote_id,
            sha,
            item.url,
            item.delete_url,
            json.dumps(item.meta.to_json()) if item.meta != no_meta else None,
            now,
            item.page_url,
            item.md5,
        )
        for sha, item in rows
    ]
    if stamps is not None:
        sides = sidecars if sidecars is not None else [None] * len(values)
        await store.write_many(
            _UPSERT_WRITTEN,
            [
                (*v, None, None, None, side) if s is None else (*v, *map(int64, s), side)
                for v, s, side in zip(values, stamps, sides, strict=True)
            ],
        )
    else:
        await store.write_many(_UPSERT_CONVERTED_LOCATION if converts else _UPSERT_LOCATION, values)
    if rows:
        await store.write(_BUMP, (remote,))
    if store.fleet is not None and not converts:
        # committed in the shared state before the caller releases its lease (no delete URL);
        # ``later``: sent with the lease's release or the page's end, in one transaction
        await store.fleet.record_locations(
            remote,
            [
                (
                    item.remote_id,
                    sha,
                    item.url,
                    item.page_url,
                    json.dumps(item.meta.to_json()) if item.meta != no_meta else None,
                    item.md5,
                )
                for sha, item in rows
            ],
            later=later,
        )


async def import_fleet_locations(store: StateStore, remote: str) -> int:
    """Bring what the other workers of the fleet recorded at ``remote`` into this worker's
    state (kept as they are where this worker knows them already); how many rows."""
    if store.fleet is None:
        return 0
    rows = await store.fleet.locations_at(remote)
    await store.flush()
    known = {
        r[0]
        for r in await store.fetchall("SELECT remote_id FROM locations WHERE remote = ?", (remote,))
    }
    new = [(remote, *r) for r in rows if r[0] not in known]
    await store.write_many(
        "INSERT OR IGNORE INTO locations (remote, remote_id, sha256, url, page_url, meta, "
        "stored_md5, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        new,
    )
    if new:  # only a change moves the generation: a run that imports nothing new keeps its mark
        await store.write(_BUMP, (remote,))
    await store.flush()
    return len(rows)


_UPSERT_OWNER = (
    "INSERT INTO owners (dest, sha256, source, wrote) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (dest, sha256, source) DO UPDATE SET wrote = MAX(owners.wrote, excluded.wrote)"
)


async def record_owners(
    store: StateStore, dest: str, source: str, shas: Iterable[str], *, wrote: bool
) -> None:
    """``source`` wrote (or relies on) these checksums at ``dest``."""
    rows = [(dest, sha, source, int(wrote)) for sha in shas]
    await store.write_many(_UPSERT_OWNER, rows)
    if store.fleet is not None:
        await store.fleet.queue("owners", rows)


async def forget_owners(store: StateStore, dest: str, source: str, shas: Iterable[str]) -> None:
    await store.write_many(
        "DELETE FROM owners WHERE dest = ? AND sha256 = ? AND source = ?",
        [(dest, sha, source) for sha in shas],
    )


async def forget_stale_reliance(store: StateStore, dest: str, source: str, root: str) -> None:
    """After a clean sync: the folder ``root`` no longer relies on bytes it dropped."""
    await store.write(
        "DELETE FROM owners WHERE dest = ? AND source = ? AND wrote = 0 AND sha256 NOT IN "
        "(SELECT sha256 FROM local_files WHERE root = ?)",
        (dest, source, root),
    )


async def forget_locations(store: StateStore, remote: str, remote_ids: Iterable[str]) -> None:
    remote_ids = list(remote_ids)
    await store.write_many(
        "DELETE FROM locations WHERE remote = ? AND remote_id = ?",
        [(remote, rid) for rid in remote_ids],
    )
    if remote_ids:
        await store.write(_BUMP, (remote,))
    if store.fleet is not None:
        await store.fleet.forget_locations(remote, remote_ids)


async def forget_location(store: StateStore, remote: str, remote_id: str) -> None:
    await forget_locations(store, remote, [remote_id])


async def journal(
    store: StateStore,
    job: str,
    source: str,
    source_id: str,
    dest: str,
    stage: str,
    *,
    sha256: str | None = None,
    error: str | None = None,
    attempt: bool = False,
) -> None:
    """Move one item of a job to ``stage`` (listed/fetched/uploaded/verified/failed/skipped)."""
    row = (job, source, source_id, dest, sha256, stage, error, 1 if attempt else 0, time.time())
    await store.write(_UPSERT_JOURNAL, row)
    if store.fleet is not None:
        await store.fleet.journal([row])


async def journal_many(
    store: StateStore,
    job: str,
    source: str,
    dest: str,
    stage: str,
    items: Iterable[tuple[str, str | None]],
) -> None:
    """Move many items ((source_id, sha256)) of a job to ``stage`` in one write."""
    now = time.time()
    rows = [(job, source, sid, dest, sha, stage, None, 0, now) for sid, sha in items]
    await store.write_many(_UPSERT_JOURNAL, rows)
    if store.fleet is not None:
        await store.fleet.journal(rows)


async def save_cursor(
    store: StateStore, remote: str, scope: str, cursor: str | None, *, done: bool = False
) -> None:
    now = time.time()
    await store.write(
        "INSERT INTO cursors (remote, scope, cursor, done, updated) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (remote, scope) DO UPDATE SET cursor = excluded.cursor, "
        "done = excluded.done, updated = excluded.updated",
        (remote, scope, cursor, int(done), now),
    )
    if store.fleet is not None:
        await store.fleet.queue("cursors", [(remote, scope, cursor, done, now)])


_SAVE_PAUSE = (
    "INSERT INTO host_pauses (authority, until, reason) VALUES (?, ?, ?) "
    "ON CONFLICT (authority) DO UPDATE SET until = excluded.until, reason = excluded.reason"
)


def save_pause_sync(conn: sqlite3.Connection, authority: str, until: float, reason: str) -> None:
    conn.execute(_SAVE_PAUSE, (authority, until, reason))


_SAVE_MARK = (
    "INSERT INTO scan_marks (root, dest, fingerprint, dest_count, dest_gen, dest_state) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (root, dest) DO UPDATE SET "
    "fingerprint = excluded.fingerprint, dest_count = excluded.dest_count, "
    "dest_gen = excluded.dest_gen, dest_latest = NULL, dest_state = excluded.dest_state"
)


async def save_scan_mark(
    store: StateStore, root: str, dest: str, fingerprint: str, dest_state: str
) -> None:
    """Remember that a run of ``root`` to ``dest`` with this scan left nothing undone."""
    await store.flush()
    row = await store.fetchone(
        "SELECT (SELECT COUNT(*) FROM locations WHERE remote = ?), "
        "(SELECT gen FROM generations WHERE remote = ?)",
        (dest, dest),
    )
    count, gen = (row[0], row[1] or 0) if row else (0, 0)
    await store.write(_SAVE_MARK, (root, dest, fingerprint, count, gen, dest_state))


def save_scan_mark_sync(
    conn: sqlite3.Connection, root: str, dest: str, fingerprint: str, dest_state: str
) -> None:
    """:func:`save_scan_mark` for the planner, which runs before any event loop."""
    count, gen = dest_generation(conn, dest)
    conn.execute(_SAVE_MARK, (root, dest, fingerprint, count, gen, dest_state))


async def start_run(store: StateStore, job: str, verb: str) -> int:
    await store.write(
        "INSERT INTO runs (job, verb, started) VALUES (?, ?, ?)", (job, verb, time.time())
    )
    await store.flush()
    row = await store.fetchone("SELECT MAX(id) FROM runs WHERE job = ?", (job,))
    run_id = int(row[0]) if row and row[0] is not None else 0
    if store.fleet is not None:
        await store.fleet.start_run(run_id, job, verb)
    return run_id


async def finish_run(store: StateStore, run_id: int, summary: dict[str, Any]) -> None:
    text = json.dumps(summary)
    await store.write(
        "UPDATE runs SET finished = ?, summary = ? WHERE id = ?", (time.time(), text, run_id)
    )
    if store.fleet is not None:
        await store.fleet.finish_run(run_id, text)
