"""What ``imgsync verify`` reads and writes: link-rot verdicts per recorded location, the
pass each remote is in, and what repaired a dead location.

Sync reads take a ``sqlite3`` connection (``status``); async reads take the store; every
write is queued through :class:`~imgsync.state.store.StateStore` (the one writer).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from imgsync.state.store import StateStore

STATUSES = ("alive", "gone", "altered", "unreachable")
BROKEN = ("gone", "altered")


class Target(NamedTuple):
    """A recorded location to check."""

    remote_id: str
    sha256: str
    url: str | None
    page_url: str | None
    size: int | None
    md5: str | None
    checked_at: float | None
    baseline: str | None  # the bytes' SHA-256 last seen alive, when not ``sha256``


class Verdict(NamedTuple):
    """One check's result for the location ``remote_id``."""

    remote_id: str
    sha256: str
    url: str | None
    page_url: str | None
    status: str  # one of STATUSES
    detail: str
    seen_sha256: str | None = None
    # unreachable because the host gave no answer at all (a timeout, a 5xx, a reset, a
    # paused or failing host): no evidence about the image either way (not stored)
    transient: bool = False


class Broken(NamedTuple):
    """A location found gone or altered and not repaired yet."""

    remote: str
    remote_id: str
    sha256: str
    url: str | None
    page_url: str | None
    status: str
    detail: str


class Copy(NamedTuple):
    """Another recorded location of some bytes."""

    remote: str
    remote_id: str
    url: str | None
    page_url: str | None


# ---- async reads (the verify run) ----------------------------------------------------

_TARGETS = (
    "SELECT l.remote_id, l.sha256, l.url, l.page_url, "
    # a converted copy (the host stored other bytes and said which): its size is unknown
    "CASE WHEN l.stored_md5 IS NOT NULL AND l.stored_md5 != COALESCE(o.md5, '') THEN NULL "
    "ELSE o.size END, COALESCE(l.stored_md5, o.md5), "
    "c.checked_at, "
    "CASE WHEN c.status = 'alive' THEN c.seen_sha256 END "
    "FROM locations l LEFT JOIN objects o ON o.sha256 = l.sha256 "
    "LEFT JOIN checks c ON c.remote = l.remote AND c.remote_id = l.remote_id "
    "WHERE l.remote = ?"
)


async def targets(
    store: StateStore, remote: str, *, before: float | None = None, limit: int | None = None
) -> list[Target]:
    """The locations of ``remote`` to check, least recently checked first: those not
    checked since ``before`` (all when None), at most ``limit``."""
    sql = _TARGETS
    params: list[Any] = [remote]
    if before is not None:
        sql += " AND (c.checked_at IS NULL OR c.checked_at < ?)"
        params.append(before)
    sql += " ORDER BY COALESCE(c.checked_at, 0), l.remote_id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [Target(*row) for row in await store.fetchall(sql, params)]


async def target_at(store: StateStore, remote: str, remote_id: str) -> Target | None:
    """The recorded location ``remote_id`` of ``remote`` as a check target, or None."""
    row = await store.fetchone(_TARGETS + " AND l.remote_id = ?", (remote, remote_id))
    return None if row is None else Target(*row)


async def current_pass(store: StateStore, remote: str) -> tuple[float, float | None] | None:
    """(started, finished) of ``remote``'s latest full pass, or None."""
    row = await store.fetchone(
        "SELECT started, finished FROM verify_passes WHERE remote = ?", (remote,)
    )
    return None if row is None else (float(row[0]), row[1])


async def broken(store: StateStore, remote: str) -> list[Broken]:
    """Locations of ``remote`` found gone or altered and not repaired yet."""
    rows = await store.fetchall(
        "SELECT remote, remote_id, sha256, url, page_url, status, detail FROM checks "
        "WHERE remote = ? AND status IN ('gone', 'altered') AND repaired_at IS NULL "
        "ORDER BY remote_id",
        (remote,),
    )
    return [Broken(*r) for r in rows]


class Repaired(NamedTuple):
    """A dead location and what replaced it."""

    remote: str
    remote_id: str
    sha256: str
    url: str | None
    page_url: str | None
    repaired_url: str | None
    repaired_page: str | None


async def repaired(store: StateStore, remote: str) -> list[Repaired]:
    """Every dead location of ``remote`` that a repair replaced, oldest repair first."""
    rows = await store.fetchall(
        "SELECT remote, remote_id, sha256, url, page_url, repaired_url, repaired_page "
        "FROM checks WHERE remote = ? AND repaired_at IS NOT NULL ORDER BY repaired_at",
        (remote,),
    )
    return [Repaired(*r) for r in rows]


async def copies(store: StateStore, sha256: str) -> list[Copy]:
    """Every recorded location of these bytes that no check found broken."""
    rows = await store.fetchall(
        "SELECT l.remote, l.remote_id, l.url, l.page_url FROM locations l "
        "LEFT JOIN checks c ON c.remote = l.remote AND c.remote_id = l.remote_id "
        "WHERE l.sha256 = ? AND (c.status IS NULL OR c.status NOT IN ('gone', 'altered')) "
        "ORDER BY l.remote, l.remote_id",
        (sha256,),
    )
    return [Copy(*r) for r in rows]


async def checked_since(store: StateStore, remote: str, since: float) -> list[Verdict]:
    """The verdicts on ``remote`` made since ``since`` and not repaired (a resumed pass)."""
    rows = await store.fetchall(
        "SELECT remote_id, sha256, url, page_url, status, detail, seen_sha256 FROM checks "
        "WHERE remote = ? AND checked_at >= ? AND repaired_at IS NULL",
        (remote, since),
    )
    return [Verdict(*r) for r in rows]


async def url_at(
    store: StateStore, remote: str, sha256: str
) -> tuple[str | None, str | None] | None:
    """(url, page url) of a recorded location of ``sha256`` at ``remote``."""
    row = await store.fetchone(
        "SELECT url, page_url FROM locations WHERE remote = ? AND sha256 = ? "
        "ORDER BY url IS NULL, remote_id LIMIT 1",
        (remote, sha256),
    )
    return None if row is None else (row[0], row[1])


async def control_url(store: StateStore, remote: str, remote_id: str) -> str | None:
    """The URL of another location of ``remote`` (not ``remote_id``) last checked alive,
    the most recently checked first: what a refresh route is asked about beside an image
    to prove it answers (see ``Provider.refresh_url``)."""
    row = await store.fetchone(
        "SELECT l.url FROM locations l JOIN checks c "
        "ON c.remote = l.remote AND c.remote_id = l.remote_id "
        "WHERE l.remote = ? AND l.remote_id != ? AND c.status = 'alive' "
        "AND c.repaired_at IS NULL AND l.url IS NOT NULL "
        "ORDER BY c.checked_at DESC, l.remote_id LIMIT 1",
        (remote, remote_id),
    )
    return None if row is None else str(row[0])


async def remotes_with_locations(store: StateStore) -> list[str]:
    return [r[0] for r in await store.fetchall("SELECT DISTINCT remote FROM locations ORDER BY 1")]


async def local_paths(store: StateStore, sha256: str) -> list[tuple[str, str]]:
    """(folder root, rel key) of every scanned local file with these bytes."""
    rows = await store.fetchall(
        "SELECT root, rel FROM local_files WHERE sha256 = ? ORDER BY root, rel", (sha256,)
    )
    return [(r[0], r[1]) for r in rows]


# ---- sync reads (status) -------------------------------------------------------------


def summary(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """remote -> {"alive": n, "gone": n, "altered": n, "unreachable": n, "repaired": n,
    "last_check": unix time} for every remote with a check."""
    out: dict[str, dict[str, Any]] = {}
    for remote, status, repaired, n, last in conn.execute(
        "SELECT remote, status, repaired_at IS NOT NULL, COUNT(*), MAX(checked_at) FROM checks "
        "GROUP BY 1, 2, 3 ORDER BY 1"
    ):
        entry = out.setdefault(
            remote, dict.fromkeys((*STATUSES, "repaired"), 0) | {"last_check": 0}
        )
        entry["repaired" if repaired else status] += n
        entry["last_check"] = max(entry["last_check"], last)
    return out


# ---- writes (through the writer) ------------------------------------------------------

_UPSERT_CHECK = (
    "INSERT INTO checks (remote, remote_id, sha256, url, page_url, status, detail, seen_sha256, "
    "checked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (remote, remote_id) DO UPDATE SET "
    "sha256 = excluded.sha256, url = excluded.url, page_url = excluded.page_url, "
    "status = excluded.status, detail = excluded.detail, "
    "seen_sha256 = COALESCE(excluded.seen_sha256, checks.seen_sha256), "
    "checked_at = excluded.checked_at, repaired_url = NULL, repaired_page = NULL, "
    "repaired_at = NULL"
)


async def record(store: StateStore, remote: str, verdicts: Iterable[Verdict]) -> None:
    now = time.time()
    await store.write_many(
        _UPSERT_CHECK,
        [
            (
                remote,
                v.remote_id,
                v.sha256,
                v.url,
                v.page_url,
                v.status,
                v.detail,
                v.seen_sha256,
                now,
            )
            for v in verdicts
        ],
    )


async def set_url(store: StateStore, remote: str, remote_id: str, url: str) -> None:
    """A location's URL changed where it is (a signed URL the host renewed)."""
    await store.write(
        "UPDATE locations SET url = ? WHERE remote = ? AND remote_id = ?", (url, remote, remote_id)
    )


async def start_pass(store: StateStore, remote: str, started: float) -> None:
    await store.write(
        "INSERT INTO verify_passes (remote, started, finished) VALUES (?, ?, NULL) "
        "ON CONFLICT (remote) DO UPDATE SET started = excluded.started, finished = NULL",
        (remote, started),
    )


async def finish_pass(store: StateStore, remote: str) -> None:
    await store.write(
        "UPDATE verify_passes SET finished = ? WHERE remote = ?", (time.time(), remote)
    )


async def mark_repaired(
    store: StateStore, remote: str, remote_id: str, url: str | None, page_url: str | None
) -> None:
    """The broken location was replaced by ``url`` (its page ``page_url``)."""
    await store.write(
        "UPDATE checks SET repaired_url = ?, repaired_page = ?, repaired_at = ? "
        "WHERE remote = ? AND remote_id = ?",
        (url, page_url, time.time(), remote, remote_id),
    )


class SavedLocations(NamedTuple):
    """Location rows as they were (every column), to be put back."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]


async def save_locations(store: StateStore, places: Iterable[tuple[str, str]]) -> SavedLocations:
    """The whole rows (delete link and metadata included) of the ``(remote, remote_id)``
    locations, before a repair forgets them (see :func:`restore_locations`)."""
    columns = tuple(r[1] for r in await store.fetchall("PRAGMA table_info(locations)"))
    rows: list[tuple[Any, ...]] = []
    for remote, remote_id in places:
        rows += await store.fetchall(
            "SELECT * FROM locations WHERE remote = ? AND remote_id = ?", (remote, remote_id)
        )
    return SavedLocations(columns, rows)


async def restore_locations(store: StateStore, saved: SavedLocations) -> None:
    """Put back rows :func:`save_locations` read (a repair that failed after forgetting
    them), unless that place was recorded anew meanwhile."""
    if not saved.rows:
        return
    cols = ", ".join(saved.columns)
    marks = ", ".join("?" for _ in saved.columns)
    await store.write_many(f"INSERT OR IGNORE INTO locations ({cols}) VALUES ({marks})", saved.rows)
