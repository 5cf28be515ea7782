"""What every host emulator shares: knobs, counters, rate windows, fault injection, serving.

An emulator is written from the host's side. Nothing here is shared with the providers:
rate strings and fault specs are parsed here on their own, on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import random
import re
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from yarl import URL

FAULT_KINDS = ("5xx", "reset", "slow", "truncate", "malformed", "stall")
_UNITS = {
    "second": 1.0,
    "sec": 1.0,
    "s": 1.0,
    "minute": 60.0,
    "min": 60.0,
    "m": 60.0,
    "hour": 3600.0,
    "h": 3600.0,
    "day": 86400.0,
    "d": 86400.0,
}


def parse_rate(text: str) -> tuple[int, float]:
    """``"60/minute"`` -> ``(60, 60.0)``; ``"5/2s"`` -> ``(5, 2.0)``."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([a-z]+)\s*", text.lower())
    if not m or m.group(3) not in _UNITS:
        raise ValueError(f"bad rate {text!r}; write e.g. 60/minute or 5/second")
    mult = float(m.group(2)) if m.group(2) else 1.0
    return int(m.group(1)), mult * _UNITS[m.group(3)]


def rate_limit(rate: str | None, default: str) -> tuple[int, float] | None:
    """The ``--rate`` knob as ``(limit, period)``: ``default`` when unset, ``None`` for no
    limit (``none``, ``off``, ``unlimited``, ``0`` or an empty text)."""
    text = (default if rate is None else rate).strip().lower()
    if text in ("", "none", "off", "unlimited", "0"):
        return None
    limit, period = parse_rate(text)
    return (limit, period) if limit > 0 else None


def parse_faults(text: str | None) -> dict[str, float]:
    """``"5xx=0.1,reset=0.05"`` -> probabilities per fault kind (unknown kinds are an error)."""
    out: dict[str, float] = {}
    if not text:
        return out
    for part in text.split(","):
        if not part.strip():
            continue
        kind, _, prob = part.partition("=")
        kind = kind.strip()
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        out[kind] = float(prob) if prob else 1.0
    return out


@dataclass
class Knobs:
    """The command-line knobs of every emulator (see DESIGN.md)."""

    token: str = "test-token"
    seed: int = 0
    rate: str | None = None
    faults: dict[str, float] = field(default_factory=dict)
    max_upload_bytes: int | None = None  # None: the host's own default (upload_limit)
    slow_seconds: float = 2.0
    random_seed: int = 1234

    def upload_limit(self, default: int = 20 * 1024 * 1024) -> int:
        """The largest upload accepted: the knob when set, else the host's ``default``."""
        return self.max_upload_bytes if self.max_upload_bytes is not None else default


@dataclass
class Stats:
    """Counters served at ``/_fakehost/stats``."""

    requests: int = 0
    uploads: int = 0
    deletes: int = 0
    throttled: int = 0
    faults: int = 0
    uploads_in_flight: int = 0  # multipart POSTs being answered now
    max_concurrent_uploads: int = 0  # the most that were ever answered at once
    # "METHOD /path" -> requests answered (in-process tests read it; not served)
    by_path: Counter[str] = field(default_factory=Counter)

    def as_json(self, items: int, distinct: int) -> dict[str, int]:
        return {
            "requests": self.requests,
            "uploads": self.uploads,
            "deletes": self.deletes,
            "throttled": self.throttled,
            "faults": self.faults,
            "max_concurrent_uploads": self.max_concurrent_uploads,
            "items": items,
            "distinct_checksums": distinct,
        }


class FixedWindow:
    """A fixed-window request counter, as Laravel's ``throttle:N,M`` keeps one."""

    def __init__(self, limit: int, period: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.period = period
        self.clock = clock
        self.window_start = -math.inf
        self.count = 0

    def hit(self) -> tuple[bool, int, float]:
        """Count one request: ``(allowed, remaining, seconds until the window resets)``."""
        now = self.clock()
        if now - self.window_start >= self.period:
            self.window_start = now
            self.count = 0
        reset_in = self.window_start + self.period - now
        if self.count >= self.limit:
            return False, 0, reset_in
        self.count += 1
        return True, self.limit - self.count, reset_in


class SlidingLog:
    """A sliding-window limiter: at most ``limit`` requests in any ``period`` seconds."""

    def __init__(self, limit: int, period: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.period = period
        self.clock = clock
        self.times: list[float] = []

    def hit(self) -> tuple[bool, int, float]:
        now = self.clock()
        cutoff = now - self.period
        while self.times and self.times[0] <= cutoff:
            self.times.pop(0)
        if len(self.times) >= self.limit:
            return False, 0, self.times[0] + self.period - now
        self.times.append(now)
        return True, self.limit - len(self.times), self.period


def sent_filename(headers: Mapping[str, str], parsed: str | None) -> str | None:
    """The file name of a multipart part, read from its ``Content-Disposition`` header the
    way the hosts' servers read it: PHP (``rfc1867.c``), Go (``mime.ParseMediaType``) and
    Rack take a backslash in a quoted ``filename`` as an escape only before a quote or
    another backslash and keep it otherwise (browsers never escape one: WHATWG escapes
    only ``"``, CR and LF, as %22, %0D, %0A), and decode no percent sign. aiohttp's parser
    (``parsed``, used when the header is not there) drops every backslash."""
    header = headers.get("Content-Disposition")
    if header is None:
        return parsed
    i, n = 0, len(header)
    while i < n:
        semi = header.find(";", i)
        if semi < 0:
            return None
        i = semi + 1
        while i < n and header[i] in " \t":
            i += 1
        eq = header.find("=", i)
        if eq < 0:
            return None
        key = header[i:eq].strip().lower()
        i = eq + 1
        if i < n and header[i] == '"':  # a quoted string
            out = []
            i += 1
            while i < n and header[i] != '"':
                if header[i] == "\\" and i + 1 < n and header[i + 1] in '"\\':
                    i += 1
                out.append(header[i])
                i += 1
            i += 1
            value = "".join(out)
        else:
            end = header.find(";", i)
            end = n if end < 0 else end
            value = header[i:end].strip()
            i = end
        if key == "filename":
            return value
    return None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


BREAK_HOWS = ("delete", "alter", "placeholder", "forbid", "unavailable", "slow")
_INTERNAL = "X-Fakehost-Internal"


@dataclass(frozen=True)
class Breakage:
    """One image URL broken behind the user's back (``POST /_fakehost/break``)."""

    how: str  # delete | alter | placeholder | forbid | unavailable | slow
    original: bytes
    altered: bytes | None = None


def altered_bytes(data: bytes) -> bytes:
    """Other bytes that still open as the same image: trailing bytes after the image's
    end (PNG, JPEG, GIF and WebP decoders ignore them), as a host that rewrites files does."""
    return data + b"\x00imgsync-fakehost-altered"


class FakeHostBase:
    """Shared plumbing: stats route, fault middleware, serving. Subclasses add routes."""

    kind = "base"

    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self.stats = Stats()
        self.rng = random.Random(knobs.random_seed)
        self.down_until: float | None = None  # an outage: the API drops every connection
        # every multipart file name as it arrived (what the real host would store)
        self.received_names: list[str] = []
        self.scripted_faults: deque[str] = deque()
        # image paths broken behind the user's back (POST /_fakehost/break): path -> Breakage
        self.broken: dict[str, Breakage] = {}

    def fail_next(self, fault: str, times: int = 1) -> None:
        """Answer the next ``times`` API requests with ``fault`` (one of ``FAULT_KINDS``),
        before any random fault: a test can fail exactly one attempt."""
        if fault not in FAULT_KINDS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULT_KINDS)}")
        self.scripted_faults.extend([fault] * times)

    def now(self) -> float:
        """The emulator's clock (a subclass with a ``clock`` option uses it)."""
        clock: Callable[[], float] = getattr(self, "clock", time.time)
        return clock()

    def go_down(self, seconds: float) -> None:
        """An outage: for ``seconds`` of the emulator's clock every API connection is dropped
        unanswered, as a restarting server's would be (the ``/_fakehost`` routes still
        answer)."""
        self.down_until = self.now() + seconds

    @property
    def is_down(self) -> bool:
        return self.down_until is not None and self.now() < self.down_until

    @staticmethod
    def base(request: web.Request) -> str:
        """The address the client used, for the absolute URLs in replies."""
        return f"{request.scheme}://{request.host}"

    # subclasses
    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def stored_checksums(self) -> list[str]:
        """SHA-256 of every image stored now (for the stats route)."""
        raise NotImplementedError

    def fault_applies(self, request: web.Request) -> bool:
        """Faults hit the host's API, never the emulator's own paths."""
        return not request.path.startswith("/_fakehost")

    def malformed_body(self) -> web.Response:
        return web.Response(status=200, text='{"truncated": ', content_type="application/json")

    # link rot (POST /_fakehost/break); a subclass may answer as its host does
    def gone_response(self, request: web.Request) -> web.StreamResponse:
        """What the host answers for an image that was deleted: a plain HTML 404."""
        return web.Response(
            status=404,
            text="<!DOCTYPE html><html><head><title>404 Not Found</title></head>"
            "<body><h1>Not Found</h1><p>That page doesn't exist.</p></body></html>",
            content_type="text/html",
        )

    def placeholder_response(self, request: web.Request) -> web.StreamResponse:
        """What the host answers for an image it replaced by its "removed" placeholder.
        For hosts with no known placeholder: an HTML page with status 200."""
        return web.Response(
            status=200,
            text="<!DOCTYPE html><html><head><title>Image removed</title></head>"
            "<body><p>This image is no longer available.</p></body></html>",
            content_type="text/html",
        )

    def forbidden_response(self, request: web.Request) -> web.StreamResponse:
        """What the host answers for an image it refuses to serve (a hotlink block)."""
        return web.Response(
            status=403,
            text="<!DOCTYPE html><html><head><title>403 Forbidden</title></head>"
            "<body><h1>Forbidden</h1></body></html>",
            content_type="text/html",
        )

    def forget_served(self, path: str) -> bool:
        """Drop the image served at ``path`` from the host's own store, as its own delete
        does, and return True (a subclass hook). The default returns False, and the base
        answers :meth:`gone_response` for the path from then on."""
        return False

    async def served_bytes(self, request: web.Request, path: str) -> bytes | None:
        """The image bytes this emulator serves at ``path`` now, or None when ``path`` is
        not an image it serves. The default asks the emulator itself over loopback (no
        counters, no faults), so every emulator supports ``/_fakehost/break`` unchanged."""
        import aiohttp

        url = f"{request.scheme}://{request.host}{path}"
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, headers={_INTERNAL: "1"}, allow_redirects=False) as resp,
            ):
                if resp.status != 200 or resp.content_type.startswith(("text/", "application/")):
                    return None
                return await resp.read()
        except aiohttp.ClientError:
            return None

    # plumbing
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1024**3)
        app.router.add_get("/_fakehost/stats", self._stats)
        app.router.add_post("/_fakehost/break", self._break)
        app.router.add_post("/_fakehost/outage", self._outage)
        self.add_routes(app)
        return app

    async def _outage(self, request: web.Request) -> web.Response:
        """``POST /_fakehost/outage?seconds=N``: drop every API connection for N seconds."""
        try:
            seconds = float(request.query.get("seconds", "10"))
        except ValueError:
            return web.json_response({"error": "seconds must be a number"}, status=400)
        self.go_down(seconds)
        return web.json_response({"down_for": seconds})

    async def _break(self, request: web.Request) -> web.Response:
        """``{"url": ..., "how": "delete" | "alter" | "placeholder" | "forbid" | "unavailable"
        | "slow"}``: break one image URL this emulator serves (``forbid``: it answers 403 to
        everyone from then on, as a hotlink block or a permission wall that never lifts;
        ``unavailable``: 503 from then on, as a storage node that is down; ``slow``: the
        image, after ``slow_seconds``, as an overloaded one); 404 for a URL it never
        served."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        url = body.get("url") if isinstance(body, dict) else None
        how = body.get("how") if isinstance(body, dict) else None
        if not isinstance(url, str) or how not in BREAK_HOWS:
            return web.json_response(
                {"error": f'want {{"url": "<image url>", "how": {" | ".join(BREAK_HOWS)}}}'},
                status=400,
            )
        target = URL(url)
        path = target.raw_path
        before = self.broken.get(path)
        original = before.original if before is not None else None
        if original is None:
            original = await self.served_bytes(request, path)
        if original is None:
            return web.json_response({"error": "this host never served that URL"}, status=404)
        altered = altered_bytes(original) if how == "alter" else None
        self.broken[path] = Breakage(how, original, altered)
        if how == "delete" and self.forget_served(path):
            del self.broken[path]  # the host itself answers 404 now (and may reuse the path)
        return web.json_response(
            {
                "url": url,
                "how": how,
                "sha256": sha256_hex(original),
                "altered_sha256": sha256_hex(altered) if altered is not None else None,
            }
        )

    async def _broken_reply(
        self,
        breakage: Breakage,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if breakage.how == "delete":
            return self.gone_response(request)
        if breakage.how == "placeholder":
            return self.placeholder_response(request)
        if breakage.how == "forbid":
            return self.forbidden_response(request)
        if breakage.how == "unavailable":
            return web.Response(
                status=503,
                text="<html><body>503 Service Unavailable</body></html>",
                content_type="text/html",
            )
        if breakage.how == "slow":
            await asyncio.sleep(self.knobs.slow_seconds)
            return await handler(request)
        assert breakage.altered is not None
        resp = await handler(request)
        if resp.status != 200:
            return resp
        content_type = resp.content_type if isinstance(resp, web.Response) else None
        return web.Response(
            status=200,
            body=breakage.altered,
            content_type=content_type or "application/octet-stream",
        )

    async def _stats(self, request: web.Request) -> web.Response:
        sums = self.stored_checksums()
        return web.json_response(self.stats.as_json(len(sums), len(set(sums))))

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.headers.get(_INTERNAL) == "1":  # the emulator asking itself
            return await handler(request)
        if request.method != "POST" or not request.content_type.startswith("multipart/"):
            return await self._answer(request, handler)
        # an upload: count how many are being answered at once (faults included: a slow
        # reply keeps its upload in flight)
        stats = self.stats
        stats.uploads_in_flight += 1
        stats.max_concurrent_uploads = max(stats.max_concurrent_uploads, stats.uploads_in_flight)
        try:
            return await self._answer(request, handler)
        finally:
            stats.uploads_in_flight -= 1

    async def _answer(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith("/_fakehost"):
            if self.is_down:  # not counted: a server that is down sees nothing
                if request.transport is not None:
                    request.transport.abort()
                return web.Response(status=500)  # never sent: the connection is gone
            self.stats.requests += 1
            self.stats.by_path[f"{request.method} {request.path}"] += 1
            breakage = self.broken.get(request.raw_path.split("?", 1)[0])
            if breakage is not None and request.method in ("GET", "HEAD"):
                return await self._broken_reply(breakage, request, handler)
        if (self.scripted_faults or self.knobs.faults) and self.fault_applies(request):
            fault = self.scripted_faults.popleft() if self.scripted_faults else self._pick_fault()
            if fault is not None:
                self.stats.faults += 1
                return await self._inject(fault, request, handler)
        return await handler(request)

    def _pick_fault(self) -> str | None:
        for kind, prob in self.knobs.faults.items():
            if self.rng.random() < prob:
                return kind
        return None

    async def _inject(
        self,
        fault: str,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if fault == "5xx":
            return web.Response(
                status=503,
                text="<html><body>503 Service Unavailable</body></html>",
                content_type="text/html",
            )
        if fault == "reset":
            # drop the connection without an answer (abort: no FIN handshake, like a reset)
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        if fault == "slow":
            await asyncio.sleep(self.knobs.slow_seconds)
            return await handler(request)
        if fault == "malformed":
            return self.malformed_body()
        if fault == "stall":
            # the request is carried out (an upload is stored), then the reply is held
            # until the client goes away or ``slow_seconds`` pass: a killed client's upload
            resp = await handler(request)
            waited = 0.0
            while waited < self.knobs.slow_seconds and not _gone(request):
                await asyncio.sleep(0.05)
                waited += 0.05
            return resp
        # truncate: promise more bytes than are sent, then drop the connection
        resp = await handler(request)
        body = getattr(resp, "body", None)
        if not isinstance(body, bytes | bytearray) or len(body) < 2:
            return resp
        stream = web.StreamResponse(
            status=resp.status,
            headers={
                "Content-Type": resp.headers.get("Content-Type", "application/octet-stream"),
                "Content-Length": str(len(body)),
            },
        )
        await stream.prepare(request)
        await stream.write(bytes(body[: len(body) // 2]))
        if request.transport is not None:
            request.transport.close()
        return stream


def _gone(request: web.Request) -> bool:
    """Whether the client of ``request`` closed its connection."""
    transport = request.transport
    return transport is None or transport.is_closing()


def json_response(
    data: Any,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    escape_slashes: bool = False,
    content_type: str = "application/json",
) -> web.Response:
    """JSON as hosts write it (optionally with PHP's escaped slashes). A lone surrogate in
    a string (stored from a ``\\ud800`` escape) goes out as that escape, as a host's JSON
    encoder writes it."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    if escape_slashes:
        text = text.replace("/", "\\/")
    body = text.encode("utf-8", "backslashreplace")
    resp = web.Response(status=status, body=body, headers=headers)
    resp.content_type = content_type
    resp.charset = "utf-8"
    return resp


@contextlib.asynccontextmanager
async def listening(
    host: FakeHostBase | web.Application, port: int = 0, bind: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """Serve ``host`` (an emulator, or any aiohttp app) on ``bind:port`` (0: a free port)
    for the ``async with`` block;
    yields its base URL (``http://127.0.0.1:PORT``). The one serving harness: the CLI,
    the demo and :mod:`imgsync.testing` all use it."""
    runner = web.AppRunner(
        host if isinstance(host, web.Application) else host.make_app(), access_log=None
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, bind, port)
        await site.start()
        bound = runner.addresses[0][1]
        yield f"http://{bind}:{bound}"
    finally:
        await runner.cleanup()


async def serve(host: FakeHostBase, port: int, bind: str = "127.0.0.1") -> None:
    """Run ``host`` on ``bind:port`` until cancelled (``imgsync fakehost``)."""
    async with listening(host, port, bind) as url:
        print(
            f"imgsync fakehost {host.kind} listening on {url} "
            f"(token {host.knobs.token!r}; stats at /_fakehost/stats)",
            flush=True,
        )
        await asyncio.Event().wait()
