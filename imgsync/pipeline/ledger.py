"""The page ledger: which listing pages are finished, so a cursor is saved only past them.

A host listing is read page by page; a page's items finish in any order (several
workers). The cursor that resumes *after* a page may be saved only when that page and
every page before it are finished. An item that failed keeps its page open, so the next
run lists that page again and retries it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(slots=True)
class _Page:
    index: int
    resume: str | None  # the cursor that lists what comes after this page
    open_items: int
    failed: bool = False


class PageLedger:
    """Pages in listing order with their unfinished items."""

    def __init__(self) -> None:
        self._pages: deque[_Page] = deque()
        self._by_index: dict[int, _Page] = {}
        self._next = 0

    def add(self, resume: str | None, items: int) -> int:
        """Add the next page (``items`` to wait for); returns its index."""
        page = _Page(self._next, resume, items)
        self._next += 1
        self._pages.append(page)
        self._by_index[page.index] = page
        return page.index

    def finish(self, index: int, *, ok: bool) -> None:
        """One item of page ``index`` is done (``ok``) or failed (the page stays open)."""
        page = self._by_index.get(index)
        if page is None:
            return
        if ok:
            page.open_items -= 1
        else:
            page.failed = True

    def advance(self) -> str | None:
        """Drop the leading finished pages; the cursor to save after them, or None."""
        resume = None
        moved = False
        while self._pages and self._pages[0].open_items <= 0 and not self._pages[0].failed:
            page = self._pages.popleft()
            del self._by_index[page.index]
            resume, moved = page.resume, True
        return resume if moved else None

    @property
    def settled(self) -> bool:
        """Every page added so far is finished."""
        return not self._pages
