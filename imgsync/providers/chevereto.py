"""Chevereto V4 sites (imgz.io, self-hosted): upload through API V1, delete by stored link.

Evidence: [REC n] recorded Chevereto 4.2.0 exchange n (``shared/fixtures/chevereto-4.2.0``);
[DOC] vendor docs and imgz.io's API page (``shared/seeds/002_*``); [SRC] server source as
summarised in ``shared/reference/hosts.md`` §3; [INF] inference.

* API V1 has one action, ``upload`` [DOC, SRC]: no list, get or delete call, so a Chevereto
  remote is a destination (``can_list=False``) whose content is known from state.
  ``POST {base_url}/api/1/upload``, multipart ``source``, ``X-API-Key``, ``format=json``
  [REC 01]. ``txt``/``redirect`` formats answer errors as HTTP 200 text [REC 15, 34]: unused.
* Errors are HTTP 400 + ``{"error": {"message", "code"}}``; ``code`` is Chevereto's own
  (``Request denied`` is 401 inside an HTTP 400) [REC 00, 13-20] and messages are translated
  on localised sites [OBS]. Mapping keys on ``code`` (:func:`error_for_code`).
* Code 130 means "Empty upload source" / "Empty source" / base64 over GET [REC 18, 19, 10]
  *and* "Flooding detected. You can only upload N images per <minute|hour|day|week|month>"
  (the per-IP flood guard; no 429, no Retry-After) [SRC, REC 51]. Rule: requests built here
  always carry a non-empty file part over POST, so 130 is read as flooding. The window is
  the trailing period of *stored* uploads and a refused attempt does not extend it [REC 51
  notes], so waiting one whole period after a refusal always clears it: ``RateLimited`` with
  ``retry_after`` = the period the message names (a minute when it names none, e.g. on a
  translated site). The HTTP client holds the whole host back that long (a period over its
  ``max_retry_after`` becomes a host pause); no item fails for a flood. Only a known English
  empty-source text reads otherwise: the body never reached PHP, e.g. over
  ``post_max_size`` [INF] -> ``Rejected``.
* A 301/302 on the upload means ``base_url`` is not what the site serves (http/https, www,
  a trailing slash: ``POST /api/1/upload/`` 301s unprocessed [REC 24, 44]). Following would
  turn the POST into a GET, so the remote is reported misconfigured instead. A ``base_url``
  ending in ``/api/1/upload`` (the API page's "Request URL") is trimmed to the site root.
  A 404/405 that is not the API's JSON envelope (a wrong path such as
  ``https://site/chevereto``: Chevereto's HTML 404 page [REC 45]) is a misconfigured remote
  too, named with the URL tried. The first upload of a remote goes alone, so a wrong
  ``base_url`` costs one request, not one per worker.
* ``image.md5`` is the MD5 of the stored file [REC 01, 25]; imgz.io's page names it
  ``checksum`` / ``source_checksum`` [DOC]. Every upload is checked against the MD5 of the
  bytes sent. Two mismatches are expected conversions, not errors: the site reports the
  sent bytes' MD5 as ``source_md5`` (it resized or re-encoded them), or the file is a
  type the site always converts (BMP -> PNG [REC 35, 36]: ``source_md5`` null, and a new
  PNG, so a new md5, on every conversion) and the reply describes the converted type with
  the source's dimensions. The item is recorded under the source's checksum with the
  stored bytes' md5 beside it, so a later run uploads nothing. Any other mismatch is an
  item error, and the unrecorded copy is deleted at once so re-runs leave no orphans.
* ``is_approved`` 0 (moderation): the reply has no ``url`` fields [SRC]; still a success.
* ``delete_url`` comes only in the upload reply; a plain GET deletes and 301s to
  ``<viewer>?deleted``, later GETs 404 [REC 28-31]. It is a credential: registered as a
  secret, never logged, kept in state only.
* Identical bytes are accepted again under a new id [REC 21]; 101-103 "Duplicated upload"
  only on sites forbidding it [SRC] -> ``Duplicate``. An unknown ``album_id`` is silently
  ignored [REC 02]. An unparsable ``expiration`` becomes 5 minutes [REC 03, 33], so the
  option is validated here: a typo would make every upload vanish.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urljoin, urlsplit

from imgsync.errors import (
    AuthError,
    Duplicate,
    NotFound,
    ProviderError,
    RateLimited,
    Rejected,
    RemoteMisconfigured,
    ResponseError,
    Scope,
    TransientError,
    Unsupported,
)
from imgsync.hashing import md5_hex
from imgsync.http import FilePart, Multipart
from imgsync.log import get_logger
from imgsync.models import ItemMeta, RemoteItem, UploadSource, sniff_image
from imgsync.providers.base import Features, Provider, ProviderContext, ProviderInfo, option

if TYPE_CHECKING:
    from imgsync.config import RemoteConfig
    from imgsync.http import ApiResponse

__all__ = ["CheveretoProvider", "error_for_code"]

_API_PATH = "/api/1/upload"
_EMPTY_SOURCE_TEXTS = ("empty upload source", "empty source", "base64")
# what the site stores instead of what it was sent [REC 35, hosts.md 3.3]
CONVERTS = {"image/bmp": "image/png", "image/x-ms-bmp": "image/png"}
_FLOOD_PERIOD = re.compile(
    r"per\s+(?:(\d+)\s+)?(second|minute|hour|day|week|month)s?\b", re.IGNORECASE
)
_PERIOD_SECONDS = {
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
    "week": 7 * 86400.0,
    "month": 30 * 86400.0,
}
_ISO_DURATION = re.compile(
    r"P(?=\d|T\d)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?"
)
_MAX_DELETE_HOPS = 3
_THREAD_HASH_BYTES = 1 << 20
_log = get_logger("imgsync.providers.chevereto")


class MissingDeleteUrl(Unsupported):
    """This item has no stored ``delete_url`` (so it cannot be deleted); other items may."""

    scope: ClassVar[Scope] = "item"


class _Redirected(ProviderError):
    """Internal: the delete link answered a redirect (its ``Location`` says what happened)."""

    def __init__(self, location: str) -> None:
        super().__init__("redirected")
        self.location = location


def flood_window(message: str) -> float:
    """Seconds of the flood window a code-130 message names (``per minute`` -> 60).

    Chevereto's text is "... You can only upload N images per <minute|hour|day|week|month>";
    a message that names none (a translated site) counts as a minute.
    """
    found = _FLOOD_PERIOD.search(message)
    if found is None:
        return _PERIOD_SECONDS["minute"]
    return int(found.group(1) or 1) * _PERIOD_SECONDS[found.group(2).lower()]


def error_for_code(code: int, message: str) -> ProviderError:
    """The error an API V1 envelope means, by its ``error.code`` (the message is only shown)."""
    said = f"(Chevereto error {code}: {message})"
    if code == 100:
        return AuthError(f"API key missing or refused {said}", code=code)
    if code == 401:
        return AuthError(
            f"request denied: the site does not allow API uploads for this key {said}; "
            "the stock free edition refuses every key upload",
            code=code,
        )
    if code in (0, 110, 120):
        return RemoteMisconfigured(
            f"the site did not accept the API path {said}; base_url must be the site root, "
            "e.g. https://www.imgz.io",
            code=code,
        )
    if code == 130:
        text = message.casefold()
        if "flood" not in text and any(t in text for t in _EMPTY_SOURCE_TEXTS):
            return Rejected(
                f"the site received no file {said}; it may exceed the server's post_max_size",
                code=code,
            )
        window = flood_window(message)
        return RateLimited(
            f"flooding detected, waiting {window:g} s for the site's window {said}",
            retry_after=window,
            code=code,
        )
    if code in (101, 102, 103):
        return Duplicate(f"the site already has these bytes {said}", code=code)
    if code == 200:
        return TransientError(f"the site could not store the upload {said}", code=code)
    return Rejected(f"the site refused this file {said}", code=code)


def _envelope(data: Any) -> tuple[int, str] | None:
    """``(code, message)`` of a Chevereto error envelope, or None if ``data`` is not one."""
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None
    raw = err.get("code")
    code = raw if isinstance(raw, int) else int(str(raw)) if str(raw).isdigit() else -1
    return code, str(err.get("message") or "")


def _map_error(resp: ApiResponse) -> ProviderError | None:
    """Upload replies: redirect -> misconfigured, envelope -> by code, 413 -> too big,
    a 404/405 page that is not the API -> misconfigured."""
    if 300 <= resp.status < 400:
        location = resp.headers.get("Location", "(no Location)")
        return RemoteMisconfigured(
            f"base_url redirects uploads: POST answered HTTP {resp.status} to {location} "
            "(not followed: it would turn the upload into a GET); check base_url "
            "(http vs https, www, trailing slash)"
        )
    found = _envelope(resp.data)
    if found is not None:
        return error_for_code(*found)
    if resp.status == 413:
        return Rejected("the site's web server refused the body as too large (HTTP 413)")
    if resp.status in (404, 405):
        return RemoteMisconfigured(
            f"no Chevereto API at {resp.method} {_bare(resp.url)}: HTTP {resp.status} "
            f"{_kind_of(resp.data)}; base_url must be the site root, e.g. https://www.imgz.io"
        )
    return None


def _bare(url: str) -> str:
    """``url`` without credentials or query: what a message may show of the URL tried."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _kind_of(data: Any) -> str:
    """A short description of a non-API reply body."""
    if isinstance(data, str) and "<html" in data[:500].lower():
        return "(an HTML page)"
    return "(not the API's JSON)"  # by status: 5xx/408 transient, 429 rate limited, 401/403 auth, 4xx rejected


def _map_delete(resp: ApiResponse) -> ProviderError | None:
    if 300 <= resp.status < 400:
        return _Redirected(resp.headers.get("Location", ""))
    if resp.status in (404, 410):
        return NotFound("already deleted (the delete link no longer works)")
    return None


def _confirms_deletion(location: str) -> bool:
    """``<viewer>?deleted`` is where a successful delete lands [REC 28]."""
    query = urlsplit(location).query
    return any(part.split("=", 1)[0] == "deleted" for part in query.split("&"))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _expiration_problem(value: str | int) -> str | None:
    text = str(value).strip()
    if text.isdigit() or _ISO_DURATION.fullmatch(text):
        return None
    return (
        f"{value!r} is neither seconds nor an ISO-8601 duration such as PT5M or P3D "
        "(the site would silently read it as 5 minutes)"
    )


@dataclass(frozen=True, slots=True)
class CheveretoOptions:
    """``[remotes.NAME]`` keys of a chevereto remote."""

    album_id: str | None = option(None, doc="uploads: encoded album id (must be yours)")
    nsfw: bool | None = option(None, doc="uploads: flag as not safe for work")
    expiration: str | int | None = option(
        None, doc="uploads: ISO-8601 duration or seconds", check=_expiration_problem
    )
    category_id: int | None = option(None, doc="uploads: category")


class CheveretoProvider(Provider):
    """A Chevereto V4 site as an upload destination (API V1), deletable by stored link."""

    info = ProviderInfo(
        kind="chevereto",
        description="Chevereto V4 sites such as imgz.io (upload only; no listing)",
        options=CheveretoOptions,
        token="required",
        base_url="required",
        # no default rate: the flood guard (stock 50/minute, 500/hour ... per IP) is set by
        # each site's admin, often off; its code 130 pauses the host for the window it names
        emulator="chevereto",
    )
    options: CheveretoOptions
    features = Features(
        can_list=False,
        can_delete=True,
        checksums=frozenset({"md5"}),
        reencodes_uploads=False,
        max_upload_bytes=None,
        accepted_extensions=frozenset({"avif", "jpg", "jpeg", "png", "bmp", "gif", "webp"}),
    )

    def __init__(self, config: RemoteConfig, ctx: ProviderContext) -> None:
        super().__init__(config, ctx)
        # the first upload goes alone: a wrong base_url or key then costs one request
        self._first = asyncio.Lock()
        self._proven = False
        self._broken: ProviderError | None = None

    # --- helpers ---------------------------------------------------------------------------

    @classmethod
    def site_url(cls, base_url: str) -> str:
        """The site root: a base_url given as the API URL (``.../api/1/upload/``) is trimmed."""
        base = base_url.rstrip("/")
        for suffix in (_API_PATH, "/api/1"):
            base = base.removesuffix(suffix)
        return base

    @property
    def upload_url(self) -> str:
        """``<site root>/api/1/upload``."""
        return self.site_url(self.base_url) + _API_PATH

    def _hide(self, delete_url: str | None) -> None:
        """Register a delete link (and its token) as secrets before anything can show it."""
        if delete_url:
            http = self.http
            http.add_secret(delete_url)
            token = delete_url.rstrip("/").rsplit("/", 1)[-1]
            if len(token) >= 16:
                http.add_secret(token)

    def _fields(self, meta: ItemMeta) -> list[tuple[str, str]]:
        fields = [("format", "json")]
        if meta.title:
            fields.append(("title", meta.title))
        if meta.description:
            fields.append(("description", meta.description))
        tags = [t.replace(",", " ").strip() for t in meta.tags]
        if any(tags):
            fields.append(("tags", ",".join(t for t in tags if t)))
        opts = self.options
        if opts.album_id:
            fields.append(("album_id", opts.album_id))
        if opts.category_id is not None:
            fields.append(("category_id", str(opts.category_id)))
        if opts.nsfw is not None:
            fields.append(("nsfw", "1" if opts.nsfw else "0"))
        if opts.expiration is not None:
            fields.append(("expiration", str(opts.expiration).strip()))
        return fields

    # --- the provider interface ------------------------------------------------------------

    async def upload(self, src: UploadSource, meta: ItemMeta, *, rel_path: str) -> RemoteItem:
        if not self._proven:
            async with self._first:
                if self._broken is not None:
                    raise self._broken
                if not self._proven:  # (else another upload proved the endpoint meanwhile)
                    try:
                        item = await self._upload(src, meta, rel_path)
                    except ProviderError as exc:
                        if exc.scope != "item":
                            self._broken = exc  # every later upload would fail the same way
                        raise
                    self._proven = True
                    return item
        return await self._upload(src, meta, rel_path)

    async def _upload(self, src: UploadSource, meta: ItemMeta, rel_path: str) -> RemoteItem:
        http = self.http
        if not self.config.token:
            raise AuthError("no API key configured (token_env or token_file)", remote=self.name)
        sent_md5 = src.md5 or await _md5(await src.read())
        filename = PurePosixPath(rel_path).name or src.name
        fields = self._fields(meta)

        async def form() -> Multipart:
            return Multipart(fields=fields, files=[FilePart.upload("source", filename, src)])

        resp = await http.request(
            "POST",
            self.upload_url,
            remote=self.name,
            headers={"X-API-Key": self.config.token},
            form=form,
            expect="json",
            map_error=_map_error,
            allow_redirects=False,
        )
        head = await src.head()  # enough to recognise a conversion the site always does
        return await self._accept(resp.data, src, meta, sent_md5, filename, head)

    async def _accept(
        self,
        reply: Any,
        src: UploadSource,
        meta: ItemMeta,
        sent_md5: str,
        filename: str,
        data: bytes,
    ) -> RemoteItem:
        """Verify a success reply and turn it into the stored item."""
        image = reply.get("image") if isinstance(reply, dict) else None
        if not isinstance(image, dict):
            raise self._stamp(ResponseError(f"upload of {filename}: the reply has no image object"))
        delete_url = _text(image.get("delete_url"))
        self._hide(delete_url)
        got = _text(image.get("md5")) or _text(image.get("checksum"))
        remote_id = _text(image.get("id_encoded"))
        problem: ProviderError | None = None
        if got is None:
            problem = ResponseError(f"upload of {filename}: the reply has no md5 or checksum")
        elif got.lower() != sent_md5.lower() and not _expected_conversion(image, sent_md5, data):
            problem = Rejected(
                f"upload of {filename}: checksum mismatch: sent md5 {sent_md5}, the site "
                f"reports {got}; the site stored different bytes"
            )
        if problem is None and remote_id is None:
            problem = ResponseError(f"upload of {filename}: the reply has no id_encoded")
        if problem is not None:
            gone = await self._discard(delete_url)
            problem.detail += f"; the stored copy {'was' if gone else 'could not be'} deleted"
            raise self._stamp(problem)
        assert remote_id is not None and got is not None
        url = _text(image.get("url"))
        if image.get("is_approved") == 0 and url is None:
            _log.info("awaiting_moderation", remote=self.name, remote_id=remote_id)
        if got.lower() != sent_md5.lower():
            _log.info(
                "stored_converted",
                remote=self.name,
                remote_id=remote_id,
                sent=src.mime,
                stored=image.get("mime"),
                md5=got,
            )
        _log.debug(
            "uploaded",
            remote=self.name,
            remote_id=remote_id,
            md5=got,
            source_md5=image.get("source_md5") or image.get("source_checksum"),
        )
        size = image.get("size")
        return RemoteItem(
            remote_id=remote_id,
            name=_text(image.get("filename")) or filename,
            size=size if isinstance(size, int) else src.size,
            url=url,
            page_url=_text(image.get("url_viewer")),
            mime=_text(image.get("mime")) or src.mime,
            md5=got.lower(),
            sha256=src.sha256,
            meta=_echoed_meta(image, meta),
            delete_url=delete_url,
        )

    def _stamp(self, err: ProviderError) -> ProviderError:
        """Rebuild the message with this remote's name (the text holds no secret)."""
        ProviderError.__init__(err, err.detail, remote=self.name, code=err.code)
        return err

    async def _discard(self, delete_url: str | None) -> bool:
        """Best effort: delete an upload that will not be recorded. True if it is gone."""
        if not delete_url:
            return False
        try:
            await self._delete_link(delete_url)
        except NotFound:
            return True
        except ProviderError:
            return False
        return True

    async def delete(self, item: RemoteItem) -> None:
        if not item.delete_url:
            why = "no delete link was stored (Chevereto gives it only in the upload reply)"
            raise MissingDeleteUrl(f"{item.remote_id}: {why}", remote=self.name)
        await self._delete_link(item.delete_url)

    async def _delete_link(self, url: str) -> None:
        """GET the delete link: a redirect to ``?deleted`` is success, 404 ``NotFound``."""
        http = self.http
        self._hide(url)
        for _ in range(_MAX_DELETE_HOPS):
            try:
                await http.request(
                    "GET",
                    url,
                    remote=self.name,
                    expect="none",
                    map_error=_map_delete,
                    allow_redirects=False,
                )
            except _Redirected as hop:
                if _confirms_deletion(hop.location):
                    return
                url = urljoin(url, hop.location)  # e.g. http -> https: follow, still a GET
                self._hide(url)
                continue
            raise self._stamp(
                ResponseError("the delete link answered without redirecting; deletion unconfirmed")
            )
        raise self._stamp(ResponseError("the delete link redirected too often; not confirmed"))

    def auth_headers(self) -> dict[str, str]:
        return {"X-API-Key": self.config.token} if self.config.token else {}

    async def open(self, item: RemoteItem) -> AsyncIterator[bytes]:
        if not item.url:
            why = "no image URL is known (it awaited moderation when uploaded)"
            raise NotFound(f"{item.remote_id}: {why}", remote=self.name)
        async for chunk in self.open_file(item.url):
            yield chunk


def _expected_conversion(image: dict[str, Any], sent_md5: str, data: bytes) -> bool:
    """Whether a reply whose md5 is not the sent bytes' describes a conversion of them.

    Either the site vouches for the source (``source_md5`` is the sent bytes' MD5), or the
    bytes are of a type the site always converts and the reply describes the converted type
    with the source's dimensions.
    """
    original = _text(image.get("source_md5")) or _text(image.get("source_checksum"))
    if original is not None:
        return original.lower() == sent_md5.lower()
    sent_type = sniff_image(data) or ""
    target = CONVERTS.get(sent_type)
    if target is None or target != image.get("mime"):
        return False
    size = _dimensions(data, sent_type)
    return size is None or size == (image.get("width"), image.get("height"))


def _dimensions(data: bytes, mime: str) -> tuple[int, int] | None:
    """Width and height of a BMP (the one converted type), else None."""
    if mime in ("image/bmp", "image/x-ms-bmp") and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return width, abs(height)
    return None


def _echoed_meta(image: dict[str, Any], sent: ItemMeta) -> ItemMeta:
    """What the site kept of the metadata: title, description and tags (as echoed, else as
    sent). A Chevereto image has no field for the source URL or the app, and its date is
    the upload's, so those are not carried (a migration report shows them dropped)."""
    tags = sent.tags
    if isinstance(image.get("tags"), list):
        names = [t.get("name") for t in image["tags"] if isinstance(t, dict)]
        tags = tuple(n for n in names if isinstance(n, str) and n) or tags
    return ItemMeta(
        title=_text(image.get("title")) or sent.title,
        description=_text(image.get("description")) or sent.description,
        tags=tags,
    )


async def _md5(data: bytes) -> str:
    if len(data) < _THREAD_HASH_BYTES:
        return md5_hex(data)
    import anyio.to_thread

    return await anyio.to_thread.run_sync(md5_hex, data)
