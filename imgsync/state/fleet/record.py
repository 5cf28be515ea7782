"""The job's shared record: journal, objects, owners and cursors (sent in batches, see
:meth:`SharedRecord.queue`), the runs, and host pauses (one worker's pause holds every
worker), so ``status``, progress and ``/metrics`` show the fleet's totals."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any

from imgsync.state.fleet import schema
from imgsync.state.fleet.connection import LEASE_TTL, Connection


class SharedRecord(Connection):
    """A :class:`Connection` that also writes the job's shared record."""

    def __init__(
        self,
        url: str,
        owner: str,
        *,
        ttl: float = LEASE_TTL,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        super().__init__(url, owner, ttl=ttl, clock=clock, sleep=sleep)
        # the job's shared record (journal, objects, owners, cursors), sent in batches
        self._pending: dict[str, list[tuple[Any, ...]]] = {}
        self._pending_rows = 0
        self._pushed = time.monotonic()
        self._held = 0
        self._runs: dict[int, int] = {}  # this worker's run id -> the fleet's
        self.totals: dict[str, dict[str, int]] = {}  # job -> stage -> items, fleet-wide

    async def queue(self, statement: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """Add rows for one of :data:`RECORDS`; sent with others in one transaction when
        ``PUSH_ROWS`` are waiting or ``PUSH_EVERY`` seconds passed (and by :meth:`push`)."""
        rows = list(rows)
        if not rows:
            return
        self._pending.setdefault(statement, []).extend(rows)
        self._pending_rows += len(rows)
        if self._held:
            return
        if self._pending_rows >= PUSH_ROWS or time.monotonic() - self._pushed >= PUSH_EVERY:
            await self.push()

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Rows queued inside wait for a push after it: the worker's own state takes every
        row of one record (an upload's location, owners and journal) before the shared
        state is spoken to, so a shared state lost mid-record leaves no row unwritten in
        the worker's own (its re-run shares that record with the fleet)."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1

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

        totals: dict[str, dict[str, int]] = await self.tx(work)
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

        self._runs[local_id] = await self.tx(work)

    async def finish_run(self, local_id: int, summary: str) -> None:
        fleet_id = self._runs.pop(local_id, None)
        if fleet_id is None:
            return

        async def work(cur: Any) -> None:
            await cur.execute(
                "UPDATE fleet_runs SET finished = %s, summary = %s WHERE id = %s",
                (time.time(), summary, fleet_id),
            )

        await self.tx(work)

    # ---- host pauses: one worker's pause holds every worker ------------------------

    async def save_pause(self, authority: str, until: float, reason: str) -> None:
        async def work(cur: Any) -> None:
            await cur.execute(schema.PAUSE_UPSERT, (authority, until, reason))

        await self.tx(work)

    async def pauses(self) -> dict[str, tuple[float, str]]:
        """Pauses in force: authority -> (until, reason)."""

        async def work(cur: Any) -> dict[str, tuple[float, str]]:
            await cur.execute(
                "SELECT authority, until, reason FROM fleet_pauses WHERE until > %s",
                (time.time(),),
            )
            return {a: (float(u), str(why)) for a, u, why in await cur.fetchall()}

        found: dict[str, tuple[float, str]] = await self.tx(work)
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
