"""Guizhan Image Hosting (鬼斩图床): list and upload; no delete, no single-image get.

Wire facts (hosts.md §1) and how this module treats them. Tags: [DOC] the host's own API
page, [INF] inferred (the host looks like a Laravel app), [OBS] seen in recordings of
Lsky Pro 2, a similar Laravel host (fixtures/lsky-2, flavour only).

* Two endpoints exist [DOC]: ``GET /v1/images`` and ``POST /v1/images``. Nothing to get
  one image by name, delete, rename or report a quota, so ``features`` declares them
  absent. A ``base_url`` written as the docs print it (``…/v1/``) is accepted too.
* Auth is ``Authorization: Bearer <token>`` only [DOC]. ``Accept: application/json`` is
  sent because Laravel answers a refused token from a client that does not ask for JSON
  with a 302 to ``/login`` [OBS]; such a redirect is still read as ``AuthError``.
* Every reply is ``{code, message, result}`` [DOC]; ``code != 0`` is an error. Which HTTP
  status goes with it is not documented [INF], so the envelope decides at 200 and at 4xx
  alike. Only ``1002`` "Image size exceeds the limit." is documented: ``Rejected``,
  permanent, never retried. ``1001``/401/403/"Unauthenticated." -> ``AuthError`` [INF];
  any other code -> ``Rejected`` carrying the host's message; an envelope at 5xx ->
  ``TransientError``. A success reply that is not the envelope -> ``ResponseError``.
* 60 requests a minute [DOC]: ``info.default_limits``; the runtime installs it for the
  API (``/v1``) of the host ``base_url`` names (``api.gzssimg.com``, or a stand-in such as
  the emulator), and ``[limits."<authority>"]`` overrides it. The shared limiter paces
  us (in fleet mode through the fleet's rate ledger), so nothing is done here. Over the limit Laravel's ``throttle`` answers 429
  ``{"message":"Too Many Attempts."}`` with ``Retry-After`` and ``X-RateLimit-*`` [INF]
  (Lsky sent the 429 without ``Retry-After`` [OBS]): ``RateLimited``, with the wait taken
  from ``Retry-After``, else from ``X-RateLimit-Reset``; the headers are hints only.
* Listing [DOC]: ``page`` (min 1), ``per_page`` (5-20; clamped here, since Laravel
  ``min``/``max`` rules reject rather than clamp [INF]), ``order=upload_time`` and
  ``direction=ASC``: the constraint row spells it in capitals and only the cURL example
  shows lower case, so capitals satisfy both readings. No total is returned: a page
  shorter than ``per_page`` (or empty) is the last. Oldest first means new uploads land on
  the last page, hence ``listing_appends``.
* Resuming survives deletions on the host. A page number alone does not: after images
  are deleted on the website every later image moves up, and page N of the next run
  starts past images never seen. So the cursor is ``<page>@<per_page>@<upload_time>@<name>``:
  the next page to read and a watermark, the last image handed out. The cursor this
  provider handed out last is read as is (a listing going on); any other (saved by an
  earlier run) is resumed by reading the page before it again and stepping back further while
  that page starts after the watermark (so images were deleted before it), then handing
  out only what comes after the watermark. A resume costs one page more than it used to;
  ``<page>@<per_page>`` cursors saved by older versions are still read as page numbers.
* Image objects [DOC] have ``name`` (the stable key, used as ``remote_id``),
  ``fullname`` (``name`` + extension; the file name), ``size``, ``upload_time`` (UTC,
  ``2021-01-09T17:52:03.000000Z``; parsed leniently) and ``url`` on ``gzimg.cc``. No
  checksum: dedup hashes downloaded bytes.
* Upload [DOC]: multipart ``image`` with a file name; the result is one image object.
  No title or album field exists, so metadata is not sent. The host has no de-dup
  (every upload is a new image) [INF], so a retried upload whose first attempt did reach
  the host can leave a duplicate there.
* Downloads fetch ``url`` without the token: images are public and live on another host.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from imgsync.errors import (
    AuthError,
    ProviderError,
    RateLimited,
    Rejected,
    RemoteMisconfigured,
    ResponseError,
    TransientError,
)
from imgsync.http import ApiResponse, FilePart, Multipart, parse_retry_after
from imgsync.log import get_logger, redact
from imgsync.models import ItemMeta, Page, RemoteItem, UploadSource, guess_mime, parse_timestamp
from imgsync.providers.base import (
    FIND_SINCE_PAGES,
    Features,
    Provider,
    ProviderContext,
    ProviderInfo,
    option,
)
from imgsync.providers.paging import WatermarkListing
from imgsync.providers.values import as_int

if TYPE_CHECKING:
    from imgsync.config import RemoteConfig

__all__ = ["GuizhanProvider"]

PER_PAGE_MIN, PER_PAGE_MAX = 5, 20
API_SCOPE = "/v1"  # the part of the host Laravel's API throttle counts (60 a minute)
CODE_UNAUTHENTICATED = 1001  # [INF] the emulator's choice; 401/403 are recognised as well
CODE_TOO_LARGE = 1002  # [DOC] "Image size exceeds the limit."

_log = get_logger("imgsync.providers.guizhan")


parse_time = parse_timestamp  # upload_time: "2021-01-09T17:52:03.000000Z" (hosts.md §1)


Watermark = tuple[float, str, str]  # (upload time, name, upload_time as the host wrote it)


def _parse_cursor(cursor: str | None, per_page: int) -> tuple[int, Watermark | None]:
    """The page a cursor names (1 for none) and its watermark, if it has one.

    A cursor we cannot read, or one saved with another page size (its page number would
    point elsewhere), restarts the listing: relisting is harmless (known items are
    skipped), skipping pages is not."""
    if cursor is None:
        return 1, None
    number, _, rest = cursor.partition("@")
    size, _, mark = rest.partition("@")
    page = as_int(number)
    if page is None or page < 1:
        _log.warning("guizhan_bad_cursor", cursor=cursor[:40])
        return 1, None
    if size and as_int(size) != per_page:
        _log.info("guizhan_page_size_changed", saved=size, now=per_page)
        return 1, None
    if not mark:
        return page, None
    raw_time, _, name = mark.partition("@")
    when = parse_time(raw_time)
    if when is None or not name:
        _log.warning("guizhan_bad_cursor", cursor=cursor[:40])
        return 1, None
    return page, (when, name, raw_time)


@dataclass(frozen=True, slots=True)
class GuizhanOptions:
    """``[remotes.NAME]`` keys of a guizhan remote."""

    per_page: int = option(
        PER_PAGE_MAX, doc="listing page size", range=(PER_PAGE_MIN, PER_PAGE_MAX)
    )


class GuizhanProvider(Provider):
    """Guizhan Image Hosting through its ``/v1`` API."""

    info = ProviderInfo(
        kind="guizhan",
        description="Guizhan Image Hosting (鬼斩图床): list and upload, no delete",
        options=GuizhanOptions,
        token="required",
        base_url="optional",
        default_base_url="https://api.gzssimg.com",
        default_limits={API_SCOPE: "60/minute"},
        emulator="guizhan",
        full_options={"per_page": PER_PAGE_MIN},
    )
    features = Features(
        can_list=True,
        can_get=False,
        can_delete=False,
        checksums=frozenset(),
        page_size=(PER_PAGE_MIN, PER_PAGE_MAX),
        listing_appends=True,
    )
    options: GuizhanOptions

    def __init__(self, config: RemoteConfig, ctx: ProviderContext) -> None:
        super().__init__(config, ctx)
        self.per_page = self.options.per_page
        # a listing going on reads the cursor it handed out last as it is; any other cursor
        # (saved by an earlier run) is resumed by looking back for its watermark
        self._listing = WatermarkListing(
            self._items,
            first=1,
            parse=lambda cursor: _parse_cursor(cursor, self.per_page),
            after=self._after,
            cursor=self._cursor,
            restarting=self._restarting,
        )
        # the SHA-256 of images a search downloaded (by name), and one search at a time
        self._searched: dict[str, str] = {}
        self._search_lock = asyncio.Lock()

    # --- plumbing ------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """``<base>/v1/images`` (a base that already ends in ``/v1`` is not doubled)."""
        return f"{self.base_url.removesuffix('/v1')}/v1/images"

    def auth_headers(self) -> dict[str, str]:
        token = self.config.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _headers(self) -> dict[str, str]:
        token = self.config.token
        if not token:
            raise AuthError("no API token configured", remote=self.name)
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def _map_error(self, resp: ApiResponse) -> ProviderError | None:
        """The error a Guizhan reply means, or ``None`` (success, or leave it to the status).

        Raising ``LookupError``/``TypeError``/``ValueError`` here is read by the client as
        an unexpected reply (``ResponseError``).
        """
        status, data = resp.status, resp.data
        envelope = isinstance(data, dict) and "code" in data
        message = str(data.get("message") or "").strip() if isinstance(data, dict) else ""
        if status == 429 or message.lower().startswith("too many attempts"):
            return RateLimited(
                f"too many requests: {message or status}",
                retry_after=self._retry_after(resp),
                status=status,
            )
        if 300 <= status < 400:
            location = resp.headers.get("Location", "")
            if urlsplit(location).path.rstrip("/").endswith("/login"):
                return AuthError("token refused (redirected to the login page)", status=status)
            return None  # the default names the redirect target
        if not envelope:
            if resp.ok:
                body = redact(str(data))[:200]
                return ResponseError(f"reply is not a {{code, message, result}} envelope: {body}")
            if status == 404:
                return RemoteMisconfigured(
                    f"no Guizhan API at {self.api_url}; check base_url", status=status
                )
            return None  # by status: 401 -> AuthError, 5xx -> TransientError ...
        code = as_int(data["code"])
        if code == 0:
            return None  # a success (or, at an error status, the status decides)
        what = f"{message or 'error'} (code {data['code']})"
        if status >= 500:
            return TransientError(f"host error: {what}", status=status, code=code)
        if code == CODE_TOO_LARGE:
            return Rejected(f"image too large for the host: {what}", status=status, code=code)
        if code == CODE_UNAUTHENTICATED or status in (401, 403) or message == "Unauthenticated.":
            return AuthError(f"token refused: {what}", status=status, code=code)
        return Rejected(f"refused: {what}", status=status, code=code)

    @staticmethod
    def _retry_after(resp: ApiResponse) -> float | None:
        wait = parse_retry_after(resp.headers.get("Retry-After"))
        if wait is None and (reset := as_int(resp.headers.get("X-RateLimit-Reset"))):
            wait = max(0.0, reset - time.time())
        return wait

    def _result(self, resp: ApiResponse, kind: type[Any]) -> Any:
        result = resp.data.get("result") if isinstance(resp.data, dict) else None
        if not isinstance(result, kind):
            raise ResponseError(
                f"expected a {kind.__name__} in result: {redact(str(resp.data))[:200]}",
                remote=self.name,
                status=resp.status,
            )
        return result

    def _item(self, row: Any) -> RemoteItem:
        """A ``RemoteItem`` from one image object (``ResponseError`` if it has no name)."""
        if not isinstance(row, dict):
            raise ResponseError(f"image entry is not an object: {row!r:.100}", remote=self.name)
        name, fullname = row.get("name"), row.get("fullname")
        key = name if isinstance(name, str) and name else fullname
        if not isinstance(key, str) or not key:
            raise ResponseError(f"image entry without a name: {row!r:.200}", remote=self.name)
        filename = fullname if isinstance(fullname, str) and fullname else key
        url = row.get("url")
        size = as_int(row.get("size"))
        return RemoteItem(
            remote_id=key,
            name=filename,
            size=size if size is not None and size >= 0 else None,
            url=url if isinstance(url, str) and url else None,
            mime=guess_mime(filename),
            meta=ItemMeta(created_at=parse_time(row.get("upload_time"))),
            is_image=True,
        )

    # --- the provider interface ----------------------------------------------------------

    async def _items(self, page: int) -> tuple[list[RemoteItem], bool]:
        """A page's images, and whether it was full (a shorter page is the last)."""
        rows = await self._rows(page)
        return [self._item(row) for row in rows], len(rows) >= self.per_page

    async def _rows(
        self, page: int, direction: str = "ASC", per_page: int | None = None
    ) -> list[Any]:
        resp = await self.http.request(
            "GET",
            self.api_url,
            remote=self.name,
            params={
                "page": page,
                "per_page": per_page or self.per_page,
                "order": "upload_time",
                "direction": direction,
            },
            headers=self._headers(),
            map_error=self._map_error,
        )
        rows: list[Any] = self._result(resp, list)
        return rows

    @staticmethod
    def _after(item: RemoteItem, mark: Watermark) -> bool:
        """Does ``item`` come after the watermark? Images uploaded in the same second as
        the watermark count as after it (they are only checked again), except itself."""
        when = item.meta.created_at
        return when is None or when > mark[0] or (when == mark[0] and item.remote_id != mark[1])

    async def list_page(self, cursor: str | None) -> Page:
        """One page, oldest first; ``next_cursor`` names the next page and the last image
        handed out, or is ``None`` after a short or empty page."""
        return await self._listing.page(cursor)

    def _restarting(self, page: int) -> None:
        """A saved page number without a watermark (an older version's cursor): what moved
        since cannot be told, so the listing starts again (known images are skipped
        without a download); skipping would be forever."""
        _log.info("guizhan_cursor_without_watermark", remote=self.name, page=page)

    def _cursor(self, page: int, last: RemoteItem) -> str:
        """``<page>@<per_page>@<upload_time>@<name>``; without a readable upload time, the
        plain page number (nothing to resume from but the position)."""
        when = last.meta.created_at
        if when is None:
            return f"{page}@{self.per_page}"
        stamp = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return f"{page}@{self.per_page}@{stamp}@{last.remote_id}"

    async def newest_pages(self, limit: int = FIND_SINCE_PAGES) -> AsyncIterator[list[RemoteItem]]:
        """The listing newest first (``direction=DESC``, the largest pages; the pages of a
        resumable listing stay oldest first)."""
        for page in range(1, limit + 1):
            rows = await self._rows(page, direction="DESC", per_page=PER_PAGE_MAX)
            yield [self._item(row) for row in rows]
            if len(rows) < PER_PAGE_MAX:
                return

    async def match_upload(
        self,
        src: UploadSource,
        items: Sequence[RemoteItem],
        *,
        rel_path: str,
        since: float | None = None,
    ) -> RemoteItem | None:
        """The host renames every upload and reports no checksum, so an image of the same
        size is downloaded and its SHA-256 compared: a match is the very bytes, never a
        guess. The checksums read are kept, so searches one after another download an
        image once."""
        async with self._search_lock:
            for item in items:
                if item.size == src.size and await self._known_sha256(item) == src.sha256:
                    return item
        return None

    async def _known_sha256(self, item: RemoteItem) -> str:
        """:meth:`_sha256` of ``item``, read once per image for this provider's life."""
        known = self._searched.get(item.remote_id)
        if known is None:
            known = self._searched[item.remote_id] = await self._sha256(item)
        return known

    async def _sha256(self, item: RemoteItem) -> str:
        digest = hashlib.sha256()
        async for chunk in self.open(item):
            digest.update(chunk)
        return digest.hexdigest()

    async def open(self, item: RemoteItem) -> AsyncIterator[bytes]:
        if not item.url:
            raise ResponseError(f"{item.name}: the host gave no URL", remote=self.name)
        async for chunk in self.open_file(item.url):
            yield chunk

    async def upload(self, src: UploadSource, meta: ItemMeta, *, rel_path: str) -> RemoteItem:
        async def form() -> Multipart:
            return Multipart(files=[FilePart.upload("image", src.name, src)])

        resp = await self.http.request(
            "POST",
            self.api_url,
            remote=self.name,
            headers=self._headers(),
            form=form,
            map_error=self._map_error,
        )
        item = self._item(self._result(resp, dict))
        if item.size is not None and item.size != src.size:
            _log.info(
                "guizhan_size_differs",
                remote=self.name,
                name=item.name,
                sent=src.size,
                stored=item.size,
            )
        return item
