"""Discord Images (discordimages.com): a lolisafe fork with a ``token`` header.

Evidence is in ``shared/reference/hosts.md`` §4. The service is most likely gone, so
nothing here was checked against a live host; the tags say where each rule comes from.

Documented [DOC]:

* every API call sends the key in a ``token`` header (not ``Authorization``);
* ``POST /api/upload``: multipart, one file part named ``files[]``;
* ``GET /api/uploads`` -> ``{"success": true, "files": [File, ...]}``, File keys ``id``,
  ``name`` ("UGRmm.jpg"), ``userid``, ``albumid``, ``timestamp`` (unix seconds), ``size``
  as human text ("508 kB", "14 B", "8.12 kB"), ``file`` (full URL), ``date`` (server
  local time, ignored here), ``album`` (name or ""), ``extname`` and ``thumb`` (missing
  for files that are not images). Any file type may be listed.

Inferred [INF], always on (an upload needs *some* reply to be read):

* the upload reply is lolisafe's ``{"success", "files": [{"name", "size", "url"}]}``
  (the ShareX config read ``files[0].url``); the docs' placeholder ``{"success", "code",
  "url"}`` is read too;
* failures are ``{"success": false, "description": ...}``, at HTTP 200 for uploads
  (blocked type, too large) and 401 for a bad token.

Inferred [INF], off unless the remote sets them (the docs never mention them):

* ``paging = true``: ``GET /api/uploads/<page>``, 0-based, 25 per page, newest first, no
  total; the listing stops at a short or empty page. Without it one call returns the
  whole account. A host without the route answers 404 -> ``RemoteMisconfigured``.
* ``delete = true``: ``POST /api/upload/delete`` with JSON ``{"id": N}``. Without it
  ``features.can_delete`` is False and ``delete`` raises ``Unsupported``.

Choices made here:

* ``remote_id`` is the numeric ``id`` as text when listed; an upload reply carries no
  id, so an uploaded item's ``remote_id`` is its file name. ``delete`` accepts either (a
  name is looked up in the listing to find its id).
* ``size`` from the listing is parsed into bytes but is only a hint (three significant
  digits); the pipeline hashes the downloaded bytes. No checksum is reported.
* ``is_image`` follows the file extension (lolisafe also makes thumbnails for videos,
  so ``thumb`` alone proves nothing); ``thumb`` decides only when there is no extension.
  The remote option ``include_non_images = true`` makes ``copy``/``backup`` take the
  non-image files too (the engine reads it, as it reads ``--include-non-images``).
* a non-empty ``album`` becomes the one tag of ``meta.tags``; ``timestamp`` becomes
  ``meta.created_at``. The host keeps no title or description.
* expired signed URLs (``ex``/``is``/``hm``, as Discord's CDN hands out) are renewed through
  a guessed route (:meth:`DiscordImagesProvider.refresh_url`): nothing about them is
  documented for this host.
* downloads go to the ``file`` URL with the ``token`` header when that URL is on the
  remote's own origin (:meth:`Provider.open_file`), never to another origin.
* the host reports no rate limit; 429 is mapped to ``RateLimited`` if it ever comes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from imgsync.models import (
    ItemMeta,
    Page,
    RemoteItem,
    UploadSource,
    guess_mime,
    is_image_name,
    signed_expiry,
)
from imgsync.providers.base import Features, Provider, ProviderContext, ProviderInfo, option
from imgsync.providers.paging import WatermarkListing

if TYPE_CHECKING:
    from imgsync.config import RemoteConfig

PAGE_SIZE = 25  # lolisafe's page length [INF]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgtpezy])(i)?)?(b|bytes?)?\s*$", re.IGNORECASE)
_SIZE_POWERS = "kmgtpezy"


def parse_size(text: object) -> int | None:
    """The byte count a listed ``size`` stands for (a hint), or None if unreadable.

    ``"14 B"`` -> 14, ``"8.12 kB"`` -> 8120, ``"508 kB"`` -> 508000 (powers of 1000, as
    pretty-bytes writes them), ``"1.5 MiB"`` -> 1572864; a plain number (stock lolisafe
    sends bytes) is taken as it is.
    """
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        return int(text) if 0 <= text < 1e18 else None  # NaN and infinity fail too
    if not isinstance(text, str):
        return None
    m = _SIZE_RE.match(text)
    if m is None:
        return None
    number, prefix, binary, _unit = m.groups()
    power = _SIZE_POWERS.index(prefix.lower()) + 1 if prefix else 0
    unit: int = (1024 if binary else 1000) ** power
    return round(float(number) * unit)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class DiscordImagesOptions:
    """``[remotes.NAME]`` keys of a discordimages remote."""

    paging: bool = option(False, doc="inferred: list with GET /api/uploads/<page>")
    delete: bool = option(False, doc="inferred: the host accepts POST /api/upload/delete")
    include_non_images: bool = option(False, doc="list and back up non-image files too")


def _id(item: RemoteItem) -> int | None:
    """The host's numeric file id (higher is newer), when the listing gave one."""
    return int(item.remote_id) if item.remote_id.isdigit() else None


def _older(item: RemoteItem, mark: int) -> bool:
    """Does ``item`` come after the watermark in a newest-first listing?"""
    found = _id(item)
    return found is None or found < mark


def _parse_cursor(cursor: str | None) -> tuple[int, int | None]:
    """``<page>@<id>`` -> (page, id); a bare page number (older versions) has no id."""
    if not cursor:
        return 0, None
    number, _, mark = cursor.partition("@")
    page = int(number) if number.isdigit() else 0
    return page, int(mark) if mark.isdigit() else None


def _next_cursor(page: int, last: RemoteItem) -> str:
    """``<page>@<id>``; the bare page number when ``last`` has no numeric id."""
    last_id = _id(last)
    return f"{page}@{last_id}" if last_id is not None else str(page)


class DiscordImagesProvider(Provider):
    """A Discord Images account: list, upload, and (``delete = true``) delete."""

    info = ProviderInfo(
        kind="discordimages",
        description="discordimages.com (lolisafe fork); paging/delete are inferred",
        options=DiscordImagesOptions,
        token="required",
        base_url="optional",
        default_base_url="https://discordimages.com",
        emulator="discordimages",
        emulator_options={"paging": True, "delete": True},
        full_options={"paging": True, "delete": True},
    )
    # can_delete: the type can; a remote without ``delete = true`` switches it off
    features = Features(can_list=True, can_get=False, can_delete=True, listing_appends=False)
    options: DiscordImagesOptions

    def __init__(self, config: RemoteConfig, ctx: ProviderContext) -> None:
        super().__init__(config, ctx)
        self.paging = self.options.paging
        self.features = dataclasses.replace(type(self).features, can_delete=self.options.delete)
        self._headers = {"token": config.token} if config.token else {}
        self._listing = WatermarkListing(
            self._page, first=0, parse=_parse_cursor, after=_older, cursor=_next_cursor
        )

    # ---- errors ------------------------------------------------------------------------

    def _map_error(self, resp: ApiResponse) -> ProviderError | None:
        """The host's failure as an imgsync error; None lets the default mapping decide."""
        data = resp.data if isinstance(resp.data, dict) else {}
        said = data.get("description") or data.get("message")
        detail = str(said) if said else f"HTTP {resp.status}"
        status = resp.status
        if status in (401, 403):
            return AuthError(f"token refused: {detail}", status=status)
        if status == 429:
            retry = parse_retry_after(resp.headers.get("Retry-After"))
            return RateLimited(f"too many requests: {detail}", retry_after=retry, status=status)
        if status >= 500:
            return TransientError(f"server error: {detail}", status=status)
        if status == 404:
            path = resp.url.split("://", 1)[-1].partition("/")[2]
            if path.startswith("api/"):
                return RemoteMisconfigured(
                    f"the host has no /{path.split('?')[0]} route; the paging and delete"
                    " options are guesses (lolisafe), turn them off for this host",
                    status=status,
                )
            return NotFound("file not found", status=status)
        if data.get("success") is False:
            if "not found" in detail.lower():
                return NotFound(detail, status=status)
            return Rejected(detail, status=status)
        return None

    # ---- listing -----------------------------------------------------------------------

    async def list_page(self, cursor: str | None) -> Page:
        """One page, newest first. With ``paging`` the cursor is ``<page>@<id>``: the next
        page and the id of the last file handed out. Deleting newer files on the site
        moves every older one up, so a cursor saved by an earlier run is resumed from its
        watermark (:mod:`imgsync.providers.paging`), never by page number alone."""
        if not self.paging:
            return Page(items=await self._items(None), next_cursor=None)
        return await self._listing.page(cursor)

    async def _page(self, page: int) -> tuple[list[RemoteItem], bool]:
        """One page of files, and whether it was full (a shorter page is the last)."""
        items = await self._items(page)
        return items, len(items) >= PAGE_SIZE

    async def _items(self, page: int | None) -> list[RemoteItem]:
        path = "/api/uploads" if page is None else f"/api/uploads/{page}"
        resp = await self.http.request(
            "GET",
            self.base_url + path,
            remote=self.name,
            headers=self._headers,
            map_error=self._map_error,
        )
        files = resp.data.get("files") if isinstance(resp.data, dict) else None
        if not isinstance(files, list):
            raise ResponseError(f"GET {path}: no files list in the reply", remote=self.name)
        return [self._item(entry) for entry in files if isinstance(entry, dict)]

    def _item(self, entry: dict[str, Any]) -> RemoteItem:
        name = str(entry.get("name") or "")
        file_id = entry.get("id")
        if not name and not file_id:
            raise ResponseError(
                f"a listed file has no id or name: {entry!r:.120}", remote=self.name
            )
        url = entry.get("file")
        ext = str(entry.get("extname") or "") or (name[name.rfind(".") :] if "." in name else "")
        # the extension decides; ``thumb`` (videos get one too) only when there is none
        image = is_image_name("x" + ext) if ext else bool(entry.get("thumb"))
        album = str(entry.get("album") or "").strip()
        return RemoteItem(
            remote_id=str(file_id) if file_id not in (None, "") else name,
            name=name or str(file_id),
            size=parse_size(entry.get("size")),
            url=str(url) if url else f"{self.base_url}/{name}",
            mime=guess_mime(name),
            mtime=_number(entry.get("timestamp")),
            meta=ItemMeta(
                created_at=_number(entry.get("timestamp")), tags=(album,) if album else ()
            ),
            is_image=image,
        )

    # ---- transfer ----------------------------------------------------------------------

    async def refresh_url(self, url: str, *, control: str | None = None) -> str | None:
        """Fresh signatures for an expired signed file URL (``ex``/``is``/``hm``); None for
        an unsigned URL, a host without the route, or one that renews nothing for it.

        NOT DOCUMENTED: Discord Images' docs mention neither signed URLs nor any way to
        renew one. This asks ``POST /api/attachments/refresh-urls`` in the shape of
        Discord's own CDN endpoint (``{"attachment_urls": [...]}`` ->
        ``{"refreshed_urls": [{"original", "refreshed"}]}``), a guess [INF]. A host without
        it answers 404 (-> None) or some other refusal (raised); the caller then leaves the
        image unreachable, never gone.

        ``control`` (another signed URL of this account, last seen alive) is asked about in
        the same request: a reply that renews it but leaves ``url`` out is the route
        working and saying it has no such file any more, and raises ``NotFound``. Without
        that proof (no control, or the control left out too: the route renews nothing, or
        the account's files are all gone) it is None: no news."""
        if not signed_expiry(url):
            return None
        asked = [url] + ([control] if control and control != url and signed_expiry(control) else [])
        try:
            resp = await self.http.request(
                "POST",
                self.base_url + "/api/attachments/refresh-urls",
                remote=self.name,
                headers=self._headers,
                json={"attachment_urls": asked},
                map_error=self._map_error,
                idempotent=True,
            )
        except (NotFound, RemoteMisconfigured):
            return None
        data = resp.data if isinstance(resp.data, dict) else {}
        fresh: dict[str, str] = {}
        for entry in data.get("refreshed_urls") or []:
            if isinstance(entry, dict) and entry.get("original") in asked:
                renewed = entry.get("refreshed")
                if isinstance(renewed, str) and renewed:
                    fresh[str(entry["original"])] = renewed
        if url in fresh:
            return fresh[url]
        if len(asked) == 2 and asked[1] in fresh:
            raise NotFound(
                "the refresh route renewed another image of this account in the same "
                "request, but not this one",
                remote=self.name,
            )
        return None

    def auth_headers(self) -> dict[str, str]:
        return dict(self._headers)

    async def open(self, item: RemoteItem) -> AsyncIterator[bytes]:
        url = item.url or f"{self.base_url}/{item.name}"
        async for chunk in self.open_file(url, map_error=self._map_error):
            yield chunk

    async def upload(self, src: UploadSource, meta: ItemMeta, *, rel_path: str) -> RemoteItem:
        filename = rel_path.rsplit("/", 1)[-1] or src.name

        async def form() -> Multipart:
            return Multipart(files=[FilePart.upload("files[]", filename, src)])

        resp = await self.http.request(
            "POST",
            self.base_url + "/api/upload",
            remote=self.name,
            headers=self._headers,
            form=form,
            map_error=self._map_error,
        )
        data = resp.data if isinstance(resp.data, dict) else {}
        files = data.get("files")
        first = files[0] if isinstance(files, list) and files else None
        got: dict[str, Any] = first if isinstance(first, dict) else data
        url = got.get("url")
        name = got.get("name") or got.get("code")
        if not name and isinstance(url, str):
            name = url.rstrip("/").rsplit("/", 1)[-1]
        if not name or not isinstance(name, str):
            raise ResponseError(
                f"POST /api/upload: no file name in the reply ({sorted(data)})", remote=self.name
            )
        size = got.get("size")
        return RemoteItem(
            remote_id=str(got["id"]) if got.get("id") not in (None, "") else name,
            name=name,
            size=size if isinstance(size, int) and not isinstance(size, bool) else src.size,
            url=str(url) if url else f"{self.base_url}/{name}",
            mime=src.mime,
            # what the host keeps of ``meta``: nothing (no title, description, tags or
            # source URL, and the file's date is the upload's own)
            meta=ItemMeta(),
        )

    async def delete(self, item: RemoteItem) -> None:
        if not self.features.can_delete:
            await super().delete(item)
            return
        file_id = item.remote_id if item.remote_id.isdigit() else await self._id_of(item)
        await self.http.request(
            "POST",
            self.base_url + "/api/upload/delete",
            remote=self.name,
            headers=self._headers,
            json={"id": int(file_id)},
            map_error=self._map_error,
            idempotent=True,  # a POST, but deleting twice is harmless: safe to send again
        )

    async def _id_of(self, item: RemoteItem) -> str:
        """The numeric id of an item known by its file name (as an upload returns it)."""
        async for page, _cursor in self.iter_all():
            for listed in page.items:
                if listed.name == item.remote_id and listed.remote_id.isdigit():
                    return listed.remote_id
        raise NotFound(f"{item.remote_id} is not in the listing", remote=self.name)
