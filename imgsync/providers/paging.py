"""Resuming a page-numbered listing after the host deleted items.

A page number alone does not survive deletions: every later item moves up, and page N
of the next run starts past items never seen. A cursor therefore also carries a
*watermark*, the last item handed out. Resuming, the page before the cursor's is read
again, stepping back while a page starts after the watermark (items moved up past it),
and only what comes after the watermark is handed out. The cost is one page more per
resume. Providers use this for cursors saved by an earlier run; a cursor they handed out
themselves a moment ago (a listing going on) is read as it is. :class:`WatermarkListing`
is that whole ``list_page``; a provider gives it how to fetch a page, read a cursor,
compare an item with a watermark and write the next cursor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from imgsync.models import Page, RemoteItem

__all__ = ["WatermarkListing", "resume_page"]

Fetch = Callable[[int], Awaitable[tuple[list[RemoteItem], bool]]]
"""``fetch(page)`` -> (its items, whether pages follow it)."""

Mark = TypeVar("Mark")


async def resume_page(
    fetch: Fetch, page: int, *, first: int, after: Callable[[RemoteItem], bool]
) -> tuple[int, list[RemoteItem], RemoteItem | None, bool]:
    """Find the watermark again from around ``page`` (pages are numbered from ``first``).

    Returns the page number read last, the items of it that come ``after`` the watermark,
    the last item of that page (for the next cursor) and whether pages follow it.
    """
    page = max(first, page - 1)
    items, more = await fetch(page)
    while page > first and (not items or after(items[0])):
        page -= 1  # items were deleted before the watermark: look further back
        items, more = await fetch(page)
    last = items[-1] if items else None
    fresh = [i for i in items if after(i)]
    while not fresh and more:  # the watermark ended its page: read the next one
        page += 1
        items, more = await fetch(page)
        last = items[-1] if items else last
        fresh = [i for i in items if after(i)]
    return page, fresh, last, more


class WatermarkListing(Generic[Mark]):
    """A provider's ``list_page`` over a page-numbered listing whose cursors carry a
    watermark (one per provider instance).

    A cursor this listing handed out last (a listing going on) is read as it is; another
    one with a watermark (saved by an earlier run) is resumed from it (:func:`resume_page`);
    one without (no cursor, or a bare page number saved by an older version) lists again
    from the first page (``restarting(page)`` is told when that drops a later page).

    ``parse(cursor)`` -> (page, watermark or None); ``after(item, mark)``: does ``item``
    come after the watermark; ``cursor(page, last)``: the cursor of ``page`` whose
    watermark is ``last``, the last item handed out.
    """

    def __init__(
        self,
        fetch: Fetch,
        *,
        first: int,
        parse: Callable[[str | None], tuple[int, Mark | None]],
        after: Callable[[RemoteItem, Mark], bool],
        cursor: Callable[[int, RemoteItem], str],
        restarting: Callable[[int], None] | None = None,
    ) -> None:
        self._fetch, self._first = fetch, first
        self._parse, self._after, self._cursor = parse, after, cursor
        self._restarting = restarting
        self._handed_out: str | None = None  # the cursor handed out last (a listing going on)

    async def page(self, cursor: str | None) -> Page:
        """The page ``cursor`` names; ``next_cursor`` is None after a short or empty page."""
        page, mark = self._parse(cursor)
        going_on, self._handed_out = cursor is not None and cursor == self._handed_out, None
        if mark is not None and not going_on:
            found: Mark = mark
            page, items, last, more = await resume_page(
                self._fetch, page, first=self._first, after=lambda item: self._after(item, found)
            )
        else:
            if not going_on:
                if page > self._first and self._restarting is not None:
                    self._restarting(page)
                page = self._first
            items, more = await self._fetch(page)
            last = items[-1] if items else None
        if not more or last is None:
            return Page(items=items, next_cursor=None)
        self._handed_out = self._cursor(page + 1, last)
        return Page(items=items, next_cursor=self._handed_out)
