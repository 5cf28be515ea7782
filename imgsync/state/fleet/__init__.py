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
released, so bytes another worker uploaded are never leased again.

Leases (on items and on listing pages, see :mod:`imgsync.state.fleet_pages`) carry an
expiry ``ttl`` seconds ahead (``[state] lease_ttl``, 30 s by default). A live worker
renews all of its leases every third of that (:meth:`Fleet.renew`, a background task),
so a transfer of any length keeps its lease; a worker that dies stops renewing, and its
leases are taken over once they expire (at once when the dead worker was on the same
machine: its pid is gone). Expiries are kept on the database's clock: each worker
measures its offset to it when it connects, so the machines' clocks need not agree.

No delete URL leaves the worker that uploaded: the shared records hold where an image
is, not the credential to delete it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Self

from imgsync.errors import StateError
from imgsync.state.db import Leased, owner_alive
from imgsync.state.fleet import schema
from imgsync.state.fleet.common import describe, driver, is_url, redact

if TYPE_CHECKING:
    import psycopg

LEASE_TTL = 30.0  # seconds a lease outlives its worker's last renewal

__all__ = ["LEASE_TTL", "Fleet", "FleetLedger", "describe", "is_url", "redact"]

# The fleet's ledger counts a request from its admission until its window's period after
# its answer (both on the database's clock, so the workers' clocks need not agree), plus
# this share of the period for the host's own clock granularity.
LEDGER_SLACK = 0.01
LEDGER_KEEP = 300.0
# A request whose answer never reached the ledger (its worker died on another machine)
# stops counting this long after its admission; one on this machine is settled as soon
# as its worker is seen dead.
LEDGER_PENDING_CAP = 60.0


class Fleet:
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
        # the job's shared record (journal, objects, owners, cursors), sent in batches
        self._pending: dict[str, list[tuple[Any, ...]]] = {}
        self._pending_rows = 0
        self._pushed = time.monotonic()
        self._runs: dict[int, int] = {}  # this worker's run id -> the fleet's
        self.totals: dict[str, dict[str, int]] = {}  # job -> stage -> items, fleet-wide
        self._renewer: asyncio.Task[None] | None = None
        self._later: list[tuple[Any, ...]] = []  # location rows held back (``later``)

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
        except psycopg.Error as exc:
            await self.close()
            raise describe(self.url, exc) from None
        except OSError as exc:
            await self.close()
            raise describe(self.url, exc) from None
        if renew:
            self._renewer = asyncio.create_task(self._renew_loop(), name="imgsync-fleet-renew")
        return self

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

        n: int = await self._tx(work)
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
        if self._later and self._conn is not None:
            with contextlib.suppress(StateError):
                await self.send_later()
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
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

    async def lease(self, dest: str, shas: Sequence[str]) -> Leased:
        """(leased to this worker, already recorded at ``dest``), atomically across workers;
        ``.taken_over``: those whose lease was another worker's (expired, or its worker
        dead) that a holder had started sending (see :meth:`sending`): it may have sent
        the bytes before it stopped; ``.since``: when that first send began (this
        machine's clock), so the destination is searched back to then. A lease taken over
        that no holder marked was never sent: it is not searched for."""
        shas = sorted(set(shas))  # one lock order for every worker: no deadlock
        now = self.now()

        async def work(cur: Any) -> Leased:
            # ``prev`` sees the leases as they were before this statement: a row that had
            # another owner and is now this worker's was taken over
            await cur.execute(
                "WITH prev AS (SELECT sha256, owner FROM fleet_claims WHERE dest = %s "
                "AND sha256 = ANY(%s::text[])), "
                "up AS (INSERT INTO fleet_claims (dest, sha256, owner, expires) "
                "SELECT %s, s, %s, %s FROM unnest(%s::text[]) AS s "
                "ON CONFLICT (dest, sha256) DO UPDATE SET owner = excluded.owner, "
                "expires = excluded.expires "
                "WHERE fleet_claims.owner = excluded.owner OR fleet_claims.expires < %s "
                "RETURNING sha256, sent) "
                "SELECT up.sha256, prev.owner IS NOT NULL AND prev.owner <> %s, up.sent "
                "FROM up LEFT JOIN prev USING (sha256)",
                (dest, shas, dest, self.owner, now + self.ttl, shas, now, self.owner),
            )
            rows = await cur.fetchall()
            mine = {r[0] for r in rows}
            taken = {r[0] for r in rows if r[1]}
            sent = {r[0]: float(r[2]) for r in rows if r[1] and r[2] is not None}
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
                        "RETURNING sha256, sent",
                        (self.owner, now + self.ttl, dest, shas, dead),
                    )
                    for sha, at in await cur.fetchall():
                        mine.add(sha)
                        taken.add(sha)
                        if at is not None:
                            sent[sha] = float(at)
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
            since = {sha: at - self._offset for sha, at in sent.items()}
            # a lease no holder marked as sending was never sent: taken over, nothing to search
            return Leased(mine - present, present, (taken & set(sent)) - present, since)

        result: Leased = await self._tx(work)
        return result

    async def sending(self, dest: str, shas: Sequence[str]) -> None:
        """Mark this worker's leases on ``shas`` as being sent (now), before the bytes go:
        whoever takes one over then knows to search ``dest`` back to the first send. A
        lease no holder marked was never sent, so a takeover sends it without a search."""
        now = self.now()

        async def work(cur: Any) -> None:
            await cur.execute(
                "UPDATE fleet_claims SET sent = COALESCE(sent, %s) WHERE dest = %s "
                "AND owner = %s AND sha256 = ANY(%s::text[])",
                (now, dest, self.owner, sorted(set(shas))),
            )

        await self._tx(work)

    async def admit(self, authority: str, windows: Sequence[tuple[int, float]]) -> float:
        """See :class:`FleetLedger`."""

        async def work(cur: Any) -> float:
            return await _admit(cur, authority, windows, self.owner)

        wait: float = await self._tx(work)
        return wait

    async def answered(self, authority: str, n: int) -> None:
        """``n`` of this worker's requests to ``authority`` were answered: stamp the oldest
        ``n`` pending ones answered now (the database's clock; see :class:`FleetLedger`)."""

        async def work(cur: Any) -> None:
            await cur.execute(
                "UPDATE fleet_rate_log SET answered = EXTRACT(EPOCH FROM clock_timestamp()) "
                "WHERE id = ANY(ARRAY(SELECT id FROM fleet_rate_log WHERE authority = %s "
                "AND owner = %s AND answered IS NULL ORDER BY stamp LIMIT %s))",
                (authority, self.owner, n),
            )

        await self._tx(work)

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
        """Give up this worker's leases on ``shas``; the locations it holds back
        (:meth:`record_locations` ``later``) are committed first, in the same transaction."""
        shas = sorted(set(shas))
        if not shas:
            return
        later = self._take_later()

        async def work(cur: Any) -> None:
            await _upsert_locations(cur, later)
            await cur.execute(
                "DELETE FROM fleet_claims WHERE dest = %s AND owner = %s "
                "AND sha256 = ANY(%s::text[])",
                (dest, self.owner, shas),
            )

        await self._tx(work)

    async def record_locations(
        self, remote: str, rows: Sequence[Sequence[Any]], *, later: bool = False
    ) -> None:
        """Mirror location rows (remote_id, sha256, url, page_url, meta, stored_md5).

        ``later``: held back and sent with this worker's next lease release or finished
        page (one transaction instead of two), or by :meth:`send_later`. A location of an
        upload is so still committed before its lease is released; one of a source item
        before its page is done (until then, another worker would list it again)."""
        if not rows:
            return
        now = time.time()
        batch = [(remote, *r, now) for r in rows]
        if later:
            self._later.extend(batch)
            return

        async def work(cur: Any) -> None:
            await _upsert_locations(cur, batch)

        await self._tx(work)

    def _take_later(self) -> list[tuple[Any, ...]]:
        rows, self._later = self._later, []
        return rows

    async def send_later(self) -> None:
        """Commit the locations held back (see :meth:`record_locations`)."""
        rows = self._take_later()
        if rows:

            async def work(cur: Any) -> None:
                await _upsert_locations(cur, rows)

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

    async def holders(self, dest: str, shas: Sequence[str]) -> dict[str, str]:
        """Which other worker holds a live lease on each of ``shas`` (checksum -> owner)."""

        async def work(cur: Any) -> dict[str, str]:
            await cur.execute(
                "SELECT sha256, owner FROM fleet_claims WHERE dest = %s AND owner <> %s "
                "AND expires >= %s AND sha256 = ANY(%s::text[])",
                (dest, self.owner, self.now(), sorted(set(shas))),
            )
            return {r[0]: r[1] for r in await cur.fetchall() if owner_alive(r[1])}

        held: dict[str, str] = await self._tx(work)
        return held

    async def held_by_others(self, dest: str) -> int:
        """How many live leases other workers hold on ``dest`` (work still in flight)."""

        async def work(cur: Any) -> int:
            await cur.execute(
                "SELECT owner, COUNT(*) FROM fleet_claims WHERE dest = %s AND owner <> %s "
                "AND expires >= %s GROUP BY owner",
                (dest, self.owner, self.now()),
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


_UPSERT_LOCATIONS = (
    "INSERT INTO fleet_locations (remote, remote_id, sha256, url, page_url, meta, "
    "stored_md5, updated) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (remote, remote_id) DO UPDATE SET sha256 = excluded.sha256, "
    "url = COALESCE(excluded.url, fleet_locations.url), "
    "page_url = COALESCE(excluded.page_url, fleet_locations.page_url), "
    "meta = excluded.meta, stored_md5 = excluded.stored_md5, "
    "updated = excluded.updated"
)


async def _upsert_locations(cur: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    """(remote, remote_id, sha256, url, page_url, meta, stored_md5, updated) rows, in key
    order, so two workers recording the same rows take their locks in the same order (no
    deadlock); the last of one key wins."""
    if rows:
        latest = {(r[0], r[1]): r for r in rows}
        await cur.executemany(_UPSERT_LOCATIONS, [latest[k] for k in sorted(latest)])


class FleetLedger:
    """The rate ledger every worker's limiter asks before a request to a limited host
    (``HostLimiter``'s ``gate``): one sliding log per host in PostgreSQL, so N workers
    together stay inside each ``[limits]`` window. Its own connection, opened on first use.

    A host counts a request when it arrives, which is some time after the worker was let
    through (the gate's own round trip, a busy machine, the upload itself). So a request
    counts from its admission until a window's period after its answer, as the worker's
    own limiter counts it: whatever instant between the two the host uses, no window on
    its clock can hold more than the limit. Both stamps are the database's clock (the
    answer is stamped when the ledger hears of it, which is never earlier than it came),
    so the workers' clocks and latencies do not matter.
    """

    def __init__(self, url: str, owner: str) -> None:
        self.url = url
        self.owner = owner
        self._fleet: Fleet | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._answers: Counter[str] = Counter()
        self._flusher: asyncio.Task[None] | None = None

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

    def answered(self, authority: str) -> None:
        """One request this worker was admitted for got its answer (or gave up): stamped
        in the ledger at once, in the background (the limiter calls this synchronously)."""
        if self._fleet is None or self._loop is None:
            return
        self._answers[authority] += 1
        if self._flusher is None or self._flusher.done():
            self._flusher = self._loop.create_task(self._flush(), name="imgsync-ledger-answers")

    async def _flush(self) -> None:
        while self._answers and self._fleet is not None:
            batch, self._answers = self._answers, Counter()
            for authority, n in batch.items():
                try:
                    await self._fleet.answered(authority, n)
                except StateError:  # the next admission fails the same way and says so
                    return

    async def flush(self) -> None:
        """Wait until every answer heard so far is stamped in the ledger."""
        if self._flusher is not None and self._loop is asyncio.get_running_loop():
            await self._flusher

    async def close(self) -> None:
        if self._fleet is not None and self._loop is asyncio.get_running_loop():
            await self.flush()
            await self._fleet.close()
        self._fleet = None


async def _admit(
    cur: Any, authority: str, windows: Sequence[tuple[int, float]], owner: str
) -> float:
    await cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("imgsync-rate:" + authority,))
    await cur.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8")
    row = await cur.fetchone()
    now = float(row[0])
    longest = max(period for _n, period in windows) * (1 + LEDGER_SLACK)
    # kept a while past the longest window (the log shows what the fleet sent recently)
    keep = max(longest, LEDGER_KEEP)
    await cur.execute(
        "DELETE FROM fleet_rate_log WHERE authority = %s AND (answered < %s "
        "OR (answered IS NULL AND stamp < %s))",
        (authority, now - keep, now - keep - LEDGER_PENDING_CAP),
    )
    wait = await _window_wait(cur, authority, windows, now)
    if wait > 0 and await _settle_dead(cur, authority, owner, now):
        wait = await _window_wait(cur, authority, windows, now)
    if wait <= 0:
        await cur.execute(
            "INSERT INTO fleet_rate_log (authority, stamp, owner) VALUES (%s, %s, %s)",
            (authority, now, owner),
        )
        return 0.0
    return max(wait, 0.001)


async def _window_wait(
    cur: Any, authority: str, windows: Sequence[tuple[int, float]], now: float
) -> float:
    """Seconds until every window has room for one more request (0: it has now).

    A request occupies a window from its admission until ``span`` after its answer; one
    still unanswered is taken to be answered now, the earliest it can be. With ``count``
    requests occupying it, the window has room once the ``count``-th latest end passed."""
    wait = 0.0
    for count, period in windows:
        span = period * (1 + LEDGER_SLACK)
        await cur.execute(
            "SELECT COALESCE(answered, %s) + %s AS ends FROM fleet_rate_log "
            "WHERE authority = %s AND stamp > %s AND (answered IS NULL OR answered > %s) "
            "ORDER BY ends DESC OFFSET %s LIMIT 1",
            (now, span, authority, now - span - LEDGER_PENDING_CAP, now - span, max(0, count - 1)),
        )
        full = await cur.fetchone()
        if full is not None:
            wait = max(wait, float(full[0]) - now)
    return wait


async def _settle_dead(cur: Any, authority: str, owner: str, now: float) -> bool:
    """Stamp answered the pending requests of workers on this machine that died (their
    answers never come); True when there were any."""
    await cur.execute(
        "SELECT DISTINCT owner FROM fleet_rate_log WHERE authority = %s AND answered IS NULL "
        "AND owner IS NOT NULL AND owner <> %s AND stamp < %s",
        (authority, owner, now - 1.0),
    )
    dead = [r[0] for r in await cur.fetchall() if not owner_alive(r[0])]
    if not dead:
        return False
    await cur.execute(
        "UPDATE fleet_rate_log SET answered = %s WHERE authority = %s AND answered IS NULL "
        "AND owner = ANY(%s::text[])",
        (now, authority, dead),
    )
    return True
