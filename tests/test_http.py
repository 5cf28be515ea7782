"""ApiClient against real aiohttp servers on 127.0.0.1.

Retries and limiter penalties run on a fake clock (sleeps are recorded, not waited), so
only the tests that measure real pacing -- rate against a server that enforces it, the
shared budget, the connection cap -- take wall time, about three seconds in all.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import BodyPartReader, web
from aiohttp.test_utils import TestServer

from imgsync import __version__
from imgsync.config import LimitConfig
from imgsync.errors import (
    AuthError,
    LocalIOError,
    NotFound,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    Rejected,
    RemotePaused,
    RemoteUnavailable,
    ResponseError,
    TransientError,
)
from imgsync.http import ApiClient, ApiResponse, FilePart, Multipart, parse_retry_after
from imgsync.ratelimit import LimiterRegistry, next_utc_midnight
from imgsync.retry import RetryPolicy
from imgsync.testing import FakeClock as FakeTime

Serve = Callable[["Counted"], Awaitable[TestServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start aiohttp apps on loopback ports; all are closed at the end."""
    servers: list[TestServer] = []

    async def start(site: Counted) -> TestServer:
        server = TestServer(site.app)
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
def ft() -> FakeTime:
    return FakeTime()


def fake_client(ft: FakeTime, registry: LimiterRegistry | None = None, **kw: Any) -> ApiClient:
    """A client whose retries and penalties sleep on ``ft``."""
    reg = registry or LimiterRegistry(clock=ft.clock, sleep=ft.sleep)
    retry = RetryPolicy(sleep=ft.sleep, clock=ft.clock, rng=lambda: 0.5)
    return ApiClient(reg, retry=retry, **kw)


class Counted:
    """An app routing every path to one handler; ``count`` is the requests it received."""

    def __init__(self, handler: Callable[[web.Request, int], Awaitable[web.StreamResponse]]):
        self.count = 0
        self.app = web.Application()

        async def route(request: web.Request) -> web.StreamResponse:
            self.count += 1
            return await handler(request, self.count)

        self.app.router.add_route("*", "/{tail:.*}", route)


def counting_app(handler: Callable[[web.Request, int], Awaitable[web.StreamResponse]]) -> Counted:
    """``handler(request, n)`` answers every path; n = 1 for the first request."""
    return Counted(handler)


# --- plain requests and status mapping -----------------------------------------------------


async def test_json_reply_and_user_agent(serve: Serve, ft: FakeTime) -> None:
    """A JSON reply is parsed; the request carries imgsync's User-Agent and the params."""
    seen: dict[str, str] = {}

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        seen["ua"] = request.headers["User-Agent"]
        seen["q"] = request.query["page"]
        return web.json_response({"items": [1, 2]}, headers={"X-Total": "2"})

    server = await serve(counting_app(handler))
    async with fake_client(ft) as client:
        resp = await client.request(
            "get", str(server.make_url("/list")), remote="r", params={"page": 3}
        )
    assert isinstance(resp, ApiResponse)
    assert (
        resp.status,
        resp.data,
        resp.headers["x-total"],
        resp.method,
    ) == (200, {"items": [1, 2]}, "2", "GET")
    assert f"imgsync/{__version__} (+https://github.com/imgsync/imgsync)" == seen["ua"]
    assert seen["q"] == "3"


@pytest.mark.parametrize(
    ("status", "error", "requests"),
    [
        (400, Rejected, 1),
        (401, AuthError, 1),
        (403, AuthError, 1),
        (404, NotFound, 1),
        (410, NotFound, 1),
        (413, Rejected, 1),
        (408, RemoteUnavailable, 0),
        (500, RemoteUnavailable, 0),
        (502, RemoteUnavailable, 0),
        (429, RateLimited, 5),
    ],
)
async def test_status_mapping_and_retries(
    serve: Serve, ft: FakeTime, status: int, error: type[ProviderError], requests: int
) -> None:
    """Each status maps to its class; only retryable ones are retried, up to the bound. A
    host that answers nothing but 408/5xx is retried for its outage budget (30 s of the
    virtual clock), then its breaker opens (0: as many requests as that took)."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        return web.json_response({"error": "nope"}, status=status)

    app = counting_app(handler)
    server = await serve(app)
    async with fake_client(ft) as client:
        with pytest.raises(error) as info:
            await client.request("POST", str(server.make_url("/x")), remote="myremote")
    assert type(info.value) is error
    if requests:
        assert requests == app.count
    else:
        assert app.count > 5 and "failed every request for 30 s" in str(info.value)
    assert status == info.value.status
    assert info.value.remote == "myremote"
    assert str(info.value).startswith("myremote: POST http://127.0.0.1:")
    if requests > 1:
        assert f"gave up after {requests} attempts" in str(info.value)


async def test_401_is_never_retried_even_with_generous_policy(serve: Serve, ft: FakeTime) -> None:
    """A 401 reaches the server exactly once, whatever the retry budget."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=401, text="unauthorized")

    app = counting_app(handler)
    server = await serve(app)
    reg = LimiterRegistry(clock=ft.clock, sleep=ft.sleep)
    client = ApiClient(reg, retry=RetryPolicy(attempts=20, sleep=ft.sleep))
    async with client:
        with pytest.raises(AuthError):
            await client.request("GET", str(server.make_url("/me")), remote="r")
    assert app.count == 1
    assert ft.sleeps == []


async def test_redirect_is_reported_not_followed(serve: Serve, ft: FakeTime) -> None:
    """A 301 is a ResponseError naming the target, unless redirects were allowed."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        if request.path == "/old":
            raise web.HTTPMovedPermanently(location="/new")
        return web.json_response({"here": True})

    server = await serve(counting_app(handler))
    async with fake_client(ft) as client:
        with pytest.raises(ResponseError, match="redirected to /new") as info:
            await client.request("POST", str(server.make_url("/old")), remote="r")
        assert info.value.status == 301
        resp = await client.request(
            "GET", str(server.make_url("/old")), remote="r", allow_redirects=True
        )
    assert resp.data == {"here": True}


async def test_bad_json_and_web_pages_are_response_errors(serve: Serve, ft: FakeTime) -> None:
    """HTML where JSON was expected, from a host that never answered JSON, fails at once
    (a wrong base_url); JSON cut off mid-way is tried GARBLED_ATTEMPTS times; both errors
    carry an excerpt."""
    from imgsync.http import GARBLED_ATTEMPTS

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        if request.path == "/broken":
            return web.Response(text='{"truncated": ', content_type="application/json")
        return web.Response(text="<html><body>Maintenance</body></html>", content_type="text/html")

    app = counting_app(handler)
    server = await serve(app)
    async with fake_client(ft) as client:
        with pytest.raises(ResponseError, match=r'expected JSON.*"truncated":'):
            await client.request("GET", str(server.make_url("/broken")), remote="r")
        with pytest.raises(ResponseError, match=r"a web page \(text/html\): Maintenance"):
            await client.request("GET", str(server.make_url("/html")), remote="r")
        text = await client.request("GET", str(server.make_url("/html")), remote="r", expect="text")
    assert app.count == GARBLED_ATTEMPTS + 2
    assert "Maintenance" in text.data


async def test_a_garbled_reply_from_a_host_that_answered_json_is_retried(
    serve: Serve, ft: FakeTime
) -> None:
    """Once the host has answered JSON, a GET answered by a web page (a CDN's interstitial)
    is sent again, at most GARBLED_ATTEMPTS times in all; a POST is never sent again."""
    from imgsync.http import GARBLED_ATTEMPTS

    flaky = {"left": 1}

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        portal = web.Response(
            text="<html><head><title>Just a moment...</title></head></html>",
            content_type="text/html",
        )
        if request.path == "/flaky" and flaky["left"]:
            flaky["left"] -= 1
            return portal
        if request.path in ("/always", "/post"):
            return portal
        return web.json_response({"ok": True})

    app = counting_app(handler)
    server = await serve(app)
    async with fake_client(ft) as client:
        await client.request("GET", str(server.make_url("/ok")), remote="r")
        resp = await client.request("GET", str(server.make_url("/flaky")), remote="r")
        assert resp.data == {"ok": True} and app.count == 3
        with pytest.raises(ResponseError, match=r"a web page .*'Just a moment\.\.\.'"):
            await client.request("GET", str(server.make_url("/always")), remote="r")
        assert app.count == 3 + GARBLED_ATTEMPTS
        with pytest.raises(ResponseError):
            await client.request("POST", str(server.make_url("/post")), remote="r")
        assert app.count == 4 + GARBLED_ATTEMPTS


# --- rate limiting and pauses --------------------------------------------------------------


async def test_retry_after_is_honoured(serve: Serve, ft: FakeTime) -> None:
    """429 + Retry-After: 3 -> wait exactly 3 s (once: the retry and the limiter overlap)."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=429, headers={"Retry-After": "3"}, text="slow down")
        return web.json_response({"ok": True})

    server = await serve(counting_app(handler))
    async with fake_client(ft) as client:
        resp = await client.request("GET", str(server.make_url("/x")), remote="r")
        stats = client.limiters.for_url(str(server.make_url("/"))).statistics()
    assert resp.data == {"ok": True}
    assert ft.sleeps == [3.0]
    assert stats["throttled"] == 1


def test_retry_after_formats() -> None:
    """Retry-After is delta-seconds or an HTTP-date; junk and absence give None."""
    now = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now=now) == 30.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("inf") is None


async def test_host_error_envelopes_go_through_map_error_first(serve: Serve, ft: FakeTime) -> None:
    """Chevereto's 400 + code 130 is RateLimited (retried); Guizhan's 200 + code!=0 Rejected."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        if request.path == "/chevereto":
            if n == 1:
                body = {"status_code": 400, "error": {"code": 130, "message": "Flooding detected"}}
                return web.json_response(body, status=400)
            return web.json_response({"status_code": 200, "image": {"id": "ab"}})
        return web.json_response({"code": 4001, "msg": "unsupported type", "data": None})

    def chevereto(resp: ApiResponse) -> ProviderError | None:
        err = resp.data.get("error") if isinstance(resp.data, dict) else None
        if isinstance(err, dict) and err.get("code") == 130:
            return RateLimited(err["message"], code=130)
        return None

    def guizhan(resp: ApiResponse) -> ProviderError | None:
        if isinstance(resp.data, dict) and resp.data.get("code", 0) != 0:
            return Rejected(resp.data["msg"], code=resp.data["code"])
        return None

    app = counting_app(handler)
    server = await serve(app)
    async with fake_client(ft) as client:
        resp = await client.request(
            "POST", str(server.make_url("/chevereto")), remote="imgz", map_error=chevereto
        )
        assert resp.data["image"]["id"] == "ab"
        with pytest.raises(Rejected, match="unsupported type") as info:
            await client.request(
                "POST", str(server.make_url("/guizhan")), remote="gz", map_error=guizhan
            )
        stats = client.limiters.for_url(str(server.make_url("/"))).statistics()
    assert (info.value.code, info.value.status, info.value.remote) == (4001, 200, "gz")
    assert app.count == 3
    assert stats["throttled"] == 1


async def test_a_map_error_that_chokes_on_the_reply_is_a_response_error(
    serve: Serve, ft: FakeTime
) -> None:
    """A reply shaped unlike what map_error expects becomes ResponseError, not a crash."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")

    def expects_dict(resp: ApiResponse) -> ProviderError | None:
        return Rejected("x") if resp.data["code"] else None

    app = counting_app(handler)
    server = await serve(app)
    async with fake_client(ft) as client:
        with pytest.raises(ResponseError, match=r"unexpected reply.*Bad Gateway"):
            await client.request(
                "GET", str(server.make_url("/x")), remote="r", map_error=expects_dict
            )
    assert app.count == 1


async def test_remote_paused_pauses_the_host_without_retry(serve: Serve, ft: FakeTime) -> None:
    """map_error -> RemotePaused: raised at once, recorded via on_pause, later calls refused."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        return web.json_response({"code": 429, "msg": "daily quota exhausted"})

    recorded: list[tuple[str, float, str]] = []

    async def on_pause(authority: str, until: float, reason: str) -> None:
        recorded.append((authority, until, reason))

    until = next_utc_midnight()

    def quota(resp: ApiResponse) -> ProviderError | None:
        if resp.data.get("code") == 429:
            return RemotePaused(resp.data["msg"], until=until)
        return None

    app = counting_app(handler)
    server = await serve(app)
    url = str(server.make_url("/upload"))
    reg = LimiterRegistry(clock=ft.clock, sleep=ft.sleep, on_pause=on_pause)
    async with fake_client(ft, reg) as client:
        with pytest.raises(RemotePaused, match="daily quota exhausted"):
            await client.request("POST", url, remote="gz", map_error=quota)
        with pytest.raises(RemotePaused) as info:
            await client.request("GET", url, remote="other")
    assert app.count == 1
    assert [(f"127.0.0.1:{server.port}", until, "daily quota exhausted")] == recorded
    assert ("other", until) == (info.value.remote, info.value.until)


async def test_very_long_retry_after_becomes_a_pause(serve: Serve, ft: FakeTime) -> None:
    """Retry-After: 7200 pauses the host (RemotePaused) instead of sleeping two hours."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=429, headers={"Retry-After": "7200"})

    recorded: list[float] = []

    async def on_pause(authority: str, until: float, reason: str) -> None:
        recorded.append(until)

    app = counting_app(handler)
    server = await serve(app)
    reg = LimiterRegistry(clock=ft.clock, sleep=ft.sleep, on_pause=on_pause)
    async with fake_client(ft, reg) as client:
        with pytest.raises(RemotePaused, match="asked to wait 7200 s") as info:
            await client.request("GET", str(server.make_url("/x")), remote="r")
    assert app.count == 1
    assert ft.sleeps == []
    assert len(recorded) == 1
    assert recorded[0] == pytest.approx(time.time() + 7200, abs=5)
    assert isinstance(info.value.__cause__, RateLimited)


async def test_rate_holds_against_a_server_that_enforces_it(serve: Serve, ft: FakeTime) -> None:
    """50 callers, 100 requests at "20/second" against a 20-per-sliding-second server, on
    virtual time (the server stamps requests with the client's clock): the server refuses
    none and never sees more than 20 in a second. (How close to the limit the pace gets is
    ``bench/bench_ratelimit.py``'s figure; the limiter's exact pacing is tested on a
    virtual-time loop in test_ratelimit.)"""
    stamps: list[float] = []
    recent: deque[float] = deque()
    refused = 0

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        nonlocal refused
        now = ft.clock()
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) >= 20:
            refused += 1
            return web.Response(status=429, headers={"Retry-After": "1"})
        recent.append(now)
        stamps.append(now)
        return web.json_response({"ok": True})

    server = await serve(counting_app(handler))
    url = str(server.make_url("/api"))
    limits = {f"127.0.0.1:{server.port}": LimitConfig(rates=("20/second",))}
    reg = LimiterRegistry(limits, clock=ft.clock, sleep=ft.sleep)
    async with ApiClient(reg, retry=RetryPolicy(attempts=1)) as client:

        async def caller() -> None:
            for _ in range(2):
                await client.request("GET", url, remote="r")

        await asyncio.gather(*(caller() for _ in range(50)))
    assert refused == 0 and len(stamps) == 100
    assert max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps) <= 20


async def test_two_remotes_share_a_host_budget_two_hosts_do_not(serve: Serve, ft: FakeTime) -> None:
    """Remotes a and b on server 1 get 10/second together (each alone may use all 10), c on
    server 2 its own limiter; virtual time, each server stamps with the client's clock.
    That two hosts never slow each other is tested on test_ratelimit's virtual loop."""
    stamps: dict[int, list[float]] = {1: [], 2: []}

    def handler_for(server: int) -> Callable[[web.Request, int], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request, n: int) -> web.StreamResponse:
            stamps[server].append(ft.clock())
            return web.json_response({"n": n})

        return handler

    s1, s2 = await serve(counting_app(handler_for(1))), await serve(counting_app(handler_for(2)))
    limit = LimitConfig(rates=("10/second",))
    limits = {f"127.0.0.1:{s1.port}": limit, f"127.0.0.1:{s2.port}": limit}
    reg = LimiterRegistry(limits, clock=ft.clock, sleep=ft.sleep)
    async with ApiClient(reg) as client:

        async def remote(name: str, server: TestServer) -> None:
            for i in range(15):
                await client.request("GET", str(server.make_url(f"/{name}/{i}")), remote=name)

        await asyncio.gather(remote("a", s1), remote("b", s1), remote("c", s2))
    assert (len(stamps[1]), len(stamps[2])) == (30, 15)
    for seen in stamps.values():
        assert max(sum(1 for t in seen if s <= t < s + 1.0) for s in seen) <= 10
    server1, server2 = (reg.for_authority(f"127.0.0.1:{s.port}") for s in (s1, s2))
    assert server1 is not server2


async def test_connection_cap_holds_at_the_server(serve: Serve) -> None:
    """With concurrency 3 the server never has more than 3 of our requests in flight."""
    state = {"now": 0, "peak": 0}

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.03)
        state["now"] -= 1
        return web.json_response({})

    server = await serve(counting_app(handler))
    reg = LimiterRegistry({f"127.0.0.1:{server.port}": LimitConfig(concurrency=3)})
    async with ApiClient(reg) as client:
        url = str(server.make_url("/slow"))
        await asyncio.gather(*(client.request("GET", url, remote="r") for _ in range(20)))
    assert state["peak"] == 3


# --- transport failures and uploads --------------------------------------------------------


async def test_truncated_body_is_transient(serve: Serve, ft: FakeTime) -> None:
    """A reply that promises 1000 bytes and hangs up after 10 is retried, then TransientError."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "1000"})
        resp.content_type = "application/json"
        await resp.prepare(request)
        await resp.write(b'{"partial"')
        assert request.transport is not None
        request.transport.close()
        return resp

    app = counting_app(handler)
    server = await serve(app)
    async with fake_client(ft) as client:
        with pytest.raises(TransientError, match="cut short") as info:
            await client.request("GET", str(server.make_url("/x")), remote="r")
    assert app.count == 5
    assert "gave up after 5 attempts" in str(info.value)


async def test_connection_reset_is_transient_and_timeout_is_provider_timeout(
    serve: Serve, ft: FakeTime
) -> None:
    """A dropped connection is a TransientError, retried; a host that drops every
    connection for its outage budget is given up on (RemoteUnavailable, naming the last
    failure). No answer in time is a ProviderTimeout."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        if request.path == "/reset":
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("dropped")
        await asyncio.sleep(1.0)
        return web.json_response({})

    server = await serve(counting_app(handler))
    reg = LimiterRegistry(clock=ft.clock, sleep=ft.sleep)
    client = ApiClient(reg, retry=RetryPolicy(attempts=2, sleep=ft.sleep))
    async with client:
        with pytest.raises(RemoteUnavailable, match="connection failed"):
            await client.request("GET", str(server.make_url("/reset")), remote="r")
    no_breaker = LimiterRegistry(clock=ft.clock, sleep=ft.sleep, outage_budget=None)
    async with ApiClient(no_breaker, retry=RetryPolicy(attempts=2, sleep=ft.sleep)) as client:
        with pytest.raises(TransientError, match="connection failed") as dropped:
            await client.request("GET", str(server.make_url("/reset")), remote="r")
        with pytest.raises(ProviderTimeout, match="no answer in time") as info:
            await client.request("GET", str(server.make_url("/slow")), remote="r", timeout=0.1)
    assert "gave up after 2 attempts" in str(dropped.value)
    assert isinstance(info.value, TimeoutError)


@pytest.mark.parametrize("failure", ["503", "reset"])
async def test_a_resent_upload_body_is_complete(serve: Serve, ft: FakeTime, failure: str) -> None:
    """The first attempt is read in full and then fails; the second sends the same bytes."""
    payload = os.urandom(300_000)
    received: list[tuple[str, bytes]] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        form = await request.post()
        field = form["imagedata"]
        assert isinstance(field, web.FileField)
        received.append((str(form["title"]), field.file.read()))
        if n == 1:
            if failure == "503":
                return web.Response(status=503, text="try again")
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("dropped after reading")
        return web.json_response({"size": len(received[-1][1])})

    built = 0

    async def form() -> Multipart:
        nonlocal built
        built += 1
        return Multipart(
            [("title", "cat")], [FilePart("imagedata", "cat.png", payload, "image/png")]
        )

    server = await serve(counting_app(handler))
    async with fake_client(ft) as client:
        resp = await client.request("POST", str(server.make_url("/up")), remote="r", form=form)
    assert {"size": len(payload)} == resp.data
    assert built == 2
    assert [("cat", payload), ("cat", payload)] == received


@pytest.mark.parametrize(
    ("name", "arrives"),
    [
        ("ñandú é.png", "ñandú é.png"),
        ("日本語 スクショ.png", "日本語 スクショ.png"),
        ("100% done;v2.png", "100% done;v2.png"),
        ('say "hi"\r\n.png', "say %22hi%22%0D%0A.png"),
        ("not-utf8-\udcff.png", "not-utf8-\ufffd.png"),  # a surrogate-escaped disk name
    ],
)
async def test_multipart_file_names_go_out_as_raw_utf8(
    serve: Serve, ft: FakeTime, name: str, arrives: str
) -> None:
    """The host reads the file name the user had, not aiohttp's percent-encoding of it
    (Chevereto fixtures 47/48); only a quote and line breaks are escaped, as browsers do,
    so no name can forge a header."""
    seen: list[tuple[str, str | None, str]] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        reader = await request.multipart()
        async for part in reader:
            assert isinstance(part, BodyPartReader)
            seen.append((str(part.name), part.filename, (await part.read()).decode()))
        return web.json_response({})

    async def form() -> Multipart:
        return Multipart([("title", name)], [FilePart("source", name, b"bytes", "image/png")])

    server = await serve(counting_app(handler))
    async with fake_client(ft) as client:
        await client.request("POST", str(server.make_url("/up")), remote="r", form=form)
    title = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    assert seen == [("title", None, title), ("source", arrives, "bytes")]


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "read-pieces"])
async def test_a_streamed_file_arrives_whole_with_its_fields(
    serve: Serve, ft: FakeTime, tmp_path: Path, sendfile: bool
) -> None:
    """A file part with a path goes out from the file (over ``os.sendfile``, or read in
    pieces as over TLS), between its fields, in several pieces; every byte read is counted
    for the progress line, and the host sees exactly the file and the fields."""
    payload = os.urandom(9 * 1024 * 1024 + 12345)  # more than one 8 MiB sendfile piece
    path = tmp_path / "big.png"
    path.write_bytes(payload)
    received: list[tuple[str, str | None, bytes]] = []
    counted: list[int] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        assert request.content_length == int(request.headers["Content-Length"])
        reader = await request.multipart()
        async for part in reader:
            assert isinstance(part, BodyPartReader)
            data = bytearray()
            while chunk := await part.read_chunk(1 << 20):  # (read() stops at 1 MiB)
                data += chunk
            received.append((str(part.name), part.filename, bytes(data)))
        return web.json_response({"ok": True})

    async def form() -> Multipart:
        part = FilePart("imagedata", "big.png", mime="image/png", path=path, on_read=counted.append)
        return Multipart([("title", "cat"), ("desc", "")], [part])

    server = await serve(counting_app(handler))
    async with fake_client(ft, sendfile=sendfile) as client:
        resp = await client.request("POST", str(server.make_url("/up")), remote="r", form=form)
    assert resp.data == {"ok": True}
    assert received == [
        ("title", None, b"cat"),
        ("desc", None, b""),
        ("imagedata", "big.png", payload),
    ]
    assert sum(counted) == len(payload) and len(counted) >= 2


async def test_a_file_changed_since_it_was_hashed_is_not_sent(
    serve: Serve, ft: FakeTime, tmp_path: Path
) -> None:
    """A streamed file whose size is no longer the one it was hashed at (still being
    written) fails as a local error before a byte goes out, so the host never stores bytes
    other than those recorded."""
    path = tmp_path / "growing.png"
    path.write_bytes(b"x" * 1000)

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        return web.json_response({})

    async def form() -> Multipart:
        return Multipart([], [FilePart("f", "growing.png", path=path, size=999)])

    app = counting_app(handler)
    server = await serve(app)
    async with fake_client(ft) as client:
        with pytest.raises(LocalIOError, match="changed since it was read"):
            await client.request("POST", str(server.make_url("/up")), remote="r", form=form)
        path.unlink()  # and one that vanished is a local error too, not a network one
        with pytest.raises(LocalIOError, match="cannot read the upload"):
            await client.request("POST", str(server.make_url("/up")), remote="r", form=form)
    assert app.count == 0


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "read-pieces"])
async def test_a_file_cut_short_while_it_is_sent_is_never_stored_short(
    serve: Serve, ft: FakeTime, tmp_path: Path, sendfile: bool
) -> None:
    """A file truncated while its upload is on the wire (the host has read its first
    bytes): the request breaks off instead of ending early -- the host never gets a
    complete body of other bytes -- and the attempt after it stops at the changed size,
    as a local error, with nothing stored."""
    path = tmp_path / "shrinking.png"
    path.write_bytes(os.urandom(20 * 1024 * 1024))
    size = path.stat().st_size
    complete: list[int] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        got = 0
        while chunk := await request.content.read(1 << 16):
            if got == 0:
                os.truncate(path, 1_000_000)  # the user's editor rewrote it meanwhile
            got += len(chunk)
        complete.append(got)
        return web.json_response({"got": got})

    async def form() -> Multipart:
        return Multipart([], [FilePart("f", "shrinking.png", path=path, size=size)])

    server = await serve(counting_app(handler))
    async with fake_client(ft, sendfile=sendfile) as client:
        with pytest.raises(LocalIOError, match="changed since it was read"):
            await client.request("POST", str(server.make_url("/up")), remote="r", form=form)
    assert complete == []  # no request body ever arrived whole


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "read-pieces"])
async def test_a_file_rewritten_same_size_while_it_is_sent_is_never_stored(
    serve: Serve, ft: FakeTime, tmp_path: Path, sendfile: bool
) -> None:
    """A file written again in place, same size, while its upload is on the wire: the
    host would store other bytes than the ones hashed (recorded under the wrong checksum,
    then uploaded again). The request breaks off before the body's end, and the attempt
    after it stops at the changed file, as a local error, with nothing stored."""
    from imgsync.localfs import file_stamp

    path = tmp_path / "rewritten.png"
    path.write_bytes(os.urandom(20 * 1024 * 1024))
    stamp = file_stamp(path.stat())
    complete: list[int] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        got = 0
        while chunk := await request.content.read(1 << 16):
            if got == 0:  # the user's tool rewrites a part of it meanwhile
                with open(path, "r+b") as fh:
                    fh.seek(15 * 1024 * 1024)
                    fh.write(os.urandom(1024 * 1024))
                st = path.stat()
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
            got += len(chunk)
        complete.append(got)
        return web.json_response({"got": got})

    async def form() -> Multipart:
        part = FilePart("f", "rewritten.png", path=path, size=stamp[0], stamp=stamp)
        return Multipart([], [part])

    server = await serve(counting_app(handler))
    async with fake_client(ft, sendfile=sendfile) as client:
        with pytest.raises(LocalIOError, match="changed since it was read"):
            await client.request("POST", str(server.make_url("/up")), remote="r", form=form)
    assert complete == []  # no request body ever arrived whole


async def test_unreadable_upload_is_a_local_error(
    serve: Serve, ft: FakeTime, tmp_path: Path
) -> None:
    """A form factory that cannot read its file raises LocalIOError, without sending."""

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        return web.json_response({})

    async def form() -> bytes:
        return (tmp_path / "missing.png").read_bytes()

    app = counting_app(handler)
    server = await serve(app)
    async with fake_client(ft) as client:
        with pytest.raises(LocalIOError, match="cannot read the upload"):
            await client.request("POST", str(server.make_url("/up")), remote="r", form=form)
        with pytest.raises(ValueError, match="json or form"):
            await client.request("POST", "http://x/", remote="r", json={}, form=form)
    assert app.count == 0


# --- secrets -------------------------------------------------------------------------------


async def test_no_credential_in_logs_or_errors(serve: Serve, ft: FakeTime) -> None:
    """Tokens in the header, the query and a registered delete URL never leak.

    The server echoes them in 500 bodies (retried, logged) and then in a 401 body.
    """
    token = "tok-SECRET-5f1e9a7c2b"
    header_token = "hdr-SECRET-0c0ffee123"
    delete_url = "https://imgz.example/image/ab12/delete/SECRETdel9876"

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        echo = f"token={request.query.get('access_token')} auth={request.headers['Authorization']}"
        if n < 3:
            return web.Response(status=500, text=f"upstream failed for {echo} {delete_url}")
        return web.json_response({"error": f"invalid {echo}", "access_token": token}, status=401)

    server = await serve(counting_app(handler))
    url = str(server.make_url("/api/upload")) + f"?access_token={token}"
    with structlog.testing.capture_logs() as logs:
        async with fake_client(ft) as client:
            client.add_secret(delete_url)
            with pytest.raises(AuthError) as info:
                await client.request(
                    "GET", url, remote="r", headers={"Authorization": f"Bearer {header_token}"}
                )
            # a transport failure with the token in the URL, too
            with pytest.raises(RemoteUnavailable) as refused:  # refused for 30 s (fake time)
                await client.request("GET", f"http://127.0.0.1:1/x?key={token}", remote="r")
    assert {"http_request", "retrying"} <= {entry["event"] for entry in logs}
    texts = [
        repr(logs),
        str(info.value),
        "".join(traceback.format_exception(info.value)),
        str(refused.value),
        "".join(traceback.format_exception(refused.value)),
    ]
    for text in texts:
        for secret in (token, header_token, "SECRETdel9876"):
            assert secret not in text
    assert "/api/upload?access_token=***: credentials refused" in str(info.value)


# --- downloads -----------------------------------------------------------------------------


async def test_stream_yields_chunks_and_maps_errors(serve: Serve, ft: FakeTime) -> None:
    """A 1 MB image arrives in several chunks; a 404 is NotFound; a 503 first is retried."""
    image = os.urandom(1_000_000)

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        if request.path == "/gone.png":
            return web.Response(status=404, text="no such image")
        if request.path == "/flaky.png" and n == 3:
            return web.Response(status=503)
        return web.Response(body=image, content_type="image/png")

    app = counting_app(handler)
    server = await serve(app)
    async with fake_client(ft) as client:
        async with client.stream(str(server.make_url("/a.png")), remote="r") as body:
            assert (len(image), "image/png") == (body.size, body.content_type)
            chunks = [chunk async for chunk in body]
        with pytest.raises(NotFound, match="no such image"):
            async with client.stream(str(server.make_url("/gone.png")), remote="r"):
                pass
        async with client.stream(str(server.make_url("/flaky.png")), remote="r") as body:
            again = b"".join([chunk async for chunk in body])
        stats = client.limiters.for_url(str(server.make_url("/"))).statistics()
    assert len(chunks) > 1
    assert max(len(c) for c in chunks) <= 64 * 1024
    assert image == b"".join(chunks) == again
    assert stats["in_flight"] == 0


async def test_truncated_download_raises_and_download_retries(
    serve: Serve, ft: FakeTime, tmp_path: Path
) -> None:
    """A body cut short raises TransientError mid-stream; download() starts over and succeeds."""
    image = os.urandom(200_000)

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(len(image))})
        await resp.prepare(request)
        if n <= 2:
            await resp.write(image[:50_000])
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(image)
        await resp.write_eof()
        return resp

    server = await serve(counting_app(handler))
    url = str(server.make_url("/img.png"))
    dest = tmp_path / "img.png"
    async with fake_client(ft) as client:
        with pytest.raises(TransientError, match="cut short"):
            async with client.stream(url, remote="r") as body:
                async for _ in body:
                    pass
        size = await client.download(url, dest, remote="r")
    assert len(image) == size
    assert image == dest.read_bytes()
    assert not (tmp_path / "img.png.part").exists()


# --- the environment: ~/.netrc and proxies -------------------------------------------------


async def test_a_netrc_login_for_the_host_is_neither_sent_nor_a_clash(
    serve: Serve, ft: FakeTime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ~/.netrc entry for the host is not sent as Basic auth and does not clash with a
    provider's own Authorization header (aiohttp's trust_env did both, and read the file in a
    worker thread on every request)."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password netrc-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    seen: list[str | None] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"ok": True})

    server = await serve(counting_app(handler))
    async with fake_client(ft) as client:
        url = str(server.make_url("/api"))
        await client.request("get", url, remote="r", headers={"Authorization": "Bearer tok"})
        await client.request("get", url, remote="r")
    assert seen == ["Bearer tok", None]


async def test_requests_go_through_the_environment_proxy(
    serve: Serve, ft: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY is honoured (read once per session); NO_PROXY exempts a host."""
    hosts: list[str] = []

    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        hosts.append(request.headers["Host"])
        return web.json_response({"via": "proxy"})

    proxy = await serve(counting_app(handler))
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", str(proxy.make_url("")).rstrip("/"))
    monkeypatch.setenv("NO_PROXY", "bypassed.invalid")
    async with fake_client(ft) as client:
        resp = await client.request("get", "http://images.example.invalid/a.png", remote="r")
        assert resp.data == {"via": "proxy"}
        with pytest.raises(ProviderError):
            await client.request("get", "http://bypassed.invalid/a.png", remote="r")
    assert hosts == ["images.example.invalid"]


def test_redaction_with_thousands_of_registered_delete_urls_masks_each_one_found() -> None:
    """A long migration registers every upload's delete URL; past a few dozen they are
    found through an index, which must still mask each one (whole, the longest first)."""
    from imgsync.log import MASK, redact, register_secret

    urls = [f"http://127.0.0.1:9/delete/{i:08x}redact-index" for i in range(3000)]
    for url in urls:
        register_secret(url)
    register_secret("tok-redact-index-9")  # ends like nothing else
    longer = urls[7] + "/confirm"
    register_secret(longer)  # contains another secret: masked whole
    text = f"POST {urls[5]} then {longer} and {urls[2999]}?x=1 with tok-redact-index-9."
    shown = redact(text)
    assert shown == f"POST {MASK} then {MASK} and {MASK}?x=1 with {MASK}."
    kept = "http://127.0.0.1:9/delete/zzzzzzzzredact-index is not registered"
    assert redact(kept) == kept
