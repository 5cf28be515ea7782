"""The shared (PostgreSQL) schema and its migrations, numbered like SQLite's.

``fleet_schema`` holds one row per applied version. Every worker migrates on connect,
under an advisory lock, so workers starting together migrate once; a database written
by a newer imgsync is refused (one line) rather than misread.

What the tables hold (the SQLite tables of the same meaning are in ``state/schema.py``):

* ``fleet_claims``: leases (destination, checksum, owner, expiry) taken before an upload,
  and when a holder first started sending (``sent``; kept when the lease is taken over).
* ``fleet_locations``: every place an image is, as in ``locations``, without the delete
  URL (a credential that stays on the worker that uploaded).
* ``fleet_rate_log``: the requests the fleet sent to each limited host (the shared ledger):
  admitted at ``stamp``, answered at ``answered`` (NULL while in flight), by ``owner``.
* ``fleet_pages``: listing pages claimed by the workers, page by page (see
  ``state/fleet/pages.py``).
* ``fleet_rounds``: the filters each round of a shared listing is read with (a worker
  with other filters is refused: pages are split by position).
* ``fleet_journal``: what was done per item of each job, by any worker (a stage reached by
  one worker is not taken back by another's later, lesser news: see ``JOURNAL_UPSERT``).
* ``fleet_pauses``: host pauses (a spent budget, a long Retry-After): one worker's pause
  stops every worker.
* ``fleet_workers``: each worker's database sessions (the backend pid whose advisory
  lock the session holds while it lives): a worker none of whose sessions lives is dead,
  on whatever machine it ran.
* ``fleet_cursors``, ``fleet_objects``, ``fleet_owners``, ``fleet_runs``: listing cursors,
  checksums with their sizes, who relies on what at a destination, and recent runs.
"""

from __future__ import annotations

from typing import Any

from imgsync.errors import StateError
from imgsync.state.schema import NewerSchema, steps

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE IF NOT EXISTS fleet_claims (
        dest    TEXT NOT NULL,
        sha256  TEXT NOT NULL,
        owner   TEXT NOT NULL,
        expires DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (dest, sha256)
    );
    CREATE TABLE IF NOT EXISTS fleet_locations (
        remote        TEXT NOT NULL,
        remote_id     TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        url           TEXT,
        page_url      TEXT,
        meta          TEXT,
        stored_md5    TEXT,
        updated       DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (remote, remote_id)
    );
    CREATE INDEX IF NOT EXISTS fleet_locations_by_sha ON fleet_locations (remote, sha256);
    """,
    2: """
    CREATE TABLE IF NOT EXISTS fleet_rate_log (
        authority TEXT NOT NULL,
        stamp     DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS fleet_rate_log_by_time ON fleet_rate_log (authority, stamp);
    """,
    3: """
    ALTER TABLE fleet_locations ADD COLUMN IF NOT EXISTS stored_sha256 TEXT;
    CREATE TABLE IF NOT EXISTS fleet_journal (
        job       TEXT NOT NULL,
        source    TEXT NOT NULL,
        source_id TEXT NOT NULL,
        dest      TEXT NOT NULL,
        sha256    TEXT,
        stage     TEXT NOT NULL,
        error     TEXT,
        attempts  INTEGER NOT NULL DEFAULT 0,
        updated   DOUBLE PRECISION NOT NULL,
        owner     TEXT,
        PRIMARY KEY (job, source, source_id, dest)
    );
    CREATE INDEX IF NOT EXISTS fleet_journal_by_stage ON fleet_journal (job, stage);
    CREATE TABLE IF NOT EXISTS fleet_pauses (
        authority TEXT PRIMARY KEY,
        until     DOUBLE PRECISION NOT NULL,
        reason    TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS fleet_cursors (
        remote  TEXT NOT NULL,
        scope   TEXT NOT NULL,
        cursor  TEXT,
        done    BOOLEAN NOT NULL DEFAULT FALSE,
        updated DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (remote, scope)
    );
    CREATE TABLE IF NOT EXISTS fleet_objects (
        sha256     TEXT PRIMARY KEY,
        size       BIGINT NOT NULL,
        md5        TEXT,
        mime       TEXT,
        first_seen DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE IF NOT EXISTS fleet_owners (
        dest   TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        source TEXT NOT NULL,
        wrote  INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (dest, sha256, source)
    );
    CREATE TABLE IF NOT EXISTS fleet_runs (
        id       BIGSERIAL PRIMARY KEY,
        owner    TEXT NOT NULL,
        job      TEXT NOT NULL,
        verb     TEXT NOT NULL,
        started  DOUBLE PRECISION NOT NULL,
        finished DOUBLE PRECISION,
        summary  TEXT
    );
    """,
    4: """
    CREATE TABLE IF NOT EXISTS fleet_pages (
        src     TEXT NOT NULL,
        dst     TEXT NOT NULL,
        round   INTEGER NOT NULL,
        seq     INTEGER NOT NULL,
        cursor  TEXT,
        owner   TEXT,
        expires DOUBLE PRECISION NOT NULL DEFAULT 0,
        state   TEXT NOT NULL DEFAULT 'open',
        last    BOOLEAN NOT NULL DEFAULT FALSE,
        takes   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (src, dst, round, seq)
    );
    CREATE INDEX IF NOT EXISTS fleet_claims_by_owner ON fleet_claims (owner);
    ALTER TABLE fleet_rate_log ADD COLUMN IF NOT EXISTS id BIGSERIAL;
    ALTER TABLE fleet_rate_log ADD COLUMN IF NOT EXISTS owner TEXT;
    ALTER TABLE fleet_rate_log ADD COLUMN IF NOT EXISTS answered DOUBLE PRECISION;
    UPDATE fleet_rate_log SET answered = stamp WHERE answered IS NULL;
    CREATE INDEX IF NOT EXISTS fleet_rate_log_pending ON fleet_rate_log (authority, owner, stamp)
        WHERE answered IS NULL;
    """,
    # when a holder of the lease first started sending the bytes (the database's clock;
    # NULL: never): whoever takes the lease over searches the destination back to then
    5: """
    ALTER TABLE fleet_claims ADD COLUMN IF NOT EXISTS sent DOUBLE PRECISION;
    """,
    # the filters (--include, --exclude, non-images) a round of a shared listing is read
    # with: its pages are split by position, so every worker of the round needs the same
    6: """
    CREATE TABLE IF NOT EXISTS fleet_rounds (
        src     TEXT NOT NULL,
        dst     TEXT NOT NULL,
        round   INTEGER NOT NULL,
        filters TEXT NOT NULL,
        PRIMARY KEY (src, dst, round)
    );
    """,
    # each worker's database sessions: a session holds an advisory lock on its backend
    # pid while it lives, so a worker whose every session ended is known dead on any
    # machine (``connection.dead_among``), not only once its leases expire
    7: """
    CREATE TABLE IF NOT EXISTS fleet_workers (
        owner   TEXT NOT NULL,
        session INTEGER NOT NULL,
        started DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (owner, session)
    );
    """,
}

SCHEMA_VERSION = max(MIGRATIONS)

_LOCK = "SELECT pg_advisory_xact_lock(727274)"
_TABLE = "CREATE TABLE IF NOT EXISTS fleet_schema (version INTEGER NOT NULL)"
_CURRENT = "SELECT MAX(version) FROM fleet_schema"
_DONE = "INSERT INTO fleet_schema (version) VALUES (%s)"

# A stage one worker reached is not taken back by another worker's lesser news about the
# same item (each worker lists the whole source: the one that found it already there
# says "listed" after the one that uploaded it said "uploaded").
_KEEP = (
    "(fleet_journal.stage IN ('uploaded', 'verified') "
    "AND excluded.stage NOT IN ('uploaded', 'verified')) OR "
    "(fleet_journal.stage = 'skipped' AND excluded.stage IN ('listed', 'fetched', 'failed'))"
)
JOURNAL_UPSERT = (
    "INSERT INTO fleet_journal (job, source, source_id, dest, sha256, stage, error, attempts, "
    "updated, owner) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (job, source, source_id, dest) DO UPDATE SET "
    "sha256 = COALESCE(excluded.sha256, fleet_journal.sha256), "
    f"stage = CASE WHEN {_KEEP} THEN fleet_journal.stage ELSE excluded.stage END, "
    f"error = CASE WHEN {_KEEP} THEN fleet_journal.error ELSE excluded.error END, "
    f"owner = CASE WHEN {_KEEP} THEN fleet_journal.owner ELSE excluded.owner END, "
    "attempts = fleet_journal.attempts + excluded.attempts, "
    "updated = GREATEST(fleet_journal.updated, excluded.updated)"
)
OBJECT_INSERT = (
    "INSERT INTO fleet_objects (sha256, size, md5, mime, first_seen) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING"
)
OWNER_UPSERT = (
    "INSERT INTO fleet_owners (dest, sha256, source, wrote) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (dest, sha256, source) DO UPDATE SET "
    "wrote = GREATEST(fleet_owners.wrote, excluded.wrote)"
)
CURSOR_UPSERT = (
    "INSERT INTO fleet_cursors (remote, scope, cursor, done, updated) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (remote, scope) DO UPDATE SET "
    "cursor = excluded.cursor, done = excluded.done, updated = excluded.updated"
)
PAUSE_UPSERT = (
    "INSERT INTO fleet_pauses (authority, until, reason) VALUES (%s, %s, %s) "
    "ON CONFLICT (authority) DO UPDATE SET "
    "reason = CASE WHEN excluded.until > fleet_pauses.until "
    "THEN excluded.reason ELSE fleet_pauses.reason END, "
    "until = GREATEST(fleet_pauses.until, excluded.until)"
)


def _steps(current: int, upto: int) -> list[tuple[str, tuple[int]]]:
    """The statements that bring the shared schema from ``current`` to ``upto``, each
    migration with the row that records it (the loop is the SQLite state's:
    :func:`imgsync.state.schema.steps`)."""
    try:
        steps(current, SCHEMA_VERSION)  # a newer schema is refused, not misread
    except NewerSchema:
        raise StateError(
            f"the shared state's schema is version {current}, newer than this imgsync "
            f"knows ({SCHEMA_VERSION}); upgrade imgsync on this machine"
        ) from None
    return [(MIGRATIONS[n], (n,)) for n in steps(min(current, upto), upto)]


def _version(row: Any) -> int:
    return int(row[0]) if row and row[0] is not None else 0


async def migrate(conn: Any, upto: int = SCHEMA_VERSION) -> None:
    """Bring the shared schema of the async connection ``conn`` to version ``upto``."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(_LOCK)
        await cur.execute(_TABLE)
        await cur.execute(_CURRENT)
        for script, done in _steps(_version(await cur.fetchone()), upto):
            await cur.execute(script)
            await cur.execute(_DONE, done)


def migrate_sync(conn: Any, upto: int = SCHEMA_VERSION) -> None:
    """:func:`migrate` on a synchronous connection (``imgsync state copy``)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_LOCK)
        cur.execute(_TABLE)
        cur.execute(_CURRENT)
        for script, done in _steps(_version(cur.fetchone()), upto):
            cur.execute(script)
            cur.execute(_DONE, done)


def version_sync(conn: Any) -> int:
    """The shared schema's version (0: no imgsync state there yet); changes nothing."""
    row = conn.execute("SELECT to_regclass('fleet_schema') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    current = _version(conn.execute(_CURRENT).fetchone())
    _steps(current, current)  # refuses a newer one
    return current
