"""Fleet mode: a source's listing split between the workers, page by page.

A listing is a chain of cursors: page ``k`` says where page ``k + 1`` starts. The chain
lives in ``fleet_pages`` (one row per page of a *round*: one pass over the source for one
destination). A worker claims the first page no live worker holds (``FOR UPDATE SKIP
LOCKED``: two workers never get the same page), lists it from its cursor, records where
the next page starts -- which any worker may then claim -- and marks its page done once
every item on it is finished. So three workers list the source once between them, not
three times, and each downloads only what is on its own pages.

A page lease expires like an item lease (``Fleet.ttl`` after its worker's last renewal;
at once when that worker is seen dead on this machine); the page is then claimed again
and listed again from its cursor by another worker (what the dead one uploaded is
recorded, so it is found there, not uploaded again). A round is complete when its last
page (the one without a next cursor) is listed and every page is done; a worker starting
after that begins the next round (from the start of the listing, or for a source that
appends, from the previous round's last page, when that round was listed without filters
or with the same ones).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imgsync.errors import UsageError
from imgsync.state.fleet import Fleet, upsert_locations
from imgsync.state.fleet.connection import dead_among


@dataclass(frozen=True, slots=True)
class PageClaim:
    """A page of a round this worker now holds, and the cursor that lists it."""

    round: int
    seq: int
    cursor: str | None


class FiltersDiffer(UsageError):
    """A worker joins a round of a shared listing read with other filters."""


async def begin_round(fleet: Fleet, src: str, dst: str, *, appends: bool, filters: str = "") -> int:
    """The round of ``src`` -> ``dst`` to work in: the current one while it is not
    complete, else a new one (created here, once, whoever asks first). ``filters``: what
    this worker lists with (see :func:`filter_text`); a round under way read with other
    filters raises :class:`FiltersDiffer` (its pages are split by position: items one
    worker's filters skip on its pages would be left undone)."""

    async def work(cur: Any) -> int:
        number = await _round(cur)
        await cur.execute(
            "INSERT INTO fleet_rounds (src, dst, round, filters) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (src, dst, round) DO NOTHING",
            (src, dst, number, filters),
        )
        await cur.execute(
            "SELECT filters FROM fleet_rounds WHERE src = %s AND dst = %s AND round = %s",
            (src, dst, number),
        )
        row = await cur.fetchone()
        theirs = str(row[0]) if row else filters
        if theirs != filters:
            raise FiltersDiffer(
                "the other workers of this job list it with other filters (theirs: "
                f"{theirs or 'none'}; yours: {filters or 'none'}); start every worker with "
                "the same --include/--exclude/--include-non-images, or wait until their "
                "pass is complete"
            )
        return number

    async def _round(cur: Any) -> int:
        await cur.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"imgsync-list:{src}\n{dst}",)
        )
        await cur.execute(
            "SELECT round, bool_or(last) AND bool_and(state = 'done') FROM fleet_pages "
            "WHERE src = %s AND dst = %s GROUP BY round ORDER BY round DESC LIMIT 1",
            (src, dst),
        )
        row = await cur.fetchone()
        if row is not None and not row[1]:
            return int(row[0])  # under way: join it
        start: str | None = None
        number = 1
        if row is not None:
            number = int(row[0]) + 1
            await cur.execute(
                "SELECT filters FROM fleet_rounds WHERE src = %s AND dst = %s AND round = %s",
                (src, dst, row[0]),
            )
            before = await cur.fetchone()
            # new items come after the last page: start there, unless the round before
            # was filtered otherwise (what it left out before its end would be skipped)
            if appends and (before is None or str(before[0]) in ("", filters)):
                await cur.execute(
                    "SELECT cursor FROM fleet_pages WHERE src = %s AND dst = %s AND round = %s "
                    "AND last",
                    (src, dst, row[0]),
                )
                found = await cur.fetchone()
                start = found[0] if found else None
            for table in ("fleet_pages", "fleet_rounds"):
                await cur.execute(
                    f"DELETE FROM {table} WHERE src = %s AND dst = %s AND round < %s",
                    (src, dst, number),
                )
        await cur.execute(
            "INSERT INTO fleet_pages (src, dst, round, seq, cursor) VALUES (%s, %s, %s, 0, %s)",
            (src, dst, number, start),
        )
        return number

    number: int = await fleet.tx(work)
    return number


async def claim_page(fleet: Fleet, src: str, dst: str, round_: int) -> PageClaim | None:
    """Lease the first page of the round that is not done and that no live worker holds;
    None when there is none now (all done, held by live workers, or not listed yet)."""
    now = fleet.now()

    async def take(cur: Any) -> PageClaim | None:
        await cur.execute(
            "SELECT seq, cursor FROM fleet_pages WHERE src = %s AND dst = %s AND round = %s "
            "AND state <> 'done' AND (owner IS NULL OR expires < %s) "
            "ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED",
            (src, dst, round_, now),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        await cur.execute(
            "UPDATE fleet_pages SET owner = %s, expires = %s, takes = takes + 1 "
            "WHERE src = %s AND dst = %s AND round = %s AND seq = %s",
            (fleet.owner, now + fleet.ttl, src, dst, round_, row[0]),
        )
        return PageClaim(round_, int(row[0]), row[1])

    async def work(cur: Any) -> PageClaim | None:
        # pages held by a worker known dead (see ``dead_among``) are free now, not at
        # expiry, and come first (they are the earliest): their takeover searches then
        # read the destination back a few seconds, not from the end of the pass
        await cur.execute(
            "SELECT DISTINCT owner FROM fleet_pages WHERE src = %s AND dst = %s AND round = %s "
            "AND state <> 'done' AND owner IS NOT NULL AND owner <> %s AND expires >= %s",
            (src, dst, round_, fleet.owner, now),
        )
        dead = await dead_among(cur, [r[0] for r in await cur.fetchall()])
        if dead:
            await cur.execute(
                "UPDATE fleet_pages SET owner = NULL, expires = 0 WHERE src = %s AND dst = %s "
                "AND round = %s AND state <> 'done' AND owner = ANY(%s::text[])",
                (src, dst, round_, dead),
            )
        return await take(cur)

    claim: PageClaim | None = await fleet.tx(work)
    return claim


async def page_listed(
    fleet: Fleet, src: str, dst: str, page: PageClaim, next_cursor: str | None
) -> None:
    """The page was listed: the next one (if any) may be claimed by any worker now."""

    async def work(cur: Any) -> None:
        if next_cursor is not None:
            await cur.execute(
                "INSERT INTO fleet_pages (src, dst, round, seq, cursor) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (src, dst, page.round, page.seq + 1, next_cursor),
            )
        await cur.execute(
            "UPDATE fleet_pages SET state = 'listed', last = %s "
            "WHERE src = %s AND dst = %s AND round = %s AND seq = %s",
            (next_cursor is None, src, dst, page.round, page.seq),
        )

    await fleet.tx(work)


async def page_done(fleet: Fleet, src: str, dst: str, page: PageClaim) -> None:
    """Every item of the page is finished (uploaded, found there, or failed and reported);
    the locations this worker held back go with it (the fleet's map needs them)."""
    later = fleet._take_later()

    async def work(cur: Any) -> None:
        await upsert_locations(cur, later)
        await cur.execute(
            "UPDATE fleet_pages SET state = 'done', owner = NULL "
            "WHERE src = %s AND dst = %s AND round = %s AND seq = %s",
            (src, dst, page.round, page.seq),
        )

    await fleet.tx(work)


async def release_page(fleet: Fleet, src: str, dst: str, page: PageClaim) -> None:
    """Give a page back unfinished (this worker stops): another may claim it at once."""

    async def work(cur: Any) -> None:
        await cur.execute(
            "UPDATE fleet_pages SET owner = NULL, expires = 0 WHERE src = %s AND dst = %s "
            "AND round = %s AND seq = %s AND owner = %s AND state <> 'done'",
            (src, dst, page.round, page.seq, fleet.owner),
        )

    await fleet.tx(work)


@dataclass(frozen=True, slots=True)
class RoundState:
    complete: bool  # the last page is listed and every page is done
    pages: int  # pages known so far
    done: int
    holders: tuple[str, ...]  # the other workers holding pages of it


async def round_state(fleet: Fleet, src: str, dst: str, round_: int) -> RoundState:
    async def work(cur: Any) -> RoundState:
        await cur.execute(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE state = 'done'), "
            "COALESCE(bool_or(last) AND bool_and(state = 'done'), FALSE), "
            "array_agg(DISTINCT owner) FILTER (WHERE owner IS NOT NULL AND owner <> %s "
            "AND state <> 'done') "
            "FROM fleet_pages WHERE src = %s AND dst = %s AND round = %s",
            (fleet.owner, src, dst, round_),
        )
        row = await cur.fetchone()
        assert row is not None
        return RoundState(bool(row[2]), int(row[0]), int(row[1]), tuple(row[3] or ()))

    state: RoundState = await fleet.tx(work)
    return state


def filter_text(include: Sequence[str], exclude: Sequence[str], non_images: bool) -> str:
    """The filters a worker lists with, as stored with a round (and shown when they
    differ): "" for none."""
    parts = [f"--include {g}" for g in sorted(include)]
    parts += [f"--exclude {g}" for g in sorted(exclude)]
    if non_images:
        parts.append("--include-non-images")
    return " ".join(parts)
