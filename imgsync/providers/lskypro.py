"""Lsky Pro 2 (self-hosted, Laravel): list, upload, delete through ``/api/v1``.

Evidence: [REC n] exchange n recorded from a real Lsky Pro 2.1 server
(``shared/fixtures/lsky-2``); [SRC] the upstream server source (lsky-org/lsky-pro); [INF]
inference.

* Every instance is self-hosted, so ``base_url`` is required. Auth is ``Authorization: Bearer
  <token>`` (Laravel Sanctum; tokens look like ``12|<40 chars>``, made by ``POST
  /api/v1/tokens`` with email and password). ``Accept: application/json`` is always sent:
  without it a refused token is a **302 to /login** [REC 28, 30], which is still read as
  ``AuthError`` here. A token is optional: without one an upload is a guest upload, which
  succeeds by default [REC 07]; listing and deleting need one. A bad token is never
  downgraded to a guest upload: it is a 401 [REC 08].
* Every answer is ``{"status": bool, "message", "data"}``; **errors come with HTTP 200 and
  ``status: false``** [REC 09, 10, 38], so the envelope decides at every status. The
  messages are Chinese and fixed in the server [SRC]: unsupported type / too large ->
  ``Rejected``; guest uploads off, unverified or disabled account -> ``AuthError``; no such
  storage strategy -> ``RemoteMisconfigured``; storage full -> ``Rejected``; the per-group upload frequency limit ("每分钟内你最多可以
  上传 N 张图片") -> ``RateLimited`` for that unit; the generic "服务异常，请稍后再试" (what a
  body the server cannot decode gives, but also any server-side failure) -> ``TransientError``.
  An unknown route is Laravel's bare 404 ``{"message": ...}`` [REC 33] -> ``RemoteMisconfigured``.
* Throttling [REC 35, SRC]: HTTP 429 with the envelope "Too Many Attempts." and, as Lsky's
  exception handler drops Laravel's headers, usually no ``Retry-After``; the API limit is 60 a
  minute per user on a stock instance: declared for the API path of the remote's own host
  (``/api/v1``; downloads of image files are not throttled and not paced by it), and an
  instance that allows more or less sets ``[limits."<authority>/api/v1"]``.
* Listing [REC 15-18, SRC]: ``GET /api/v1/images?page=N&order=...`` is a Laravel paginator,
  40 a page whatever ``per_page`` says; the next page exists while ``current_page <
  last_page``; a page past the end is empty [REC 16]. ``order`` is an option (default
  ``earliest``: new uploads land on the last page, so a finished listing can resume from its
  last page -- ``listing_appends``); ``album_id`` narrows it. Guest uploads are not listed.
  The cursor is ``<page>@<order>@<album>@<key>@<time>``, the last two naming the watermark
  (the item before that page); a cursor saved under other options restarts. A later run
  resuming a saved cursor re-reads the page before it and steps back while images deleted
  on the website moved the watermark up, so no new image is skipped. Only ``earliest``
  resumes: with ``newest``/``utmost``/``least`` any image added or deleted since shifts the
  pages, so a cursor saved by an earlier run restarts the listing at page 1 (with a
  warning): listed again, nothing is skipped, and what is already copied is not fetched.
* Items [REC 15]: ``key`` (the id), ``origin_name`` (the uploaded file name, used as the
  name), ``size`` in **KB as a float** (``bytes / 1024``, so exact), ``md5``/``sha1`` of the
  stored file, ``date`` ``YYYY-MM-DD HH:MM:SS`` in the **server's zone without an offset**
  (the ``timezone`` option, default ``+08:00`` as recorded), ``links.url`` (the file;
  downloads need no token).
* **The host re-encodes** PNG and JPEG [REC 06, 13, 19, 20]: the stored bytes, and the reply's
  ``md5``/``sha1``/``size``, differ from what was sent, differently on every upload. So
  ``features.reencodes_uploads``: an upload cannot be verified by checksum, dedupe relies on
  the SHA-256 of what imgsync sent, and the reply's checksums describe the stored file (what a
  later download returns), not the source. The same bytes twice are two images [REC 13].
* Upload [REC 06-14, SRC]: multipart ``file`` plus optional ``permission`` (1 public, 0
  private), ``album_id`` and ``strategy_id``. The server decides the type by the file name's
  extension [SRC], so a name without an accepted image extension gets one from the content's
  MIME type. An unknown ``album_id`` is accepted silently [REC 14].
* Delete [REC 23-25, 39]: ``DELETE /api/v1/images/{key}`` says success for a missing key and
  for someone else's key alike. So a delete is confirmed by the item's absence: its file URL
  is checked before (gone already -> ``NotFound``) and after (still served -> ``Rejected``);
  an item without a URL is looked for in the listing instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from imgsync.errors import (
    AuthError,
    NotFound,
    ProviderError,
    RateLimited,
    Rejected,
    RemoteMisconfigured,
    ResponseError,
    TransientError,
)
from imgsync.http import ApiResponse, FilePart, Multipart, parse_retry_after
from imgsync.log import get_logger, redact
from imgsync.models import (
    IMAGE_EXTENSIONS,
    ItemMeta,
    Page,
    RemoteItem,
    UploadSource,
    image_size,
    sniff_image,
)
from imgsync.providers.base import (
    FIND_SINCE_PAGES,
    Features,
    Provider,
    ProviderContext,
    ProviderInfo,
    older_than,
    option,
)
from imgsync.providers.values import as_int

if TYPE_CHECKING:
    from imgsync.config import RemoteConfig

__all__ = ["LskyProProvider", "parse_zone"]

PER_PAGE = 40  # fixed by the server [REC 18]
ORDERS = ("earliest", "newest", "utmost", "least")
PERMISSIONS = ("default", "public", "private")
_EXT_FOR_MIME = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/bmp": "bmp",
    "image/tiff": "tif",
}
# The per-group upload frequency limit [SRC]: "每分钟内你最多可以上传 5 张图片".
_UPLOAD_LIMIT = re.compile(r"每(分钟|小时|天|周|月)内你最多可以上传")
_UNIT_SECONDS = {"分钟": 60.0, "小时": 3600.0, "天": 86400.0, "周": 604800.0, "月": 2592000.0}
_REJECTED = {
    "不支持的文件类型": "the host does not accept this file type",
    "图片大小超出限制": "the image is over the host's size limit",
    "储存空间不足": "the account's storage is full",
    "图片涉嫌违规，禁止上传。": "the host's content scan refused the image",
}
_AUTH = {
    "管理员关闭了游客上传": "guest uploads are off on this host: configure a token",
    "账户未验证": "the account's email is not verified",
    "账号状态异常": "the account is disabled",
    "Unauthenticated.": "token refused",
    "Authentication failed.": "token refused",
}
_MISCONFIGURED = {
    "选定的策略不存在": "no such storage strategy (check strategy_id)",
    "没有可用的储存，请联系管理员。": "the host has no storage strategy for this account",
}
SERVICE_ERROR = "服务异常，请稍后再试"

_log = get_logger("imgsync.providers.lskypro")


def parse_zone(text: str) -> tzinfo | None:
    """``+08:00``, ``-05:30``, ``+8``, ``UTC`` or an IANA name as a zone; None if unreadable."""
    value = text.strip()
    if value.upper() in ("UTC", "Z", "GMT"):
        return UTC
    m = re.fullmatch(r"(?:UTC)?([+-])(\d{1,2})(?::?(\d{2}))?", value, re.IGNORECASE)
    if m:
        hours, minutes = int(m[2]), int(m[3] or 0)
        if hours > 14 or minutes > 59:
            return None
        sign = -1 if m[1] == "-" else 1
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(value)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return None


def _zone_problem(value: Any) -> str | None:
    if parse_zone(str(value)) is None:
        return "must be a UTC offset such as +08:00, UTC, or a zone name such as Asia/Shanghai"
    return None


@dataclass(frozen=True, slots=True)
class LskyProOptions:
    """``[remotes.NAME]`` keys of a lskypro remote."""

    order: str = option(
        "earliest",
        doc="listing order: earliest (resumable), newest, utmost or least (by size)",
        choices=ORDERS,
    )
    album_id: int = option(
        0, doc="upload into this album and list only it (0: no album)", range=(0, 2**31 - 1)
    )
    permission: str = option(
        "default",
        doc="uploads are public or private (default: the account's setting)",
        choices=PERMISSIONS,
    )
    strategy_id: int = option(
        0, doc="storage strategy for uploads (0: the host's first)", range=(0, 2**31 - 1)
    )
    timezone: str = option(
        "+08:00",
        doc="the server's clock zone: its dates carry no offset",
        check=_zone_problem,
    )


API_SCOPE = "/api/v1"  # the part of an instance Laravel's API throttle counts


# types the host stores byte for byte (their md5 in the listing is the sent bytes') [REC 12, 21]
STORED_AS_SENT = frozenset({"image/gif"})


async def _digests(src: UploadSource) -> tuple[str, str]:
    """MD5 and SHA-1 of what ``src`` sends (a file is read in pieces, in a thread: this is
    the rare path of a lost reply, and the file may be large)."""
    import anyio.to_thread

    def both() -> tuple[str, str]:
        md5, sha1 = hashlib.md5(), hashlib.sha1()
        if src.data is not None:
            md5.update(src.data)
            sha1.update(src.data)
        else:
            assert src.path is not None
            with open(src.path, "rb") as fh:
                while piece := fh.read(1 << 20):
                    md5.update(piece)
                    sha1.update(piece)
        return md5.hexdigest(), sha1.hexdigest()

    return await anyio.to_thread.run_sync(both)


class LskyProProvider(Provider):
    """A Lsky Pro 2 instance through its ``/api/v1``."""

    info = ProviderInfo(
        kind="lskypro",
        description="Lsky Pro 2 (self-hosted): list, upload, delete; re-encodes uploads",
        options=LskyProOptions,
        token="optional",
        base_url="required",
        # Laravel's throttle:api on a stock instance: 60 API requests a minute per user
        # (the image files are not throttled: they are paced apart)
        default_limits={API_SCOPE: "60/minute"},
        emulator="lskypro",
        full_options={"order": "earliest"},
    )
    features = Features(
        can_list=True,
        can_delete=True,
        can_get=False,
        checksums=frozenset({"md5", "sha1"}),  # of the stored file, not of what was sent
        reencodes_uploads=True,
        page_size=(PER_PAGE, PER_PAGE),
        listing_appends=True,
    )
    options: LskyProOptions
    search_slack = 120.0  # ``date`` is the server's clock, in a zone set by an option

    def __init__(self, config: RemoteConfig, ctx: ProviderContext) -> None:
        super().__init__(config, ctx)
        zone = parse_zone(self.options.timezone)
        self.zone: tzinfo = zone if zone is not None else timezone(timedelta(hours=8))
        self._issued: set[str] = set()  # cursors this provider handed out (this run)
        self._sent_at: dict[str, float] = {}  # sha256 -> when its latest upload was sent
        self._mine: set[str] = set()  # keys of the images whose upload replies arrived
        # key -> (mimetype, (width, height), sha1) of the images the searches listed
        self._listed: dict[str, tuple[Any, tuple[Any, Any], Any]] = {}
        if self.options.order != "earliest":
            self.features = dataclasses.replace(self.features, listing_appends=False)

    # --- plumbing ------------------------------------------------------------------------

    @property
    def api(self) -> str:
        """``<base>/api/v1`` (a base written with ``/api/v1`` is not doubled)."""
        return self.base_url.removesuffix("/api/v1").removesuffix("/api") + "/api/v1"

    def auth_headers(self) -> dict[str, str]:
        token = self.config.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _headers(self, *, need_token: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        token = self.config.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif need_token:
            raise AuthError(
                "this needs a token: set token, token_env or token_file", remote=self.name
            )
        return headers

    def _map_error(self, resp: ApiResponse) -> ProviderError | None:
        """The error an answer means, or ``None``. Raising ``LookupError``/``TypeError``/
        ``ValueError`` here is read by the client as an unexpected reply."""
        status, data = resp.status, resp.data
        envelope = isinstance(data, dict) and isinstance(data.get("status"), bool)
        message = str(data.get("message") or "").strip() if isinstance(data, dict) else ""
        if status == 429 or message == "Too Many Attempts.":
            wait = parse_retry_after(resp.headers.get("Retry-After"))
            return RateLimited(
                f"too many requests: {message or status}", retry_after=wait, status=status
            )
        if 300 <= status < 400:
            location = resp.headers.get("Location", "")
            if urlsplit(location).path.rstrip("/").endswith("/login"):
                return AuthError("token refused (redirected to the login page)", status=status)
            return None  # the default names the redirect target
        if status in (401, 403):
            why = _AUTH.get(message, "token refused")
            return AuthError(f"{why}: {message or status}", status=status)
        if not envelope:
            if status in (404, 405):  # no API route answers 404 here: a wrong base_url
                return RemoteMisconfigured(
                    f"no Lsky Pro API at {self.api}; check base_url", status=status
                )
            if resp.ok:
                body = redact(str(data))[:200]
                return ResponseError(f"reply is not a {{status, message, data}} envelope: {body}")
            return None  # by status: 5xx -> TransientError ...
        if data["status"] is True:
            return None
        if status >= 500:
            return TransientError(f"host error: {message or status}", status=status)
        return self._refusal(message, status)

    @staticmethod
    def _refusal(message: str, status: int) -> ProviderError:
        """A ``status: false`` answer (usually at HTTP 200) as an error."""
        quoted = f"{message!r}"
        if message in _AUTH:
            return AuthError(f"{_AUTH[message]} ({quoted})", status=status)
        if message in _MISCONFIGURED:
            return RemoteMisconfigured(f"{_MISCONFIGURED[message]} ({quoted})", status=status)
        if message in _REJECTED:
            return Rejected(f"{_REJECTED[message]} ({quoted})", status=status)
        if (m := _UPLOAD_LIMIT.match(message)) is not None:
            wait = _UNIT_SECONDS[m[1]]
            return RateLimited(
                f"the host's upload limit ({quoted})", retry_after=wait, status=status
            )
        if message == SERVICE_ERROR:
            return TransientError(
                f"the host failed to store the image ({quoted}: a server error, or bytes it "
                "cannot decode)",
                status=status,
            )
        return Rejected(f"refused: {quoted}", status=status)

    def _data(self, resp: ApiResponse) -> dict[str, Any]:
        data = resp.data.get("data") if isinstance(resp.data, dict) else None
        if not isinstance(data, dict):
            raise ResponseError(
                f"expected an object in data: {redact(str(resp.data))[:200]}",
                remote=self.name,
                status=resp.status,
            )
        return data

    def _time(self, text: Any) -> float | None:
        """A server-local ``YYYY-MM-DD HH:MM:SS`` as unix seconds (None if unreadable)."""
        if not isinstance(text, str):
            return None
        try:
            when = datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return None
        return when.replace(tzinfo=self.zone).timestamp()

    def _item(self, row: Any) -> RemoteItem:
        """A ``RemoteItem`` from an image object (a listing entry or an upload reply)."""
        if not isinstance(row, dict):
            raise ResponseError(f"image entry is not an object: {row!r:.100}", remote=self.name)
        key = row.get("key")
        if not isinstance(key, str) or not key:
            raise ResponseError(f"image entry without a key: {row!r:.200}", remote=self.name)
        origin, stored = row.get("origin_name"), row.get("name")
        name = origin if isinstance(origin, str) and origin.strip() else stored
        if not isinstance(name, str) or not name.strip():
            name = key
        links = row.get("links") if isinstance(row.get("links"), dict) else {}
        url = links.get("url") if isinstance(links, dict) else None
        kb = row.get("size")
        size = (
            round(kb * 1024) if isinstance(kb, int | float) and not isinstance(kb, bool) else None
        )
        md5 = row.get("md5")
        mime = row.get("mimetype")
        created = self._time(row.get("date"))
        return RemoteItem(
            remote_id=key,
            name=name,
            size=size if size is not None and size >= 0 else None,
            url=url if isinstance(url, str) and url else None,
            mime=mime if isinstance(mime, str) and mime else None,
            md5=md5 if isinstance(md5, str) and re.fullmatch(r"[0-9a-f]{32}", md5) else None,
            mtime=created,
            meta=ItemMeta(created_at=created),
        )

    def _cursor_tail(self) -> str:
        return f"{self.options.order}@{self.options.album_id}"

    def _cursor(self, page: int, last: RemoteItem | None) -> str:
        """``<page>@<order>@<album>@<key>@<time>``: the page to read next and the watermark,
        the last item before it (its key and unix time; empty for page 1)."""
        key = last.remote_id if last is not None else ""
        when = int(last.mtime) if last is not None and last.mtime is not None else ""
        cursor = f"{page}@{self._cursor_tail()}@{key}@{when}"
        self._issued.add(cursor)
        return cursor

    def _read_cursor(self, cursor: str | None) -> tuple[int, str, int | None]:
        """(page, watermark key, watermark time). Page 1 for none, or for a cursor we cannot
        read or saved under other options: relisting is harmless, skipping is not."""
        if cursor is None:
            return 1, "", None
        parts = cursor.split("@")
        number = as_int(parts[0], negative=False)
        if (
            len(parts) != 5
            or number is None
            or number < 1
            or "@".join(parts[1:3]) != (self._cursor_tail())
        ):
            _log.info("lskypro_cursor_restart", remote=self.name, cursor=cursor[:60])
            return 1, "", None
        return number, parts[3], as_int(parts[4], negative=False)

    async def _rows(self, page: int, order: str) -> tuple[list[Any], dict[str, Any]]:
        """One page of the listing in ``order``: its image objects and the paginator."""
        params: dict[str, str | int] = {"page": page, "order": order}
        if self.options.album_id:
            params["album_id"] = self.options.album_id
        resp = await self.http.request(
            "GET",
            f"{self.api}/images",
            remote=self.name,
            params=params,
            headers=self._headers(need_token=True),
            map_error=self._map_error,
        )
        data = self._data(resp)
        rows = data.get("data")
        if not isinstance(rows, list):
            raise ResponseError("listing has no data list", remote=self.name, status=resp.status)
        return rows, data

    async def _fetch(self, page: int) -> tuple[list[RemoteItem], bool]:
        """One page of the listing: its items and whether a later page exists."""
        rows, data = await self._rows(page, self.options.order)
        items = [self._item(row) for row in rows]
        current, last = (
            as_int(data.get("current_page"), negative=False),
            as_int(data.get("last_page"), negative=False),
        )
        more = bool(rows) and current is not None and last is not None and current < last
        return items, more

    def _page(self, page: int, items: list[RemoteItem], more: bool, start: int = 0) -> Page:
        """Page ``page`` from its item ``start`` on; the next cursor's watermark is its last."""
        last = items[-1] if items else None
        cursor = self._cursor(page + 1, last) if more else None
        return Page(items=items[start:], next_cursor=cursor)

    # --- the provider interface ----------------------------------------------------------

    async def list_page(self, cursor: str | None) -> Page:
        """One page (40 items). A cursor this provider handed out is read as is; one saved by
        an earlier run is checked against its watermark first (see :meth:`_resume`)."""
        page, mark, when = self._read_cursor(cursor)
        if cursor is not None and cursor not in self._issued and page > 1:
            if self.options.order != "earliest":
                # newest/utmost/least: an image deleted or added since moves every later one
                # by a place, and the page number of the saved cursor no longer says where
                # this run stopped; listing again from the start skips nothing
                _log.warning(
                    "lskypro_listing_restarts",
                    remote=self.name,
                    order=self.options.order,
                    why="only order = earliest resumes a listing; the others list again",
                )
                page = 1
            elif mark:
                return await self._resume(page, mark, when)
        items, more = await self._fetch(page)
        return self._page(page, items, more)

    async def _resume(self, page: int, mark: str, when: int | None) -> Page:
        """Resume after the watermark ``mark`` (the item before ``page``), which images
        deleted on the website since may have moved to an earlier page.

        Only ``order = earliest`` comes here (new images go to the end): the page before
        ``page`` is re-read, stepping back while the watermark is not on it and its first
        image is not older than the watermark, and what follows the watermark there (or, if
        it was deleted, everything from its time on) is the page returned. A watermark
        without a time takes ``page`` as it is now.
        """
        if when is None:
            items, more = await self._fetch(page)
            return self._page(page, items, more)
        at = page - 1
        while True:
            items, more = await self._fetch(at)
            keys = [item.remote_id for item in items]
            if mark in keys:
                start = keys.index(mark) + 1
                if start == len(items) and more:  # nothing moved: the page asked for, as is
                    items, more = await self._fetch(at + 1)
                    return self._page(at + 1, items, more)
                return self._page(at, items, more, start=start)
            first = items[0].mtime if items else None
            moved_up = not items or (first is not None and first >= when)
            if at == 1 or not moved_up:  # the watermark was deleted: resume from its time
                _log.info("lskypro_watermark_gone", remote=self.name, page=at)
                start = next(
                    (n for n, i in enumerate(items) if i.mtime is None or i.mtime >= when),
                    len(items),
                )
                return self._page(at, items, more, start=start)
            at -= 1

    async def open(self, item: RemoteItem) -> AsyncIterator[bytes]:
        if not item.url:
            raise NotFound(f"{item.name}: no file URL known", remote=self.name)
        # the token goes to the site's own file server only (a private image is served to
        # its owner alone), never to where a redirect points on another origin
        async for chunk in self.open_file(item.url):
            yield chunk

    def _file_name(self, src: UploadSource) -> str:
        """The name sent: the server picks the type from its extension, so it must have one."""
        name = src.name.replace("/", "_").strip() or "image"
        dot = name.rfind(".")
        ext = name[dot:].lower() if dot > 0 else ""
        if ext in IMAGE_EXTENSIONS:
            return name
        wanted = _EXT_FOR_MIME.get(src.mime)
        return f"{name}.{wanted}" if wanted else name

    async def upload(self, src: UploadSource, meta: ItemMeta, *, rel_path: str) -> RemoteItem:
        fields: list[tuple[str, str]] = []
        if self.options.permission != "default":
            fields.append(("permission", "1" if self.options.permission == "public" else "0"))
        if self.options.album_id:
            fields.append(("album_id", str(self.options.album_id)))
        if self.options.strategy_id:
            fields.append(("strategy_id", str(self.options.strategy_id)))
        filename = self._file_name(src)

        async def form() -> Multipart:
            return Multipart(fields=fields, files=[FilePart.upload("file", filename, src)])

        self._sent_at[src.sha256] = time.time()
        resp = await self.http.request(
            "POST",
            f"{self.api}/upload",
            remote=self.name,
            headers=self._headers(need_token=False),
            form=form,
            map_error=self._map_error,
        )
        self._sent_at.pop(src.sha256, None)  # answered: no search will need it
        item = self._item(self._data(resp))
        self._mine.add(item.remote_id)
        if item.size is not None and item.size != src.size:
            _log.debug(
                "lskypro_stored_converted", remote=self.name, sent=src.size, stored=item.size
            )
        return item

    async def newest_pages(self, limit: int = FIND_SINCE_PAGES) -> AsyncIterator[list[RemoteItem]]:
        """The listing newest first (``order=newest``, 40 a page, whatever the ``order``
        option lists with), back as far as the caller reads; what matching needs beyond
        the item (its mimetype, width, height and SHA-1) is kept by key."""
        for number in range(1, limit + 1):
            rows, data = await self._rows(number, "newest")
            items = []
            for row in rows:
                if not isinstance(row, dict):
                    continue
                item = self._item(row)
                self._listed[item.remote_id] = (
                    row.get("mimetype"),
                    (row.get("width"), row.get("height")),
                    row.get("sha1"),
                )
                items.append(item)
            yield items
            current = as_int(data.get("current_page"), negative=False)
            last = as_int(data.get("last_page"), negative=False)
            if not rows or current is None or last is None or current >= last:
                return

    async def find_upload(
        self, src: UploadSource, *, rel_path: str, since: float | None = None
    ) -> RemoteItem | None:
        """The image an earlier upload of ``src`` made, if the host has it: the listing is
        read newest first back to when that upload was sent (this run's own upload whose
        reply broke off), or ``since`` (another run's upload whose lease was taken over),
        less two minutes of clock difference, however many pages that takes; then
        :meth:`match_upload` decides. Without a time, nothing is searched (not found)."""
        sent = self._sent_at.get(src.sha256, since)
        if sent is None or not self.config.token:
            return None
        items: list[RemoteItem] = []
        async for page in self.newest_pages():
            items.extend(page)
            if page and older_than(page[-1], sent, slack=self.search_slack):
                break
        return await self.match_upload(src, items, rel_path=rel_path, since=sent)

    async def match_upload(
        self,
        src: UploadSource,
        items: Sequence[RemoteItem],
        *,
        rel_path: str,
        since: float | None = None,
    ) -> RemoteItem | None:
        """Of ``items`` (read by :meth:`newest_pages`), the image an upload of ``src``
        made: among those stored since that upload was sent (or ``since``; two minutes of
        clock difference allowed) that are not the reply to another upload of this run:

        * one whose ``md5``/``sha1`` (of the stored file) is the sent bytes' is it: the
          host stored them as sent (a GIF [REC 12, 21]);
        * otherwise the host re-encoded what it stored (PNG, JPEG: a new checksum every
          time [REC 13]), so the candidates are those with the name sent, the mimetype of
          ``src`` and its width and height. Exactly one is taken; two or more (another
          client stored an image of the same name and size meanwhile) are ambiguous and
          none is taken; for a GIF, which would have matched by checksum, none is taken.

        When anything is unknown (a guest upload is not listed, a format whose size cannot
        be read) it is not found, and the caller sends it again and reports the possible
        copy: a duplicate is recoverable, another image's URL in the map is not.
        """
        sent = self._sent_at.get(src.sha256, since)  # since: another run's (a lease taken over)
        head = await src.head(65536)
        size = image_size(head)
        if sent is None or size is None or not self.config.token:
            return None
        md5, sha1 = await _digests(src)
        name = self._file_name(src)
        kind = sniff_image(head)
        candidates: list[RemoteItem] = []
        for item in items:
            if item.remote_id in self._mine or item.mtime is None:
                continue
            if item.mtime < sent - self.search_slack:
                continue
            mimetype, dims, stored_sha1 = self._listed.get(item.remote_id, (None, None, None))
            if (item.md5 is not None and item.md5 == md5) or stored_sha1 == sha1:
                self._mine.add(item.remote_id)
                return item  # the very bytes sent
            same_type = kind is None or not isinstance(mimetype, str) or mimetype == kind
            if item.name == name and dims == size and same_type:
                candidates.append(item)
        if kind in STORED_AS_SENT or len(candidates) != 1:
            if candidates:
                _log.info(
                    "lskypro_lost_upload_ambiguous",
                    remote=self.name,
                    name=name,
                    candidates=len(candidates),
                )
            return None
        (item,) = candidates
        self._mine.add(item.remote_id)
        return item

    async def _exists(self, item: RemoteItem) -> bool:
        """Whether the host still has ``item``: its file answers, or the listing shows it."""
        if item.url:
            try:
                await self.http.request(
                    "HEAD", item.url, remote=self.name, expect="none", allow_redirects=True
                )
            except (NotFound, AuthError):
                # no token goes to the file URL, so a 401/403 there is the storage refusing
                # a key it does not have (S3-style strategies answer 403), not our token
                return False
            except Rejected:
                pass  # the file server refuses HEAD (405): ask the listing instead
            else:
                return True
        cursor = None
        while True:
            page = await self.list_page(cursor)
            if any(i.remote_id == item.remote_id for i in page.items):
                return True
            if page.next_cursor is None or page.next_cursor == cursor:
                return False
            cursor = page.next_cursor

    async def delete(self, item: RemoteItem) -> None:
        """Delete, then confirm by absence (the answer says success whatever happened)."""
        headers = self._headers(need_token=True)
        if not await self._exists(item):
            raise NotFound(f"{item.name}: already gone from the host", remote=self.name)
        await self.http.request(
            "DELETE",
            f"{self.api}/images/{quote(item.remote_id, safe='')}",
            remote=self.name,
            headers=headers,
            map_error=self._map_error,
        )
        if await self._exists(item):
            raise Rejected(
                f"{item.name}: the host said deleted but still serves it "
                "(the image is not this account's)",
                remote=self.name,
            )
