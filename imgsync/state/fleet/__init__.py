"""Fleet mode: the state several workers share through PostgreSQL (``[state] url``).

What lives here is what makes "each image uploaded once" hold across machines: the
leases (destination, checksum, owner, expiry) and the destinations' locations; and the
job's shared record, so that ``status``, progress and ``/metrics`` show the fleet's
totals: the journal, objects, owners and cursors (sent in batches, see
:meth:`Fleet.queue`), the runs, and host pauses (one worker's pause stops them all).
Each worker also keeps its own SQLite state (its scans, its delete URLs, its copy of
everything above): :class:`~imgsync.state.store.StateStore` sends its leases here and
mirrors what it records, and :meth:`Fleet.locations_at` brings the other workers'
uploads back into the worker's own state before it writes a map.

The package: ``schema`` (the tables and their migrations), ``report`` (``imgsync status``
on a shared state), ``transfer`` (``imgsync state copy``), ``common`` (the driver, URLs
without their password).

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
import time
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Self

from imgsync.errors import StateError
from imgsync.state.db import owner_alive
from imgsync.state.fleet import schema
from imgsync.state.fleet.common import describe, driver, is_url, redact

if TYPE_CHECKING:
    import psycopg

LEASE_TTL = 15 * 60.0

__all__ = ["LEASE_TTL", "Fleet", "FleetLedger", "describe", "is_url", "redact"]

# The fleet's ledger counts a request from its admission (the database's clock, so the
# workers' clocks need not agree) for its window's period plus this share of it, for
# the time a request takes to reach the host.
LEDGER_SLACK = 0.05
LEDGER_KEEP = 300.0


class Fleet:
    """One async connection to the shared PostgreSQL state (one per worker run)."""

    def __init__(self, url: str, owner: str, *, ttl: float = LEASE_TTL) -> None:
        if not is_url(url):
            raise StateError(f"state URL {redact(url)} is not a postgresql:// URL")
        self.url = url
        self.owner = owner
        self.ttl = ttl
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        # the job's shared record (journal, objects, owners, cursors), sent in batches
        self._pending: dict[str, list[tuple[Any, ...]]] = {}
        self._pending_rows = 0
        self._pushed = time.monotonic()
        self._runs: dict[int, int] = {}  # this worker's run id -> the fleet's
        self.totals: dict[str, dict[str, int]] = {}  # job -> stage -> items, fleet-wide

    def __repr__(self) -> str:
        return f"Fleet({redact(self.url)!r}, owner={self.owner!r})"

    async def open(self) -> Self:
        psycopg = driver()
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=False, connect_timeout=10
            )
            await schema.migrate(self._conn)
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
            psycopg = driver()
            with contextlib.suppress(psycopg.Error, OSError):  # a broken one: nothing to lose
                await conn.close()

    async def _tx(self, work: Any) -> Any:
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
                # in key order, so two workers recording the same rows take their locks in
                # the same order (no deadlock)
                sorted(((remote, *r, now) for r in rows), key=itemgetter(1)),
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

    # ---- the job's shared record: journal, objects, owners, cursors -----------------

    async def queue(self, statement: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """Add rows for one of :data:`RECORDS`; sent with others in one transaction when
        ``PUSH_ROWS`` are waiting or ``PUSH_EVERY`` seconds passed (and by :meth:`push`)."""
        rows = list(rows)
        if not rows:
            return
        self._pending.setdefault(statement, []).extend(rows)
        self._pending_rows += len(rows)
        if self._pending_rows >= PUSH_ROWS or time.monotonic() - self._pushed >= PUSH_EVERY:
            await self.push()

    async def push(self) -> None:
        """Send what :meth:`queue` holds, and refresh :attr:`totals` of the jobs it touched.

        Tables in one order and rows sorted by key, so two workers writing the same rows
        lock them in the same order (no deadlock)."""
        self._pushed = time.monotonic()
        if not self._pending:
            return
        pending, self._pending, self._pending_rows = self._pending, {}, 0
        jobs = sorted({r[0] for r in pending.get("journal", ())})

        async def work(cur: Any) -> dict[str, dict[str, int]]:
            for name, statement in RECORDS.items():
                rows = pending.get(name)
                if rows:
                    order = itemgetter(slice(0, _KEYS[name]))  # by key; stable within a key
                    await cur.executemany(statement, sorted(rows, key=order))
            totals: dict[str, dict[str, int]] = {}
            if jobs:
                await cur.execute(
                    "SELECT job, stage, COUNT(*) FROM fleet_journal WHERE job = ANY(%s::text[]) "
                    "GROUP BY job, stage",
                    (jobs,),
                )
                for job, stage, n in await cur.fetchall():
                    totals.setdefault(job, {})[stage] = int(n)
            return totals

        totals: dict[str, dict[str, int]] = await self._tx(work)
        self.totals.update(totals)

    async def journal(self, rows: Iterable[Sequence[Any]]) -> None:
        """(job, source, source_id, dest, sha256, stage, error, attempts, updated) rows."""
        await self.queue("journal", [(*r, self.owner) for r in rows])

    async def start_run(self, local_id: int, job: str, verb: str) -> None:
        async def work(cur: Any) -> int:
            await cur.execute(
                "INSERT INTO fleet_runs (owner, job, verb, started) VALUES (%s, %s, %s, %s) "
                "RETURNING id",
                (self.owner, job, verb, time.time()),
            )
            row = await cur.fetchone()
            return int(row[0])

        self._runs[local_id] = await self._tx(work)

    async def finish_run(self, local_id: int, summary: str) -> None:
        fleet_id = self._runs.pop(local_id, None)
        if fleet_id is None:
            return

        async def work(cur: Any) -> None:
            await cur.execute(
                "UPDATE fleet_runs SET finished = %s, summary = %s WHERE id = %s",
                (time.time(), summary, fleet_id),
            )

        await self._tx(work)

    # ---- host pauses: one worker's pause holds every worker ------------------------

    async def save_pause(self, authority: str, until: float, reason: str) -> None:
        async def work(cur: Any) -> None:
            await cur.execute(schema.PAUSE_UPSERT, (authority, until, reason))

        await self._tx(work)

    async def pauses(self) -> dict[str, tuple[float, str]]:
        """Pauses in force: authority -> (until, reason)."""

        async def work(cur: Any) -> dict[str, tuple[float, str]]:
            await cur.execute(
                "SELECT authority, until, reason FROM fleet_pauses WHERE until > %s",
                (time.time(),),
            )
            return {a: (float(u), str(why)) for a, u, why in await cur.fetchall()}

        found: dict[str, tuple[float, str]] = await self._tx(work)
        return found


# What :meth:`Fleet.queue` takes, in the order a push writes them, and how many leading
# columns of each row are its key.
RECORDS: dict[str, str] = {
    "objects": schema.OBJECT_INSERT,
    "owners": schema.OWNER_UPSERT,
    "journal": schema.JOURNAL_UPSERT,
    "cursors": schema.CURSOR_UPSERT,
}
_KEYS = {"objects": 1, "owners": 3, "journal": 4, "cursors": 2}
PUSH_ROWS = 500
PUSH_EVERY = 1.0


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
