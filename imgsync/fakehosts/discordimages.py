"""Discord Images (discordimages.com) emulator: a lolisafe-style file host behind a ``token`` header.

Sources: ``shared/reference/hosts.md`` §4 and the seed docs page (``shared/seeds/003_*``). The
service is most likely gone, so there is no recording; this is the spec as written there.

Documented [DOC] and reproduced:

- every API call carries the key in a ``token`` header;
- ``POST /api/upload``, multipart, file field ``files[]``;
- ``GET /api/uploads`` -> ``{"success":true,"files":[File,...]}``, with File keys ``id`` (int),
  ``name`` (5 random characters + extension), ``userid`` (int), ``albumid`` (int or null),
  ``timestamp`` (unix seconds), ``size`` (human text: ``"508 kB"``, ``"14 B"``, ``"8.12 kB"``),
  ``file`` (full URL), ``date`` (``"2018-12-4 16:23:22"``: month and day unpadded, server local
  time), ``album`` (name or ``""``), ``extname`` (``".jpg"``) and ``thumb``
  (``<base>/thumbs/<stem>.png``, absent for non-image files); any file type may be listed.

Inferred [INF] from lolisafe (the fork these docs describe), on by default because an upload needs
*some* reply:

- the upload reply ``{"success":true,"files":[{"name","size","url"}]}`` (``size`` in bytes), which
  is what the ShareX config read (``files[0].url``); the file is served at ``<base>/<name>`` and a
  PNG thumbnail at ``<base>/thumbs/<stem>.png``;
- failures as ``{"success":false,"description":...}``: 401 ``No token provided`` / ``Invalid
  token``; HTTP 200 for upload failures (``No files.``, a blocked extension, ``File too large``
  above ``knobs.max_upload_bytes``, ``Unexpected field`` for a file part not named ``files[]``);
- ``knobs.rate`` exceeded on any API call -> HTTP 429 ``{"success":false,"description":"Rate
  limited"}`` (a fixed window, as express-rate-limit keeps);
- list order newest first (highest id first); ``size`` text as the ``pretty-bytes`` package writes
  it (powers of 1000, three significant digits).

Inferred [INF] and off unless asked for (constructor options):

- ``paging=True``: ``GET /api/uploads/{page}``, 0-based, 25 per page (``/api/uploads`` is then
  page 0); without it ``/api/uploads`` returns everything and the paged path is a 404;
- ``delete=True``: ``POST /api/upload/delete`` with JSON ``{"id": N}`` -> ``{"success":true}``.
- ``signed_ttl=SECONDS``: file URLs expire, as Discord's CDN attachment URLs do since 2024
  (discord-api-docs PR 6650): every URL handed out carries ``ex`` (expiry, hex unix seconds),
  ``is`` (issued) and ``hm`` (a signature of the path and both); past ``ex``, or with a bad
  signature, the file answers 404 "This content is no longer available." while the file is
  still there. ``POST /api/attachments/refresh-urls`` with ``{"attachment_urls": [...]}`` and
  the token answers ``{"refreshed_urls": [{"original": url, "refreshed": url}]}`` (Discord's
  shape) with fresh signatures for files it still has; ``refresh=False`` leaves that route
  out (a host whose URLs expire with no way to renew them), ``refresh_echo=True`` makes it
  answer each URL with itself, unrenewed (a route that exists but renews nothing). Neither
  signed URLs nor this route are in Discord Images' docs: the shape is Discord's own CDN's.
- ``private_files=True``: files (not thumbnails) are served only to a request carrying the
  ``token`` header; anyone else gets the 404 page. Nothing says the real host did this (its
  files were public, lolisafe-style): it is there to test that downloads carry the token to
  the host's own origin.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import mimetypes
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from imgsync.fakehosts.common import (
    FakeHostBase,
    FixedWindow,
    Knobs,
    json_response,
    rate_limit,
    sent_filename,
)
from imgsync.fakehosts.images import make_png, seed_image

PAGE_SIZE = 25
USER_ID = 1
NAME_CHARS = string.ascii_letters + string.digits
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp"})
BLOCKED_EXTENSIONS = frozenset(
    {".exe", ".bat", ".cmd", ".com", ".msi", ".scr", ".sh", ".jar", ".vbs"}
)
SEED_ALBUM = (1, "Screenshots")
_SEED_BASE_TIME = 1_543_622_400  # 2018-12-01 UTC, when the docs were written
_SEED_NOTE_INDEXES = (2, 7)  # seeded non-image (.txt) files, when seeding 5 or more


@dataclass
class StoredFile:
    id: int
    name: str  # "UGRmm.jpg"
    data: bytes
    timestamp: int
    albumid: int | None = None
    album: str = ""

    @property
    def extname(self) -> str:
        return "." + self.name.rsplit(".", 1)[1] if "." in self.name else ""

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0]

    @property
    def is_image(self) -> bool:
        return self.extname in IMAGE_EXTENSIONS


def pretty_bytes(size: int) -> str:
    """``14`` -> ``14 B``, ``8120`` -> ``8.12 kB``, ``508000`` -> ``508 kB`` (pretty-bytes style)."""
    if size < 1:
        return f"{size} B"
    units = ("B", "kB", "MB", "GB", "TB", "PB")
    exponent = min((len(str(size)) - 1) // 3, len(units) - 1)
    value = float(f"{size / 1000**exponent:.3g}")
    text = str(int(value)) if value.is_integer() else repr(value)
    return f"{text} {units[exponent]}"


def lolisafe_date(ts: int) -> str:
    """``2018-12-4 16:23:22``: server local time, month and day unpadded, time padded."""
    t = time.localtime(ts)
    return f"{t.tm_year}-{t.tm_mon}-{t.tm_mday} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


class DiscordImagesFake(FakeHostBase):
    """An in-memory Discord Images host: upload, list, files and thumbnails on one port."""

    kind = "discordimages"

    def __init__(
        self,
        knobs: Knobs,
        *,
        paging: bool = False,
        delete: bool = False,
        signed_ttl: float | None = None,
        refresh: bool = True,
        refresh_echo: bool = False,
        private_files: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``paging`` and ``delete`` switch on the inferred lolisafe routes [INF] (see module doc);
        ``clock`` is the wall clock (unix seconds) used for upload timestamps."""
        super().__init__(knobs)
        self.paging = paging
        self.delete = delete
        self.signed_ttl = float(signed_ttl) if signed_ttl else None
        self.refresh = refresh
        self.refresh_echo = refresh_echo
        self.private_files = private_files
        self.clock = clock
        limit = rate_limit(knobs.rate, "none")
        self.window = FixedWindow(*limit) if limit else None
        self._files: dict[
            str, StoredFile
        ] = {}  # by stem (the 5-character code), so thumbs are unique
        self._thumbs: dict[str, bytes] = {}  # by stem, made on first request
        self._next_id = 1
        for i in range(knobs.seed):
            self._seed_one(i)

    # ---- FakeHostBase ---------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/upload", self._upload)
        app.router.add_get("/api/uploads", self._list)
        if self.paging:
            app.router.add_get(r"/api/uploads/{page:\d+}", self._list)
        if self.delete:
            app.router.add_post("/api/upload/delete", self._delete)
        if self.signed_ttl is not None and self.refresh:
            app.router.add_post("/api/attachments/refresh-urls", self._refresh_urls)
        app.router.add_get("/thumbs/{thumb}", self._thumb)
        app.router.add_get("/{name}", self._file)

    async def served_bytes(self, request: web.Request, path: str) -> bytes | None:
        """The file at ``path`` (a signed URL's path: its signature is not needed here)."""
        name = path.lstrip("/")
        stored = self._files.get(name.rsplit(".", 1)[0])
        return stored.data if stored is not None and stored.name == name else None

    def stored_checksums(self) -> list[str]:
        """Every stored file counts, images or not: the account list shows them all."""
        return [hashlib.sha256(f.data).hexdigest() for f in self._files.values()]

    # ---- state ----------------------------------------------------------------------------------

    def files(self) -> list[StoredFile]:
        """Every stored file, newest first (as the list call orders them)."""
        return sorted(self._files.values(), key=lambda f: f.id, reverse=True)

    def _new_name(self, extname: str) -> str:
        while True:
            code = "".join(self.rng.choice(NAME_CHARS) for _ in range(5))
            if code not in self._files:
                return code + extname

    def _add(
        self, data: bytes, extname: str, timestamp: int, album: tuple[int, str] | None
    ) -> StoredFile:
        stored = StoredFile(
            id=self._next_id, name=self._new_name(extname), data=data, timestamp=timestamp
        )
        if album is not None:
            stored.albumid, stored.album = album
        self._next_id += 1
        self._files[stored.stem] = stored
        return stored

    def _seed_one(self, index: int) -> None:
        when = _SEED_BASE_TIME + index * 40_000
        if self.knobs.seed >= 5 and index in _SEED_NOTE_INDEXES:
            note = f"imgsync fakehost seed note {index}\nnot an image\n".encode()
            self._add(note, ".txt", when, None)
            return
        data, ext = seed_image(index)
        self._add(data, f".{ext}", when, SEED_ALBUM if index % 4 == 1 else None)

    # ---- API ------------------------------------------------------------------------------------

    def _gate(self, request: web.Request) -> web.Response | None:
        """Rate limit first (a middleware in front of the routes), then the token."""
        if self.window is not None and not self.window.hit()[0]:
            self.stats.throttled += 1
            return _failure("Rate limited", 429)
        token = request.headers.get("token")
        if not token:
            return _failure("No token provided", 401)
        if token != self.knobs.token:
            return _failure("Invalid token", 401)
        return None

    async def _upload(self, request: web.Request) -> web.Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        parts: list[tuple[str, bytes]] = []
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            for key, value in form.items():
                if not isinstance(value, web.FileField):
                    continue
                if key != "files[]":
                    return _failure("Unexpected field")
                filename = sent_filename(value.headers, value.filename) or ""
                parts.append((filename, value.file.read()))
                self.received_names.append(filename)
        if not parts:
            return _failure("No files.")
        for filename, data in parts:
            extname = _extname(filename)
            if extname in BLOCKED_EXTENSIONS:
                kind = extname[1:].upper()
                return _failure(f"{kind} files are not permitted due to security reasons.")
            if len(data) > self.knobs.upload_limit():
                return _failure("File too large")
        base = self.base(request)
        stored = [self._add(data, _extname(fn), int(self.clock()), None) for fn, data in parts]
        self.stats.uploads += len(stored)
        files = [
            {"name": f.name, "size": len(f.data), "url": self.file_url(base, f)} for f in stored
        ]
        return _json({"success": True, "files": files})

    async def _list(self, request: web.Request) -> web.Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        files = self.files()
        if self.paging:
            page = int(request.match_info.get("page", "0"))
            files = files[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
        base = self.base(request)
        return _json({"success": True, "files": [self._entry(f, base) for f in files]})

    def _entry(self, f: StoredFile, base: str) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": f.id,
            "name": f.name,
            "userid": USER_ID,
            "albumid": f.albumid,
            "timestamp": f.timestamp,
            "size": pretty_bytes(len(f.data)),
            "file": self.file_url(base, f),
            "date": lolisafe_date(f.timestamp),
            "album": f.album,
            "extname": f.extname,
        }
        if f.is_image:
            entry["thumb"] = f"{base}/thumbs/{f.stem}.png"
        return entry

    async def _delete(self, request: web.Request) -> web.Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        try:
            payload = json.loads(await request.read() or b"{}")
        except ValueError:
            payload = {}
        file_id = payload.get("id") if isinstance(payload, dict) else None
        if file_id is None or file_id == "":
            return _failure("No file specified")
        for stored in list(self._files.values()):
            if str(stored.id) == str(file_id):
                del self._files[stored.stem]
                self._thumbs.pop(stored.stem, None)
                self.stats.deletes += 1
                return _json({"success": True})
        return _failure("File not found")

    # ---- files ----------------------------------------------------------------------------------

    # ---- signed URLs (signed_ttl) ---------------------------------------------------------------

    def _signature(self, path: str, ex: str, issued: str) -> str:
        key = f"{self.knobs.token}:{self.knobs.random_seed}".encode()
        return hmac.new(key, f"{path}?{ex}:{issued}".encode(), hashlib.sha256).hexdigest()

    def file_url(self, base: str, f: StoredFile) -> str:
        """The URL handed out for ``f`` (signed, when ``signed_ttl`` is set)."""
        url = f"{base}/{f.name}"
        if self.signed_ttl is None:
            return url
        now = int(self.clock())
        ex, issued = f"{now + int(self.signed_ttl):x}", f"{now:x}"
        return f"{url}?ex={ex}&is={issued}&hm={self._signature('/' + f.name, ex, issued)}&"

    def _signed_ok(self, request: web.Request) -> bool:
        ex, issued, hm = (request.query.get(k, "") for k in ("ex", "is", "hm"))
        try:
            expires = int(ex, 16)
        except ValueError:
            return False
        good = hmac.compare_digest(hm, self._signature(request.path, ex, issued))
        return good and self.clock() < expires

    async def _refresh_urls(self, request: web.Request) -> web.Response:
        refused = self._gate(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            body = None
        urls = body.get("attachment_urls") if isinstance(body, dict) else None
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            return _failure("attachment_urls: a list of URLs", 400)
        out = []
        for url in urls:
            name = url.split("?", 1)[0].rsplit("/", 1)[-1]
            stored = self._files.get(name.rsplit(".", 1)[0])
            if stored is not None and stored.name == name:
                fresh = url if self.refresh_echo else self.file_url(self.base(request), stored)
                out.append({"original": url, "refreshed": fresh})
        return _json({"refreshed_urls": out})

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        stored = self._files.get(name.rsplit(".", 1)[0])
        if stored is None or stored.name != name:
            return _express_404(request)
        if self.signed_ttl is not None and not self._signed_ok(request):
            return web.Response(status=404, text="This content is no longer available.")
        if (
            self.private_files
            and request.headers.get("token") != self.knobs.token
            and request.headers.get("X-Fakehost-Internal") != "1"
        ):
            return _express_404(request)  # hidden from anyone but the token's holder
        mime = mimetypes.guess_type(stored.name)[0] or "application/octet-stream"
        return web.Response(body=stored.data, headers={"Content-Type": mime})

    async def _thumb(self, request: web.Request) -> web.Response:
        thumb = request.match_info["thumb"]
        match = self._files.get(thumb[:-4]) if thumb.endswith(".png") else None
        if match is None or not match.is_image:
            return _express_404(request)
        data = self._thumbs.get(match.stem)
        if data is None:
            data = self._thumbs[match.stem] = make_png(50, 50, match.id)
        return web.Response(body=data, headers={"Content-Type": "image/png"})


def _extname(filename: str) -> str:
    """Node's ``path.extname`` lower-cased: ``"a.JPG"`` -> ``".jpg"``, ``"README"`` -> ``""``."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if "." not in base.lstrip("."):
        return ""
    return "." + base.rsplit(".", 1)[1].lower()


def _json(data: Any, status: int = 200) -> web.Response:
    """JSON as Express's ``res.json`` sends it (``application/json; charset=utf-8``)."""
    resp = json_response(data, status=status)
    resp.charset = "utf-8"
    return resp


def _failure(description: str, status: int = 200) -> web.Response:
    return _json({"success": False, "description": description}, status=status)


def _express_404(request: web.Request) -> web.Response:
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
        f"</head>\n<body>\n<pre>Cannot GET {request.path}</pre>\n</body>\n</html>\n"
    )
    return web.Response(status=404, text=page, content_type="text/html")


def create(knobs: Knobs, **options: Any) -> DiscordImagesFake:
    """The factory ``imgsync fakehost discordimages`` calls."""
    return DiscordImagesFake(knobs, **options)
