"""The watermarked page listing every page-numbered provider uses (providers/paging.py),
over an in-memory newest-first listing whose items can be deleted between calls."""

from __future__ import annotations

from imgsync.models import RemoteItem
from imgsync.providers.paging import WatermarkListing

PER_PAGE = 3


class Listing:
    """Items ``n`` .. 1 newest first, ``PER_PAGE`` a page, pages numbered from 1."""

    def __init__(self, n: int) -> None:
        self.ids = list(range(n, 0, -1))
        self.fetched: list[int] = []

    async def fetch(self, page: int) -> tuple[list[RemoteItem], bool]:
        self.fetched.append(page)
        start = (page - 1) * PER_PAGE
        chunk = self.ids[start : start + PER_PAGE]
        items = [RemoteItem(remote_id=str(i), name=f"{i}.png", size=1) for i in chunk]
        return items, start + PER_PAGE < len(self.ids)


def _parse(cursor: str | None) -> tuple[int, int | None]:
    if not cursor:
        return 1, None
    page, _, mark = cursor.partition("@")
    return int(page), int(mark) if mark else None


def _listing(src: Listing, restarts: list[int] | None = None) -> WatermarkListing[int]:
    return WatermarkListing(
        src.fetch,
        first=1,
        parse=_parse,
        after=lambda item, mark: int(item.remote_id) < mark,
        cursor=lambda page, last: f"{page}@{last.remote_id}",
        restarting=restarts.append if restarts is not None else None,
    )


async def _all(listing: WatermarkListing[int], cursor: str | None) -> list[str]:
    seen: list[str] = []
    while True:
        page = await listing.page(cursor)
        seen += [i.remote_id for i in page.items]
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


async def test_a_listing_going_on_reads_each_page_once() -> None:
    src = Listing(8)
    assert await _all(_listing(src), None) == [str(i) for i in range(8, 0, -1)]
    assert src.fetched == [1, 2, 3]


async def test_a_saved_cursor_resumes_after_its_watermark_when_items_were_deleted() -> None:
    """Page 2 of the earlier run starts later once newer items are gone; resuming from
    the watermark hands out exactly the items not seen yet."""
    src = Listing(10)
    first = await _listing(src).page(None)  # 10 9 8, cursor 2@8
    assert first.next_cursor == "2@8"
    src.ids.remove(10)
    src.ids.remove(9)  # page 2 would now start at 5: 7 and 6 would be skipped
    rest = await _all(_listing(src), first.next_cursor)  # a new instance: a saved cursor
    assert rest == ["7", "6", "5", "4", "3", "2", "1"]


async def test_a_bare_page_number_lists_again_from_the_first_page() -> None:
    src, restarts = Listing(5), list[int]()
    page = await _listing(src, restarts).page("2")
    assert [i.remote_id for i in page.items] == ["5", "4", "3"]
    assert restarts == [2]
