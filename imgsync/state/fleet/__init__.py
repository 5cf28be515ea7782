"""Fleet mode: the state several workers share through PostgreSQL (``[state] url``).

What lives here is what makes "each image uploaded once" hold across machines: the
leases (destination, checksum, owner, expiry) and the destinations' locations. Each
worker keeps its own SQLite state for everything else (its scans, journal, cursors);
:class:`~imgsync.state.store.StateStore` sends its leases here and mirrors the locations
it records, and :meth:`Fleet.locations_at` brings the other workers' uploads back into
the worker's own state before it writes a map.

A lease is taken in one statement (``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` the
holder's lease expired, ``RETURNING`` what was taken), then re-checked against the
recorded locations in the same transaction: a location is committed before its lease is
released, so bytes another worker uploaded are never leased again. A worker that dies
keeps its leases until they expire (``LEASE_TTL``); another worker then takes them over.

No delete URL leaves the worker that uploaded: the shared records hold where an image
is, not the credential to delete it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Self

from imgsync.errors import StateError
from imgsync.state.db import owner_alive

if TYPE_CHECKING:
    import psycopg

LEASE_TTL = 15 * 60.0

SCHEMA_VERSION = 2

_MIGRATIONS: dict[int, str] = {
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
}

# The fleet's ledger counts a request from its admission (the database's clock, so the
# workers' clocks need not agree) for its window's period plus this share of it, for
# the time a request takes to reach the host.
LEDGER_SLACK = 0.05
LEDGER_KEEP = 300.0


def redact(url: str) -> str:
    """The URL without its password (it may appear in errors and logs)."""
    return re.sub(r"(://[^:/@?]*):[^@/?]*@", r"\1:***@", url)


def describe(url: str, exc: BaseException) -> StateError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StateError(f"shared state {redact(url)}: {text}")


def _driver() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StateError(
            "[state] url needs the PostgreSQL driver: pip install 'imgsync[postgres]'"
        ) from None
    # the driver's own warnings (a rollback failing on a dropped connection) would print
    # lines of their own; every failure reaches the user as one StateError instead
    quiet = logging.getLogger("psycopg")
    if quiet.propagate:
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
    return psycopg


class Fleet:
    """One async connection to the shared PostgreSQL state (one per worker run)."""

    def __init__(self, url: str, owner: str, *, ttl: float = LEASE_TTL) -> None:
        if not url.startswith(("postgresql://", "postgres://")):
            raise StateError(f"state URL {redact(url)} is not a postgresql:// URL")
        self.url = url
        self.owner = owner
        self.ttl = ttl
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Fleet({redact(self.url)!r}, owner={self.owner!r})"

    async def open(self) -> Self:
        psycopg = _driver()
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=False, connect_timeout=10
            )
            await migrate(self._conn)
        except psycopg.Error as exc:
            await self.close()
            raise describe(self.url, exc) from None
        except OSError as exc:
            await self.close()
            raise describe(self.url, exc) from None
        return self

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            psycopg = _driver()
            with contextlib.suppress(psycopg.Error, OSError):  # a broken one: nothing to lose
                await conn.close()

    async def _tx(self, work: Any) -> Any:
        """Run ``await work(cursor)`` in one transaction; database errors become StateError."""
        psycopg = _driver()
        if self._conn is None:
            raise StateError("shared state is not open")
        async with self._lock:
            try:
                async with self._conn.transaction(), self._conn.cursor() as cur:
                    return await work(cur)
            except psycopg.Error as exc:
                raise describe(self.url, exc) from None

    async def lease(self, dest: str, shas: Sequence[str]) -> tuple[set[str], set[str]]:
        """(leased to this worker, already recorded at ``dest``), atomically across workers."""
        shas = sorted(set(shas))  # one lock order for every worker: no deadlock
        now = time.time()

        async def work(cur: Any) -> tuple[set[str], set[str]]:
            await cur.execute(
                "INSERT INTO fleet_claims (dest, sha256, owner, expires) "
                "SELECT %s, s, %s, %s FROM unnest(%s::text[]) AS s "
                "ON CONFLICT (dest, sha256) DO UPDATE SET owner = excluded.owner, "
                "expires = excluded.expires "
                "WHERE fleet_claims.owner = excluded.owner OR fleet_claims.expires < %s "
                "RETURNING sha256",
                (dest, self.owner, now + self.ttl, shas, now),
            )
            mine = {r[0] for r in await cur.fetchall()}
            if len(mine) < len(shas):
                # a holder on this machine that died is known dead now, not at expiry
                await cur.execute(
                    "SELECT DISTINCT owner FROM fleet_claims WHERE dest = %s "
                    "AND sha256 = ANY(%s::text[]) AND owner <> %s",
                    (dest, [s for s in shas if s not in mine], self.owner),
                )
                dead = [r[0] for r in await cur.fetchall() if not owner_alive(r[0])]
                if dead:
                    await cur.execute(
                        "UPDATE fleet_claims SET owner = %s, expires = %s WHERE dest = %s "
                        "AND sha256 = ANY(%s::text[]) AND owner = ANY(%s::text[]) "
                        "RETURNING sha256",
                        (self.owner, now + self.ttl, dest, shas, dead),
                    )
                    mine.update(r[0] for r in await cur.fetchall())
            await cur.execute(
                "SELECT DISTINCT sha256 FROM fleet_locations "
                "WHERE remote = %s AND sha256 = ANY(%s::text[])",
                (dest, shas),
            )
            present = {r[0] for r in await cur.fetchall()}
            done = sorted(mine & present)
            if done:
                await cur.execute(
                    "DELETE FROM fleet_claims WHERE dest = %s AND owner = %s "
                    "AND sha256 = ANY(%s::text[])",
                    (dest, self.owner, done),
                )
            return mine - present, present

        result: tuple[set[str], set[str]] = await self._tx(work)
        return result

    async def admit(self, authority: str, windows: Sequence[tuple[int, float]]) -> float:
        """See :class:`FleetLedger`."""

        async def work(cur: Any) -> float:
            return await _admit(cur, authority, windows)

        wait: float = await self._tx(work)
        return wait

    async def present(self, dest: str, shas: Sequence[str]) -> set[str]:
        """Which of ``shas`` are recorded at ``dest`` by any worker."""

        async def work(cur: Any) -> set[str]:
            await cur.execute(
                "SELECT DISTINCT sha256 FROM fleet_locations "
                "WHERE remote = %s AND sha256 = ANY(%s::text[])",
                (dest, sorted(set(shas))),
            )
            return {r[0] for r in await cur.fetchall()}

        there: set[str] = await self._tx(work)
        return there

    async def release(self, dest: str, shas: Iterable[str]) -> None:
        shas = sorted(set(shas))
        if not shas:
            return

        async def work(cur: Any) -> None:
            await cur.execute(
                "DELETE FROM fleet_claims WHERE dest = %s AND owner = %s "
                "AND sha256 = ANY(%s::text[])",
                (dest, self.owner, shas),
            )

        await self._tx(work)

    async def record_locations(self, remote: str, rows: Sequence[Sequence[Any]]) -> None:
        """Mirror location rows (remote_id, sha256, url, page_url, meta, stored_md5)."""
        if not rows:
            return
        now = time.time()

        async def work(cur: Any) -> None:
            await cur.executemany(
                "INSERT INTO fleet_locations (remote, remote_id, sha256, url, page_url, meta, "
                "stored_md5, updated) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (remote, remote_id) DO UPDATE SET sha256 = excluded.sha256, "
                "url = COALESCE(excluded.url, fleet_locations.url), "
                "page_url = COALESCE(excluded.page_url, fleet_locations.page_url), "
                "meta = excluded.meta, stored_md5 = excluded.stored_md5, "
                "updated = excluded.updated",
                [(remote, *r, now) for r in rows],
            )

        await self._tx(work)

    async def forget_locations(self, remote: str, remote_ids: Sequence[str]) -> None:
        if not remote_ids:
            return

        async def work(cur: Any) -> None:
            await cur.execute(
                "DELETE FROM fleet_locations WHERE remote = %s AND remote_id = ANY(%s::text[])",
                (remote, list(remote_ids)),
            )

        await self._tx(work)

    async def locations_at(self, remote: str) -> list[tuple[Any, ...]]:
        """(remote_id, sha256, url, page_url, meta, stored_md5, updated) of every location."""

        async def work(cur: Any) -> list[tuple[Any, ...]]:
            await cur.execute(
                "SELECT remote_id, sha256, url, page_url, meta, stored_md5, updated "
                "FROM fleet_locations WHERE remote = %s",
                (remote,),
            )
            return [tuple(r) for r in await cur.fetchall()]

        rows: list[tuple[Any, ...]] = await self._tx(work)
        return rows

    async def held_by_others(self, dest: str) -> int:
        """How many live leases other workers hold on ``dest`` (work still in flight)."""

        async def work(cur: Any) -> int:
            await cur.execute(
                "SELECT owner, COUNT(*) FROM fleet_claims WHERE dest = %s AND owner <> %s "
                "AND expires >= %s GROUP BY owner",
                (dest, self.owner, time.time()),
            )
            return sum(int(n) for owner, n in await cur.fetchall() if owner_alive(owner))

        n: int = await self._tx(work)
        return n

    async def settle(self, dest: str, *, within: float, poll: float = 0.2) -> bool:
        """Wait (up to ``within`` seconds) until no other worker holds a live lease on ``dest``;
        False when some are still held (the map may then miss what they upload)."""
        deadline = time.monotonic() + within
        while await self.held_by_others(dest):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll)
        return True


class FleetLedger:
    """The rate ledger every worker's limiter asks before a request to a limited host
    (``HostLimiter``'s ``gate``): one sliding log per host in PostgreSQL, so N workers
    together stay inside each ``[limits]`` window. Its own connection, opened on first use.
    """

    def __init__(self, url: str, owner: str) -> None:
        self.url = url
        self.owner = owner
        self._fleet: Fleet | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"FleetLedger({redact(self.url)!r})"

    async def __call__(self, authority: str, windows: Sequence[tuple[int, float]]) -> float:
        """Admit one request to ``authority`` under ``windows`` ((count, period) each): 0.0
        when admitted (and logged), else the seconds to wait before asking again."""
        loop = asyncio.get_running_loop()
        if self._fleet is None or self._loop is not loop:  # a connection per event loop
            self._fleet = await Fleet(self.url, self.owner).open()
            self._loop = loop
        return await self._fleet.admit(authority, windows)

    async def close(self) -> None:
        if self._fleet is not None and self._loop is asyncio.get_running_loop():
            await self._fleet.close()
        self._fleet = None


async def _admit(cur: Any, authority: str, windows: Sequence[tuple[int, float]]) -> float:
    await cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("imgsync-rate:" + authority,))
    await cur.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8")
    row = await cur.fetchone()
    now = float(row[0])
    # kept a while past the longest window (the log shows what the fleet sent recently)
    keep = max(max(period for _n, period in windows) * (1 + LEDGER_SLACK), LEDGER_KEEP)
    await cur.execute(
        "DELETE FROM fleet_rate_log WHERE authority = %s AND stamp < %s",
        (authority, now - keep),
    )
    wait = 0.0
    for count, period in windows:
        span = period * (1 + LEDGER_SLACK)
        await cur.execute(
            "SELECT stamp FROM fleet_rate_log WHERE authority = %s AND stamp > %s "
            "ORDER BY stamp DESC OFFSET %s LIMIT 1",
            (authority, now - span, max(0, count - 1)),
        )
        full = await cur.fetchone()
        if full is not None:  # ``count`` requests already in this window
            wait = max(wait, float(full[0]) + span - now)
    if wait <= 0:
        await cur.execute(
            "INSERT INTO fleet_rate_log (authority, stamp) VALUES (%s, %s)", (authority, now)
        )
        return 0.0
    return max(wait, 0.001)


def fleet_status(url: str) -> dict[str, Any]:
    """What the shared state holds, for ``imgsync status``: locations per destination,
    live leases and the workers holding them, requests per host in the last minute."""
    psycopg = _driver()
    now = time.time()
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            exists = conn.execute("SELECT to_regclass('fleet_schema') IS NOT NULL").fetchone()
            if not exists or not exists[0]:
                return {"url": redact(url), "remotes": {}, "leases": 0, "workers": 0, "hosts": {}}
            remotes = {
                r: {"items": int(n)}
                for r, n in conn.execute(
                    "SELECT remote, COUNT(*) FROM fleet_locations GROUP BY remote ORDER BY remote"
                )
            }
            row = conn.execute(
                "SELECT COUNT(*), COUNT(DISTINCT owner) FROM fleet_claims WHERE expires >= %s",
                (now,),
            ).fetchone()
            hosts = {
                a: int(n)
                for a, n in conn.execute(
                    "SELECT authority, COUNT(*) FROM fleet_rate_log WHERE stamp > "
                    "EXTRACT(EPOCH FROM clock_timestamp()) - 60 GROUP BY authority"
                )
            }
    except psycopg.Error as exc:
        raise describe(url, exc) from None
    return {
        "url": redact(url),
        "remotes": remotes,
        "leases": int(row[0]) if row else 0,
        "workers": int(row[1]) if row else 0,
        "hosts": hosts,
    }


async def migrate(conn: psycopg.AsyncConnection[Any]) -> None:
    """Bring the shared schema to ``SCHEMA_VERSION`` (serialised by an advisory lock, so
    workers starting together migrate once)."""
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute("SELECT pg_advisory_xact_lock(727274)")
        await cur.execute("CREATE TABLE IF NOT EXISTS fleet_schema (version INTEGER NOT NULL)")
        await cur.execute("SELECT MAX(version) FROM fleet_schema")
        row = await cur.fetchone()
        current = int(row[0]) if row and row[0] is not None else 0
        if current > SCHEMA_VERSION:
            raise StateError(
                f"the shared state's schema is version {current}, newer than this imgsync "
                f"knows ({SCHEMA_VERSION}); upgrade imgsync on this machine"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            await cur.execute(_MIGRATIONS[version])
            await cur.execute("INSERT INTO fleet_schema (version) VALUES (%s)", (version,))
