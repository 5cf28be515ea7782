"""What a worker of this machine left in the shared state when it stopped without
finishing: its leases are still there (PostgreSQL dropped it mid-run, or it was killed),
while its own SQLite state may already hold some of those uploads.

A worker opening the shared state shares what the machine's own state recorded of them:
their locations (never a delete URL) and journal rows go to the fleet, and their leases
are dropped, so no worker (here or on another machine) takes them over and sends those
bytes again. The leases of the others stay; whoever takes them over searches the
destination first (see :meth:`~imgsync.state.fleet.Fleet.lease`). The journal rows
such a worker's unfinished runs wrote here since they started (sent in batches, the last
of them never reached the fleet) are shared too, and those runs are marked stopped.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from imgsync.state.db import owner_alive

if TYPE_CHECKING:
    from imgsync.state.fleet import Fleet

Fetch = Callable[[str, Sequence[Any]], Awaitable[list[tuple[Any, ...]]]]
CHUNK = 500  # checksums per local query (SQLite's bound parameters)


async def dead_leases(fleet: Fleet) -> tuple[list[str], dict[str, set[str]]]:
    """The workers of this machine that are gone but hold leases, and those leases:
    destination -> checksums."""

    async def work(cur: Any) -> tuple[list[str], dict[str, set[str]]]:
        await cur.execute(
            "SELECT DISTINCT owner FROM fleet_claims WHERE owner <> %s", (fleet.owner,)
        )
        dead = [r[0] for r in await cur.fetchall() if not owner_alive(r[0])]
        if not dead:
            return [], {}
        await cur.execute(
            "SELECT dest, sha256 FROM fleet_claims WHERE owner = ANY(%s::text[])", (dead,)
        )
        found: dict[str, set[str]] = {}
        for dest, sha in await cur.fetchall():
            found.setdefault(dest, set()).add(sha)
        return dead, found

    leases: tuple[list[str], dict[str, set[str]]] = await fleet.tx(work)
    return leases


async def adopt(fleet: Fleet, fetch: Fetch) -> int:
    """Share what this machine's state (read through ``fetch``) recorded of the dead local
    workers' leased images, and drop those leases; then their unfinished runs' journal.
    How many images' leases that was."""
    adopted = await _adopt_leases(fleet, fetch)
    await _adopt_runs(fleet, fetch)
    return adopted


STOPPED = "stopped before it finished (its worker is gone); its machine's record is shared"


async def _adopt_runs(fleet: Fleet, fetch: Fetch) -> None:
    async def runs(cur: Any) -> list[tuple[int, str, str, float]]:
        await cur.execute(
            "SELECT id, owner, job, started FROM fleet_runs WHERE finished IS NULL AND owner <> %s",
            (fleet.owner,),
        )
        return [tuple(r) for r in await cur.fetchall() if not owner_alive(r[1])]

    unfinished: list[tuple[int, str, str, float]] = await fleet.tx(runs)
    for run_id, _owner, job, started in unfinished:
        rows = await fetch(
            "SELECT job, source, source_id, dest, sha256, stage, error, attempts, updated "
            "FROM journal WHERE job = ? AND updated >= ?",
            [job, started - 1.0],
        )
        await fleet.journal([(*r[:7], 0, r[8]) for r in rows])
        await fleet.push()

        async def stop(cur: Any, run_id: int = run_id) -> None:
            await cur.execute(
                "UPDATE fleet_runs SET finished = %s, summary = %s WHERE id = %s",
                (time.time(), STOPPED, run_id),
            )

        await fleet.tx(stop)


async def _adopt_leases(fleet: Fleet, fetch: Fetch) -> int:
    adopted = 0
    dead, leases = await dead_leases(fleet)
    for dest, shas in sorted(leases.items()):
        ordered = sorted(shas)
        locations: list[tuple[Any, ...]] = []
        journal: list[tuple[Any, ...]] = []
        for start in range(0, len(ordered), CHUNK):
            chunk = ordered[start : start + CHUNK]
            marks = ",".join("?" * len(chunk))
            locations += await fetch(
                "SELECT remote_id, sha256, url, page_url, meta, stored_md5 FROM locations "
                f"WHERE remote = ? AND sha256 IN ({marks})",
                [dest, *chunk],
            )
            journal += await fetch(
                "SELECT job, source, source_id, dest, sha256, stage, error, attempts, updated "
                f"FROM journal WHERE dest = ? AND sha256 IN ({marks})",
                [dest, *chunk],
            )
        if not locations:
            continue
        there = sorted({r[1] for r in locations})
        await fleet.record_locations(dest, locations)
        # their stage as this machine recorded it (attempts were counted when they ran)
        await fleet.journal([(*r[:7], 0, r[8]) for r in journal if r[4] in set(there)])
        await fleet.push()

        async def drop(cur: Any, dest: str = dest, there: list[str] = there) -> None:
            await cur.execute(
                "DELETE FROM fleet_claims WHERE dest = %s AND sha256 = ANY(%s::text[]) "
                "AND owner = ANY(%s::text[])",
                (dest, there, dead),
            )

        await fleet.tx(drop)
        adopted += len(there)
    return adopted
