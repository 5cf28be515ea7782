"""Fleet mode: this worker's share of a listing (see :mod:`imgsync.state.fleet.pages`).

The copy engine asks :meth:`SharedListing.next_page` instead of walking the source's
listing itself: it gets a page no other worker has, listed from its cursor, or None once
the fleet's pass over the source is complete. While the other workers still hold pages,
it waits (their page may come back to it if they die). The engine reports each finished
item; when a page's items are all finished the page is done for the fleet.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio

from imgsync.models import Page
from imgsync.providers.base import Provider
from imgsync.state.fleet import Fleet
from imgsync.state.fleet import pages as fleet_pages
from imgsync.state.fleet.pages import PageClaim

PAGE_POLL = 0.25  # seconds between looks for a page while others hold the rest


class SharedListing:
    """This worker's side of one round of a shared listing."""

    def __init__(
        self,
        fleet: Fleet,
        src: Provider,
        src_key: str,
        dst_key: str,
        *,
        poll: float = PAGE_POLL,
        sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
        filters: str = "",
    ) -> None:
        self.fleet = fleet
        self.src = src
        self.src_key, self.dst_key = src_key, dst_key
        self.poll = poll
        self.sleep = sleep
        self.filters = filters  # what this worker lists with (the round's must be the same)
        self.round: int | None = None
        self.complete = False  # the fleet finished the round
        self.pages = 0  # pages this worker listed
        self._open: dict[int, tuple[PageClaim, int]] = {}  # page index -> (claim, items left)

    async def begin(self) -> None:
        """Join the round under way (or start one). Raises ``FiltersDiffer`` (exit 2) when
        that round is listed with other filters than this worker's."""
        if self.round is None:
            self.round = await fleet_pages.begin_round(
                self.fleet,
                self.src_key,
                self.dst_key,
                appends=self.src.features.listing_appends,
                filters=self.filters,
            )

    async def next_page(self, stopping: Callable[[], bool]) -> tuple[PageClaim, Page] | None:
        """The next page for this worker, listed; None when the round is complete (or
        ``stopping()``). Raises what listing the source raises (the page is given back)."""
        await self.begin()
        assert self.round is not None
        while not stopping():
            claim = await fleet_pages.claim_page(self.fleet, self.src_key, self.dst_key, self.round)
            if claim is not None:
                try:
                    page = await self.src.list_page(claim.cursor)
                    following = page.next_cursor
                    if following == claim.cursor:  # a source that says "no further"
                        following = None
                    await fleet_pages.page_listed(
                        self.fleet, self.src_key, self.dst_key, claim, following
                    )
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await fleet_pages.release_page(
                            self.fleet, self.src_key, self.dst_key, claim
                        )
                    raise
                self.pages += 1
                return claim, page
            state = await fleet_pages.round_state(
                self.fleet, self.src_key, self.dst_key, self.round
            )
            if state.complete:
                self.complete = True
                return None
            await self.sleep(self.poll)
        return None

    async def track(self, index: int, claim: PageClaim, items: int) -> None:
        """Page ``index`` (the engine's number for it) hands out ``items`` items."""
        self._open[index] = (claim, items)
        if items == 0:
            await self._finished_page(index)

    async def finished(self, indexes: Iterable[int]) -> None:
        """One item finished per index given (done, found there, failed or deferred)."""
        for index in indexes:
            entry = self._open.get(index)
            if entry is None:
                continue
            claim, left = entry
            self._open[index] = (claim, left - 1)
            if left - 1 <= 0:
                await self._finished_page(index)

    async def _finished_page(self, index: int) -> None:
        claim, _left = self._open.pop(index)
        await fleet_pages.page_done(self.fleet, self.src_key, self.dst_key, claim)

    async def release(self) -> None:
        """Give back the pages not finished (this worker stopped early)."""
        while self._open:
            _index, (claim, _left) = self._open.popitem()
            await fleet_pages.release_page(self.fleet, self.src_key, self.dst_key, claim)
