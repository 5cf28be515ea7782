"""The search for uploads a holder that did not finish may have made, shared by every
lease a run takes over.

When a worker dies (or its lease expires), the run that takes its leases over must look
at the destination before sending each of those images again: the dead holder may have
sent it. One search per lease read the destination's listing again each time (about 23
pages per search on a busy Guizhan destination, so recovery ran at 0.65x of the host's
limit). Here the run reads the listing newest first once, back to the oldest time any of
its taken-over leases may have been sent, and matches every taken-over image against
that one copy (the provider's :meth:`~imgsync.providers.base.Provider.match_upload`).

Only the items no worker recorded can be an upload whose worker died before recording it:
the recorded ones (asked of the state once per item) are another image's, or this one's
recorded meanwhile (found at once). So a host that must download an item to compare it
(Guizhan) downloads only those.

The copy stays good for a lease taken over before its newest page was read: the holder
had stopped by then, so what it sent is in the copy. A lease taken over later (another
worker died since) first tops the copy up: the newest pages are read until one shows an
item already held (a page or two, not the whole listing again). A lease whose send may
be older than what the copy reaches extends it: the listing is read on from where it
stopped.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import anyio

from imgsync.models import RemoteItem, UploadSource
from imgsync.providers.base import FIND_SINCE_PAGES, Provider, older_than


class SharedSearch:
    """One newest-first copy of a destination's listing, shared by a run's takeovers."""

    def __init__(
        self,
        dst: Provider,
        located: Callable[[Sequence[str]], Awaitable[dict[str, str]]] | None = None,
    ) -> None:
        self.dst = dst
        self._located = located  # remote ids -> the checksums recorded at them
        self._recorded: dict[str, str] = {}  # remote_id -> sha256, of the items asked about
        self._asked: set[str] = set()
        self.items: list[RemoteItem] = []  # newest first
        self._ids: set[str] = set()
        self._tick = 0  # orders "a lease was taken over" against "the newest page was read"
        self._read_at: int | None = None  # the tick of the last read from the newest page
        self._bound = math.inf  # the oldest send any taken-over lease may have made
        self._older: AsyncIterator[list[RemoteItem]] | None = None  # read on for older items
        self._last: RemoteItem | None = None  # the oldest item read so far
        self._end = False  # the whole listing is held
        self._lock = anyio.Lock()
        self.pages = 0  # listing pages read (for the benchmark and the tests)

    def taken(self, since: float | None) -> int:
        """A lease was taken over now, its holder's send no earlier than ``since``: widen
        the bound the listing is read back to; the mark to pass to :meth:`find`."""
        if since is not None:
            self._bound = min(self._bound, since)
        self._tick += 1
        return self._tick

    async def find(
        self, src: UploadSource, *, rel_path: str, since: float, taken_at: int
    ) -> RemoteItem | None:
        """The item a holder's upload of ``src`` (sent no earlier than ``since``) made at
        the destination, if any; ``taken_at``: :meth:`taken`'s mark for its lease."""
        self._bound = min(self._bound, since)
        async with self._lock:
            try:
                if self._read_at is None:
                    await self._first()
                elif self._read_at < taken_at:
                    await self._top_up()
                await self._reach_back()
            except BaseException:
                await self.close()  # half read: the next search starts afresh
                raise
        slack = self.dst.search_slack
        window = [i for i in self.items if not older_than(i, since, slack=slack)]
        if self._located is not None:
            ask = [i.remote_id for i in window if i.remote_id not in self._asked]
            if ask:
                self._recorded.update(await self._located(ask))
                self._asked.update(ask)
            for item in window:
                if self._recorded.get(item.remote_id) == src.sha256:
                    return item  # recorded there meanwhile
            window = [i for i in window if i.remote_id not in self._recorded]
        return await self.dst.match_upload(src, window, rel_path=rel_path, since=since)

    def _add(self, page: list[RemoteItem]) -> list[RemoteItem]:
        """The items of ``page`` not held yet (now held)."""
        new = [i for i in page if i.remote_id not in self._ids]
        self._ids.update(i.remote_id for i in new)
        return new

    def _reached(self) -> bool:
        last = self._last
        return self._end or (
            last is not None and older_than(last, self._bound, slack=self.dst.search_slack)
        )

    async def _first(self) -> None:
        self._tick += 1
        self._read_at = self._tick
        self._older = aiter(self.dst.newest_pages(FIND_SINCE_PAGES))
        await self._reach_back()

    async def _reach_back(self) -> None:
        """Read on (older items) until the listing reaches the bound or ends."""
        while not self._reached():
            assert self._older is not None
            try:
                page = await anext(self._older)
            except StopAsyncIteration:
                self._end = True
                return
            self.pages += 1
            self.items.extend(self._add(page))
            if page:
                self._last = page[-1]
            else:
                self._end = True

    async def _top_up(self) -> None:
        """Read the newest pages until one shows an item already held: what was stored
        since the last read goes in front."""
        self._tick += 1
        self._read_at = self._tick
        fresh: list[RemoteItem] = []
        pages = self.dst.newest_pages(FIND_SINCE_PAGES)
        try:
            async for page in pages:
                self.pages += 1
                seen = any(i.remote_id in self._ids for i in page)
                fresh.extend(self._add(page))
                if seen or not page:
                    break
        finally:
            with contextlib.suppress(Exception):
                await pages.aclose()  # type: ignore[attr-defined]
        self.items[:0] = fresh

    async def close(self) -> None:
        """Drop the copy (a failed read, or the run is over)."""
        older, self._older = self._older, None
        if older is not None:
            with contextlib.suppress(Exception):
                await older.aclose()  # type: ignore[attr-defined]
        self.items, self._ids = [], set()
        self._read_at, self._last, self._end = None, None, False
