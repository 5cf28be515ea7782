"""The fleet's rate ledger (:class:`FleetLedger`): one sliding log per host in
PostgreSQL, asked by every worker's limiter before a request to a limited host, so N
workers together stay inside each window (``[limits]``, or a host type's default)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

from imgsync.errors import StateError
from imgsync.state.fleet.common import redact
from imgsync.state.fleet.connection import Connection, dead_among

# The fleet's ledger counts a request from its admission until its window's period after
# its answer (both on the database's clock, so the workers' clocks need not agree), plus
# this share of the period for the host's own clock granularity.
LEDGER_SLACK = 0.01
LEDGER_KEEP = 300.0
# A request whose answer never reached the ledger (its worker died on another machine)
# stops counting this long after its admission; one on this machine is settled as soon
# as its worker is seen dead.
LEDGER_PENDING_CAP = 60.0


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
        self._fleet: Connection | None = None
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
            self._fleet = await Connection(self.url, self.owner).open()
            self._loop = loop
        return await admit(self._fleet, authority, windows)

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
                    await answered(self._fleet, authority, n)
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


async def admit(conn: Connection, authority: str, windows: Sequence[tuple[int, float]]) -> float:
    """Admit one request of ``conn``'s worker to ``authority`` (see :class:`FleetLedger`)."""

    async def work(cur: Any) -> float:
        return await _admit(cur, authority, windows, conn.owner)

    wait: float = await conn.tx(work)
    return wait


async def answered(conn: Connection, authority: str, n: int) -> None:
    """``n`` of this worker's requests to ``authority`` were answered: stamp the oldest
    ``n`` pending ones answered now (the database's clock; see :class:`FleetLedger`)."""

    async def work(cur: Any) -> None:
        await cur.execute(
            "UPDATE fleet_rate_log SET answered = EXTRACT(EPOCH FROM clock_timestamp()) "
            "WHERE id = ANY(ARRAY(SELECT id FROM fleet_rate_log WHERE authority = %s "
            "AND owner = %s AND answered IS NULL ORDER BY stamp LIMIT %s))",
            (authority, conn.owner, n),
        )

    await conn.tx(work)


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
    """Stamp answered the pending requests of workers known dead (on this machine, or any
    machine by their database session: see ``dead_among``; their answers never come);
    True when there were any."""
    await cur.execute(
        "SELECT DISTINCT owner FROM fleet_rate_log WHERE authority = %s AND answered IS NULL "
        "AND owner IS NOT NULL AND owner <> %s AND stamp < %s",
        (authority, owner, now - 1.0),
    )
    dead = await dead_among(cur, [r[0] for r in await cur.fetchall()])
    if not dead:
        return False
    await cur.execute(
        "UPDATE fleet_rate_log SET answered = %s WHERE authority = %s AND answered IS NULL "
        "AND owner = ANY(%s::text[])",
        (now, authority, dead),
    )
    return True
