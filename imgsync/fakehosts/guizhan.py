"""A Guizhan Image Hosting (鬼斩图床) emulator, written from its API docs (hosts.md §1).

One port serves the API (``api.gzssimg.com/v1``) and the image host (``gzimg.cc/<folder>/<file>``);
absolute URLs in replies are built from the address the client used.

Documented behaviour [DOC] that this follows:

- ``GET /v1/images`` (``page`` min 1; ``per_page`` 5-20, default 10; ``order`` one of ``name``,
  ``size``, ``upload_time``; ``direction`` ``ASC``/``DESC``) and ``POST /v1/images`` (a multipart
  ``image`` file, or ``image_base64`` in a multipart, url-encoded or JSON body). Nothing else.
- Auth only by ``Authorization: Bearer <token>``.
- Every reply is the envelope ``{code, message, result}``: success is ``code: 0`` with
  ``message: null``; on error ``result`` is ``[]``. JSON slashes are escaped (``https:\\/\\/``).
- Image objects: ``name``, ``fullname``, ``size``, ``upload_time`` (UTC with microseconds,
  ``2021-01-09T17:52:03.000000Z``), ``url`` (served here byte for byte).
- ``1002 "Image size exceeds the limit."`` for an upload over ``knobs.max_upload_bytes``.
- At most 60 requests a minute (used when ``knobs.rate`` is unset).

Inferred [INF] choices, the host being (by its date format and wording) a Laravel app:

- Rate limiting as Laravel's ``throttle`` middleware: a fixed window started by the first hit;
  every authenticated API reply carries ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining``;
  over the limit, HTTP 429 with ``Retry-After``, ``X-RateLimit-Reset`` (unix time) and Laravel's
  own body ``{"message":"Too Many Attempts."}`` (not the envelope). Authentication runs first
  (Laravel's middleware priority), so a 401 neither counts nor carries the headers.
  ``knobs.rate = "none"`` (or a zero count such as ``"0/second"``) removes the limit and headers.
- Bad or missing token: code ``1001``, message ``"Unauthenticated."`` (Laravel's), HTTP 401.
- Validation failures (``per_page`` out of 5-20, ``page`` < 1, a non-integer, an unknown ``order``
  or ``direction``, no image, bad base64, a body that is not an image): code ``1000`` with
  Laravel's message for the first failed rule, HTTP 422. The documented bounds read as Laravel
  ``min``/``max`` rules, which reject rather than clamp; ``clamp_paging=True`` clamps instead.
- ``1002`` is sent with HTTP 422; ``errors_http_200=True`` sends every envelope error (1000,
  1001, 1002) with HTTP 200 instead, since the docs do not say which a client will see.
- Default order ``upload_time`` ``DESC``; ties keep upload order. ``name`` sorts case-blind
  (MySQL's default collation). No de-duplication: every upload is a new image.
- JPEG files get the ``.jpeg`` extension, as in the docs' example. The URL folder is the
  two-digit ISO year, ``w`` and the ISO week of the upload (``21w01``).

The API has no delete, but users delete images on the website, and every later image then
moves up in the page-numbered listing. The emulator's own ``POST /_fakehost/delete``
(outside the host's API, no token) does that: a JSON body ``{"names": [...]}`` or
``{"oldest": N}`` (the N earliest uploads); it answers ``{"deleted": [names]}``, and
deleted images' files answer 404.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import random
import re
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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

DEFAULT_RATE = "60/minute"
CODE_VALIDATION = 1000
CODE_UNAUTHENTICATED = 1001
CODE_TOO_LARGE = 1002
_BASE62 = string.digits + string.ascii_letters
_SEED_EPOCH = 1_610_214_723  # 2021-01-09T17:52:03Z, the docs' example upload time
_ORDERS = ("name", "size", "upload_time")


@dataclass
class StoredImage:
    """One image as the emulator keeps it."""

    name: str
    ext: str
    data: bytes
    mime: str
    upload_time: int  # unix seconds (the database keeps whole seconds)
    seq: int
    sha256: str

    @property
    def fullname(self) -> str:
        return f"{self.name}.{self.ext}"

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def folder(self) -> str:
        year, week, _day = datetime.fromtimestamp(self.upload_time, UTC).isocalendar()
        return f"{year % 100:02d}w{week:02d}"


class Invalid(Exception):
    """A request the host refuses with an envelope error."""

    def __init__(self, message: str, code: int = CODE_VALIDATION) -> None:
        super().__init__(message)
        self.code = code


def _window(rate: str | None, clock: Callable[[], float]) -> FixedWindow | None:
    limit = rate_limit(rate, DEFAULT_RATE)
    return FixedWindow(*limit, clock) if limit else None


def _decode_base64(text: str) -> bytes:
    payload = re.sub(r"^data:[^,]*;base64,", "", text.strip())
    try:
        data = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
    except (binascii.Error, ValueError):
        data = b""
    if not data:
        raise Invalid("The image base64 must be a valid base64 string.")
    return data


class GuizhanFake(FakeHostBase):
    """Guizhan's ``/v1`` API and its image host on one port, with all state in memory."""

    kind = "guizhan"

    def __init__(
        self,
        knobs: Knobs,
        *,
        clamp_paging: bool = False,
        errors_http_200: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(knobs)
        self.clamp_paging = clamp_paging
        self.errors_http_200 = errors_http_200
        self.wall_clock = wall_clock
        self.window = _window(knobs.rate, clock)
        self.names = random.Random(f"guizhan-names-{knobs.random_seed}")
        self.images: dict[str, StoredImage] = {}  # by name
        self._seq = 0
        for i in range(knobs.seed):
            data, _ext = seed_image(i)
            # about two days apart, at uneven times of day
            self._store(data, _SEED_EPOCH + i * 172_800 + (i * 7_717) % 86_400)

    # ----------------------------------------------------------------- state
    def _new_name(self) -> str:
        while True:
            name = "".join(self.names.choice(_BASE62) for _ in range(7))
            if name not in self.images:
                return name

    def _store(self, data: bytes, upload_time: int) -> StoredImage:
        found = sniff(data)
        assert found is not None
        mime, ext, _w, _h = found
        self._seq += 1
        image = StoredImage(
            name=self._new_name(),
            ext="jpeg" if ext == "jpg" else ext,
            data=data,
            mime=mime,
            upload_time=upload_time,
            seq=self._seq,
            sha256=sha256_hex(data),
        )
        self.images[image.name] = image
        return image

    def stored_checksums(self) -> list[str]:
        return [image.sha256 for image in self.images.values()]

    # ---------------------------------------------------------------- routes
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/images", self.list_images)
        app.router.add_post("/v1/images", self.upload)
        app.router.add_get(r"/{folder:\d{2}w\d{2}}/{fullname}", self.serve_file)
        app.router.add_post("/_fakehost/delete", self.host_delete)

    # ------------------------------------------------------------- replies
    @staticmethod
    def render(image: StoredImage, base: str) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(image.upload_time, UTC)
        return {
            "name": image.name,
            "fullname": image.fullname,
            "size": image.size,
            "upload_time": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "url": f"{base}/{image.folder}/{image.fullname}",
        }

    @staticmethod
    def ok(result: Any, headers: dict[str, str]) -> web.Response:
        body = {"code": 0, "message": None, "result": result}
        return json_response(body, headers=headers, escape_slashes=True)

    def fail(
        self, code: int, message: str, status: int, headers: dict[str, str] | None = None
    ) -> web.Response:
        body = {"code": code, "message": message, "result": []}
        status = 200 if self.errors_http_200 else status
        return json_response(body, status=status, headers=headers, escape_slashes=True)

    def admit(self, request: web.Request) -> web.Response | dict[str, str]:
        """Auth, then the throttle: a refusal, or the rate headers every reply carries."""
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if not token or token != self.knobs.token:
            return self.fail(CODE_UNAUTHENTICATED, "Unauthenticated.", 401)
        if self.window is None:
            return {}
        allowed, remaining, reset_in = self.window.hit()
        headers = {"X-RateLimit-Limit": str(self.window.limit)}
        if allowed:
            headers["X-RateLimit-Remaining"] = str(remaining)
            return headers
        self.stats.throttled += 1
        retry_after = max(1, math.ceil(reset_in))
        headers["X-RateLimit-Remaining"] = "0"
        headers["Retry-After"] = str(retry_after)
        headers["X-RateLimit-Reset"] = str(int(self.wall_clock()) + retry_after)
        return json_response({"message": "Too Many Attempts."}, status=429, headers=headers)

    # ---------------------------------------------------------------- list
    def _int_param(self, request: web.Request, key: str, default: int, lo: int, hi: int) -> int:
        label = key.replace("_", " ")
        raw = request.query.get(key)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            if self.clamp_paging:
                return default
            raise Invalid(f"The {label} must be an integer.") from None
        if self.clamp_paging:
            return min(max(value, lo), hi)
        if value < lo:
            raise Invalid(f"The {label} must be at least {lo}.")
        if value > hi:
            raise Invalid(f"The {label} must not be greater than {hi}.")
        return value

    def _listing(self, request: web.Request) -> list[StoredImage]:
        page = self._int_param(request, "page", 1, 1, 2**31 - 1)
        per_page = self._int_param(request, "per_page", 10, 5, 20)
        order = request.query.get("order") or "upload_time"
        if order not in _ORDERS:
            raise Invalid("The selected order is invalid.")
        direction = (request.query.get("direction") or "DESC").upper()
        if direction not in ("ASC", "DESC"):
            raise Invalid("The selected direction is invalid.")
        keys: dict[str, Callable[[StoredImage], tuple[Any, int]]] = {
            "name": lambda m: (m.name.casefold(), m.seq),
            "size": lambda m: (m.size, m.seq),
            "upload_time": lambda m: (m.upload_time, m.seq),
        }
        ordered = sorted(self.images.values(), key=keys[order], reverse=direction == "DESC")
        return ordered[(page - 1) * per_page : page * per_page]

    async def list_images(self, request: web.Request) -> web.Response:
        admitted = self.admit(request)
        if isinstance(admitted, web.Response):
            return admitted
        try:
            chunk = self._listing(request)
        except Invalid as exc:
            return self.fail(exc.code, str(exc), 422, admitted)
        base = self.base(request)
        return self.ok([self.render(m, base) for m in chunk], admitted)

    # -------------------------------------------------------------- upload
    async def _read_body(self, request: web.Request) -> tuple[dict[str, Any], bytes | None, int]:
        """Body fields, the ``image`` file part (if any) and that part's full size."""
        ctype = request.content_type
        if ctype.startswith("multipart/"):
            fields: dict[str, Any] = {}
            data: bytes | None = None
            size = 0
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    continue
                chunks: list[bytes] = []
                total = 0
                while chunk := await part.read_chunk(65536):
                    total += len(chunk)
                    if total <= self.knobs.upload_limit():
                        chunks.append(chunk)
                raw = b"".join(chunks)
                filename = sent_filename(part.headers, part.filename)
                if part.name == "image" and filename:
                    data, size = raw, total
                    self.received_names.append(filename)
                elif part.name:
                    fields[part.name] = raw.decode("utf-8", "replace")
            return fields, data, size
        if ctype == "application/x-www-form-urlencoded":
            return dict(await request.post()), None, 0
        if ctype == "application/json" and request.can_read_body:
            try:
                parsed = json.loads(await request.read())
            except ValueError:
                parsed = None
            return (parsed if isinstance(parsed, dict) else {}), None, 0
        return {}, None, 0

    def _accept(self, fields: dict[str, Any], data: bytes | None, size: int) -> bytes:
        """The image bytes the request carries, or :class:`Invalid`."""
        if data is None:
            if fields.get("image"):
                raise Invalid("The image must be an image.")
            b64 = fields.get("image_base64")
            if not b64:
                raise Invalid("The image field is required when image base64 is not present.")
            if not isinstance(b64, str):
                raise Invalid("The image base64 must be a string.")
            data = _decode_base64(b64)
            size = len(data)
            label = "image base64"
        else:
            label = "image"
        if size > self.knobs.upload_limit():
            raise Invalid("Image size exceeds the limit.", CODE_TOO_LARGE)
        if sniff(data) is None:
            raise Invalid(f"The {label} must be an image.")
        return data

    async def upload(self, request: web.Request) -> web.Response:
        admitted = self.admit(request)
        if isinstance(admitted, web.Response):
            return admitted
        fields, data, size = await self._read_body(request)
        try:
            accepted = self._accept(fields, data, size)
        except Invalid as exc:
            return self.fail(exc.code, str(exc), 422, admitted)
        image = self._store(accepted, int(self.wall_clock()))
        self.stats.uploads += 1
        return self.ok(self.render(image, self.base(request)), admitted)

    # --------------------------------------------------------------- files
    async def serve_file(self, request: web.Request) -> web.Response:
        name, _dot, ext = request.match_info["fullname"].partition(".")
        image = self.images.get(name)
        if image is None or image.ext != ext or image.folder != request.match_info["folder"]:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=image.data, content_type=image.mime)

    # ------------------------------------------------- deletes on the website
    def delete_images(self, names: list[str]) -> list[str]:
        """Delete images as a user does on the website; the names that existed."""
        gone = [n for n in names if self.images.pop(n, None) is not None]
        self.stats.deletes += len(gone)
        return gone

    async def host_delete(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and isinstance(body.get("oldest"), int):
            ordered = sorted(self.images.values(), key=lambda m: (m.upload_time, m.seq))
            names = [m.name for m in ordered[: max(0, body["oldest"])]]
        elif isinstance(body, dict) and isinstance(body.get("names"), list):
            names = [str(n) for n in body["names"]]
        else:
            return json_response({"error": 'send {"names": [...]} or {"oldest": N}'}, status=400)
        return json_response({"deleted": self.delete_images(names)})


def create(knobs: Knobs, **options: Any) -> GuizhanFake:
    """The emulator as ``imgsync fakehost guizhan`` runs it."""
    return GuizhanFake(knobs, **options)
