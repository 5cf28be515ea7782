"""Chevereto V4 (imgz.io) API V1.1 emulator: ``POST|GET /api/1/upload`` and the web routes it implies.

Sources: ``shared/reference/hosts.md`` §3 and the 53 recorded exchanges in
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
- the canonical path depends on the query string, not the method (fixtures 09, 24, 40-44): with a
  query it is ``/api/1/upload/?...``, without one ``/api/1/upload``; the other form answers 301
  (empty ``text/html`` body, the query re-encoded) and nothing is processed;
- any other method is processed too: PUT's body is never read ("Empty upload source", 49), HEAD
  answers 400 with the JSON type and no body (50); a path outside the routes (a wrong
  ``base_url`` such as ``/chevereto/api/1/upload``) gets the HTML 404 page whatever the method (45);
- the key in ``X-API-Key`` or the ``key`` field (the header wins); base64 sources get a random
  12-hex stem; ImgBB mode (``image`` *text* field) adds ``status`` and renames ``image`` to
  ``data`` with ``data.id``; an ``image`` *file part* is not read ("Empty upload source", 46);
  ``name`` is an alias of ``title``;
- duplicates are accepted and a taken file name gets a 16-hex suffix; the stored file is served
  byte for byte at ``/images/YYYY/MM/DD/<filename>``;
- file names are taken as sent (47, 48): the stored name is a slug of the stem (accents folded
  to ASCII, spaces to ``-``, anything else outside ``[A-Za-z0-9_-]`` dropped, so a
  percent-encoded name keeps its ``C3B1`` letters), ``original_filename`` and the default title
  keep the text as received;
- BMP is stored converted to PNG (35, 36): extension, mime, size and ``md5`` describe the PNG,
  ``source_md5`` is null, and the PNG carries its conversion time (a new md5 each second);
- a JPEG cut off before its image data: 400 code 425 with ImageMagick's message naming the
  server path (37); the size limit is decimal and inclusive, checked after the type is known
  (38, 39; ``knobs.max_upload_bytes``, default the stock 2 MB = 2,000,000 bytes);
- flood protection (51): HTTP 400 code 130 ``Flooding detected. You can only upload N images
  per <unit>`` once the trailing period holds N *stored* uploads (a deleted one no longer
  counts, a refused attempt never does), driven by ``knobs.rate``;
- ``date`` is the site's local time (``utc_offset``, default the recordings' UTC-3), beside
  ``date_gmt``;
- ``delete_url`` deletes on a plain GET and 301s to ``<viewer>?deleted``; afterwards the file, the
  viewer and the delete URL all 404 (HTML);
- ``expiration``: ISO-8601 durations or all-digit seconds, anything unparsable counts as 0, and
  everything is clamped to the 5-minute minimum.

Documented/source-derived [DOC/SRC] and reproduced: ``URL uploading is disabled`` (403) for URL
sources; ``Duplicated upload`` (101) for the same MD5 within a day when
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
import unicodedata
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from imgsync.fakehosts.chevereto_image import (
    SITE_UTC_OFFSET,
    StoredImage,
    datefolder,
    format_bytes,
    image_object,
    is_animated,
    jpeg_exifdata,
    variant_bytes,
)
from imgsync.fakehosts.common import FakeHostBase, Knobs, rate_limit, sent_filename
from imgsync.fakehosts.images import (
    bmp_to_png,
    derived_file,
    jpeg_is_complete,
    seed_image,
    sniff,
)

JSON_TYPE = "application/json; charset=UTF-8"
HTML_TYPE = "text/html; charset=UTF-8"
EXPIRATION_MIN = 300
DUPLICATE_WINDOW = 86400.0
STOCK_MAX_UPLOAD = 2_000_000  # upload_max_filesize_mb = 2, a decimal MB (fixtures 38, 39)
SERVER_ROOT = "/var/www/html"  # [INF] where the site's files live, for ImageMagick's messages

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


def slug(stem: str) -> str:
    """The stored name of a file stem: ``ñandú é`` -> ``nandu-e``, ``%C3%B1and`` -> ``C3B1and``."""
    folded = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    dashed = re.sub(r"\s+", "-", folded.strip())
    kept = re.sub(r"[^A-Za-z0-9_-]", "", dashed)
    return re.sub(r"-{2,}", "-", kept).strip("-")[:100]


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
        utc_offset: float | str = SITE_UTC_OFFSET / 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Options beyond the knobs:

        - ``checksum_field``: ``"md5"`` (upstream, recorded) or ``"checksum"`` (imgz.io's page);
        - ``moderation``: uploads go to the moderation queue (``is_approved`` 0, no URL fields);
        - ``request_denied``: the stock free edition, refusing every key upload (fixtures 00/00b);
        - ``reject_duplicates``: error 101 for an MD5 already uploaded within a day;
        - ``utc_offset``: the site's zone in hours east of UTC, for ``date`` and the date
          folders (default -3, the recordings' zone);
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
        self.utc_offset = float(utc_offset) * 3600
        self.flood = rate_limit(knobs.rate, "none")  # a stock site's guard is off here
        self._upload_times: deque[tuple[float, str]] = deque()  # (time, id_encoded)
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

    @property
    def max_upload_bytes(self) -> int:
        """The size limit in force (the knob, read live; else the stock 2 MB)."""
        return self.knobs.upload_limit(STOCK_MAX_UPLOAD)

    # ---- FakeHostBase ---------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/_fakehost/images", self._list_own)
        for path in (
            "/api",
            "/api/",
            "/api/{version}",
            "/api/{version}/",
            "/api/{version}/{action}",
            "/api/{version}/{action}/",
        ):
            app.router.add_route("*", path, self._api)
        app.router.add_get("/image/{ident}/delete/{token}", self._delete, allow_head=False)
        app.router.add_get("/image/{ident}", self._viewer)
        app.router.add_get("/images/{y}/{m}/{d}/{filename}", self._file)
        app.router.add_route("*", "/{tail:.*}", self._not_found)  # any method: the HTML 404

    def stored_checksums(self) -> list[str]:
        self._expire()
        return [img.sha256 for img in self._images.values()]

    def forget_served(self, path: str) -> bool:
        """``/_fakehost/break`` with ``delete``: the image leaves the site (all its sizes)."""
        found = self._files.get(path)
        if found is None:
            return False
        self._remove(found[0])
        return True

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
        self._taken.discard((img.folder, img.filename))  # its flood entry stops counting too
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
        folder = datefolder(when, self.utc_offset)
        name = slug(stem) or self._hex(12)
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
            utc_offset=self.utc_offset,
        )
        img.thumb = derived_file(mime, f"thumbnail of {img.md5}")
        if img.has_medium:
            img.medium = derived_file(mime, f"medium copy of {img.md5}", side=500)
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
        # the canonical form: "/api/1/upload/?query" with a query, "/api/1/upload" without one,
        # whatever the method (fixtures 09, 24, 40-44); the other form is redirected unprocessed
        if request.query_string and not path.endswith("/"):
            target = f"{self.base(request)}{path}/?{urlencode(list(request.query.items()))}"
            return _reply(301, b"", HTML_TYPE, {"Location": target})
        if not request.query_string and path.endswith("/") and path != "/":
            target = self.base(request) + path.rstrip("/")
            return _reply(301, b"", HTML_TYPE, {"Location": target})

        # PHP fills the form only for POST: a PUT's upload is never seen (fixture 49)
        form = await request.post() if request.method == "POST" else {}
        params: dict[str, str] = dict(request.query)
        files: dict[str, tuple[str, bytes]] = {}
        for key, value in form.items():
            if isinstance(value, web.FileField):
                filename = sent_filename(value.headers, value.filename) or ""
                files.setdefault(key, (filename, value.file.read()))
                self.received_names.append(filename)
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

        # only ``source`` may be a file part; ImgBB's ``image`` is read as text (fixture 46)
        imgbb = "source" not in files and "source" not in params
        original: str | None = None
        if "source" in files:
            client_name, data = files["source"]
            stem = client_name.rsplit(".", 1)[0] if "." in client_name else client_name
            original = client_name
        elif "source" in params or (imgbb and "image" in params):
            text = params["image" if imgbb else "source"]
            data, stem = self._string_source(request, text), ""
        else:
            raise ApiError("Empty upload source", 130)

        now = self.clock()
        self._check_flood(now)
        info = sniff(data)
        if info is None:
            raise ApiError("Can't get target upload source info", 610)
        if len(data) > self.max_upload_bytes:  # decimal and inclusive, after the type check
            raise ApiError(f"File too big - max {format_bytes(self.max_upload_bytes)}", 400)
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
        data, info = self._process(data, info, stem, now)
        img = self._store(data, info, stem, original, params, now)
        self._upload_times.append((now, img.id_encoded))
        self.stats.uploads += 1
        return self._success(request, img, fmt, imgbb)

    def _process(
        self, data: bytes, info: tuple[str, str, int, int], stem: str, now: float
    ) -> tuple[bytes, tuple[str, str, int, int]]:
        """What the image library does before storing: BMP -> PNG, cut-off JPEGs refused."""
        mime, ext, width, height = info
        target = f"{SERVER_ROOT}/images/{datefolder(now, self.utc_offset)}/{slug(stem)}.{ext}"
        if mime == "image/jpeg" and not jpeg_is_complete(data):
            raise ApiError(
                f"negative or zero image size `{target}' @ error/image.c/CloneImage/794", 425
            )
        if mime == "image/bmp":
            png = bmp_to_png(data, now)
            if png is None:  # [INF] a BMP the emulator cannot decode (RLE, 16-bit)
                raise ApiError(
                    f"improper image header `{target}' @ error/bmp.c/ReadBMPImage/1", 425
                )
            return png, ("image/png", "png", width, height)
        return data, info

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
        while self._upload_times and self._upload_times[0][0] <= now - period:
            self._upload_times.popleft()
        # the server counts the rows of its images table: a deleted upload no longer counts
        stored = sum(1 for _, ident in self._upload_times if ident in self._images)
        if stored >= limit:
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
        img, variant = found
        return web.Response(body=variant_bytes(img, variant), headers={"Content-Type": img.mime})

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
        "<!DOCTYPE html><html><head><title>That page doesn&apos;t exist (404) - Chevereto</title>"
        '</head><body id="404" data-route="404"><h1>That page doesn&apos;t exist</h1>'
        "<p>The requested page was not found.</p></body></html>"
    )
    return _reply(404, page.encode(), HTML_TYPE)


def create(knobs: Knobs, **options: Any) -> CheveretoFake:
    """The factory ``imgsync fakehost chevereto`` calls."""
    return CheveretoFake(knobs, **options)
