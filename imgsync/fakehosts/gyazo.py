"""A Gyazo emulator, written from Gyazo's API docs and recorded replies (hosts.md §2).

One port serves what Gyazo spreads over several hosts: the API (``api.gyazo.com``), the upload
host (``upload.gyazo.com/api/upload``), the image files (``i.gyazo.com/<id>.<ext>``), the
permalink pages (``gyazo.com/<id>``) and thumbnails. Every absolute URL in a reply is built from
the address the client used.

Documented behaviour [DOC] (or seen in recorded replies [OBS]) that this follows:

- ``GET /api/images`` (``page`` default 1, ``per_page`` default 20, range 1-100): a bare JSON
  array, newest first, with ``X-Total-Count``, ``X-Current-Page``, ``X-Per-Page`` and
  ``X-User-Type: lite``; ``GET``/``DELETE /api/images/{id}``; ``POST /api/upload`` (multipart,
  ``imagedata`` must carry a filename); ``GET /api/oembed?url=``; ``GET /api/users/me``.
- Auth by ``Authorization: Bearer``, or ``access_token`` in the query, a multipart field or a
  form body (old python-gyazo sends a form body even on GET) [DOC + OBS]. Missing token: 401
  ``{"message":"This method requires authentication","request":path,"method":verb}``; wrong
  token: 401 ``{"message":"You are not authorized"}``.
- Unknown image: 404 ``{"message":"image not found."}`` [OBS]. Errors carry only ``message``
  (plus the two extra keys of the auth error).
- ``image_id`` is the MD5 of the stored bytes, and uploading the same bytes again returns the
  image already stored, with its original ``created_at`` [OBS/INF].
- Over the rate: HTTP 429 with a ``message`` and no ``Retry-After`` or other rate header [DOC].
  With ``knobs.rate`` unset the documented 12,500/day applies; ``"none"`` (or a zero count, such
  as ``"0/second"``) switches limiting off. The window is fixed, started by the first request.

Inferred [INF] choices, where Gyazo publishes nothing:

- ``per_page`` outside 1-100 or a ``page`` below 1 is clamped (Gyazo is a Rails app and Kaminari
  clamps like this); the effective values are echoed in ``X-Per-Page``/``X-Current-Page``.
  ``strict_paging=True`` answers 400 ``{"message": ...}`` instead.
- A missing ``imagedata`` file part or a malformed parameter: 400. A body that is not an image:
  422 (the docs' "unprocessable"). An ``imagedata`` over ``knobs.max_upload_bytes``: 413.
- The 429 message is ``"Too many requests"``. Thumbnails are the original bytes (no resizing).
- Every ``/api/`` request counts towards the rate, whatever its outcome; file and page requests
  (other hosts at Gyazo) do not.

Knobs for hardening a client (constructor keywords): ``mixed_dates`` makes listings mix the
three documented ``created_at`` formats and the upload reply use ``+0000``; ``omit_metadata``
drops ``metadata`` and ``ocr`` from some items; ``omit_urls`` drops ``url`` and nulls
``permalink_url``/``thumb_url`` for some items (as in the docs' "get image" example).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import BodyPartReader, web

from .common import (
    FakeHostBase,
    FixedWindow,
    Knobs,
    json_response,
    rate_limit,
    sent_filename,
    sha256_hex,
)
from .images import seed_image, sniff

DEFAULT_RATE = "12500/day"
_JST = timezone(timedelta(hours=9))
_ID = "[0-9a-f]{32}"
_SEED_EPOCH = 1_400_000_000.0  # 2014-05-13, around the docs' example dates


@dataclass
class StoredImage:
    """One image as the emulator keeps it."""

    image_id: str
    data: bytes
    type: str
    mime: str
    width: int
    height: int
    created_at: float
    seq: int
    sha256: str
    title: str | None = None
    desc: str = ""
    referer_url: str | None = None
    app: str | None = None
    access_policy: str = "anyone"
    metadata_is_public: bool | None = None
    collection_id: str | None = None


def format_created_at(ts: float, style: int) -> str:
    """``created_at`` in one of the formats Gyazo has used (0: get doc, 1: list doc, 2: upload)."""
    if style == 1:
        return datetime.fromtimestamp(ts, _JST).strftime("%Y-%m-%d %H:%M:%S%z")
    dt = datetime.fromtimestamp(ts, UTC)
    if style == 2:
        return dt.strftime("%Y-%m-%dT%H:%M:%S+0000")
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _window(rate: str | None, clock: Callable[[], float]) -> FixedWindow | None:
    limit = rate_limit(rate, DEFAULT_RATE)
    return FixedWindow(*limit, clock) if limit else None


class GyazoFake(FakeHostBase):
    """Gyazo's API, upload host and image host on one port, with all state in memory."""

    kind = "gyazo"

    def __init__(
        self,
        knobs: Knobs,
        *,
        mixed_dates: bool = False,
        omit_metadata: bool = False,
        omit_urls: bool = False,
        strict_paging: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(knobs)
        self.mixed_dates = mixed_dates
        self.omit_metadata = omit_metadata
        self.omit_urls = omit_urls
        self.strict_paging = strict_paging
        self.wall_clock = wall_clock
        self.window = _window(knobs.rate, clock)
        self.images: dict[str, StoredImage] = {}
        self._seq = 0
        for i in range(knobs.seed):
            self._seed_one(i)

    # ----------------------------------------------------------------- state
    def _store(self, data: bytes, created_at: float, **meta: Any) -> StoredImage:
        found = sniff(data)
        assert found is not None
        mime, ext, width, height = found
        self._seq += 1
        image = StoredImage(
            image_id=hashlib.md5(data).hexdigest(),
            data=data,
            type=ext,
            mime=mime,
            width=width,
            height=height,
            created_at=created_at,
            seq=self._seq,
            sha256=sha256_hex(data),
            **meta,
        )
        self.images[image.image_id] = image
        return image

    def _seed_one(self, i: int) -> None:
        data, _ext = seed_image(i)
        # spread over years, at uneven times of day, with milliseconds
        created = _SEED_EPOCH + i * 3 * 86400 + (i * 7919) % 86400 + (i * 137 % 1000) / 1000
        titles = (None, f"Seed image {i}", f"スクリーンショット {i}")
        self._store(
            data,
            created,
            title=titles[i % 3],
            desc="" if i % 4 else f"seeded #{i}",
            referer_url=None if i % 3 == 0 else f"https://example.com/page/{i}",
            app=None if i % 2 else "imgsync-seed",
        )

    def stored_checksums(self) -> list[str]:
        return [image.sha256 for image in self.images.values()]

    def newest_first(self) -> list[StoredImage]:
        return sorted(self.images.values(), key=lambda m: (m.created_at, m.seq), reverse=True)

    # ---------------------------------------------------------------- routes
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/images", self.list_images)
        app.router.add_get("/api/images/{image_id}", self.get_image)
        app.router.add_delete("/api/images/{image_id}", self.delete_image)
        app.router.add_post("/api/upload", self.upload)
        app.router.add_get("/api/oembed", self.oembed)
        app.router.add_get("/api/users/me", self.users_me)
        app.router.add_get("/thumb/{image_id:" + _ID + "}.{ext:[a-z0-9]+}", self.serve_file)
        app.router.add_get("/{image_id:" + _ID + "}.{ext:[a-z0-9]+}", self.serve_file)
        app.router.add_get("/{image_id:" + _ID + "}", self.permalink_page)

    # ------------------------------------------------------------ rendering
    def render(self, image: StoredImage, base: str, style: int, *, trim: bool) -> dict[str, Any]:
        """The JSON image object; ``trim`` applies the omit_* knobs to this item."""
        out: dict[str, Any] = {
            "image_id": image.image_id,
            "permalink_url": f"{base}/{image.image_id}",
            "thumb_url": f"{base}/thumb/{image.image_id}.{image.type}",
            "url": f"{base}/{image.image_id}.{image.type}",
            "type": image.type,
            "created_at": format_created_at(image.created_at, style),
            "metadata": {
                "app": image.app,
                "title": image.title,
                "url": image.referer_url,
                "desc": image.desc,
                "original_title": image.title,
                "original_url": image.referer_url,
            },
            "ocr": {"locale": None, "description": ""},
            "access_policy": image.access_policy,
        }
        if trim and self.omit_metadata and image.seq % 4 == 1:
            del out["metadata"], out["ocr"]
        if trim and self.omit_urls and image.seq % 4 == 2:
            del out["url"]
            out["permalink_url"] = out["thumb_url"] = None
        return out

    @staticmethod
    def error(status: int, message: str, **extra: str) -> web.Response:
        return json_response({"message": message, **extra}, status=status)

    # ------------------------------------------------------- auth and rate
    def throttled(self) -> web.Response | None:
        """Count one API request; a 429 (no rate headers, as documented) when over the limit."""
        if self.window is None:
            return None
        allowed, _remaining, _reset = self.window.hit()
        if allowed:
            return None
        self.stats.throttled += 1
        return self.error(429, "Too many requests")

    def check_token(self, request: web.Request, fields: dict[str, str]) -> web.Response | None:
        """Find the token (header, query, then body fields) and check it."""
        token: str | None = None
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            token = header[7:].strip()
        elif "access_token" in request.query:
            token = request.query["access_token"]
        elif "access_token" in fields:
            token = fields["access_token"]
        if not token:
            return self.error(
                401,
                "This method requires authentication",
                request=request.path,
                method=request.method,
            )
        if token != self.knobs.token:
            return self.error(401, "You are not authorized")
        return None

    @staticmethod
    async def form_fields(request: web.Request) -> dict[str, str]:
        """A url-encoded body's fields, on any method (python-gyazo sends one with GET)."""
        if request.content_type != "application/x-www-form-urlencoded" or not request.can_read_body:
            return {}
        text = (await request.read()).decode("utf-8", "replace")
        return dict(parse_qsl(text, keep_blank_values=True))

    async def gate(self, request: web.Request) -> web.Response | None:
        """Rate, then auth, for the token-protected API calls."""
        refused = self.throttled()
        if refused is not None:
            return refused
        return self.check_token(request, await self.form_fields(request))

    # -------------------------------------------------------------- the API
    def paging(self, request: web.Request) -> tuple[int, int] | str:
        """``(page, per_page)``, clamped, or an error message when strict_paging is on."""
        values = {"page": 1, "per_page": 20}
        for key in values:
            raw = request.query.get(key)
            if raw is None:
                continue
            try:
                values[key] = int(raw)
            except ValueError:
                if self.strict_paging:
                    return f"{key} must be an integer"
        page, per_page = values["page"], values["per_page"]
        if self.strict_paging and page < 1:
            return "page must be greater than 0"
        if self.strict_paging and not 1 <= per_page <= 100:
            return "per_page must be between 1 and 100"
        return max(page, 1), min(max(per_page, 1), 100)

    async def list_images(self, request: web.Request) -> web.Response:
        denied = await self.gate(request)
        if denied is not None:
            return denied
        paging = self.paging(request)
        if isinstance(paging, str):
            return self.error(400, paging)
        page, per_page = paging
        ordered = self.newest_first()
        chunk = ordered[(page - 1) * per_page : page * per_page]
        base = self.base(request)
        body = [
            self.render(m, base, m.seq % 3 if self.mixed_dates else 0, trim=True) for m in chunk
        ]
        headers = {
            "X-Total-Count": str(len(ordered)),
            "X-Current-Page": str(page),
            "X-Per-Page": str(per_page),
            "X-User-Type": "lite",
        }
        return json_response(body, headers=headers)

    async def get_image(self, request: web.Request) -> web.Response:
        denied = await self.gate(request)
        if denied is not None:
            return denied
        image = self.images.get(request.match_info["image_id"])
        if image is None:
            return self.error(404, "image not found.")
        return json_response(self.render(image, self.base(request), 0, trim=True))

    async def delete_image(self, request: web.Request) -> web.Response:
        denied = await self.gate(request)
        if denied is not None:
            return denied
        image = self.images.pop(request.match_info["image_id"], None)
        if image is None:
            return self.error(404, "image not found.")
        self.stats.deletes += 1
        # documented: {image_id, type}. created_at is added because python-gyazo's
        # delete_image() reads it (an extra key breaks no client that follows the docs)
        return json_response(
            {
                "image_id": image.image_id,
                "type": image.type,
                "created_at": format_created_at(image.created_at, 2),
            }
        )

    async def read_upload(self, request: web.Request) -> tuple[dict[str, str], bytes | None, bool]:
        """Multipart fields, the ``imagedata`` file bytes (if sent with a filename), oversize."""
        fields: dict[str, str] = {}
        data: bytes | None = None
        too_big = False
        if not request.content_type.startswith("multipart/"):
            return await self.form_fields(request), None, False
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue  # nested multipart: not something Gyazo clients send
            chunks: list[bytes] = []
            size = 0
            while chunk := await part.read_chunk(65536):
                size += len(chunk)
                if size <= self.knobs.upload_limit():
                    chunks.append(chunk)
            raw = b"".join(chunks)
            filename = sent_filename(part.headers, part.filename)
            if part.name == "imagedata" and filename:
                data, too_big = raw, size > self.knobs.upload_limit()
                self.received_names.append(filename)
            elif part.name:
                fields[part.name] = raw.decode("utf-8", "replace")
        return fields, data, too_big

    async def upload(self, request: web.Request) -> web.Response:
        refused = self.throttled()
        if refused is not None:
            return refused
        fields, data, too_big = await self.read_upload(request)
        denied = self.check_token(request, fields)
        if denied is not None:
            return denied
        if data is None:
            return self.error(400, "imagedata is required (a file part with a filename)")
        if too_big:
            return self.error(413, "Image is too large")
        found = sniff(data)
        if found is None:
            return self.error(422, "Unprocessable image: the file is not a supported image")
        meta = self.upload_meta(fields)
        if isinstance(meta, str):
            return self.error(400, meta)
        created = meta.pop("created_at", None)
        image_id = hashlib.md5(data).hexdigest()
        image = self.images.get(image_id)
        if image is None:
            image = self._store(data, self.wall_clock() if created is None else created, **meta)
            self.stats.uploads += 1
        base = self.base(request)
        full = self.render(image, base, 2 if self.mixed_dates else 0, trim=False)
        keys = ("image_id", "permalink_url", "thumb_url", "url", "type", "created_at")
        return json_response({key: full[key] for key in keys})

    @staticmethod
    def upload_meta(fields: dict[str, str]) -> dict[str, Any] | str:
        """The optional upload fields as stored attributes, or an error message."""
        meta: dict[str, Any] = {
            "title": fields.get("title"),
            "desc": fields.get("desc", ""),
            "referer_url": fields.get("referer_url"),
            "app": fields.get("app"),
            "collection_id": fields.get("collection_id"),
        }
        if "created_at" in fields:
            try:
                created = float(fields["created_at"])
            except ValueError:
                return "created_at must be a unix time"
            if not math.isfinite(created) or created < 0:
                return "created_at must be a unix time"
            meta["created_at"] = created
        policy = fields.get("access_policy", "anyone")
        if policy not in ("anyone", "only_me"):
            return "access_policy must be anyone or only_me"
        meta["access_policy"] = policy
        public = fields.get("metadata_is_public")
        if public is not None:
            if public not in ("true", "false"):
                return "metadata_is_public must be 'true' or 'false'"
            meta["metadata_is_public"] = public == "true"
        return meta

    async def oembed(self, request: web.Request) -> web.Response:
        refused = self.throttled()
        if refused is not None:
            return refused
        page_url = request.query.get("url")
        if not page_url:
            return self.error(400, "url is required")
        m = re.fullmatch(r"/(" + _ID + r")/?", urlsplit(page_url).path)
        image = self.images.get(m.group(1)) if m else None
        if image is None:
            return self.error(404, "image not found.")
        base = self.base(request)
        return json_response(
            {
                "version": "1.0",
                "type": "photo",
                "provider_name": "Gyazo",
                "provider_url": base,
                "url": f"{base}/{image.image_id}.{image.type}",
                "width": image.width,
                "height": image.height,
            }
        )

    async def users_me(self, request: web.Request) -> web.Response:
        denied = await self.gate(request)
        if denied is not None:
            return denied
        user = {
            "email": "fakehost@example.com",
            "name": "imgsync fakehost",
            "profile_image": f"{self.base(request)}/static/profile.png",
            "uid": "0123456789abcdef01234567",
        }
        return json_response({"user": user})

    # --------------------------------------------------- files and pages
    async def serve_file(self, request: web.Request) -> web.Response:
        image = self.images.get(request.match_info["image_id"])
        if image is None or request.match_info["ext"] != image.type:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=image.data, content_type=image.mime)

    def forget_served(self, path: str) -> bool:
        """``/_fakehost/break`` with ``delete``: the image is gone from the account too
        (the list, its file, its thumbnail and its page)."""
        name = path.rsplit("/", 1)[-1]
        image_id = name.split(".", 1)[0]
        return bool(re.fullmatch(_ID, image_id)) and self.images.pop(image_id, None) is not None

    async def permalink_page(self, request: web.Request) -> web.Response:
        image = self.images.get(request.match_info["image_id"])
        if image is None:
            return web.Response(status=404, text="Not Found")
        src = f"{self.base(request)}/{image.image_id}.{image.type}"
        html = (
            "<!DOCTYPE html><html><head>"
            f'<meta property="og:image" content="{src}">'
            f'<title>Gyazo</title></head><body><img src="{src}"></body></html>'
        )
        return web.Response(text=html, content_type="text/html")


def create(knobs: Knobs, **options: Any) -> GyazoFake:
    """The emulator as ``imgsync fakehost gyazo`` runs it."""
    return GyazoFake(knobs, **options)
