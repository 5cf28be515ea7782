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

The package: ``connection`` (connect, migrate, the database's clock, lease renewal, one
transaction at a time), ``record`` (the job's shared record: journal, runs, pauses),
``ledger`` (the shared rate ledger), ``pages`` (listings claimed page by page),
``orphans`` (what a worker that stopped mid-run recorded only on its machine), ``schema``
(the tables and their migrations), ``report`` (``imgsync status`` on a shared state),
``transfer`` (``imgsync state copy``), ``common`` (the driver, URLs without their
password).

A lease is taken in one statement (``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` the
holder's lease expired, ``RETURNING`` what was taken), then re-checked against the
recorded locations in the same transaction: a location is committed before its lease is
released, so bytes another worker uploaded are never leased again.

Leases (on items and on listing pages, see :mod:`imgsync.state.fleet.pages`) carry an
expiry ``ttl`` seconds ahead (``[state] lease_ttl``, 30 s by default). A live worker
renews all of its leases every third of that (:meth:`Fleet.renew`, a background task),
so a transfer of any length keeps its lease; a worker that dies stops renewing, and its
leases are taken over once they expire, or at once when it is known dead: on the same
machine its pid is gone; on any machine, its database session ended (each worker's
session holds an advisory lock while it lives, see ``connection.dead_among``; a killed
process's connection drops, and PostgreSQL ends its session). A machine that vanishes
without closing its connections (power cut, network gone) leaves its sessions open until
TCP gives up on them, so the TTL still bounds that case. Expiries are kept on the database's clock: each worker
measures its offset to it when it connects, so the machines' clocks need not agree.

No delete URL leaves the worker that uploaded: the shared records hold where an image
is, not the credential to delete it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from imgsync.errors import StateError
from imgsync.state.db import Leased
from imgsync.state.fleet.common import describe, is_url, redact
from imgsync.state.fleet.connection import LEASE_TTL, dead_among
from imgsync.state.fleet.ledger import FleetLedger
from imgsync.state.fleet.record import SharedRecord

__all__ = ["LEASE_TTL", "Fleet", "FleetLedger", "describe", "is_url", "redact"]


class Fleet(SharedRecord):
    """One worker's handle on the shared state: leases, locations and the job's record."""

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
        self._later: list[tuple[Any, ...]] = []  # location rows held back (``later``)

    async def close(self) -> None:
        if self._later and self._conn is not None:
            with contextlib.suppress(StateError):
                await self.send_later()
        await super().close()

    async def lease(self, dest: str, shas: Sequence[str]) -> Leased:
        """(leased to this worker, already recorded at ``dest``), atomically across workers;
        ``.taken_over``: those whose lease was another worker's (expired, or its worker
        dead): it may have sent the bytes before it stopped; ``.since``: the earliest time
        (this machine's clock) a holder can have begun sending it, so the destination is
        searched back to then.

        The lease is the send mark: a lease is taken just before its bytes go (a group's
        uploads start right after its lease), so the time it was first taken (``sent``,
        kept through every takeover) bounds every send of it, and no transaction per
        upload is needed to say "sending now". A lease a holder took and never sent costs
        its taker a search (shared by every takeover of the run: one listing), never a
        duplicate. A lease without that time (taken by an older imgsync, which marked only
        what it sent) was never sent: it is not searched for."""
        shas = sorted(set(shas))  # one lock order for every worker: no deadlock
        now = self.now()

        async def work(cur: Any) -> Leased:
            # ``prev`` sees the leases as they were before this statement: a row that had
            # another owner and is now this worker's was taken over, sent since prev.sent
            await cur.execute(
                "WITH prev AS (SELECT sha256, owner, sent FROM fleet_claims WHERE dest = %s "
                "AND sha256 = ANY(%s::text[])), "
                "up AS (INSERT INTO fleet_claims (dest, sha256, owner, expires, sent) "
                "SELECT %s, s, %s, %s, %s FROM unnest(%s::text[]) AS s "
                "ON CONFLICT (dest, sha256) DO UPDATE SET owner = excluded.owner, "
                "expires = excluded.expires, sent = COALESCE(fleet_claims.sent, excluded.sent) "
                "WHERE fleet_claims.owner = excluded.owner OR fleet_claims.expires < %s "
                "RETURNING sha256) "
                "SELECT up.sha256, prev.owner IS NOT NULL AND prev.owner <> %s, prev.sent "
                "FROM up LEFT JOIN prev USING (sha256)",
                (dest, shas, dest, self.owner, now + self.ttl, now, shas, now, self.owner),
            )
            rows = await cur.fetchall()
            mine = {r[0] for r in rows}
            taken = {r[0] for r in rows if r[1]}
            sent = {r[0]: float(r[2]) for r in rows if r[1] and r[2] is not None}
            if len(mine) < len(shas):
                # a holder known dead (on this machine by its pid, on any machine by its
                # database session: see ``liveness``) is taken over now, not at expiry
                await cur.execute(
                    "SELECT DISTINCT owner FROM fleet_claims WHERE dest = %s "
                    "AND sha256 = ANY(%s::text[]) AND owner <> %s",
                    (dest, [s for s in shas if s not in mine], self.owner),
                )
                dead = await dead_among(cur, [r[0] for r in await cur.fetchall()])
                if dead:
                    await cur.execute(
                        "SELECT sha256, sent FROM fleet_claims WHERE dest = %s "
                        "AND sha256 = ANY(%s::text[]) AND owner = ANY(%s::text[]) "
                        "ORDER BY sha256 FOR UPDATE",
                        (dest, shas, dead),
                    )
                    found = [(r[0], r[1]) for r in await cur.fetchall()]
                    await cur.execute(
                        "UPDATE fleet_claims SET owner = %s, expires = %s, "
                        "sent = COALESCE(sent, %s) WHERE dest = %s "
                        "AND sha256 = ANY(%s::text[]) AND owner = ANY(%s::text[])",
                        (self.owner, now + self.ttl, now, dest, [f[0] for f in found], dead),
                    )
                    for sha, at in found:
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
            # a lease without a first-taken time was never sent (see above): no search
            return Leased(mine - present, present, (taken & set(sent)) - present, since)

        result: Leased = await self.tx(work)
        return result

    async def present(self, dest: str, shas: Sequence[str]) -> set[str]:
        """Which of ``shas`` are recorded at ``dest`` by any worker."""

        async def work(cur: Any) -> set[str]:
            await cur.execute(
                "SELECT DISTINCT sha256 FROM fleet_locations "
                "WHERE remote = %s AND sha256 = ANY(%s::text[])",
                (dest, sorted(set(shas))),
            )
            return {r[0] for r in await cur.fetchall()}

        there: set[str] = await self.tx(work)
        return there

    async def release(self, dest: str, shas: Iterable[str]) -> None:
        """Give up this worker's leases on ``shas``; the locations it holds back
        (:meth:`record_locations` ``later``) are committed first, in the same transaction."""
        shas = sorted(set(shas))
        if not shas:
            return
        later = self._take_later()

        async def work(cur: Any) -> None:
            await upsert_locations(cur, later)
            await cur.execute(
                "DELETE FROM fleet_claims WHERE dest = %s AND owner = %s "
                "AND sha256 = ANY(%s::text[])",
                (dest, self.owner, shas),
            )

        await self.tx(work)

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
            await upsert_locations(cur, batch)

        await self.tx(work)

    def _take_later(self) -> list[tuple[Any, ...]]:
        rows, self._later = self._later, []
        return rows

    async def send_later(self) -> None:
        """Commit the locations held back (see :meth:`record_locations`)."""
        rows = self._take_later()
        if rows:

            async def work(cur: Any) -> None:
                await upsert_locations(cur, rows)

            await self.tx(work)

    async def forget_locations(self, remote: str, remote_ids: Sequence[str]) -> None:
        if not remote_ids:
            return

        async def work(cur: Any) -> None:
            await cur.execute(
                "DELETE FROM fleet_locations WHERE remote = %s AND remote_id = ANY(%s::text[])",
                (remote, list(remote_ids)),
            )

        await self.tx(work)

    async def locations_at(self, remote: str) -> list[tuple[Any, ...]]:
        """(remote_id, sha256, url, page_url, meta, stored_md5, updated) of every location."""

        async def work(cur: Any) -> list[tuple[Any, ...]]:
            await cur.execute(
                "SELECT remote_id, sha256, url, page_url, meta, stored_md5, updated "
                "FROM fleet_locations WHERE remote = %s",
                (remote,),
            )
            return [tuple(r) for r in await cur.fetchall()]

        rows: list[tuple[Any, ...]] = await self.tx(work)
        return rows

    async def remotes(self) -> list[str]:
        """Every remote (state key) the fleet recorded locations at."""

        async def work(cur: Any) -> list[str]:
            await cur.execute("SELECT DISTINCT remote FROM fleet_locations ORDER BY 1")
            return [str(r[0]) for r in await cur.fetchall()]

        found: list[str] = await self.tx(work)
        return found

    async def located(self, remote: str, remote_ids: Sequence[str]) -> dict[str, str]:
        """remote_id -> sha256 of those of ``remote_ids`` any worker recorded at ``remote``."""

        async def work(cur: Any) -> dict[str, str]:
            await cur.execute(
                "SELECT remote_id, sha256 FROM fleet_locations "
                "WHERE remote = %s AND remote_id = ANY(%s::text[])",
                (remote, sorted(set(remote_ids))),
            )
            return {str(r[0]): str(r[1]) for r in await cur.fetchall()}

        found: dict[str, str] = await self.tx(work)
        return found

    async def holders(self, dest: str, shas: Sequence[str]) -> dict[str, str]:
        """Which other worker holds a live lease on each of ``shas`` (checksum -> owner)."""

        async def work(cur: Any) -> dict[str, str]:
            await cur.execute(
                "SELECT sha256, owner FROM fleet_claims WHERE dest = %s AND owner <> %s "
                "AND expires >= %s AND sha256 = ANY(%s::text[])",
                (dest, self.owner, self.now(), sorted(set(shas))),
            )
            rows = [(r[0], r[1]) for r in await cur.fetchall()]
            dead = set(await dead_among(cur, {owner for _sha, owner in rows}))
            return {sha: owner for sha, owner in rows if owner not in dead}

        held: dict[str, str] = await self.tx(work)
        return held

    async def held_by_others(self, dest: str) -> int:
        """How many live leases other workers hold on ``dest`` (work still in flight)."""

        async def work(cur: Any) -> int:
            await cur.execute(
                "SELECT owner, COUNT(*) FROM fleet_claims WHERE dest = %s AND owner <> %s "
                "AND expires >= %s GROUP BY owner",
                (dest, self.owner, self.now()),
            )
            rows = [(r[0], int(r[1])) for r in await cur.fetchall()]
            dead = set(await dead_among(cur, [owner for owner, _n in rows]))
            return sum(n for owner, n in rows if owner not in dead)

        n: int = await self.tx(work)
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


_UPSERT_LOCATIONS = (
    "INSERT INTO fleet_locations (remote, remote_id, sha256, url, page_url, meta, "
    "stored_md5, updated) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (remote, remote_id) DO UPDATE SET sha256 = excluded.sha256, "
    "url = COALESCE(excluded.url, fleet_locations.url), "
    "page_url = COALESCE(excluded.page_url, fleet_locations.page_url), "
    "meta = excluded.meta, stored_md5 = excluded.stored_md5, "
    "updated = excluded.updated"
)


async def upsert_locations(cur: Any, rows: Sequence[tuple[Any, ...]]) -> None:
    """(remote, remote_id, sha256, url, page_url, meta, stored_md5, updated) rows, in key
    order, so two workers recording the same rows take their locks in the same order (no
    deadlock); the last of one key wins."""
    if rows:
        latest = {(r[0], r[1]): r for r in rows}
        await cur.executemany(_UPSERT_LOCATIONS, [latest[k] for k in sorted(latest)])
