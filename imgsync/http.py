"""The one place imgsync speaks HTTP.

Providers never touch aiohttp's client; they call :class:`ApiClient` and receive an
:class:`ApiResponse` or an exception from :mod:`imgsync.errors`. This module is the only
one in imgsync that imports aiohttp's client, so a local-folder run never loads it.

One attempt of :meth:`ApiClient.request`
----------------------------------------
1. Build the body afresh (``form()`` is called on every attempt, so a retried upload
   sends complete bytes). A provider describes a multipart body with the neutral
   :class:`Multipart` / :class:`FilePart` values; only this module encodes them (see
   :class:`_Encoded`; file names go out as browsers send them, :func:`_disposition_value`).
2. Take a slot from the :class:`~imgsync.ratelimit.HostLimiter` of the URL's authority
   (rate windows, connection cap, penalty; ``RemotePaused`` at once if the host is paused).
3. Send, read the reply, and mark the slot answered as soon as the status line arrives.
4. Map the reply to an error, or none: first the provider's ``map_error(resp)`` (hosts
   have their own envelopes: Chevereto's HTTP 400 + code 130 "Flooding detected",
   Guizhan's ``code != 0`` inside an HTTP 200), then :func:`default_error` by status.
5. Tell the limiter: ``RateLimited`` -> ``throttled(retry_after)``; a normal answer ->
   ``succeeded()``; ``RemotePaused`` -> ``pause_until(...)`` (recorded through the
   registry's ``on_pause``). A ``Retry-After`` longer than ``max_retry_after`` (120 s)
   becomes a host pause too, so no worker sleeps for an hour inside a request.

Transport failures map onto the tree: connection errors, resets and truncated bodies ->
``TransientError``; timeouts -> ``ProviderTimeout``; a success reply that is not the JSON
that was expected -> ``ResponseError`` (with a short redacted excerpt; a web page is named
by its title, never shown as HTML). That one is retried only in a narrow case: an
idempotent request (a listing page) may be sent again, up to ``GARBLED_ATTEMPTS`` times
in all, when the host has already answered JSON to this client (a proxy's or CDN's
interstitial page is passing trouble) or the reply itself claims to be JSON (a body cut
off mid-JSON). A web page from a host that has never answered JSON (a wrong ``base_url``
serving a website) is not retried at all, so such a run stops after its first request.
:class:`~imgsync.retry.RetryPolicy` retries what is retryable, at most ``attempts`` times,
and the last error says how many attempts were made. A 401 is never retried.

Outages are judged per host, by time (:mod:`imgsync.ratelimit`, "circuit breaker"): a
request that gets no usable answer (no connection, reset, timeout, 5xx) is reported to the
host's limiter and retried for as long as the host has been failing *everything* for less
than its outage budget (30 s); a short outage therefore loses nothing. Past the budget the
breaker opens and every request to that host raises ``RemoteUnavailable`` (scope
"remote") at once.

A request that is not safe to repeat (``idempotent=False``; by default any POST or PATCH:
an upload) whose reply breaks off *after* its status line arrived reached the host, which
may have acted on it. It is not sent again: ``ReplyLost`` goes to the caller, which knows
whether it can look for the result first (see :mod:`imgsync.pipeline.delivery`).

Downloads use :meth:`ApiClient.stream`: the same slot and error mapping, with the
connection phase retried; the body arrives in chunks and is never held whole.

Secrets: the client keeps the strings registered with :meth:`ApiClient.add_secret` (and
registers them process-wide with :func:`imgsync.log.register_secret`). It also picks up
credentials it is handed -- ``Authorization`` and ``*key*``/``*token*`` header values,
credential-named query parameters -- without being told. Every URL, error text and log
field it produces goes through :meth:`ApiClient.redact`; an aiohttp exception whose text
held a secret is not chained as ``__cause__`` (its redacted text is in the message).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json as jsonlib
import logging
import math
import os
import re
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Self

import anyio
from yarl import URL

from imgsync import __version__
from imgsync.certs import deferred_ca_loading, load_on_use
from imgsync.errors import (
    AuthError,
    CutShort,
    ImgsyncError,
    LocalIOError,
    NotFound,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    Rejected,
    RemotePaused,
    RemoteUnavailable,
    ReplyLost,
    ResponseError,
    TransientError,
)

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from imgsync.models import UploadSource
from imgsync.localfs.paths import file_stamp, open_source
from imgsync.log import get_logger, redact, register_secret
from imgsync.ratelimit import HostLimiter, LimiterRegistry, Slot
from imgsync.retry import OnRetry, RetryPolicy

# aiohttp reads the system's CA bundle twice while it is imported; that is done when a TLS
# connection first needs it instead (a run against http:// hosts never pays for it).
with deferred_ca_loading() as _deferred_cas:
    import aiohttp
load_on_use(_deferred_cas)

__all__ = [
    "USER_AGENT",
    "ApiClient",
    "ApiResponse",
    "Body",
    "ByteStream",
    "Download",
    "ErrorMapper",
    "Expect",
    "FilePart",
    "Multipart",
    "default_error",
    "excerpt",
    "parse_retry_after",
]

USER_AGENT = f"imgsync/{__version__} (+https://github.com/imgsync/imgsync)"

Expect = Literal["json", "text", "bytes", "none"]


@dataclass(frozen=True, slots=True)
class FilePart:
    """One file in a multipart body: the form field's name, the file name the host sees
    (sent as raw UTF-8), the bytes and their MIME type. With ``path``, the bytes are
    streamed from that file when the request is sent (each attempt re-opens it), so a
    large upload is never held in memory."""

    name: str
    filename: str
    data: bytes = field(default=b"", repr=False)
    mime: str = "application/octet-stream"
    path: Path | None = None
    on_read: Callable[[int], None] | None = field(default=None, repr=False, compare=False)
    size: int | None = None  # a streamed file's expected size: it changed if it differs
    # a streamed file's (size, mtime, ctime, inode) when it was hashed: likewise
    stamp: tuple[int, int, int, int] | None = field(default=None, compare=False)

    @classmethod
    def upload(cls, name: str, filename: str, src: UploadSource) -> FilePart:
        """The part for an upload source: its bytes, or its file streamed from disk."""
        if src.data is not None:
            return cls(name, filename, src.data, src.mime)
        return cls(
            name,
            filename,
            mime=src.mime,
            path=src.path,
            on_read=src.on_read,
            size=src.size,
            stamp=src.stamp,
        )


@dataclass(frozen=True, slots=True)
class Multipart:
    """A ``multipart/form-data`` body, described without naming any HTTP library.

    ``fields`` are plain text fields in order (a name may repeat); ``files`` follow them.
    """

    fields: Sequence[tuple[str, str]] = ()
    files: Sequence[FilePart] = ()


Body = Multipart | bytes | Mapping[str, str]
FormFactory = Callable[[], Awaitable[Body]]
ErrorMapper = Callable[["ApiResponse"], ProviderError | None]
Params = Mapping[str, str | int | float]

_EXCERPT_CHARS = 200
_ERROR_BODY_LIMIT = 64 * 1024
_CHUNK = 64 * 1024
_SECRET_HEADER = re.compile(r"(?i)authorization|token|key|secret|cookie")
_SECRET_PARAM = re.compile(
    r"(?i)^(access_token|refresh_token|token|api_?key|apikey|key|auth|password|secret)$"
)
_SPACES = re.compile(r"\s+")
_TITLE = re.compile(rb"(?is)<title[^>]*>(.*?)</title>")
_TAGS = re.compile(rb"(?s)<[^>]*>?")
# attempts in all for a 2xx reply that is not the JSON expected, from a host that has
# already answered JSON to this client (see the module docstring)
GARBLED_ATTEMPTS = 3
# What a send or a body read can raise that is the network's fault, not ours.
_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError)


class _Garbled(TransientError):
    """A 2xx reply that was not the JSON expected, worth another try; ``final`` is the
    ``ResponseError`` raised when the tries run out."""

    def __init__(self, final: ResponseError) -> None:
        super().__init__(final.detail, remote=final.remote, host=final.host, status=final.status)
        self.final = final


def _what_came(raw: bytes, ctype: str) -> str:
    """A reply that should have been JSON, in a few words: a web page by its title."""
    if not raw:
        return f"an empty {ctype} reply"
    if "html" in ctype or raw.lstrip()[:15].lower().startswith((b"<!doctype", b"<html")):
        m = _TITLE.search(raw[:65536])
        if m:
            return f"a web page ({ctype}, titled {excerpt(_TAGS.sub(b' ', m.group(1)), 80)!r})"
        text = excerpt(_TAGS.sub(b" ", raw[:65536]))
        return f"a web page ({ctype})" + (f": {text}" if text else "")
    return f"{ctype}: {excerpt(raw)}"


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """A host's reply.

    ``data`` follows ``expect`` for a success reply: parsed JSON (``None`` for an empty
    body), text, bytes, or ``None``. For an error status it is the parsed JSON when the
    body was JSON and its text otherwise, so ``map_error`` can read the host's envelope.
    ``headers`` is case-insensitive. ``url`` is the final URL, unredacted: never log it.
    """

    status: int
    headers: Mapping[str, str]
    url: str
    data: Any
    method: str = "GET"

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300


def excerpt(data: Any, limit: int = _EXCERPT_CHARS) -> str:
    """A one-line, length-capped rendering of a reply body (not yet redacted)."""
    if data is None:
        return ""
    if isinstance(data, bytes | bytearray):
        text = bytes(data[: limit * 4]).decode("utf-8", errors="replace")
    elif isinstance(data, str):
        text = data
    else:
        try:
            text = jsonlib.dumps(data, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(data)
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP-date (``None`` if absent/bad)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _idempotent(method: str, idempotent: bool | None) -> bool:
    """Whether a request may be sent again after its reply broke off (by default: not a
    POST or a PATCH)."""
    if idempotent is not None:
        return idempotent
    return method.upper() not in ("POST", "PATCH")


def default_error(resp: ApiResponse, what: str = "") -> ProviderError | None:
    """The error a reply means by its status alone (``None`` for 2xx).

    429 (and 503 with ``Retry-After``) -> ``RateLimited``; 401/403 -> ``AuthError``;
    404/410 -> ``NotFound``; 408, 5xx -> ``TransientError``; other 4xx -> ``Rejected``;
    3xx (redirects are not followed unless asked) -> ``ResponseError`` naming the target.
    ``what`` prefixes the detail (``"POST https://host/api"``). Not yet redacted.
    """
    status = resp.status
    if 200 <= status < 300:
        return None
    prefix = f"{what}: " if what else ""
    body = excerpt(resp.data)
    tail = f": {body}" if body else ""
    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
    if status == 429 or (status == 503 and retry_after is not None):
        return RateLimited(
            f"{prefix}too many requests{tail}", retry_after=retry_after, status=status
        )
    if status in (401, 403):
        return AuthError(f"{prefix}credentials refused{tail}", status=status)
    if status in (404, 410):
        return NotFound(f"{prefix}not found{tail}", status=status)
    if status == 408 or status >= 500:
        return TransientError(f"{prefix}server error{tail}", status=status)
    if 300 <= status < 400:
        location = resp.headers.get("Location", "(no Location header)")
        return ResponseError(
            f"{prefix}redirected to {location} (not followed; if the host moved, update base_url)",
            status=status,
        )
    if 400 <= status < 500:
        return Rejected(f"{prefix}request refused{tail}", status=status)
    return ResponseError(f"{prefix}unexpected status{tail}", status=status)


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    url: str
    remote: str
    authority: str
    params: Params | None
    headers: Mapping[str, str] | None
    json: Any
    form: FormFactory | None
    expect: Expect
    map_error: ErrorMapper | None
    allow_redirects: bool
    timeout: aiohttp.ClientTimeout
    idempotent: bool = True  # safe to send again after a reply broke off

    @property
    def shown(self) -> str:
        """The URL with its query, redacted (for logs and errors; built only for them)."""
        url = str(URL(self.url).extend_query(self.params)) if self.params else self.url
        return redact(url)

    @property
    def what(self) -> str:
        return f"{self.method} {self.shown}"


class ApiClient:
    """Paced, retried, error-mapped HTTP for providers. An async resource.

    Args:
        limiters: the process-wide :class:`LimiterRegistry` (a private unlimited one if
            omitted).
        retry: the low-level :class:`RetryPolicy` (5 attempts by default).
        user_agent: sent with every request.
        connect_timeout: seconds to open a TCP connection.
        read_timeout: seconds without a byte before a reply counts as stalled. There is
            no total timeout by default: big uploads take as long as they take.
        max_retry_after: a ``Retry-After`` longer than this pauses the host instead.
        secrets: strings to mask from the start (more via :meth:`add_secret`).
        sendfile: a file streamed over plain HTTP goes out with ``os.sendfile``; False
            reads it in pieces, as over TLS.
    """

    def __init__(
        self,
        limiters: LimiterRegistry | None = None,
        *,
        retry: RetryPolicy | None = None,
        user_agent: str = USER_AGENT,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        max_retry_after: float = 120.0,
        secrets: Iterable[str] = (),
        sendfile: bool = True,
    ) -> None:
        self.sendfile = sendfile
        self.limiters = limiters if limiters is not None else LimiterRegistry()
        self.retry = retry if retry is not None else RetryPolicy()
        self.user_agent = user_agent
        self.max_retry_after = max_retry_after
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        # a request without a total limit of its own (nearly all): one object for them all
        self._no_total = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str] = {}
        self._secrets: set[str] = set()
        self._spoke_json: set[str] = set()  # authorities that answered JSON to this client
        self._scanned: set[str] = set()  # URLs whose query was looked through for secrets
        self._log = get_logger("imgsync.http")
        self._bound_log: FilteringBoundLogger | None = None  # for per-request lines
        self._header_values: set[tuple[str, str]] = set()  # credential headers registered
        for s in secrets:
            self.add_secret(s)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent; a later request opens a new one."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    # --- secrets -------------------------------------------------------------------------

    def add_secret(self, secret: str | None) -> None:
        """Never show ``secret`` (a token, a delete URL) in logs or errors."""
        if secret and len(secret) >= 4:
            self._secrets.add(secret)
            register_secret(secret)

    @property
    def secrets(self) -> frozenset[str]:
        """The secrets this client was given or picked up (never log this)."""
        return frozenset(self._secrets)

    def redact(self, text: str) -> str:
        """``text`` with every known secret and credential-shaped fragment masked.

        Secrets added here are registered process-wide, so the shared registry covers them.
        """
        return redact(text)

    # --- requests ------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        url: str,
        *,
        remote: str,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        form: FormFactory | None = None,
        expect: Expect = "json",
        map_error: ErrorMapper | None = None,
        allow_redirects: bool = False,
        timeout: float | None = None,  # noqa: ASYNC109 - per-request aiohttp timeout, not a scope
        idempotent: bool | None = None,
    ) -> ApiResponse:
        """Send one API request, paced and retried; return the reply or raise.

        ``remote`` names the configured remote (for messages and logs). ``form`` builds
        the body (:class:`Multipart`, ``bytes``, or a dict for url-encoding) and is called
        once per attempt; ``json`` is the alternative. ``map_error(resp)`` turns a
        host-specific reply into an error (or ``None`` to apply :func:`default_error`).
        ``timeout`` is a total limit in seconds for this request. ``idempotent`` (default:
        not for POST and PATCH) says whether a request whose reply broke off may be sent
        again; if not, ``ReplyLost`` is raised instead.

        Raises ``RateLimited``/``TransientError``/``ProviderTimeout`` after the retries,
        ``RemoteUnavailable`` when the host's breaker is open, ``ReplyLost``, ``AuthError``,
        ``NotFound``, ``Rejected``, ``ResponseError``, ``RemotePaused``, whatever
        ``map_error`` returns, and ``LocalIOError`` if ``form`` cannot read.
        """
        if json is not None and form is not None:
            raise ValueError("pass either json or form, not both")
        req = self._prepare(
            method.upper(),
            url,
            remote,
            params,
            headers,
            json,
            form,
            expect,
            map_error,
            allow_redirects,
            timeout,
            _idempotent(method, idempotent),
        )
        try:
            return await self.retry.run(
                functools.partial(self._attempt, req),
                on_retry=self._retry_logger(req),
                persist=self._outage_persists(req),
            )
        except _Garbled as exc:  # the retry budget ran out before GARBLED_ATTEMPTS
            raise exc.final from None

    def _outage_persists(self, req: _Request) -> Callable[[BaseException, float], bool]:
        """Whether a failed request is worth another try beyond its attempts: its host has
        failed everything since its last answer, its breaker is still closed (it opens
        after the outage budget), and this request has not waited twice that long."""
        limiter = self.limiters.for_authority(req.authority)

        def persists(exc: BaseException, slept: float) -> bool:
            budget = limiter.outage_budget
            return (
                budget is not None
                and isinstance(exc, TransientError)
                and not isinstance(exc, RateLimited | CutShort | _Garbled)
                and limiter.failing
                and slept < 2 * budget
            )

        return persists

    def stream(
        self,
        url: str,
        *,
        remote: str,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        map_error: ErrorMapper | None = None,
        allow_redirects: bool = True,
        timeout: float | None = None,
        chunk_size: int = _CHUNK,
    ) -> Download:
        """``async with client.stream(url, remote=r) as body: async for chunk in body``.

        Opening is retried like :meth:`request` (limiter slot, error mapping, ``NotFound``
        for 404 ...); the body then arrives in chunks of at most ``chunk_size`` bytes and
        holds its connection slot until the ``async with`` block ends. A body cut short
        raises ``TransientError`` while iterating; retrying it is the caller's choice
        (:meth:`download` does). ``map_error`` only sees error replies (a 2xx is the image).
        """
        req = self._prepare(
            "GET",
            url,
            remote,
            params,
            headers,
            None,
            None,
            "bytes",
            map_error,
            allow_redirects,
            timeout,
        )
        return Download(self, req, chunk_size=chunk_size, retry=True)

    async def download(
        self,
        url: str,
        dest: str | os.PathLike[str],
        *,
        remote: str,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        map_error: ErrorMapper | None = None,
    ) -> int:
        """Save ``url`` to ``dest`` (via ``dest.part``, renamed when complete); return size.

        The whole download is retried on transient failures, starting over each time.
        Raises as :meth:`stream`, and ``LocalIOError`` when ``dest`` cannot be written.
        """
        req = self._prepare(
            "GET", url, remote, params, headers, None, None, "bytes", map_error, True, None
        )
        path = Path(dest)
        part = anyio.Path(path.with_name(path.name + ".part"))

        async def attempt(n: int) -> int:
            async with Download(self, req, chunk_size=_CHUNK, retry=False) as body:
                try:
                    async with await anyio.open_file(part, "wb") as f:
                        async for chunk in body:
                            await f.write(chunk)
                except OSError as exc:
                    if isinstance(exc, ImgsyncError):
                        raise
                    raise LocalIOError(f"cannot write {part}: {exc}", path=str(part)) from exc
                return body.received

        try:
            size = await self.retry.run(
                attempt, on_retry=self._retry_logger(req), persist=self._outage_persists(req)
            )
            try:
                await part.replace(path)
            except OSError as exc:
                raise LocalIOError(f"cannot write {path}: {exc}", path=str(path)) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                await part.unlink(missing_ok=True)
            raise
        return size

    # --- internals -----------------------------------------------------------------------

    def _prepare(
        self,
        method: str,
        url: str,
        remote: str,
        params: Params | None,
        headers: Mapping[str, str] | None,
        json: Any,
        form: FormFactory | None,
        expect: Expect,
        map_error: ErrorMapper | None,
        allow_redirects: bool,
        timeout: float | None,
        idempotent: bool = True,
    ) -> _Request:
        for name, value in (headers or {}).items():
            if (name, value) in self._header_values:  # the same credential on every request
                continue
            if value not in self._secrets and _SECRET_HEADER.search(name):
                self.add_secret(
                    value.split(" ", 1)[-1] if name.lower() == "authorization" else value
                )
                if len(self._header_values) < 100:
                    self._header_values.add((name, value))
        if "?" in url and url not in self._scanned:  # its query's credentials, once
            if len(self._scanned) > 1000:
                self._scanned.clear()
            for key, item in URL(url).query.items():
                if _SECRET_PARAM.match(key):
                    self.add_secret(str(item))
            self._scanned.add(url)
        for key, param in (params or {}).items():
            if _SECRET_PARAM.match(key):
                self.add_secret(str(param))
        return _Request(
            method=method,
            url=url,
            remote=remote,
            authority=self.limiters.key_of(url),
            params=params,
            headers=headers,
            json=json,
            form=form,
            expect=expect,
            map_error=map_error,
            allow_redirects=allow_redirects,
            timeout=self._no_total
            if timeout is None
            else aiohttp.ClientTimeout(
                total=timeout, sock_connect=self._connect_timeout, sock_read=self._read_timeout
            ),
            idempotent=idempotent,
        )

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                headers={"User-Agent": self.user_agent},
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self._connect_timeout, sock_read=self._read_timeout
                ),
            )
            self._proxies = env_proxies()
        return session

    def _proxy(self, url: str) -> dict[str, Any]:
        """``proxy``/``proxy_auth`` for a request to ``url``, from the environment's proxies.

        The session does not ``trust_env``: aiohttp would then read ``~/.netrc`` on every
        request (in a worker thread) and add its login as Basic auth, which clashes with a
        provider's own Authorization header. Proxies are read once per session instead.
        """
        if not self._proxies:
            return {}
        target = URL(url)
        proxy = self._proxies.get(target.scheme)
        if proxy is None or (target.host and urllib.request.proxy_bypass(target.host)):
            return {}
        via = URL(proxy)
        auth = aiohttp.BasicAuth.from_url(via) if via.user else None
        return {"proxy": via.with_user(None), "proxy_auth": auth}

    async def _enter(self, limiter: HostLimiter, req: _Request) -> Slot:
        try:
            return await limiter.acquire()
        except RemotePaused as exc:
            raise RemotePaused(
                exc.detail, until=exc.until, remote=req.remote, host=exc.host
            ) from None

    async def _body(self, req: _Request) -> Body | None:
        if req.form is None:
            return None
        try:
            return await req.form()
        except ImgsyncError:
            raise
        except OSError as exc:
            path = str(exc.filename or "")
            raise LocalIOError(f"cannot read the upload: {exc.strerror or exc}", path=path) from exc

    async def _attempt(self, req: _Request, attempt: int) -> ApiResponse:
        body = await self._body(req)
        headers = req.headers
        data: Any = body
        encoded: _Encoded | None = None
        if isinstance(body, Multipart):
            encoded = self._encode(body)
            if encoded.streamed or encoded.size >= _RENDER_BELOW:
                data = _StreamedBody(encoded, native=self.sendfile)
            else:  # small and in memory: one piece, one send
                data = encoded.joined()
                headers = {**(headers or {}), aiohttp.hdrs.CONTENT_TYPE: encoded.content_type}
        try:
            return await self._send(req, attempt, headers, data)
        finally:
            if encoded is not None:
                encoded.close()

    def _encode(self, body: Multipart) -> _Encoded:
        try:
            return _Encoded(body)
        except OSError as exc:
            if isinstance(exc, ImgsyncError):
                raise
            path = str(exc.filename or "")
            raise LocalIOError(f"cannot read the upload: {exc.strerror or exc}", path=path) from exc

    async def _send(
        self, req: _Request, attempt: int, headers: Mapping[str, str] | None, data: Any
    ) -> ApiResponse:
        limiter = self.limiters.for_authority(req.authority)
        slot = await self._enter(limiter, req)
        answered = False
        try:
            started = time.monotonic()
            try:
                async with self._get_session().request(
                    req.method,
                    req.url,
                    params=req.params,
                    headers=headers,
                    json=req.json,
                    data=data,
                    allow_redirects=req.allow_redirects,
                    timeout=req.timeout,
                    **self._proxy(req.url),
                ) as r:
                    slot.answered()
                    answered = True  # the status line arrived: the host has the request
                    raw = await r.read()
                    status, headers, charset, ctype = r.status, r.headers, r.charset, r.content_type
                    final_url = str(r.url)
            except _TRANSPORT_ERRORS as exc:
                if answered and not req.idempotent:
                    self._reply_lost(exc, req, attempt, started)
                # a reply that broke off after its status line: the host is up, not failing
                self._transport_failed(exc, req, attempt, started, None if answered else slot)
            self._log_attempt(req, attempt, started, status=status)
            ok = 200 <= status < 300
            data, parsed = _decode(raw, charset, req.expect if ok else "lenient")
            if ok and not parsed:
                slot.succeeded()
                err = ResponseError(f"{req.what}: expected JSON, got {_what_came(raw, ctype)}")
                self._finish(err, req, status)
                # an API glitch, not a website: the host has answered JSON before, or
                # this reply claims to be JSON (a body cut off mid-JSON)
                api = req.authority in self._spoke_json or "json" in ctype
                if req.idempotent and api and attempt < min(GARBLED_ATTEMPTS, self.retry.attempts):
                    raise _Garbled(err)
                raise err
            if ok and req.expect == "json":
                self._spoke_json.add(req.authority)
            resp = ApiResponse(status, headers, final_url, data, req.method)
            await self._check(resp, req, slot, limiter)
            return resp
        finally:
            slot.release()

    async def _check(
        self, resp: ApiResponse, req: _Request, slot: Slot, limiter: HostLimiter
    ) -> None:
        """Raise the error ``resp`` means, after telling the limiter; return if none."""
        err: ProviderError | None = None
        if req.map_error is not None:
            try:
                err = req.map_error(resp)
            except (LookupError, TypeError, AttributeError, ValueError) as exc:
                # The reply did not have the shape the provider knows: an unexpected payload.
                err = ResponseError(
                    f"{req.what}: unexpected reply ({type(exc).__name__}: {exc}): "
                    f"{excerpt(resp.data)}"
                )
        if err is None and not 200 <= resp.status < 300:  # its text is built for errors only
            err = default_error(resp, req.what)
        if err is None:
            slot.succeeded()
            return
        err = self._finish(err, req, resp.status)
        if isinstance(err, RateLimited):
            slot.throttled(err.retry_after)
            self._log.info(
                "rate_limited",
                remote=req.remote,
                host=req.authority,
                status=resp.status,
                retry_after=err.retry_after,
            )
            if err.retry_after is not None and err.retry_after > self.max_retry_after:
                reason = f"the host asked to wait {err.retry_after:.0f} s"
                until = await limiter.pause_for(err.retry_after, reason)
                raise RemotePaused(
                    reason, until=until, remote=req.remote, host=req.authority, status=resp.status
                ) from err
        elif isinstance(err, RemotePaused):
            await limiter.pause_until(err.until, err.detail)
        elif not isinstance(err, TransientError):
            slot.succeeded()  # an ordinary refusal: the host is answering normally
        elif slot.failed(err.detail):  # a 5xx: one more failure of a host that may be down
            raise self._unavailable(err, req) from err
        raise err

    def _finish(self, err: ProviderError, req: _Request, status: int | None) -> ProviderError:
        """Fill in what the raiser did not know (remote, host, status) and redact."""
        # Re-running the base initialiser rebuilds the message from the fields; subclass
        # fields (retry_after, until) are left alone.
        ProviderError.__init__(
            err,
            self.redact(err.detail),
            remote=err.remote or req.remote,
            host=err.host or req.authority,
            status=err.status if err.status is not None else status,
            code=err.code,
        )
        return err

    def _fail_plain(self, err: ProviderError, req: _Request, status: int | None) -> NoReturn:
        raise self._finish(err, req, status)

    def _transport_error(self, exc: BaseException, req: _Request) -> ProviderError | None:
        """The tree's name for a transport failure (``None``: not a transport failure)."""
        text = self.redact(str(exc)) or type(exc).__name__
        what = req.what
        err: ProviderError
        if isinstance(exc, asyncio.TimeoutError):  # also aiohttp's ServerTimeoutError
            err = ProviderTimeout(f"{what}: no answer in time ({text})")
        elif isinstance(exc, aiohttp.ClientPayloadError):
            err = TransientError(f"{what}: reply cut short ({text})")
        elif isinstance(exc, aiohttp.ClientSSLError):
            err = ProviderError(f"{what}: TLS failure ({text})")
        elif isinstance(exc, aiohttp.ClientConnectionError | ConnectionError):
            err = TransientError(f"{what}: connection failed ({text})")
        elif isinstance(exc, aiohttp.InvalidURL):
            err = ProviderError(f"{what}: invalid URL")
        elif isinstance(exc, aiohttp.ClientError):
            err = ResponseError(f"{what}: {text}")
        elif isinstance(exc, OSError) and not isinstance(exc, ImgsyncError):
            err = TransientError(f"{what}: network error ({text})")
        else:
            return None
        return self._finish(err, req, None)

    def _transport_failed(
        self,
        exc: BaseException,
        req: _Request,
        attempt: int,
        started: float,
        slot: Slot | None = None,
    ) -> NoReturn:
        err = self._transport_error(exc, req)
        if err is None:
            raise exc
        self._log_attempt(req, attempt, started, error=str(err))
        cause = exc if self.redact(str(exc)) == str(exc) else None
        if slot is not None and isinstance(err, TransientError) and slot.failed(err.detail):
            raise self._unavailable(err, req) from cause
        raise err from cause

    def _unavailable(self, err: ProviderError, req: _Request) -> RemoteUnavailable:
        """The error of a request whose failure opened (or met) its host's breaker."""
        limiter = self.limiters.for_authority(req.authority)
        last = err.detail.removeprefix(f"{req.what}: ")
        out = RemoteUnavailable(
            f"{req.what}: {req.authority} failed every request for "
            f"{limiter.outage_budget or 0:g} s ({last}); stopped sending to it"
        )
        self._finish(out, req, err.status)
        return out

    def _reply_lost(
        self, exc: BaseException, req: _Request, attempt: int, started: float
    ) -> NoReturn:
        """A request that must not be repeated reached the host; its reply broke off."""
        text = self.redact(str(exc)) or type(exc).__name__
        err = ReplyLost(
            f"{req.what}: the host received the request but its reply broke off ({text}); "
            "it may have stored it, so it was not sent again"
        )
        self._log_attempt(req, attempt, started, error=err.detail)
        raise self._finish(err, req, None) from None

    def _log_attempt(
        self,
        req: _Request,
        attempt: int,
        started: float,
        *,
        status: int | None = None,
        error: str | None = None,
    ) -> None:
        log = self._bound_log
        if log is None:  # bound once: each use of the lazy proxy binds anew (~10 us)
            log = self._bound_log = self._log.bind()
        if not log.is_enabled_for(logging.DEBUG):
            return
        log.debug(
            "http_request",
            remote=req.remote,
            method=req.method,
            url=req.shown,
            status=status,
            attempt=attempt,
            ms=round((time.monotonic() - started) * 1000, 1),
            error=error,
        )

    def _retry_logger(self, req: _Request) -> OnRetry:
        def log_retry(attempt: int, exc: BaseException, delay: float) -> None:
            self._log.info(
                "retrying",
                remote=req.remote,
                method=req.method,
                url=req.shown,
                attempt=attempt,
                delay=round(delay, 3),
                error=self.redact(str(exc)),
            )

        return log_retry


def _disposition_value(text: str) -> str:
    """A name or file name as browsers put it in a multipart header (WHATWG HTML form
    encoding): raw UTF-8, with only ``"``, CR and LF escaped as ``%22``, ``%0D``, ``%0A``.

    Servers such as Chevereto (PHP) keep the bytes they get: percent-encoding the whole
    name (aiohttp's ``quote_fields`` default) stores ``ñandú.png`` as ``C3B1andC3BA.png``.
    """
    return _utf8(text).replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _utf8(text: str) -> str:
    """``text`` as valid UTF-8: the undecodable bytes of a disk name (kept by Python as
    surrogate escapes) become U+FFFD instead of failing the upload."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text


# A multipart boundary: random once per process (it cannot be guessed, so no file holds
# it), numbered per body. A fresh os.urandom per upload cost a system call that gave up the
# interpreter lock, and getting it back waited on the state writer's thread.
_BOUNDARY = f"imgsync-{os.urandom(12).hex()}-"
_BODIES = itertools.count()


class _Encoded:
    """A :class:`Multipart` as it goes on the wire: ``pieces`` are the literal bytes
    (boundaries, part headers, field values, in-memory files) and the files streamed from
    disk, opened when the body is built (a vanished file is a ``LocalIOError`` before
    anything is sent) and closed by :meth:`close`."""

    def __init__(self, body: Multipart) -> None:
        self.boundary = f"{_BOUNDARY}{next(_BODIES):x}"
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self.pieces: list[bytes | _OpenFile] = []
        self.size = 0
        try:
            for name, value in body.fields:
                self._add(_part_head(self.boundary, name, None, "text/plain"))
                self._add(_utf8(value).encode("utf-8"))
                self._add(b"\r\n")
            for f in body.files:
                self._add(_part_head(self.boundary, f.name, f.filename, f.mime))
                self._add(f.data if f.path is None else _OpenFile(f))
                self._add(b"\r\n")
            self._add(f"--{self.boundary}--\r\n".encode("ascii"))
        except BaseException:
            self.close()
            raise

    def _add(self, piece: bytes | _OpenFile) -> None:
        self.pieces.append(piece)
        self.size += piece.size if isinstance(piece, _OpenFile) else len(piece)

    @property
    def streamed(self) -> bool:
        return any(isinstance(p, _OpenFile) for p in self.pieces)

    def joined(self) -> bytes:
        """The whole body in one piece (every part in memory)."""
        return b"".join(p for p in self.pieces if isinstance(p, bytes))

    def close(self) -> None:
        for p in self.pieces:
            if isinstance(p, _OpenFile):
                p.close()


def _part_head(boundary: str, name: str, filename: str | None, mime: str) -> bytes:
    """A part's boundary line and headers; names as browsers write them (see
    :func:`_disposition_value`), so no name can forge a header."""
    disposition = f'form-data; name="{_disposition_value(name)}"'
    if filename is not None:
        disposition += f'; filename="{_disposition_value(filename)}"'
    mime = _SPACES.sub(" ", mime)  # no line break in a header
    return (
        f"--{boundary}\r\nContent-Type: {mime}\r\nContent-Disposition: {disposition}\r\n\r\n"
    ).encode()


class _OpenFile:
    """A file part streamed from disk: opened once per attempt, sent from where it is."""

    def __init__(self, part: FilePart) -> None:
        assert part.path is not None
        self.path = part.path
        self.on_read = part.on_read
        # never through a symbolic link: a source file swapped for one since it was hashed
        self.fh = os.fdopen(open_source(part.path), "rb", buffering=0)
        try:
            st = os.fstat(self.fh.fileno())
            self.size = st.st_size
            if part.size is not None and self.size != part.size:
                raise LocalIOError(
                    f"the file changed since it was read ({part.size} bytes then, "
                    f"{self.size} now); tried again later",
                    path=str(part.path),
                )
            # same size, other bytes (written in place since it was hashed): the host
            # would store them under the old bytes' checksum
            self.stamp = part.stamp
            if self.stamp is not None and file_stamp(st) != self.stamp:
                raise LocalIOError(
                    "the file changed since it was read (written again, same size); "
                    "tried again later",
                    path=str(part.path),
                )
        except BaseException:
            self.fh.close()
            raise

    def check_unchanged(self) -> None:
        """``OSError`` when the file was written while it was sent: raised before the
        body's end goes out, so the host never takes the request as complete."""
        if self.stamp is not None and file_stamp(os.fstat(self.fh.fileno())) != self.stamp:
            raise OSError(f"{self.path}: the file changed while it was sent")

    def close(self) -> None:
        self.fh.close()

    def sent(self, n: int) -> None:
        if self.on_read is not None and n:
            self.on_read(n)


# a streamed file goes out in pieces of this size: each piece is one os.sendfile (plain
# HTTP) or one read in a worker thread (TLS); progress is counted per piece
_SEND_PIECE = 8 * 1024 * 1024
_READ_PIECE = 1024 * 1024


class _StreamedBody(aiohttp.payload.Payload):
    """An :class:`_Encoded` body with files in it, for aiohttp to send.

    Over plain HTTP a file goes from the page cache to the socket with ``os.sendfile``
    (no read into Python, no copy through the event loop: about half the CPU of
    streaming it through aiohttp's file payload); over TLS, or where the platform has no
    sendfile, it is read in 1 MiB pieces in a worker thread.
    """

    def __init__(self, encoded: _Encoded, *, native: bool) -> None:
        super().__init__(encoded, content_type=encoded.content_type)
        self._encoded = encoded
        self._native = native
        self._size = encoded.size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a streamed upload has no text form")

    async def write(self, writer: Any) -> None:
        for piece in self._encoded.pieces:
            if isinstance(piece, bytes):
                if piece:
                    await writer.write(piece)
            else:
                await _send_file(writer, piece, self._native)
                piece.check_unchanged()

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        await self.write(writer)  # the length is this body's own size

    async def close(self) -> None:
        self._encoded.close()


async def _send_file(writer: Any, f: _OpenFile, native: bool) -> None:
    """Send ``f`` whole from its start (with ``os.sendfile`` when ``native`` and the
    connection is plain TCP); ``OSError`` when it shrank while being sent."""
    loop = asyncio.get_running_loop()
    transport = writer.transport
    offset = 0
    if native and transport is not None and transport.get_extra_info("sslcontext") is None:
        await writer.drain()
        while offset < f.size:
            count = min(_SEND_PIECE, f.size - offset)
            try:
                sent = await loop.sendfile(transport, f.fh, offset, count, fallback=False)
            except (asyncio.SendfileNotAvailableError, NotImplementedError):
                break  # nothing of this piece went out: read it instead
            offset += sent
            f.sent(sent)
            if sent < count:
                raise OSError(f"{f.path}: the file shrank while it was sent")
    f.fh.seek(offset)
    while offset < f.size:
        chunk = await anyio.to_thread.run_sync(f.fh.read, min(_READ_PIECE, f.size - offset))
        if not chunk:
            raise OSError(f"{f.path}: the file shrank while it was sent")
        await writer.write(chunk)
        offset += len(chunk)
        f.sent(len(chunk))


_RENDER_BELOW = 1024 * 1024  # multipart bodies in memory up to this size go in one piece


def _decode(
    raw: bytes, charset: str | None, expect: Expect | Literal["lenient"]
) -> tuple[Any, bool]:
    """``(data, parsed_as_expected)`` for a reply body."""
    if expect == "bytes":
        return raw, True
    if expect == "none":
        return None, True
    if expect in ("json", "lenient") and raw.strip():
        try:
            return jsonlib.loads(raw), True
        except ValueError:
            if expect == "json":
                return None, False
    elif expect == "json":
        return None, True
    try:
        return raw.decode(charset or "utf-8", errors="replace"), True
    except LookupError:
        return raw.decode("utf-8", errors="replace"), True


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_any():
        chunks.append(chunk)
        total += len(chunk)
        if total >= limit:
            break
    return b"".join(chunks)[:limit]


class ByteStream:
    """A download's body: ``async for chunk in body`` (bytes, never the whole image).

    ``size`` is the announced length (``None`` if unknown), ``received`` the bytes so far.
    A body that ends early, breaks off or stalls (no byte for the read timeout) raises
    ``CutShort``: the caller fetches it again from the start.
    """

    def __init__(
        self,
        client: ApiClient,
        req: _Request,
        resp: aiohttp.ClientResponse,
        slot: Slot,
        chunk_size: int,
    ) -> None:
        self._client = client
        self._req = req
        self._resp = resp
        self._slot = slot
        self._chunk_size = chunk_size
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers
        self.url = str(resp.url)
        self.content_type = resp.content_type
        # With a Content-Encoding the announced length is not the length we will read.
        encoded = resp.headers.get("Content-Encoding", "identity") != "identity"
        self.size: int | None = None if encoded else resp.content_length
        self.received = 0
        self._eof = False

    def __aiter__(self) -> ByteStream:
        return self

    async def __anext__(self) -> bytes:
        if self._eof:
            raise StopAsyncIteration
        try:
            chunk = await self._resp.content.read(self._chunk_size)
        except _TRANSPORT_ERRORS as exc:
            try:
                self._client._transport_failed(exc, self._req, 0, time.monotonic())
            except ProviderTimeout:  # the body began, then stalled: fetch it again too
                stalled = CutShort(
                    f"{self._req.what}: reply stalled after {self.received} bytes "
                    f"(nothing for {self._client._read_timeout:g} s)"
                )
                raise self._client._finish(stalled, self._req, self.status) from None
            except TransientError as broke:  # the connection broke mid-body
                cut = CutShort(broke.detail)
                raise self._client._finish(cut, self._req, self.status) from exc
        if chunk:
            self.received += len(chunk)
            return chunk
        self._eof = True
        if self.size is not None and self.received < self.size:
            err = CutShort(
                f"{self._req.what}: reply cut short ({self.received} of {self.size} bytes)"
            )
            raise self._client._finish(err, self._req, self.status)
        raise StopAsyncIteration

    def close(self) -> None:
        """Drop the connection (unless the body was read to the end) and the slot."""
        if self._eof:
            self._resp.release()
        else:
            self._resp.close()
        self._slot.release()


class Download:
    """What :meth:`ApiClient.stream` returns: ``async with`` it to get a :class:`ByteStream`."""

    def __init__(self, client: ApiClient, req: _Request, *, chunk_size: int, retry: bool) -> None:
        self._client = client
        self._req = req
        self._chunk_size = chunk_size
        self._retry = retry
        self._body: ByteStream | None = None

    async def __aenter__(self) -> ByteStream:
        if self._retry:
            on_retry = self._client._retry_logger(self._req)
            persist = self._client._outage_persists(self._req)
            self._body = await self._client.retry.run(
                self._open, on_retry=on_retry, persist=persist
            )
        else:
            self._body = await self._open(1)
        return self._body

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()

    async def _open(self, attempt: int) -> ByteStream:
        client, req = self._client, self._req
        limiter = client.limiters.for_authority(req.authority)
        slot = await client._enter(limiter, req)
        try:
            started = time.monotonic()
            try:
                resp = await client._get_session().request(
                    "GET",
                    req.url,
                    params=req.params,
                    headers=req.headers,
                    allow_redirects=req.allow_redirects,
                    timeout=req.timeout,
                    **client._proxy(req.url),
                )
            except _TRANSPORT_ERRORS as exc:
                client._transport_failed(exc, req, attempt, started, slot)
            slot.answered()
            client._log_attempt(req, attempt, started, status=resp.status)
            if 200 <= resp.status < 300:
                slot.succeeded()
                return ByteStream(client, req, resp, slot, self._chunk_size)
            try:
                raw = await _read_capped(resp, _ERROR_BODY_LIMIT)
            except _TRANSPORT_ERRORS:
                raw = b""
            finally:
                resp.close()
            data, _ = _decode(raw, resp.charset, "lenient")
            reply = ApiResponse(resp.status, resp.headers, str(resp.url), data, "GET")
            await client._check(reply, req, slot, limiter)
            raise client._finish(ResponseError(f"{req.what}: unexpected reply"), req, resp.status)
        except BaseException:
            slot.release()
            raise


# ---- the daemon's own endpoints ---------------------------------------------------------

Route = Callable[[], Awaitable[tuple[int, str, bytes]]]


async def serve_endpoints(
    host: str, port: int, routes: Mapping[str, Route]
) -> tuple[int, Callable[[], Awaitable[None]]]:
    """Serve ``GET path`` -> ``routes[path]()`` (status, content type, body) on
    ``host:port`` (port 0: any free one). Returns the bound port and an async close."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        route = routes.get(request.path)
        if route is None:
            return web.Response(status=404, text="not found\n")
        status, content_type, body = await route()
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = port
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            bound = int(addr[1])
            break
    return bound, runner.cleanup


def env_proxies() -> dict[str, str]:
    """``{"http": url, "https": url}`` from HTTP_PROXY/HTTPS_PROXY (HTTPS proxies skipped, as
    aiohttp does)."""
    return {
        scheme: url
        for scheme, url in urllib.request.getproxies().items()
        if scheme in ("http", "https") and not url.lower().startswith("https:")
    }


async def probe(url: str, seconds: float = 5.0) -> int:
    """The HTTP status of ``GET url`` (0 when nothing answers): ``status --check``."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
            session.get(url) as resp,
        ):
            await resp.read()
            return resp.status
    except (aiohttp.ClientError, TimeoutError, OSError):
        return 0
