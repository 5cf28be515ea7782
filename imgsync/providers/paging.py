"""Resuming a page-numbered listing after the host deleted items.

A page number alone does not survive deletions: every later item moves up, and page N
of the next run starts past items never seen. A cursor therefore also carries a
*watermark*, the last item handed out. Resuming, the page before the cursor's is read
again, stepping back while a page starts after the watermark (items moved up past it),
and only what comes after the watermark is handed out. The cost is one page more per
resume. Providers use this for cursors saved by an earlier run; a cursor they handed out
themselves a moment ago (a listing going on) is read as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from imgsync.models import RemoteItem

__all__ = ["resume_page"]

Fetch = Callable[[int], Awaitable[tuple[list[RemoteItem], bool]]]
"""``fetch(page)`` -> (its items, whether pages follow it)."""


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
