"""Gyazo (gyazo.com): list, get, download, upload and delete a user's images.

Evidence is ``shared/reference/hosts.md`` §2 and the API page in ``shared/seeds/001_*``.
Tags: [DOC] the published API docs, [OBS] seen in a recorded real reply, [INF] our guess.

Wire facts this module relies on:

* [DOC] The API lives on ``api.gyazo.com`` and uploads on ``upload.gyazo.com``
  (``POST /api/upload``, multipart). When ``base_url`` is configured (a self-hosted clone,
  the emulator) every call goes to that one origin instead, uploads included; a
  ``base_url`` naming ``api.gyazo.com`` itself still means the public pair of hosts.
* [DOC] Auth: ``Authorization: Bearer <token>`` (``access_token`` as a parameter works
  too; it is not used here, so the token never sits in a URL).
* [DOC] ``GET /api/images?page=&per_page=`` (1-100): a bare JSON array, newest first, with
  ``X-Total-Count``/``X-Current-Page``/``X-Per-Page``. The cursor is the page number as
  text. More pages exist while the total is above ``page * per_page``, counted with the
  page size the host echoes (as python-gyazo does). Without the total [INF] a full page
  means "maybe more"; an empty page always ends the listing.
* [DOC] ``GET``/``DELETE /api/images/{id}``; unknown ids answer 404 ``{"message": ...}``.
* [DOC] Upload fields: ``imagedata`` (a file part with a filename), ``title``, ``desc``,
  ``referer_url``, ``created_at`` (float unix seconds: the host keeps the original time),
  ``collection_id``, ``metadata_is_public`` (``"true"``/``"false"``); [DOC, newer pages]
  ``app`` and ``access_policy`` (``anyone``/``only_me``). The reply is
  ``{image_id, permalink_url, thumb_url, url, type}`` plus [OBS] ``created_at``.
* [DOC] 12,500 requests per day; over it, HTTP 429 with no ``Retry-After`` and no quota
  headers. Errors carry only ``{"message": ...}``: 400 invalid parameter, 401 auth
  required, 402 paid plan required, 403 no permission, 404, 422 unprocessable, 500.

Image objects are read defensively, because the docs and real replies disagree:

* [DOC/OBS] ``created_at`` comes as ``2014-05-21 14:23:10+0900`` (list doc),
  ``2018-07-24T07:33:24.771Z`` (get doc), ``2023-02-24T08:50:18+0000`` (upload, OBS) and
  ``2026-04-07T07:19:34.183Z`` (OBS); anything unreadable becomes ``None``.
* [DOC/OBS] ``metadata`` may be absent or null, and so may each of ``title``, ``desc``,
  ``url``, ``app``; ``url``, ``permalink_url``, ``thumb_url`` may be null or missing (the
  get doc has no ``url`` at all). ``ocr``, ``access_policy``, ``alt_text`` and unknown keys
  are ignored. An array element that is not an object with an ``image_id`` is skipped and
  logged, not fatal.
* [OBS] ``image_id`` equalled the MD5 of the uploaded bytes once; it is kept only as
  ``RemoteItem.md5_hint`` and ``features.checksums`` stays empty: the pipeline hashes.

Choices made here [INF]:

* Metadata mapping both ways: ``title``, ``desc`` -> ``description``, ``url`` (upload field
  ``referer_url``) -> ``source_url``, ``app``, ``created_at``. An empty string means unset
  (Gyazo's ``desc`` defaults to ``""``); ``original_title``/``original_url`` fill in a
  missing ``title``/``url``. ``referer_url`` is sent only when it is an http(s) URL, so a
  stray value cannot get the whole upload refused.
* A 429 without ``Retry-After`` means the daily budget is spent: ``RemotePaused`` until the
  next UTC midnight (when Gyazo's day turns over is not published). The HTTP client records
  the pause, so a restart honours it instead of retrying into the wall. A 429 with
  ``Retry-After`` (never seen) is an ordinary ``RateLimited``.
* 400/413/422 and 402 are ``Rejected`` for that file, with the host's message (413 is not
  documented; it is what a size limit would most likely answer).
* Page numbers over a newest-first list shift while the account changes: an upload during
  a listing can show an item twice (the pipeline dedupes); a delete would hide older
  items from a resumed listing, so a saved cursor carries a watermark (the last image
  handed out) and the resume looks back for it (:mod:`imgsync.providers.paging`). New
  images appear at the start, hence ``listing_appends`` is False.
* The budget is declared as ``12500/day`` on the API host, and the upload host draws on
  the same budget (``ProviderInfo.shared_limits``), as Gyazo counts one day per token.
* Image files (``i.gyazo.com``) are fetched without the token. An item listed without a
  ``url`` is looked up once with ``get``; if that has none either, the download fails with
  a ``ResponseError`` naming the image (the file URL is not guessed). Backups name files
  ``<image_id>.<type>``.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from imgsync.errors import (
    AuthError,
    NotFound,
    ProviderError,
    RateLimited,
    Rejected,
    RemotePaused,
    ResponseError,
    TransientError,
)
from imgsync.http import ApiResponse, FilePart, Multipart, excerpt, parse_retry_after
from imgsync.log import get_logger
from imgsync.models import ItemMeta, Page, RemoteItem, UploadSource, guess_mime, parse_timestamp
from imgsync.providers.base import Features, Provider, ProviderInfo, option
from imgsync.providers.paging import WatermarkListing
from imgsync.ratelimit import authority_of, next_utc_midnight

if TYPE_CHECKING:
    from imgsync.config import RemoteConfig
    from imgsync.providers.base import ProviderContext

__all__ = ["GyazoProvider", "parse_created_at", "parse_image"]

PUBLIC_API = "https://api.gyazo.com"
PUBLIC_UPLOAD = "https://upload.gyazo.com/api/upload"
DAILY_RATE = "12500/day"
ACCESS_POLICIES = ("anyone", "only_me")

_MD5 = re.compile(r"[0-9a-f]{32}")
_TYPE = re.compile(r"[a-z0-9]{1,8}")
_log = get_logger("imgsync.providers.gyazo")


# ---- reading the host's image objects ---------------------------------------------------


parse_created_at = parse_timestamp  # every format Gyazo is known to send (hosts.md §2)


def _text(value: Any) -> str | None:
    """A non-empty string field, else ``None``."""
    return value if isinstance(value, str) and value.strip() else None


def _kind(candidate: Any) -> str | None:
    """A usable image type (``png``), lowercased, else ``None``."""
    if isinstance(candidate, str) and _TYPE.fullmatch(kind := candidate.lower()):
        return kind
    return None


def parse_image(obj: Any, *, fallback_id: str | None = None) -> RemoteItem | None:
    """One Gyazo image object as a :class:`RemoteItem`; ``None`` if it has no usable id."""
    if not isinstance(obj, dict):
        return None
    image_id = _text(obj.get("image_id")) or fallback_id
    if not image_id:
        return None
    url = _text(obj.get("url"))
    kind = _kind(obj.get("type"))  # "type", else the file URL's extension
    if kind is None:
        kind = _kind(urlsplit(url or "").path.rpartition(".")[2])
    name = f"{image_id}.{kind}" if kind else image_id
    md = obj.get("metadata")
    md = md if isinstance(md, dict) else {}
    meta = ItemMeta(
        title=_text(md.get("title")) or _text(md.get("original_title")),
        description=_text(md.get("desc")),
        source_url=_text(md.get("url")) or _text(md.get("original_url")),
        app=_text(md.get("app")),
        created_at=parse_created_at(obj.get("created_at")),
    )
    return RemoteItem(
        remote_id=image_id,
        name=name,
        url=url,
        page_url=_text(obj.get("permalink_url")),
        mime=guess_mime(name) if kind else None,
        md5_hint=image_id if _MD5.fullmatch(image_id) else None,
        meta=meta,
        is_image=True,
    )


def _host_message(data: Any) -> str:
    """The ``message`` of a Gyazo error body, else a short excerpt of the body."""
    if isinstance(data, dict):
        message = data.get("message")
        if isinstance(message, str) and message.strip():
            return message.strip()
    return excerpt(data) or "(no message)"


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw.strip())


# ---- the provider -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GyazoOptions:
    """``[remotes.NAME]`` keys of a gyazo remote."""

    per_page: int = option(100, doc="listing page size", range=(1, 100))
    access_policy: str | None = option(
        None, doc="uploads: who may see them", choices=ACCESS_POLICIES
    )
    metadata_is_public: bool | None = option(None, doc="uploads: publish title/description")
    collection_id: str | None = option(None, doc="uploads: add to this collection")


def _parse_cursor(cursor: str | None) -> tuple[int, tuple[float, str] | None]:
    """``<page>@<created_at>@<image_id>`` -> (page, watermark); a bare page number (saved
    by an older version) has no watermark."""
    if not cursor:
        return 1, None
    number, _, mark = cursor.partition("@")
    page = int(number) if number.isdigit() and int(number) >= 1 else 1
    when, _, image_id = mark.partition("@")
    try:
        return page, (float(when), image_id) if image_id else None
    except ValueError:
        return page, None


def _older(item: RemoteItem, mark: tuple[float, str]) -> bool:
    """Does ``item`` come after the watermark in a newest-first listing? Images of the
    same second as the watermark count as after it (they are only checked again)."""
    when = item.meta.created_at
    return when is None or when < mark[0] or (when == mark[0] and item.remote_id != mark[1])


def _next_cursor(page: int, last: RemoteItem) -> str:
    """``<page>@<created_at>@<image_id>``; the bare page number when ``last`` has no time."""
    when = last.meta.created_at
    return f"{page}@{when!r}@{last.remote_id}" if when is not None else str(page)


class GyazoProvider(Provider):
    """A Gyazo account (or a Gyazo-compatible host at ``base_url``)."""

    info = ProviderInfo(
        kind="gyazo",
        description="Gyazo: list, download, upload (keeps created time), delete",
        options=GyazoOptions,
        token="required",
        base_url="optional",
        default_base_url=PUBLIC_API,
        default_limits={authority_of(PUBLIC_API): DAILY_RATE},
        shared_limits={authority_of(PUBLIC_UPLOAD): authority_of(PUBLIC_API)},
        emulator="gyazo",
        full_options={"per_page": 4},
    )
    features = Features(
        can_list=True,
        can_get=True,
        can_delete=True,
        checksums=frozenset(),
        page_size=(1, 100),
        listing_appends=False,
    )
    options: GyazoOptions

    def __init__(self, config: RemoteConfig, ctx: ProviderContext) -> None:
        super().__init__(config, ctx)
        self.per_page: int = self.options.per_page
        self.access_policy: str | None = self.options.access_policy
        self.metadata_is_public: bool | None = self.options.metadata_is_public
        self.collection_id: str | None = self.options.collection_id
        # base_url unset, or set to the public API host itself: the two public hosts
        self.public = authority_of(self.base_url) == authority_of(PUBLIC_API)
        self.upload_url = PUBLIC_UPLOAD if self.public else f"{self.base_url}/api/upload"
        self._listing = WatermarkListing(
            self._page, first=1, parse=_parse_cursor, after=_older, cursor=_next_cursor
        )

    # ---- plumbing ---------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        token = self.config.token
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _headers(self) -> dict[str, str]:
        token = self.config.token
        if not token:
            raise AuthError("no access token configured", remote=self.name)
        return {"Authorization": f"Bearer {token}"}

    def _image_url(self, remote_id: str) -> str:
        return f"{self.base_url}/api/images/{quote(remote_id, safe='')}"

    def _map_error(self, resp: ApiResponse) -> ProviderError | None:
        """Gyazo's reply statuses -> the error tree (``None``: success or not Gyazo's own)."""
        status = resp.status
        if 200 <= status < 300:
            return None
        what = f"{resp.method} {urlsplit(resp.url).path}"
        message = _host_message(resp.data)
        if status in (401, 403):
            return AuthError(
                f"{what}: Gyazo refused the access token ({message}); "
                "check the remote's token/token_env/token_file",
                status=status,
            )
        if status in (404, 410):
            return NotFound(f"{what}: {message}", status=status)
        if status == 402:
            return Rejected(f"{what}: Gyazo requires a paid plan for this ({message})", status=402)
        if status in (400, 413, 422):
            return Rejected(f"{what}: Gyazo refused the request: {message}", status=status)
        if status == 429:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            if retry_after is not None:
                return RateLimited(f"{what}: {message}", retry_after=retry_after, status=429)
            return RemotePaused(
                f"Gyazo's daily request budget is spent ({message}); "
                "paused until the next UTC midnight",
                until=next_utc_midnight(),
                status=429,
            )
        if status == 408 or status >= 500:
            return TransientError(f"{what}: Gyazo server error: {message}", status=status)
        return None

    def _map_file_error(self, resp: ApiResponse) -> ProviderError | None:
        """An image file host refusing one file spoils that item, not the whole remote."""
        if resp.status in (401, 403):
            return Rejected(
                f"the image host refused the file ({_host_message(resp.data)})",
                status=resp.status,
            )
        return self._map_error(resp)

    async def _call(self, method: str, url: str, **kw: Any) -> ApiResponse:
        return await self.http.request(
            method,
            url,
            remote=self.name,
            headers=self._headers(),
            map_error=self._map_error,
            **kw,
        )

    def _bad_reply(self, what: str, wanted: str, data: Any) -> ResponseError:
        shown = self.http.redact(excerpt(data)) or "an empty body"
        return ResponseError(f"{what}: expected {wanted}, got {shown}", remote=self.name)

    # ---- the provider interface -------------------------------------------------------

    async def list_page(self, cursor: str | None) -> Page:
        """One page, newest first. The cursor is ``<page>@<created_at>@<image_id>``: the
        next page and the last image handed out. Deleting images on the site moves every
        older one up a place, so a cursor saved by an earlier run is resumed from that
        watermark (:mod:`imgsync.providers.paging`), never by page number alone."""
        return await self._listing.page(cursor)

    async def _page(self, page: int) -> tuple[list[RemoteItem], bool]:
        """One page of images, and whether more pages follow."""
        resp = await self._call(
            "GET",
            f"{self.base_url}/api/images",
            params={"page": page, "per_page": self.per_page},
        )
        if not isinstance(resp.data, list):
            raise self._bad_reply("GET /api/images", "a JSON array of images", resp.data)
        items: list[RemoteItem] = []
        for obj in resp.data:
            item = parse_image(obj)
            if item is None:
                _log.warning("gyazo_item_skipped", remote=self.name, page=page, reason="no id")
            else:
                items.append(item)
        per_page = _int_header(resp.headers, "X-Per-Page") or self.per_page
        total = _int_header(resp.headers, "X-Total-Count")
        if not resp.data:
            more = False
        elif total is not None:
            more = total > page * per_page
        else:
            more = len(resp.data) >= per_page
        return items, more

    async def get(self, remote_id: str) -> RemoteItem:
        resp = await self._call("GET", self._image_url(remote_id))
        item = parse_image(resp.data, fallback_id=remote_id)
        if item is None:
            raise self._bad_reply(f"GET /api/images/{remote_id}", "an image object", resp.data)
        return item

    async def open(self, item: RemoteItem) -> AsyncIterator[bytes]:
        url = item.url
        if not url:
            url = (await self.get(item.remote_id)).url
        if not url:
            raise ResponseError(
                f"image {item.remote_id}: Gyazo gives no file URL for it (listing and "
                "get both lack 'url'), so it cannot be downloaded",
                remote=self.name,
            )
        async for chunk in self.open_file(url, map_error=self._map_file_error):
            yield chunk

    async def upload(self, src: UploadSource, meta: ItemMeta, *, rel_path: str) -> RemoteItem:
        optional = {
            "title": meta.title,
            "desc": meta.description,
            "app": meta.app,
            "collection_id": self.collection_id,
            "access_policy": self.access_policy,
        }
        fields = {key: value for key, value in optional.items() if value}
        if meta.source_url and urlsplit(meta.source_url).scheme in ("http", "https"):
            fields["referer_url"] = meta.source_url
        if meta.created_at is not None and math.isfinite(meta.created_at) and meta.created_at >= 0:
            fields["created_at"] = repr(float(meta.created_at))
        if self.metadata_is_public is not None:
            fields["metadata_is_public"] = "true" if self.metadata_is_public else "false"
        filename = src.name or rel_path.rsplit("/", 1)[-1] or "image"

        async def form() -> Multipart:
            image = FilePart.upload("imagedata", filename, src)
            return Multipart(fields=list(fields.items()), files=[image])

        resp = await self._call("POST", self.upload_url, form=form)
        item = parse_image(resp.data)
        if item is None:
            raise self._bad_reply("POST /api/upload", "an object with image_id", resp.data)
        kept = ItemMeta(  # what was sent, as the host keeps it
            title=meta.title or None,
            description=meta.description or None,
            source_url=fields.get("referer_url"),
            app=meta.app or None,
            created_at=meta.created_at if "created_at" in fields else item.meta.created_at,
        )
        return RemoteItem(
            remote_id=item.remote_id,
            name=item.name,
            size=src.size,
            url=item.url,
            page_url=item.page_url,
            mime=item.mime or src.mime,
            md5_hint=item.md5_hint,
            meta=kept,
        )

    async def delete(self, item: RemoteItem) -> None:
        await self._call("DELETE", self._image_url(item.remote_id), expect="none")
