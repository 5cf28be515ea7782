"""A Lsky Pro 2.x emulator (the self-hosted Laravel image host), written from the host's side.

Sources: the 39 exchanges recorded from a real Lsky Pro 2.1 server in ``shared/fixtures/lsky-2``
(the truth where they speak, tagged [OBS]) and the upstream server source (lsky-org/lsky-pro:
``routes/api.php``, ``Api/V1/ImageController.php``, ``TokenController.php``,
``Services/ImageService.php``, ``Exceptions/Handler.php``, tagged [SRC]).

One port serves the API (``/api/v1/...``), the stored files (``/i/YYYY/MM/DD/<name>``), the
thumbnails (``/thumbnails/<md5>.png``) and ``/login`` (where auth failures redirect to).

Reproduced:

- [OBS] Every API answer is ``{"status": bool, "message": str, "data": {...}}`` (an empty ``data``
  is ``{}``), written as PHP's ``json_encode`` does (escaped slashes and ``\\uXXXX``). Only an unknown
  route differs: Laravel's bare, pretty-printed ``{"message": "The route ... could not be found."}``.
- [OBS] ``Accept: application/json`` matters: without it an auth failure is a **302 to /login**
  with Symfony's redirect page (28, 30); with it, ``401 {"status":false,"message":"Unauthenticated."}``
  and no rate headers (31, 32, 37). A valid token needs no Accept header (29).
- [OBS/SRC] ``POST /api/v1/upload``: no ``Authorization`` header is a guest upload, which succeeds
  (``guest_upload=False`` turns it off: "管理员关闭了游客上传"); a bad token is a 401 "Authentication
  failed." (08), never a guest upload. Upload errors are **HTTP 200 with status false**: no ``file``
  part or bytes that are not an image give "服务异常，请稍后再试" (09, 10), an extension outside
  the accepted list "不支持的文件类型" (38), over ``knobs.max_upload_bytes`` (default 5 MB) "图片大小超出限制", an
  unknown ``strategy_id`` "选定的策略不存在", a full account "储存空间不足". An unknown
  ``album_id`` is accepted silently (14).
- [OBS] **Re-encoding**: PNG and JPEG are stored re-encoded, so the stored bytes (and the reply's
  ``md5``/``sha1``/``size``) differ from the upload, and differently for every upload of the same
  bytes (06, 13): here a comment carrying the upload's sequence number is written into the file, so
  the difference is deterministic. GIF is stored unchanged (12, 21); WebP and BMP too [INF].
  Duplicates are new images with new keys (13). ``size`` is KB as a float.
- [OBS] ``GET /api/v1/images``: a Laravel paginator (``per_page`` always 40; a ``per_page``
  parameter is ignored but kept in the page URLs, 18), ``order=newest|earliest|utmost|least``
  [SRC], ``permission=public|private``, ``keyword``, ``album_id``; a page past the end is
  ``data: []`` with ``prev_page_url`` at page-1 (16). Guest uploads are not listed. ``date`` is
  ``YYYY-MM-DD HH:MM:SS`` in the server's zone without an offset, as is the ``YYYY/MM/DD`` path
  part (``utc_offset_hours``, default 8 as recorded); ``human_date`` is Carbon's Chinese
  ("1秒前").
- [OBS] ``DELETE /api/v1/images/{key}`` answers "删除成功" whether it deleted the caller's image,
  nothing (already gone, 24) or nothing because the key is someone else's (25, 39).
- [OBS] ``POST /api/v1/tokens`` (email, password) mints ``<id>|<40 chars>`` tokens; a wrong password
  is HTTP 200 status false; the route allows 3 a minute per address, and the 4th is a 429
  envelope with no ``Retry-After`` that carries the general limiter's headers (35).
  ``DELETE /api/v1/tokens`` revokes all of the user's tokens (36, 37). ``knobs.token`` is a token
  the user already has.
- [OBS] Rate limiting as Laravel's ``throttle:api`` (``knobs.rate``, default ``60/minute``;
  ``none`` turns it off): a fixed window per key, where the key is the user on the routes behind
  ``auth:sanctum`` (images, albums, profile, token revoke) and the client address elsewhere
  (upload, tokens, strategies), so the two count separately. Normal answers carry
  ``X-RateLimit-Limit``/``X-RateLimit-Remaining``; when two limiters apply, the lower remaining
  wins, as Laravel does. Over the limit: HTTP 429 ``{"status":false,"message":"Too Many
  Attempts.","data":{}}``. [SRC] Lsky's exception handler renders that envelope afresh, which
  drops Laravel's ``Retry-After``/``X-RateLimit-*`` headers (35 shows it); ``throttle_headers=True``
  sends stock Laravel's instead (``Retry-After``, ``X-RateLimit-Limit``, ``X-RateLimit-Remaining: 0``,
  ``X-RateLimit-Reset``).
- [OBS] ``GET /api/v1/profile``, ``GET /api/v1/albums`` (``albums=N`` makes N albums),
  ``GET /api/v1/strategies`` (no token needed). A known path with the wrong method is Laravel's 405.

- [INF] ``private_files=True``: a private image's file (``permission`` 0) is served only to a
  request with a valid token (``Authorization: Bearer``); anyone else gets the 404 page, as a
  site that hides private images behind its login would answer.

Inferred [INF]: the HTML of the 404 page; Carbon's coarser ``human_date`` units; the thumbnail is
the stored file itself (it was, for the recorded tiny images, 22).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import random
import re
import string
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import BodyPartReader, web

from .common import (
    FakeHostBase,
    FixedWindow,
    Knobs,
    parse_rate,
    rate_limit,
    sent_filename,
    sha256_hex,
)
from .images import seed_image, sniff

DEFAULT_RATE = "60/minute"
TOKEN_RATE = "3/minute"
PER_PAGE = 40
CAPACITY_KB = 512_000
MAX_FILE_KB = 5120  # the default group's "maximum file size" [INF]
ACCEPTED_SUFFIXES = ("jpeg", "jpg", "png", "gif", "tif", "bmp", "ico", "psd", "webp")
ORDERS = ("newest", "earliest", "utmost", "least")
STRATEGIES = ({"id": 1, "name": "默认本地策略"},)
JSON_TYPE = "application/json"
HTML_TYPE = "text/html; charset=UTF-8"
_BASE62 = string.digits + string.ascii_letters
_SEED_EPOCH = 1_735_689_600  # 2025-01-01: seeds (an hour or so apart) predate any upload

MSG_UPLOADED = "上传成功"
MSG_DELETED = "删除成功"
MSG_SERVICE_ERROR = "服务异常，请稍后再试"
MSG_BAD_TYPE = "不支持的文件类型"
MSG_TOO_BIG = "图片大小超出限制"
MSG_NO_STRATEGY = "选定的策略不存在"
MSG_NO_SPACE = "储存空间不足"
MSG_NO_GUESTS = "管理员关闭了游客上传"
MSG_PREVIOUS = "&laquo; 上一页"
MSG_NEXT = "下一页 &raquo;"

_REDIRECT_PAGE = """<!DOCTYPE html>
<html>
    <head>
        <meta charset="UTF-8" />
        <meta http-equiv="refresh" content="0;url='{url}'" />

        <title>Redirecting to {url}</title>
    </head>
    <body>
        Redirecting to <a href="{url}">{url}</a>.
    </body>
</html>"""

_NOT_FOUND_PAGE = """<!DOCTYPE html>
<html lang="zh_CN">
    <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>Not Found</title>
    </head>
    <body class="antialiased">
        <div class="flex items-center justify-center min-h-screen">
            <div class="px-4 text-lg text-gray-500 border-r border-gray-400">404</div>
            <div class="ml-4 text-lg text-gray-500 uppercase">Not Found</div>
        </div>
    </body>
</html>
"""


def redirect_page(url: str) -> str:
    """Symfony's ``RedirectResponse`` body for ``url``."""
    return _REDIRECT_PAGE.format(url=html.escape(url))


def php_json(data: Any) -> bytes:
    """JSON as PHP's plain ``json_encode`` writes it: ``\\/`` and ``\\uXXXX`` escapes."""
    return json.dumps(data, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode()


def human_date(seconds: float) -> str:
    """Carbon's ``diffForHumans()`` in Chinese, for a time ``seconds`` ago (one unit)."""
    s = max(1, int(seconds))
    for size, unit in ((60, "秒"), (60, "分钟"), (24, "小时")):
        if s < size:
            return f"{s}{unit}前"
        s //= size
    days = s
    if days < 7:
        return f"{days}天前"
    if days < 30:
        return f"{days // 7}周前"
    if days < 365:
        return f"{days // 30}个月前"
    return f"{days // 365}年前"


def _png_with_comment(data: bytes, text: str) -> bytes:
    """``data`` with a ``tEXt`` chunk written before ``IEND`` (what a re-encoder adds)."""
    end = data.rfind(b"IEND")
    if end < 4:
        return data
    body = b"tEXt" + b"Comment\x00" + text.encode()
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    return data[: end - 4] + chunk + data[end - 4 :]


def _jpeg_with_comment(data: bytes, text: str) -> bytes:
    """``data`` with a ``COM`` segment right after ``SOI``."""
    payload = text.encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def reencode(data: bytes, ext: str, seq: int) -> bytes:
    """The bytes the host stores for an upload: PNG/JPEG change every time, others do not."""
    if ext == "png":
        return _png_with_comment(data, f"lskypro re-encode {seq}")
    if ext == "jpg":
        return _jpeg_with_comment(data, f"lskypro re-encode {seq}")
    return data


@dataclass
class StoredImage:
    """One image as the host keeps it."""

    key: str
    name: str  # "<uniqid>.<ext>"
    path: str  # "YYYY/MM/DD" in the server's zone
    origin_name: str
    data: bytes  # the stored (re-encoded) bytes
    mime: str
    ext: str
    width: int
    height: int
    created_at: float  # unix seconds
    seq: int
    user_id: int | None
    album_id: int | None
    permission: int

    def __post_init__(self) -> None:
        self.md5 = hashlib.md5(self.data).hexdigest()
        self.sha1 = hashlib.sha1(self.data).hexdigest()
        self.sha256 = sha256_hex(self.data)

    @property
    def pathname(self) -> str:
        return f"{self.path}/{self.name}"

    @property
    def size_kb(self) -> float:
        return len(self.data) / 1024


@dataclass
class Album:
    id: int
    name: str
    intro: str
    image_num: int = 0


class Refused(Exception):
    """An upload the host turns down with a ``status: false`` envelope (HTTP 200)."""


def _page_number(raw: str | None) -> int:
    """Laravel's ``resolveCurrentPage``: a valid integer of at least 1, else 1."""
    if raw is None or not re.fullmatch(r"\s*[+-]?\d+\s*", raw):
        return 1
    page = int(raw)
    return max(page, 1)


def _wants_json(request: web.Request) -> bool:
    """Laravel's ``expectsJson()``: JSON first in Accept, or an XHR that accepts anything."""
    accept = request.headers.get("Accept", "")
    types = []
    for i, item in enumerate(accept.split(",")):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if media:
            types.append((-q, i, media.lower()))
    types.sort()
    first = types[0][2] if types else ""
    if "/json" in first or "+json" in first:
        return True
    xhr = request.headers.get("X-Requested-With") == "XMLHttpRequest"
    return xhr and (not types or first in ("*/*", "*"))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LskyProFake(FakeHostBase):
    """Lsky Pro 2's ``/api/v1`` and its file server on one port, with all state in memory."""

    kind = "lskypro"

    def __init__(
        self,
        knobs: Knobs,
        *,
        name: str = "imgsync",
        email: str = "user@example.invalid",
        password: str = "password",
        guest_upload: bool = True,
        throttle_headers: bool = False,
        reencodes: bool = True,
        albums: int = 0,
        utc_offset_hours: float = 8.0,
        token_rate: str = TOKEN_RATE,
        private_files: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(knobs)
        self.private_files = private_files
        self.file_requests: list[dict[str, str]] = []  # headers of every file GET
        self.user_name = name
        self.email = email
        self.password = password
        self.guest_upload = guest_upload
        self.throttle_headers = throttle_headers
        self.reencodes = reencodes
        self.zone = timezone(timedelta(hours=float(utc_offset_hours)))
        self.clock = clock
        self.wall_clock = wall_clock
        self.max_bytes = knobs.upload_limit(MAX_FILE_KB * 1024)
        self.general = rate_limit(knobs.rate, DEFAULT_RATE)
        self.token_limit = parse_rate(token_rate)
        self.windows: dict[str, FixedWindow] = {}
        self.tokens: set[str] = {knobs.token}
        self._token_id = 1
        self.names = random.Random(f"lskypro-{knobs.random_seed}")
        self.images: dict[str, StoredImage] = {}  # by key
        self.by_pathname: dict[str, str] = {}
        self.albums = [Album(i, f"Album {i}", "") for i in range(1, int(albums) + 1)]
        self._seq = 0
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("POST", re.compile(r"/api/v1/upload"), self.upload),
            ("POST", re.compile(r"/api/v1/tokens"), self.create_token),
            ("DELETE", re.compile(r"/api/v1/tokens"), self.revoke_tokens),
            ("GET", re.compile(r"/api/v1/images"), self.list_images),
            ("DELETE", re.compile(r"/api/v1/images/(?P<key>[^/]+)"), self.delete_image),
            ("GET", re.compile(r"/api/v1/albums"), self.list_albums),
            ("GET", re.compile(r"/api/v1/profile"), self.profile),
            ("GET", re.compile(r"/api/v1/strategies"), self.strategies),
        ]
        for i in range(knobs.seed):
            data, ext = seed_image(i)
            created = _SEED_EPOCH + i * 3_600 + (i * 7_717) % 3_600
            self._store(data, f"seed-{i:03d}.{ext}", created, user_id=1, album_id=None)

    # ----------------------------------------------------------------- state
    def _new_key(self) -> str:
        while True:
            key = "".join(self.names.choice(_BASE62) for _ in range(6))
            if key not in self.images:
                return key

    def _uniqid(self, when: float) -> str:
        """PHP's ``uniqid()``: hex seconds and microseconds (made unique here)."""
        micros = int(when * 1_000_000)
        taken = {image.name.partition(".")[0] for image in self.images.values()}
        while True:
            name = f"{micros // 1_000_000:08x}{micros % 1_000_000:05x}"
            if name not in taken:
                return name
            micros += 1

    def _store(
        self,
        data: bytes,
        origin_name: str,
        created: float,
        *,
        user_id: int | None,
        album_id: int | None,
        permission: int = 0,
    ) -> StoredImage:
        found = sniff(data)
        assert found is not None
        mime, ext, width, height = found
        self._seq += 1
        local = datetime.fromtimestamp(created, self.zone)
        image = StoredImage(
            key=self._new_key(),
            name=f"{self._uniqid(created)}.{ext}",
            path=local.strftime("%Y/%m/%d"),
            origin_name=origin_name,
            data=data,
            mime=mime,
            ext=ext,
            width=width,
            height=height,
            created_at=created,
            seq=self._seq,
            user_id=user_id,
            album_id=album_id,
            permission=permission,
        )
        self.images[image.key] = image
        self.by_pathname[image.pathname] = image.key
        return image

    def _remove(self, image: StoredImage) -> None:
        del self.images[image.key]
        del self.by_pathname[image.pathname]

    def stored_checksums(self) -> list[str]:
        return [image.sha256 for image in self.images.values()]

    def user_images(self) -> list[StoredImage]:
        return [image for image in self.images.values() if image.user_id == 1]

    # ---------------------------------------------------------------- routes
    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self.dispatch)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Laravel's router: a route, a 405 for a known path, else a 404."""
        path = request.path
        allowed = []
        for method, pattern, handler in self._routes:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            if request.method == method:
                return await handler(request)
            allowed.append(method)
        if request.method in ("GET", "HEAD"):
            if path.startswith("/i/"):
                return self.serve_file(request, self.by_pathname.get(path[3:]))
            if (m := re.fullmatch(r"/thumbnails/([0-9a-f]{32})\.png", path)) is not None:
                key = next((i.key for i in self.images.values() if i.md5 == m.group(1)), None)
                return self.serve_file(request, key)
            if path == "/login":
                return web.Response(body=b"<!DOCTYPE html><title>Login</title>", headers=_html())
        if allowed:
            allowed_text = ", ".join(m if m != "GET" else "GET, HEAD" for m in allowed)
            return self.laravel_error(
                request,
                405,
                f"The {request.method} method is not supported for this route. "
                f"Supported methods: {allowed_text}.",
            )
        return self.laravel_error(request, 404, f"The route {path.lstrip('/')} could not be found.")

    # ------------------------------------------------------------- replies
    def envelope(
        self,
        status: bool,
        message: str,
        data: Any = None,
        *,
        http: int = 200,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        body = {"status": status, "message": message, "data": data or {}}
        return web.Response(
            status=http, body=php_json(body), headers={"Content-Type": JSON_TYPE, **(headers or {})}
        )

    @staticmethod
    def laravel_error(request: web.Request, status: int, message: str) -> web.Response:
        if _wants_json(request):
            text = json.dumps({"message": message}, ensure_ascii=False, indent=4)
            return web.Response(
                status=status, body=text.encode(), headers={"Content-Type": JSON_TYPE}
            )
        return web.Response(status=status, body=_NOT_FOUND_PAGE.encode(), headers=_html())

    def unauthenticated(
        self, request: web.Request, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        """Lsky's ``unauthenticated()``: a 401 envelope for JSON clients, else a 302 to /login."""
        if _wants_json(request):
            return self.envelope(False, message, http=401, headers=headers)
        target = self.base(request) + "/login"
        return web.Response(
            status=302,
            body=redirect_page(target).encode(),
            headers={"Location": target, **(headers or {}), **_html()},
        )

    def serve_file(self, request: web.Request, key: str | None) -> web.Response:
        image = self.images.get(key) if key else None
        self.file_requests.append(dict(request.headers))
        if (
            image is not None
            and self.private_files
            and image.permission == 0
            and self.bearer(request) not in self.tokens
        ):
            image = None  # hidden from anyone but its owner
        if image is None:
            return web.Response(status=404, body=_NOT_FOUND_PAGE.encode(), headers=_html())
        return web.Response(body=image.data, headers={"Content-Type": image.mime})

    def links(self, image: StoredImage, base: str) -> dict[str, str]:
        url = f"{base}/i/{image.pathname}"
        alt = image.origin_name
        return {
            "url": url,
            "html": f'&lt;img src="{url}" alt="{alt}" title="{alt}" /&gt;',
            "bbcode": f"[img]{url}[/img]",
            "markdown": f"![{alt}]({url})",
            "markdown_with_link": f"[![{alt}]({url})]({url})",
            "thumbnail_url": f"{base}/thumbnails/{image.md5}.png",
        }

    def uploaded(self, image: StoredImage, base: str) -> dict[str, Any]:
        return {
            "key": image.key,
            "name": image.name,
            "pathname": image.pathname,
            "origin_name": image.origin_name,
            "size": image.size_kb,
            "mimetype": image.mime,
            "extension": image.ext,
            "md5": image.md5,
            "sha1": image.sha1,
            "links": self.links(image, base),
        }

    def listed(self, image: StoredImage, base: str) -> dict[str, Any]:
        local = datetime.fromtimestamp(image.created_at, self.zone)
        return {
            "key": image.key,
            "name": image.name,
            "origin_name": image.origin_name,
            "size": image.size_kb,
            "mimetype": image.mime,
            "extension": image.ext,
            "md5": image.md5,
            "sha1": image.sha1,
            "width": image.width,
            "height": image.height,
            "human_date": human_date(self.wall_clock() - image.created_at),
            "date": local.strftime("%Y-%m-%d %H:%M:%S"),
            "pathname": image.pathname,
            "links": self.links(image, base),
        }

    # -------------------------------------------------------------- limits
    def hit(self, key: str, limit: tuple[int, float]) -> tuple[bool, int, float]:
        window = self.windows.get(key)
        if window is None:
            window = self.windows[key] = FixedWindow(limit[0], limit[1], self.clock)
        return window.hit()

    def throttle(self, key: str) -> web.Response | dict[str, str]:
        """``throttle:api`` for ``key``: a 429 refusal, or the headers the answer will carry."""
        if self.general is None:
            return {}
        allowed, remaining, reset_in = self.hit("api:" + key, self.general)
        if allowed:
            return {
                "X-RateLimit-Limit": str(self.general[0]),
                "X-RateLimit-Remaining": str(remaining),
            }
        return self.too_many(self.general[0], reset_in, None)

    def too_many(self, limit: int, reset_in: float, outer: dict[str, str] | None) -> web.Response:
        self.stats.throttled += 1
        headers: dict[str, str] = {}
        if self.throttle_headers:
            retry = max(1, math.ceil(reset_in))
            headers = {
                "Retry-After": str(retry),
                "X-RateLimit-Reset": str(int(self.wall_clock()) + retry),
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": "0",
            }
        if outer:  # an outer limiter adds its own headers on the way out
            headers.update(outer)
        return self.envelope(False, "Too Many Attempts.", http=429, headers=headers)

    def bearer(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header[:7].lower() != "bearer ":
            return None
        return header[7:].strip() or None

    def authenticate(self, request: web.Request) -> web.Response | dict[str, str]:
        """``auth:sanctum`` then ``throttle:api`` keyed by the user."""
        token = self.bearer(request)
        if token is None or token not in self.tokens:
            return self.unauthenticated(request, "Unauthenticated.")
        return self.throttle("user:1")

    @staticmethod
    def client(request: web.Request) -> str:
        return "ip:" + (request.remote or "")

    # ------------------------------------------------------------- tokens
    async def create_token(self, request: web.Request) -> web.Response:
        outer = self.throttle(self.client(request))
        if isinstance(outer, web.Response):
            return outer
        allowed, remaining, reset_in = self.hit("tokens:" + self.client(request), self.token_limit)
        if not allowed:
            return self.too_many(self.token_limit[0], reset_in, outer)
        headers = dict(outer)
        if not outer or remaining <= int(outer["X-RateLimit-Remaining"]):
            headers = {
                "X-RateLimit-Limit": str(self.token_limit[0]),
                "X-RateLimit-Remaining": str(remaining),
            }
        fields = await _form(request)
        email, password = fields.get("email", ""), fields.get("password", "")
        problem = None
        if not email:
            problem = "The email field is required."
        elif not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
            problem = "The email must be a valid email address."
        elif not password:
            problem = "The password field is required."
        elif email != self.email or password != self.password:
            problem = "The email address or password is incorrect."
        if problem is not None:
            return self.envelope(False, problem, headers=headers)
        self._token_id += 1
        secret = "".join(self.names.choice(string.ascii_letters + string.digits) for _ in range(40))
        token = f"{self._token_id}|{secret}"
        self.tokens.add(token)
        return self.envelope(True, "success", {"token": token}, headers=headers)

    async def revoke_tokens(self, request: web.Request) -> web.Response:
        admitted = self.authenticate(request)
        if isinstance(admitted, web.Response):
            return admitted
        self.tokens.clear()
        return self.envelope(True, "success", headers=admitted)

    # ------------------------------------------------------------- account
    async def profile(self, request: web.Request) -> web.Response:
        admitted = self.authenticate(request)
        if isinstance(admitted, web.Response):
            return admitted
        mine = self.user_images()
        avatar = hashlib.md5(self.email.lower().encode()).hexdigest()
        data = {
            "name": self.user_name,
            "email": self.email,
            "capacity": CAPACITY_KB,
            "url": "",
            "image_num": len(mine),
            "album_num": len(self.albums),
            "registered_ip": "",
            "used_capacity": sum(image.size_kb for image in mine) if mine else 0,
            "avatar": f"https://cravatar.cn/avatar/{avatar}?s=96&d=mp&r=g",
        }
        return self.envelope(True, "success", data, headers=admitted)

    async def strategies(self, request: web.Request) -> web.Response:
        admitted = self.throttle(self.client(request))
        if isinstance(admitted, web.Response):
            return admitted
        return self.envelope(True, "success", {"strategies": list(STRATEGIES)}, headers=admitted)

    async def list_albums(self, request: web.Request) -> web.Response:
        admitted = self.authenticate(request)
        if isinstance(admitted, web.Response):
            return admitted
        for album in self.albums:
            album.image_num = sum(1 for i in self.user_images() if i.album_id == album.id)
        rows = [
            {"id": a.id, "name": a.name, "intro": a.intro, "image_num": a.image_num}
            for a in self.albums
        ]
        page = self.paginate(request, rows, "/api/v1/albums")
        return self.envelope(True, "success", page, headers=admitted)

    # -------------------------------------------------------------- listing
    def paginate(self, request: web.Request, rows: list[Any], path: str) -> dict[str, Any]:
        """A Laravel ``LengthAwarePaginator`` (40 a page) with ``withQueryString()``."""
        page = _page_number(request.query.get("page"))
        total = len(rows)
        last = max(1, math.ceil(total / PER_PAGE))
        chunk = rows[(page - 1) * PER_PAGE : page * PER_PAGE]
        base = self.base(request) + path
        kept = [(k, v) for k, v in request.query.items() if k != "page"]

        def url(n: int) -> str:
            return base + "?" + urlencode([*kept, ("page", str(n))], quote_via=quote)

        first_item = (page - 1) * PER_PAGE + 1 if chunk else None
        prev_url = url(page - 1) if page > 1 else None
        next_url = url(page + 1) if page < last else None
        links: list[dict[str, Any]] = [{"url": prev_url, "label": MSG_PREVIOUS, "active": False}]
        for element in _url_window(page, last):
            if element is None:
                links.append({"url": None, "label": "...", "active": False})
            else:
                links.append(
                    {"url": url(element), "label": str(element), "active": element == page}
                )
        links.append({"url": next_url, "label": MSG_NEXT, "active": False})
        return {
            "current_page": page,
            "data": chunk,
            "first_page_url": url(1),
            "from": first_item,
            "last_page": last,
            "last_page_url": url(last),
            "links": links,
            "next_page_url": next_url,
            "path": base,
            "per_page": PER_PAGE,
            "prev_page_url": prev_url,
            "to": first_item + len(chunk) - 1 if first_item is not None else None,
            "total": total,
        }

    def _filtered(self, request: web.Request) -> list[StoredImage]:
        mine = self.user_images()
        permission = request.query.get("permission")
        if permission == "public":
            mine = [i for i in mine if i.permission == 1]
        elif permission == "private":
            mine = [i for i in mine if i.permission == 0]
        keyword = request.query.get("keyword")
        if keyword:
            mine = [i for i in mine if keyword.lower() in i.origin_name.lower()]
        album = request.query.get("album_id")
        if album:
            mine = [i for i in mine if str(i.album_id) == album.strip()]
        order = request.query.get("order")
        if order == "earliest":
            return sorted(mine, key=lambda i: (i.created_at, i.seq))
        if order == "utmost":
            return sorted(mine, key=lambda i: (-len(i.data), -i.seq))
        if order == "least":
            return sorted(mine, key=lambda i: (len(i.data), i.seq))
        return sorted(mine, key=lambda i: (-i.created_at, -i.seq))

    async def list_images(self, request: web.Request) -> web.Response:
        admitted = self.authenticate(request)
        if isinstance(admitted, web.Response):
            return admitted
        base = self.base(request)
        rows = [self.listed(image, base) for image in self._filtered(request)]
        page = self.paginate(request, rows, "/api/v1/images")
        return self.envelope(True, "success", page, headers=admitted)

    async def delete_image(self, request: web.Request) -> web.Response:
        admitted = self.authenticate(request)
        if isinstance(admitted, web.Response):
            return admitted
        image = self.images.get(request.path.rsplit("/", 1)[1])
        if image is not None and image.user_id == 1:  # someone else's key: nothing happens
            self._remove(image)
            self.stats.deletes += 1
        return self.envelope(True, MSG_DELETED, headers=admitted)

    # --------------------------------------------------------------- upload
    async def _read_upload(
        self, request: web.Request
    ) -> tuple[dict[str, str], tuple[str, bytes, int] | None]:
        """Text fields, and the ``file`` part as (client name, bytes, full size)."""
        fields: dict[str, str] = {}
        upload = None
        if not request.content_type.startswith("multipart/"):
            return dict(await _form(request)), None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            chunks: list[bytes] = []
            total = 0
            while chunk := await part.read_chunk(65536):
                total += len(chunk)
                if total <= self.max_bytes:
                    chunks.append(chunk)
            raw = b"".join(chunks)
            filename = sent_filename(part.headers, part.filename)
            if part.name == "file" and filename is not None:
                self.received_names.append(filename)
                upload = (filename, raw, total)
            elif part.name:
                fields[part.name] = raw.decode("utf-8", "replace")
        return fields, upload

    def _accept(
        self, fields: dict[str, str], upload: tuple[str, bytes, int] | None, user: int | None
    ) -> StoredImage:
        """Lsky's ``ImageService::store``, in its order of checks."""
        if user is None and not self.guest_upload:
            raise Refused(MSG_NO_GUESTS)
        if upload is None:
            raise Refused(MSG_SERVICE_ERROR)  # $file is null: an Error, caught generically
        origin_name, data, size = upload
        suffix = origin_name.rpartition(".")[2].lower() if "." in origin_name else ""
        if suffix not in ACCEPTED_SUFFIXES:
            raise Refused(MSG_BAD_TYPE)
        if size > self.max_bytes:
            raise Refused(MSG_TOO_BIG)
        strategy = fields.get("strategy_id")
        if strategy is not None and strategy.strip() not in {str(s["id"]) for s in STRATEGIES}:
            raise Refused(MSG_NO_STRATEGY)
        if user is not None:
            used = sum(image.size_kb for image in self.user_images())
            if used + size / 1024 > CAPACITY_KB:
                raise Refused(MSG_NO_SPACE)
        found = sniff(data)
        if found is None:
            raise Refused(MSG_SERVICE_ERROR)  # Imagick cannot read it
        album = None
        if user is not None and fields.get("album_id", "").strip().isdigit():
            wanted = int(fields["album_id"])
            album = wanted if any(a.id == wanted for a in self.albums) else None
        permission = 1 if fields.get("permission", "").strip() == "1" else 0
        stored = reencode(data, found[1], self._seq + 1) if self.reencodes else data
        return self._store(
            stored,
            origin_name,
            self.wall_clock(),
            user_id=user,
            album_id=album,
            permission=permission,
        )

    async def upload(self, request: web.Request) -> web.Response:
        admitted = self.throttle(self.client(request))  # keyed by address: no user resolved yet
        if isinstance(admitted, web.Response):
            return admitted
        user = None
        if "Authorization" in request.headers:
            token = self.bearer(request)
            if token is None or token not in self.tokens:
                return self.unauthenticated(request, "Authentication failed.", admitted)
            user = 1
        fields, upload = await self._read_upload(request)
        try:
            image = self._accept(fields, upload, user)
        except Refused as exc:
            return self.envelope(False, str(exc), headers=admitted)
        self.stats.uploads += 1
        return self.envelope(
            True, MSG_UPLOADED, self.uploaded(image, self.base(request)), headers=admitted
        )


def _html() -> dict[str, str]:
    return {"Content-Type": HTML_TYPE}


async def _form(request: web.Request) -> dict[str, str]:
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        posted = await request.post()
        return {k: v for k, v in posted.items() if isinstance(v, str)}
    if request.content_type == "application/json" and request.can_read_body:
        try:
            parsed = json.loads(await request.read())
        except ValueError:
            return {}
        if isinstance(parsed, dict):
            return {k: str(v) for k, v in parsed.items()}
    return {}


def _url_window(page: int, last: int, each_side: int = 3) -> list[int | None]:
    """Laravel's ``UrlWindow``: the page numbers of the ``links`` list, ``None`` for "..."."""
    if last < each_side * 2 + 8:
        return list(range(1, last + 1))
    window = each_side + 4
    if page <= window:
        return [*range(1, window + each_side + 1), None, last - 1, last]
    if page > last - window:
        return [1, 2, None, *range(last - (window + each_side - 1), last + 1)]
    return [1, 2, None, *range(page - each_side, page + each_side + 1), None, last - 1, last]


def create(knobs: Knobs, **options: Any) -> LskyProFake:
    """The emulator as ``imgsync fakehost lskypro`` runs it."""
    return LskyProFake(knobs, **options)
