"""Chevereto V4 (imgz.io) API V1.1 emulator: ``POST|GET /api/1/upload`` and the web routes it implies.

Sources: ``shared/reference/hosts.md`` §3 and the 36 recorded exchanges in
``shared/fixtures/chevereto-4.2.0`` (the truth where they speak).

Recorded [OBS] and reproduced:

- the envelope, ``Content-type: application/json; charset=UTF-8`` (spelled so), HTTP 400 for every
  API error with ``{"status_code":400,"error":{"message","code"},"status_txt":"Bad Request"}``;
- the check order: no key (100) / wrong version (110) / invalid key (100) / ``Request denied`` (401,
  the stock free edition: ``request_denied=True``) / wrong action (120), then the source checks:
  ``Empty upload source`` (130), ``Empty source`` (130), base64 over GET (130), ``Invalid base64
  string`` (120), non-image bytes ``Can't get target upload source info`` (610);
- ``format=txt`` (the URL as ``text/html``), ``format=redirect`` (302 to the relative viewer path),
  and in both formats errors as the bare message with HTTP 200;
- ``POST /api/1/upload/`` -> 301 to the no-slash path; ``GET /api/1/upload`` -> 301 to the slash form
  with the query re-encoded; neither is processed;
- the key in ``X-API-Key`` or the ``key`` field (the header wins); base64 sources get a random
  12-hex stem; ImgBB mode (``image`` field) adds ``status`` and renames ``image`` to ``data`` with
  ``data.id``; ``name`` is an alias of ``title``;
- duplicates are accepted and a taken file name gets a 16-hex suffix; the stored file is served
  byte for byte at ``/images/YYYY/MM/DD/<filename>``;
- ``delete_url`` deletes on a plain GET and 301s to ``<viewer>?deleted``; afterwards the file, the
  viewer and the delete URL all 404 (HTML);
- ``expiration``: ISO-8601 durations or all-digit seconds, anything unparsable counts as 0, and
  everything is clamped to the 5-minute minimum.

Documented/source-derived [DOC/SRC] and reproduced: ``URL uploading is disabled`` (403) for URL
sources; flood protection as HTTP 400 code 130 ``Flooding detected. You can only upload N images
per <unit>`` (driven by ``knobs.rate``); ``File too big - max <N MB>`` (code 400) above
``knobs.max_upload_bytes``; ``Duplicated upload`` (101) for the same MD5 within a day when
``reject_duplicates=True``; the moderation queue (``moderation=True``: ``is_approved`` 0 and no URL
fields); ``checksum_field="checksum"`` for imgz.io's renamed ``checksum``/``source_checksum``.

Inferred [INF]: the exact HTML of the viewer and 404 pages; the ``width`` (resize) parameter is
accepted and ignored; ``album_id``/``category_id`` are ignored (fixture 02 shows an unknown album is);
expired images vanish when next looked at (the real server sweeps them with a cron job); a
``Y``/``M`` in a duration counts 365/30 days.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import re
import string
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from imgsync.fakehosts.chevereto_image import (
    StoredImage,
    datefolder,
    format_bytes,
    image_object,
    is_animated,
    jpeg_exifdata,
)
from imgsync.fakehosts.common import FakeHostBase, Knobs, parse_rate
from imgsync.fakehosts.images import seed_image, sniff

JSON_TYPE = "application/json; charset=UTF-8"
HTML_TYPE = "text/html; charset=UTF-8"
EXPIRATION_MIN = 300
DUPLICATE_WINDOW = 86400.0

_DURATION = re.compile(
    r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?"
)
_DURATION_UNITS = (365 * 86400, 30 * 86400, 7 * 86400, 86400, 3600, 60, 1)
_FLOOD_UNITS = (
    (2592000.0, "month"),
    (604800.0, "week"),
    (86400.0, "day"),
    (3600.0, "hour"),
    (60.0, "minute"),
    (1.0, "second"),
)
_SEED_TITLES = (
    "Harbour at dusk",
    "Screenshot",
    "Cat on the sofa",
    "Receipt",
    "Mountain trail",
    "Whiteboard notes",
    "Birthday cake",
    "Diagram v2",
)
_SEED_BASE_TIME = 1_704_067_200.0  # 2024-01-01 UTC: seeded images are dated from here on


class ApiError(Exception):
    """An API V1 failure: ``message`` and the Chevereto error ``code`` (not an HTTP status)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def expiration_seconds(text: str) -> int:
    """``PT5M`` -> 300, ``3600`` -> 3600, anything unparsable -> 0; then clamped to >= 300."""
    text = text.strip()
    seconds = 0
    if text.isdigit():
        seconds = int(text)
    else:
        m = _DURATION.fullmatch(text)
        if m and text not in ("P", "PT") and not text.endswith("T"):
            seconds = sum(int(g or 0) * u for g, u in zip(m.groups(), _DURATION_UNITS, strict=True))
    return max(seconds, EXPIRATION_MIN)


def flood_unit(period: float) -> str:
    """The unit words of the flood message: ``60`` -> ``minute``, ``120`` -> ``2 minutes``."""
    for secs, word in _FLOOD_UNITS:
        if period == secs:
            return word
    for secs, word in _FLOOD_UNITS:
        if period >= secs and (period / secs).is_integer():
            return f"{int(period / secs)} {word}s"
    return f"{period:g} seconds"


def _safe_stem(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")[:100]


class CheveretoFake(FakeHostBase):
    """An in-memory Chevereto 4.2 host (API V1 upload, image files, viewer, delete URLs)."""

    kind = "chevereto"

    def __init__(
        self,
        knobs: Knobs,
        *,
        checksum_field: str = "md5",
        moderation: bool = False,
        request_denied: bool = False,
        reject_duplicates: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Options beyond the knobs:

        - ``checksum_field``: ``"md5"`` (upstream, recorded) or ``"checksum"`` (imgz.io's page);
        - ``moderation``: uploads go to the moderation queue (``is_approved`` 0, no URL fields);
        - ``request_denied``: the stock free edition, refusing every key upload (fixtures 00/00b);
        - ``reject_duplicates``: error 101 for an MD5 already uploaded within a day;
        - ``clock``: the wall clock (unix seconds), for dates, expiry and the flood window.
        """
        super().__init__(knobs)
        if checksum_field not in ("md5", "checksum"):
            raise ValueError("checksum_field must be 'md5' or 'checksum'")
        self.checksum_field = checksum_field
        self.moderation = moderation
        self.request_denied = request_denied
        self.reject_duplicates = reject_duplicates
        self.clock = clock
        self.flood = parse_rate(knobs.rate) if knobs.rate else None
        self._upload_times: deque[float] = deque()
        self._images: dict[str, StoredImage] = {}  # by id_encoded
        self._expiring: dict[str, StoredImage] = {}  # the ones with an expiration date
        self._files: dict[str, tuple[StoredImage, str]] = {}  # "/images/..." -> (image, variant)
        self._taken: set[tuple[str, str]] = set()  # (folder, filename)
        self._next_id = 1
        alphabet = list(string.digits + string.ascii_letters)
        self.rng.shuffle(alphabet)
        self._alphabet = "".join(alphabet)
        for i in range(knobs.seed):
            self._seed_one(i)

    # ---- FakeHostBase ---------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/_fakehost/images", self._list_own)
        for path in (
            "/api",
            "/api/",
            "/api/{version}",
            "/api/{version}/",
            "/api/{version}/{action}",
        ):
            app.router.add_route("GET", path, self._api)
            app.router.add_route("POST", path, self._api)
        app.router.add_route("GET", "/api/{version}/{action}/", self._api)
        app.router.add_route("POST", "/api/{version}/{action}/", self._api)
        app.router.add_get("/image/{ident}/delete/{token}", self._delete, allow_head=False)
        app.router.add_get("/image/{ident}", self._viewer)
        app.router.add_get("/images/{y}/{m}/{d}/{filename}", self._file)
        app.router.add_get("/{tail:.*}", self._not_found)

    def stored_checksums(self) -> list[str]:
        self._expire()
        return [img.sha256 for img in self._images.values()]

    # ---- state ----------------------------------------------------------------------------------

    def images(self) -> list[StoredImage]:
        """Every stored image, oldest first (for tests and ``/_fakehost/images``)."""
        self._expire()
        return sorted(self._images.values(), key=lambda img: img.id)

    def _encode_id(self, number: int) -> str:
        n = number + len(self._alphabet)  # at least two characters, like the recorded "x2"
        out = ""
        while n:
            n, rest = divmod(n, len(self._alphabet))
            out = self._alphabet[rest] + out
        return out

    def _hex(self, length: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(length))

    def _expire(self) -> None:
        now = self.clock()
        for img in [
            i for i in self._expiring.values() if i.expires is not None and i.expires <= now
        ]:
            self._remove(img)

    def _remove(self, img: StoredImage) -> None:
        self._images.pop(img.id_encoded, None)
        self._expiring.pop(img.id_encoded, None)
        self._taken.discard((img.folder, img.filename))
        for variant in ("", "th", "md"):
            self._files.pop(img.path(variant), None)

    def _store(
        self,
        data: bytes,
        info: tuple[str, str, int, int],
        stem: str,
        original_filename: str,
        params: Mapping[str, str],
        when: float,
    ) -> StoredImage:
        mime, ext, width, height = info
        folder = datefolder(when)
        name = _safe_stem(stem) or self._hex(12)
        if (folder, f"{name}.{ext}") in self._taken:
            name += self._hex(16)
        number = self._next_id
        self._next_id += 1
        title = params.get("title") or params.get("name") or stem
        expiration = params.get("expiration")
        tags = []
        for tag in params.get("tags", "").split(","):
            if tag.strip() and tag.strip() not in tags:
                tags.append(tag.strip())
        img = StoredImage(
            id=number,
            id_encoded=self._encode_id(number),
            name=name,
            extension=ext,
            mime=mime,
            data=data,
            width=width,
            height=height,
            md5=hashlib.md5(data).hexdigest(),
            sha256=hashlib.sha256(data).hexdigest(),
            uploaded=when,
            folder=folder,
            original_filename=original_filename,
            title=title,
            delete_token=self._hex(48),
            description=params.get("description") or None,
            nsfw=1 if params.get("nsfw") == "1" else 0,
            tags=tags,
            is_animated=is_animated(data, mime),
            expires=when + expiration_seconds(expiration) if expiration else None,
            is_approved=not self.moderation,
        )
        if mime == "image/jpeg":
            temp = "chvtemp_" + "".join(self.rng.choice(string.ascii_letters) for _ in range(6))
            img.exifdata = jpeg_exifdata(temp, len(data), width, height, when)
        self._images[img.id_encoded] = img
        if img.expires is not None:
            self._expiring[img.id_encoded] = img
        self._taken.add((folder, img.filename))
        variants = ("", "th", "md") if img.has_medium else ("", "th")
        for variant in variants:
            self._files[img.path(variant)] = (img, variant)
        return img

    def _seed_one(self, index: int) -> None:
        data, _ = seed_image(index)
        info = sniff(data)
        assert info is not None
        title = f"{_SEED_TITLES[index % len(_SEED_TITLES)]} {index + 1}"
        stem = f"seed-{index + 1:04d}"
        when = _SEED_BASE_TIME + index * 129_600.0  # a day and a half apart
        self._store(data, info, stem, f"{stem}.{info[1]}", {"title": title}, when)

    # ---- API ------------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        # the recorded slash dance (fixtures 09 and 24): neither request is processed
        if request.method == "POST" and path.endswith("/"):
            target = self.base(request) + path.rstrip("/")
            if request.query_string:
                target += "?" + request.query_string
            return _reply(301, b"", HTML_TYPE, {"Location": target})
        if request.method == "GET" and not path.endswith("/"):
            target = self.base(request) + path + "/"
            if request.query:
                target += "?" + urlencode(list(request.query.items()))
            return _reply(301, b"", HTML_TYPE, {"Location": target})

        form = await request.post()
        params: dict[str, str] = dict(request.query)
        files: dict[str, tuple[str, bytes]] = {}
        for key, value in form.items():
            if isinstance(value, web.FileField):
                files.setdefault(key, (value.filename, value.file.read()))
            elif isinstance(value, str):
                params[key] = value
            else:  # a text part sent with a non-text Content-Type
                params[key] = bytes(value).decode("utf-8", "replace")
        fmt = params.get("format", "json")
        try:
            return self._upload(request, params, files, fmt)
        except ApiError as err:
            if fmt in ("txt", "redirect"):
                return _reply(200, err.message.encode(), HTML_TYPE)
            body = {
                "status_code": 400,
                "error": {"message": err.message, "code": err.code},
                "status_txt": "Bad Request",
            }
            return _reply(400, _php_json(body), JSON_TYPE)

    def _upload(
        self,
        request: web.Request,
        params: dict[str, str],
        files: dict[str, tuple[str, bytes]],
        fmt: str,
    ) -> web.Response:
        segments = [s for s in request.path.split("/")[2:] if s]
        key = request.headers.get("X-API-Key", params.get("key"))
        if key is None:
            raise ApiError("No key provided", 100)
        if not segments:
            raise ApiError("No version provided", 100)
        if len(segments) < 2:
            raise ApiError("No action provided", 100)
        if segments[0] != "1":
            raise ApiError("Invalid API version.", 110)
        if key != self.knobs.token:
            raise ApiError("Invalid API key.", 100)
        if self.request_denied:
            raise ApiError("Request denied", 401)
        if segments[1] != "upload" or len(segments) > 2:
            raise ApiError("Invalid API action", 120)

        imgbb = "source" not in files and "source" not in params
        field = "image" if imgbb else "source"
        if field in files:
            client_name, data = files[field]
            stem = client_name.rsplit(".", 1)[0] if "." in client_name else client_name
            original: str | None = client_name
        elif field in params:
            data, stem, original = self._string_source(request, params[field]), "", None
        else:
            raise ApiError("Empty upload source", 130)

        now = self.clock()
        self._check_flood(now)
        if len(data) > self.knobs.max_upload_bytes:
            raise ApiError(f"File too big - max {format_bytes(self.knobs.max_upload_bytes)}", 400)
        info = sniff(data)
        if info is None:
            raise ApiError("Can't get target upload source info", 610)
        md5 = hashlib.md5(data).hexdigest()
        self._expire()
        if self.reject_duplicates and any(
            img.md5 == md5 and now - img.uploaded < DUPLICATE_WINDOW
            for img in self._images.values()
        ):
            raise ApiError("Duplicated upload", 101)
        if original is None:  # base64: a random stem and the extension of the detected type
            stem = self._hex(12)
            original = f"{stem}.{info[1]}"
        img = self._store(data, info, stem, original, params, now)
        self._upload_times.append(now)
        self.stats.uploads += 1
        return self._success(request, img, fmt, imgbb)

    def _string_source(self, request: web.Request, source: str) -> bytes:
        if source == "":
            raise ApiError("Empty source", 130)
        if re.match(r"(?i)(https?|ftp)://", source.strip()):
            raise ApiError("URL uploading is disabled", 403)
        if request.method != "POST":
            raise ApiError("Upload using base64 source must be done using POST method.", 130)
        compact = re.sub(r"\s+", "", source)
        try:
            data = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError("Invalid base64 string", 120) from None
        if not data or base64.b64encode(data).decode() != compact:
            raise ApiError("Invalid base64 string", 120)
        return data

    def _check_flood(self, now: float) -> None:
        if self.flood is None:
            return
        limit, period = self.flood
        while self._upload_times and self._upload_times[0] <= now - period:
            self._upload_times.popleft()
        if len(self._upload_times) >= limit:
            self.stats.throttled += 1
            raise ApiError(
                f"Flooding detected. You can only upload {limit} images per {flood_unit(period)}",
                130,
            )

    def _success(
        self, request: web.Request, img: StoredImage, fmt: str, imgbb: bool
    ) -> web.Response:
        base = self.base(request)
        obj = image_object(img, base, self.checksum_field)
        if fmt == "txt":
            return _reply(200, str(obj.get("url", "")).encode(), HTML_TYPE)
        if fmt == "redirect":
            return _reply(302, b"", HTML_TYPE, {"Location": img.path_viewer})
        body: dict[str, Any] = {"status_code": 200}
        if imgbb:
            body["status"] = 200
        body["success"] = {"message": "file uploaded", "code": 200}
        if imgbb:
            obj["id"] = img.id_encoded
            body["data"] = obj
        else:
            body["image"] = obj
        body["status_txt"] = "OK"
        return _reply(200, _php_json(body), JSON_TYPE)

    # ---- web routes -----------------------------------------------------------------------------

    def _lookup(self, ident: str) -> StoredImage | None:
        self._expire()
        # viewer paths may carry an SEO slug: /image/some-title.<id>
        return self._images.get(ident.rsplit(".", 1)[-1])

    async def _delete(self, request: web.Request) -> web.Response:
        img = self._lookup(request.match_info["ident"])
        if img is None or request.match_info["token"] != img.delete_token:
            return _not_found_page()
        self._remove(img)
        self.stats.deletes += 1
        location = f"{self.base(request)}{img.path_viewer}?deleted"
        return _reply(301, b"", HTML_TYPE, {"Location": location})

    async def _viewer(self, request: web.Request) -> web.Response:
        img = self._lookup(request.match_info["ident"])
        if img is None:
            return _not_found_page()
        url = self.base(request) + img.path()
        page = (
            f"<!DOCTYPE html><html><head><title>{html.escape(img.title)}</title>"
            f'<meta property="og:image" content="{url}"></head>'
            f'<body><h1>{html.escape(img.title)}</h1><img src="{url}" width="{img.width}" '
            f'height="{img.height}" alt="{html.escape(img.title)}"></body></html>'
        )
        return _reply(200, page.encode(), HTML_TYPE)

    async def _file(self, request: web.Request) -> web.Response:
        self._expire()
        found = self._files.get(request.path)
        if found is None:
            return _not_found_page()
        img, _variant = found
        return web.Response(body=img.data, headers={"Content-Type": img.mime})

    async def _not_found(self, request: web.Request) -> web.Response:
        return _not_found_page()

    async def _list_own(self, request: web.Request) -> web.Response:
        """The emulator's own listing (Chevereto has none): URLs a test can start from."""
        base = self.base(request)
        items = [
            {
                "id_encoded": img.id_encoded,
                "url": base + img.path(),
                "url_viewer": base + img.path_viewer,
                "delete_url": f"{base}{img.path_viewer}/delete/{img.delete_token}",
                "md5": img.md5,
                "title": img.title,
                "size": len(img.data),
            }
            for img in self.images()
        ]
        return web.json_response({"images": items})


def _php_json(data: Any) -> bytes:
    """``json_encode`` with PHP's defaults: escaped slashes and ``\\u`` escapes."""
    return json.dumps(data, separators=(",", ":")).replace("/", "\\/").encode()


def _reply(
    status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
) -> web.Response:
    headers = {"Content-type": content_type}  # Chevereto's spelling
    if extra:
        headers = {**extra, **headers}
    return web.Response(status=status, body=body, headers=headers)


def _not_found_page() -> web.Response:
    page = (
        "<!DOCTYPE html><html><head><title>That page doesn't exist</title></head>"
        "<body><h1>That page doesn't exist</h1><p>The requested page was not found.</p>"
        "</body></html>"
    )
    return _reply(404, page.encode(), HTML_TYPE)


def create(knobs: Knobs, **options: Any) -> CheveretoFake:
    """The factory ``imgsync fakehost chevereto`` calls."""
    return CheveretoFake(knobs, **options)
