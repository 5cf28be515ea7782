"""The async state handle: reads through aiosqlite, writes through one writer task.

Every write is queued to a single writer task that groups what is queued into one
transaction per batch (consecutive rows of one statement become one ``executemany``),
run whole in one thread of its own on a plain ``sqlite3`` connection (one thread hop per
transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiosqlite

from imgsync.errors import StateError
from imgsync.state.db import (
    BUSY_TIMEOUT_MS,
    Leased,
    describe_error,
    open_sync,
    owner_alive,
    owner_id,
)
from imgsync.state.fleet import LEASE_TTL, Fleet
from imgsync.state.fleet.orphans import adopt as adopt_orphans

CLAIM_TTL = 6 * 3600.0
_RELEASE = "DELETE FROM claims WHERE sha256 = ? AND dest = ? AND owner = ?"

# Leases held by the open stores of this process: (database, dest, sha256) -> the holding
# store. Every store of one process has the same owner in the database (host:pid), so two
# runs in one process (the daemon's jobs, two repairs) are told apart here.
_HELD: dict[tuple[str, str, str], int] = {}


@dataclass
class _Op:
    sql: str
    rows: list[Sequence[Any]]
    claim: tuple[str, list[str], str] | None = None  # (dest, shas, owner)
    future: asyncio.Future[Any] | None = field(default=None, repr=False)


class StateStore:
    """The async state handle: reads through aiosqlite, writes through one writer task."""

    def __init__(self, path: Path, url: str | None = None, *, lease_ttl: float = LEASE_TTL) -> None:
        self.path = path
        self._held_db = str(Path(path).resolve())
        self.url = url
        self.lease_ttl = lease_ttl
        self.owner = owner_id()
        # fleet mode (``[state] url``): leases and locations shared through PostgreSQL
        self.fleet: Fleet | None = None
        self._conn: aiosqlite.Connection | None = None  # reads
        # writes: a plain connection used only by one thread, a whole transaction per hop
        self._wconn: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imgsync-state")
        self._queue: asyncio.Queue[_Op | None] = asyncio.Queue(maxsize=10_000)
        self._writer: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None

    async def open(self) -> Self:
        """Open, migrate, start the writer. Raises ``StateError``."""
        conn = open_sync(self.path)  # migrate synchronously once
        assert conn is not None
        conn.close()
        try:
            self._conn = await aiosqlite.connect(self.path, isolation_level=None)
            await self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await self._conn.execute("PRAGMA synchronous = NORMAL")
            await asyncio.get_running_loop().run_in_executor(self._pool, self._connect_sync)
        except (sqlite3.Error, OSError) as exc:
            await self._close_conns()
            raise describe_error(self.path, exc) from None
        if self.url:
            try:
                fleet = Fleet(self.url, self.owner, ttl=self.lease_ttl)
                self.fleet = await fleet.open(renew=True)
                # what a worker of this machine that stopped mid-run recorded here only
                await adopt_orphans(self.fleet, self.fetchall)
            except BaseException:
                if self.fleet is not None:
                    await self.fleet.close()
                    self.fleet = None
                await self._close_conns()
                raise
        self._writer = asyncio.create_task(self._write_loop(), name="imgsync-state-writer")
        return self

    async def close(self) -> None:
        """Flush every queued write, stop the writer, close. Idempotent."""
        self._forget_held()
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
            self._writer = None
        await self._close_conns()
        if self.fleet is not None:
            fleet, self.fleet = self.fleet, None
            try:
                await fleet.push()  # the last of the job's shared record
            finally:
                await fleet.close()

    async def _close_conns(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        if self._wconn is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._close_sync)
        self._pool.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- reads ---------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        assert self._conn is not None
        try:
            async with self._conn.execute(sql, params) as cur:
                return [tuple(r) for r in await cur.fetchall()]
        except sqlite3.Error as exc:
            raise describe_error(self.path, exc) from None

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    # ---- writes --------------------------------------------------------------------

    async def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Queue one write (applied in order, in the writer's next transaction)."""
        await self._put(_Op(sql, [params]))

    async def write_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            await self._put(_Op(sql, rows))

    async def flush(self) -> None:
        """Wait until everything queued so far is committed. Raises ``StateError``."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._put(_Op("", [], future=fut))
        await fut

    async def claim(self, dest: str, shas: Sequence[str]) -> set[str]:
        """Claim each checksum for ``dest``; returns those this process now holds (see
        :meth:`lease`, which also says which are already recorded there)."""
        mine, _present = await self.lease(dest, shas)
        return mine

    async def lease(self, dest: str, shas: Sequence[str]) -> Leased:
        """Lease each checksum for ``dest`` before uploading it: (leased to this process,
        already recorded at ``dest``), and ``.taken_over``: those leased from a holder that
        did not finish (see :class:`~imgsync.state.db.Leased`).

        A lease held by a live owner is respected; a dead owner's (same host) or one
        older than the TTL is taken over. Within the same transaction each lease is
        re-checked against the recorded locations, so bytes another process uploaded
        (and recorded) since this run looked are never leased again. Atomic across
        processes (one transaction).
        """
        if not shas:
            return Leased(set(), set())
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._put(_Op("", [], claim=(dest, list(shas), self.owner), future=fut))
        local, present, stale = await fut  # stale: checksum -> when its dead holder leased it
        # another store of this process holds some: the database cannot tell them apart
        local = {s for s in local if _HELD.get(self._held_key(dest, s), id(self)) == id(self)}
        for s in local:
            _HELD[self._held_key(dest, s)] = id(self)
        if self.fleet is None or not local:
            return Leased(local, present, stale, stale)
        # fleet mode: what this machine may take is then leased across the fleet
        try:
            got = await self.fleet.lease(dest, sorted(local))
        except BaseException:
            await self.release(dest, local)
            raise
        mine, elsewhere = got
        if local - mine:
            await self._release_local(dest, local - mine)
        # the fleet knows whether a holder may have sent (since its first lease): it decides
        return Leased(mine, present | elsewhere, got.taken_over, got.since)

    def _held_key(self, dest: str, sha: str) -> tuple[str, str, str]:
        return (self._held_db, dest, sha)

    def _forget_held(self, dest: str | None = None, shas: Iterable[str] | None = None) -> None:
        """Drop this store's in-process leases (those named, or all of them)."""
        if shas is not None and dest is not None:
            for s in shas:
                key = self._held_key(dest, s)
                if _HELD.get(key) == id(self):
                    del _HELD[key]
            return
        for key in [k for k, v in _HELD.items() if v == id(self)]:
            del _HELD[key]

    async def located(self, dest: str, remote_ids: Sequence[str]) -> dict[str, str]:
        """Which of ``remote_ids`` at ``dest`` are recorded, with their checksums (remote_id
        -> sha256): in this state and, in fleet mode, by any worker."""
        out: dict[str, str] = {}
        ids = sorted(set(remote_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = await self.fetchall(
                f"SELECT remote_id, sha256 FROM locations WHERE remote = ? "
                f"AND remote_id IN ({marks})",
                [dest, *chunk],
            )
            out.update((r[0], r[1]) for r in rows)
        if self.fleet is not None and ids:
            out.update(await self.fleet.located(dest, ids))
        return out

    async def holders(self, dest: str, shas: Sequence[str]) -> dict[str, str]:
        """Who else holds a lease on each of ``shas`` for ``dest`` now (checksum -> owner):
        another process on this state or, in fleet mode, another worker of the fleet."""
        out: dict[str, str] = {}
        for start in range(0, len(shas), 500):
            chunk = list(shas[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = await self.fetchall(
                f"SELECT sha256, owner FROM claims WHERE dest = ? AND owner != ? "
                f"AND sha256 IN ({marks})",
                [dest, self.owner, *chunk],
            )
            out.update((r[0], r[1]) for r in rows)
        for s in shas:  # held by another run of this very process
            if _HELD.get(self._held_key(dest, s), id(self)) != id(self):
                out[s] = self.owner
        if self.fleet is not None and shas:
            out.update(await self.fleet.holders(dest, shas))
        return out

    async def release(self, dest: str, shas: Iterable[str]) -> None:
        shas = list(shas)
        await self._release_local(dest, shas)
        if self.fleet is not None:
            await self.fleet.release(dest, shas)

    async def commit_and_release(self, dest: str, shas: Iterable[str]) -> None:
        """:meth:`flush` then :meth:`release`, in one transaction: what was queued (an
        upload's record) is committed together with the end of its leases, and only then
        are they given up in this process (and, in fleet mode, in the fleet)."""
        shas = list(shas)
        await self.write_many(_RELEASE, [(s, dest, self.owner) for s in shas])
        await self.flush()
        self._forget_held(dest, shas)
        if self.fleet is not None:
            await self.fleet.release(dest, shas)

    async def _release_local(self, dest: str, shas: Iterable[str]) -> None:
        shas = list(shas)
        self._forget_held(dest, shas)
        await self.write_many(_RELEASE, [(s, dest, self.owner) for s in shas])

    async def _put(self, op: _Op) -> None:
        if self._failure is not None:
            raise describe_error(self.path, self._failure)
        if self._writer is None:
            raise StateError("state database is not open")
        await self._queue.put(op)

    async def _write_loop(self) -> None:
        assert self._conn is not None
        stop = False
        while not stop:
            first = await self._queue.get()
            batch: list[_Op] = []
            if first is None:
                stop = True
            else:
                batch.append(first)
            while not stop and len(batch) < 2000 and not self._queue.empty():
                op = self._queue.get_nowait()
                if op is None:
                    stop = True
                else:
                    batch.append(op)
            if batch:
                await self._apply(batch)

    async def _apply(self, batch: list[_Op]) -> None:
        """One transaction for ``batch``, run whole in the writer thread: one thread hop
        per transaction (a hop per statement woke a thread and handed the interpreter
        lock back and forth half a dozen times per upload)."""
        loop = asyncio.get_running_loop()
        if self._failure is not None:  # an earlier write failed: what waits on this batch
            # (a flush queued meanwhile) must not be told everything was committed
            err = describe_error(self.path, self._failure)
            for op in batch:
                if op.future is not None and not op.future.done():
                    op.future.set_exception(err)
            return
        try:
            results = await loop.run_in_executor(self._pool, self._apply_sync, batch)
        except Exception as exc:  # noqa: BLE001 - any failure (a value SQLite cannot hold
            # too) fails the waiters: a writer that died silently left flush() hanging
            self._failure = exc
            err = describe_error(self.path, exc)
            for op in batch:
                if op.future is not None and not op.future.done():
                    op.future.set_exception(err)
            return
        for op, res in zip(batch, results, strict=True):
            if op.future is not None and not op.future.done():
                op.future.set_result(res)

    def _connect_sync(self) -> None:
        """The writer's own connection, opened in (and only used by) the writer thread."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        self._wconn = conn

    def _close_sync(self) -> None:
        if self._wconn is not None:
            self._wconn.close()
            self._wconn = None

    def _apply_sync(self, batch: list[_Op]) -> list[Any]:
        conn = self._wconn
        assert conn is not None
        results: list[Any] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            i = 0
            while i < len(batch):
                op = batch[i]
                if op.claim is not None:
                    results.append(self._claim(conn, *op.claim))
                    i += 1
                    continue
                results.append(None)
                if not op.sql:
                    i += 1
                    continue
                # group consecutive ops with the same statement into one executemany
                rows = list(op.rows)
                j = i + 1
                while j < len(batch) and batch[j].sql == op.sql and batch[j].claim is None:
                    rows.extend(batch[j].rows)
                    results.append(None)
                    j += 1
                conn.executemany(op.sql, rows)
                i = j
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            raise
        return results

    @staticmethod
    def _claim(
        conn: sqlite3.Connection, dest: str, shas: list[str], owner: str
    ) -> tuple[set[str], set[str], dict[str, float]]:
        """(leased, recorded at ``dest``, leased from a dead or expired holder: checksum ->
        when that holder had leased it)."""
        now = time.time()
        conn.executemany(
            "INSERT OR IGNORE INTO claims (sha256, dest, owner, claimed_at) VALUES (?, ?, ?, ?)",
            [(s, dest, owner, now) for s in shas],
        )
        got: set[str] = set()
        taken: dict[str, float] = {}
        for start in range(0, len(shas), 500):
            chunk = shas[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT sha256, owner, claimed_at FROM claims WHERE dest = ? "
                f"AND sha256 IN ({marks})",
                [dest, *chunk],
            ).fetchall()
            stale = []
            for sha, holder, claimed_at in rows:
                if holder == owner:
                    got.add(sha)
                elif now - claimed_at > CLAIM_TTL or not owner_alive(holder):
                    stale.append(sha)
                    taken[sha] = float(claimed_at)
            if stale:
                conn.executemany(
                    "UPDATE claims SET owner = ?, claimed_at = ? WHERE sha256 = ? AND dest = ?",
                    [(owner, now, s, dest) for s in stale],
                )
                got.update(stale)
        present: set[str] = set()
        held = sorted(got)
        for start in range(0, len(held), 500):
            chunk = held[start : start + 500]
            marks = ",".join("?" * len(chunk))
            present.update(
                r[0]
                for r in conn.execute(
                    f"SELECT DISTINCT sha256 FROM locations WHERE remote = ? "
                    f"AND sha256 IN ({marks})",
                    [dest, *chunk],
                )
            )
        if present:
            conn.executemany(
                "DELETE FROM claims WHERE sha256 = ? AND dest = ? AND owner = ?",
                [(s, dest, owner) for s in present],
            )
        return got - present, present, {s: t for s, t in taken.items() if s not in present}
