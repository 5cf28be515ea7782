"""One worker's connection to the shared state: connect and migrate, the database's
clock, the background renewal of this worker's leases, and one transaction at a time
(:meth:`Connection.tx`, which the rest of the package builds on)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Self

from imgsync.errors import StateError
from imgsync.state.db import owner_alive
from imgsync.state.fleet import schema
from imgsync.state.fleet.common import describe, driver, is_url, redact

if TYPE_CHECKING:
    import psycopg

LEASE_TTL = 30.0  # seconds a lease outlives its worker's last renewal
# the advisory lock class a worker's session holds (with its backend pid) while it lives
WORKER_LOCK = 727275
_SESSION_LIVE = (
    "SELECT w.owner FROM fleet_workers w LEFT JOIN pg_locks l ON l.locktype = 'advisory' "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid = %s::oid AND l.objid = w.session::oid AND l.objsubid = 2 AND l.granted "
    "WHERE w.owner = ANY(%s::text[]) GROUP BY w.owner HAVING COUNT(l.pid) = 0"
)


async def dead_among(cur: Any, owners: Iterable[str]) -> list[str]:
    """Which of ``owners`` (other workers) are known dead: on this machine, its pid is
    gone; on any machine, every database session it registered has ended (PostgreSQL ends
    a killed worker's session when its connection drops). A worker of an older imgsync
    registers no session: its leases' expiry alone tells."""
    names = sorted(set(owners))
    dead = {o for o in names if not owner_alive(o)}
    rest = [o for o in names if o not in dead]
    if rest:
        await cur.execute(_SESSION_LIVE, (WORKER_LOCK, rest))
        dead.update(r[0] for r in await cur.fetchall())
    return sorted(dead)


class Connection:
    """One async connection to the shared PostgreSQL state (one per worker run)."""

    def __init__(
        self,
        url: str,
        owner: str,
        *,
        ttl: float = LEASE_TTL,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if not is_url(url):
            raise StateError(f"state URL {redact(url)} is not a postgresql:// URL")
        self.url = url
        self.owner = owner
        self.ttl = ttl
        self._clock = clock  # None: this machine's clock, set to the database's
        self._offset = 0.0
        self._sleep = sleep
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._renewer: asyncio.Task[None] | None = None
        self._session: int | None = None  # the backend pid registered in fleet_workers

    def now(self) -> float:
        """The fleet's time (unix seconds on the database's clock) that leases expire by."""
        return self._clock() if self._clock is not None else time.time() + self._offset

    def __repr__(self) -> str:
        return f"Fleet({redact(self.url)!r}, owner={self.owner!r})"

    async def open(self, *, renew: bool = False) -> Self:
        """Connect and migrate; ``renew``: keep this worker's leases alive in the background
        (every third of the TTL) until :meth:`close`."""
        psycopg = driver()
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=False, connect_timeout=10
            )
            await schema.migrate(self._conn)
            if self._clock is None:
                self._offset = await self._measure_offset()
            await self._register()
        except psycopg.Error as exc:
            await self.close()
            raise describe(self.url, exc) from None
        except OSError as exc:
            await self.close()
            raise describe(self.url, exc) from None
        if renew:
            self._renewer = asyncio.create_task(self._renew_loop(), name="imgsync-fleet-renew")
        return self

    async def _register(self) -> None:
        """Say this worker lives while this session does: an advisory lock on the session's
        backend pid (unique among live sessions), recorded in ``fleet_workers``; rows of
        sessions gone for an hour are swept."""
        assert self._conn is not None
        now = self.now()
        async with self._conn.transaction(), self._conn.cursor() as cur:
            await cur.execute(
                "SELECT pg_backend_pid(), pg_try_advisory_lock(%s, pg_backend_pid())",
                (WORKER_LOCK,),
            )
            row = await cur.fetchone()
            assert row is not None
            if row[1]:  # (another session on the same pid cannot hold it: pids are unique)
                self._session = int(row[0])
                await cur.execute(
                    "INSERT INTO fleet_workers (owner, session, started) VALUES (%s, %s, %s) "
                    "ON CONFLICT (owner, session) DO UPDATE SET started = excluded.started",
                    (self.owner, self._session, now),
                )
            await cur.execute(
                "DELETE FROM fleet_workers w WHERE started < %s AND NOT EXISTS ("
                "SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' "
                "AND l.classid = %s::oid AND l.objid = w.session::oid AND l.objsubid = 2)",
                (now - 3600, WORKER_LOCK),
            )

    async def _measure_offset(self) -> float:
        """The database's clock minus this machine's (the best of three round trips)."""
        assert self._conn is not None
        best: tuple[float, float] | None = None
        for _ in range(3):
            before = time.time()
            cur = await self._conn.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8")
            row = await cur.fetchone()
            after = time.time()
            await self._conn.rollback()
            assert row is not None
            trip, offset = after - before, float(row[0]) - (before + after) / 2
            if best is None or trip < best[0]:
                best = (trip, offset)
        assert best is not None
        return best[1]

    async def renew(self) -> int:
        """Push the expiry of every lease this worker holds (items and pages) a TTL ahead;
        how many there were."""
        now = self.now()

        async def work(cur: Any) -> int:
            await cur.execute(
                "UPDATE fleet_claims SET expires = %s WHERE owner = %s",
                (now + self.ttl, self.owner),
            )
            n = int(cur.rowcount or 0)
            await cur.execute(
                "UPDATE fleet_pages SET expires = %s WHERE owner = %s AND state <> 'done'",
                (now + self.ttl, self.owner),
            )
            return n + int(cur.rowcount or 0)

        n: int = await self.tx(work)
        return n

    async def _renew_loop(self) -> None:
        while True:
            await self._sleep(self.ttl / 3)
            try:
                await self.renew()
            except StateError:
                # the next lease, record or release fails the same way and stops the run
                logging.getLogger("imgsync.fleet").debug("lease renewal failed", exc_info=True)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        if self._conn is not None and self._session is not None:
            session, self._session = self._session, None
            with contextlib.suppress(Exception):  # a broken connection: swept later
                async with self._conn.transaction(), self._conn.cursor() as cur:
                    await cur.execute(
                        "DELETE FROM fleet_workers WHERE owner = %s AND session = %s",
                        (self.owner, session),
                    )
        if self._conn is not None:
            conn, self._conn = self._conn, None
            psycopg = driver()
            with contextlib.suppress(psycopg.Error, OSError):  # a broken one: nothing to lose
                await conn.close()

    async def tx(self, work: Any) -> Any:
        """Run ``await work(cursor)`` in one transaction; database errors become StateError."""
        psycopg = driver()
        if self._conn is None:
            raise StateError("shared state is not open")
        async with self._lock:
            try:
                async with self._conn.transaction(), self._conn.cursor() as cur:
                    return await work(cur)
            except psycopg.Error as exc:
                raise describe(self.url, exc) from None
