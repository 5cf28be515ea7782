"""Helpers for testing code that uses imgsync (and imgsync's own tests), shipped like
``structlog.testing``.

* :func:`serve_emulator`: a host emulator on a free 127.0.0.1 port, as an ``async with``
  block, with its counters at hand (:func:`serve_app` for any aiohttp app).
* :class:`FakeClock`: a monotonic clock that moves only when something sleeps on it.
* :func:`instant_retry` and :func:`fast_client`: a retry policy and an ``ApiClient`` whose
  back-offs, limiter waits and penalties run on a :class:`FakeClock`, so retries take no
  time and can be counted.
* :func:`upload_source`: an :class:`~imgsync.models.UploadSource` from bytes.
* :func:`remote_for` and :func:`read_all`: a ``RemoteConfig`` pointing at an emulator, and
  the bytes of an item.

Example::

    async with serve_emulator("gyazo", seed=3) as emu, fast_client() as http:
        remote = remote_for("gyazo", emu)
        async with GyazoProvider(remote, ProviderContext(http=http)) as gyazo:
            page = await gyazo.list_page(None)
        assert (await emu.stats())["requests"] == 1
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imgsync.models import UploadSource, guess_mime

if TYPE_CHECKING:
    from aiohttp import web

    from imgsync.config import RemoteConfig
    from imgsync.fakehosts.common import FakeHostBase
    from imgsync.http import ApiClient
    from imgsync.models import RemoteItem
    from imgsync.providers.base import Provider
    from imgsync.retry import RetryPolicy

__all__ = [
    "DEFAULT_TOKEN",
    "FakeClock",
    "RunningEmulator",
    "fast_client",
    "instant_retry",
    "read_all",
    "remote_for",
    "serve_app",
    "serve_emulator",
    "upload_source",
]

DEFAULT_TOKEN = "imgsync-testing-token-5e1f"


class FakeClock:
    """A monotonic clock that moves only by :meth:`sleep` and :meth:`advance`.

    Every sleep is recorded in ``sleeps``. ``wall()`` is unix time moving with it (from
    ``start_wall``, default the real time at creation: providers date pauses by the real
    clock), for code that dates things.
    """

    def __init__(self, start: float = 1000.0, start_wall: float | None = None) -> None:
        import time

        self.start = start
        self.now = start
        self._wall_offset = (time.time() if start_wall is None else start_wall) - start
        self.sleeps: list[float] = []

    @property
    def elapsed(self) -> float:
        """Virtual seconds since the clock was made."""
        return self.now - self.start

    @property
    def slept(self) -> list[float]:
        """The same list as ``sleeps``."""
        return self.sleeps

    def __call__(self) -> float:
        return self.now

    def clock(self) -> float:
        """The current virtual monotonic time."""
        return self.now

    def wall(self) -> float:
        """The current virtual unix time."""
        return self.now + self._wall_offset

    time = wall  # for code that takes a ``time()``-like callable

    def advance(self, seconds: float) -> None:
        """Move time forward without anyone sleeping."""
        self.now += max(0.0, seconds)

    async def sleep(self, seconds: float) -> None:
        """Record the sleep, move the clock, and let other tasks run once."""
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def instant_retry(clock: FakeClock | None = None, *, attempts: int = 3) -> RetryPolicy:
    """A :class:`~imgsync.retry.RetryPolicy` that sleeps on ``clock`` (full jitter fixed at
    the middle, so delays are exact)."""
    from imgsync.retry import RetryPolicy

    clock = clock if clock is not None else FakeClock()
    return RetryPolicy(attempts=attempts, sleep=clock.sleep, clock=clock.clock, rng=lambda: 0.5)


def fast_client(
    clock: FakeClock | None = None,
    *,
    attempts: int = 3,
    limits: Mapping[str, Any] | None = None,
    on_pause: Callable[[str, float, str], Awaitable[None]] | None = None,
    **client_options: Any,
) -> ApiClient:
    """An :class:`~imgsync.http.ApiClient` whose retries, limiter waits and penalties all
    run on ``clock``: nothing waits in real time, everything is recorded.

    ``limits`` are ``LimitConfig`` values by authority; ``on_pause`` receives host pauses.
    Use it as ``async with fast_client() as http:``.
    """
    from imgsync.http import ApiClient
    from imgsync.ratelimit import LimiterRegistry

    clock = clock if clock is not None else FakeClock()
    registry = LimiterRegistry(
        dict(limits or {}),
        on_pause=on_pause,
        clock=clock.clock,
        wall=clock.wall,
        sleep=clock.sleep,
    )
    return ApiClient(registry, retry=instant_retry(clock, attempts=attempts), **client_options)


def upload_source(data: bytes, name: str = "image.png", mime: str | None = None) -> UploadSource:
    """An upload of ``data`` called ``name`` (checksums filled in, MIME type from the name)."""
    return UploadSource(
        name=name,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        mime=mime or guess_mime(name),
        data=data,
    )


async def read_all(provider: Provider, item: RemoteItem) -> bytes:
    """Every byte ``provider.open(item)`` yields."""
    return b"".join([chunk async for chunk in provider.open(item)])


@dataclass
class RunningEmulator:
    """An emulator being served: ``url`` (its base URL), ``host`` (the emulator object,
    to look inside or to script faults with ``host.fail_next("5xx")``)."""

    host: FakeHostBase
    url: str

    @property
    def authority(self) -> str:
        """``127.0.0.1:PORT``, the key of its limiter."""
        return self.url.split("://", 1)[1]

    @property
    def token(self) -> str:
        """The credential it accepts."""
        return self.host.knobs.token

    async def stats(self) -> dict[str, int]:
        """``GET /_fakehost/stats`` over HTTP, as any client would see it."""
        import aiohttp

        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url + "/_fakehost/stats") as resp,
        ):
            data: dict[str, int] = await resp.json()
            return data


@contextlib.asynccontextmanager
async def serve_emulator(
    host: FakeHostBase | str,
    *,
    token: str = DEFAULT_TOKEN,
    seed: int = 0,
    rate: str | None = None,
    faults: Mapping[str, float] | None = None,
    **options: Any,
) -> AsyncIterator[RunningEmulator]:
    """Serve an emulator on a free loopback port for the ``async with`` block.

    ``host`` is an emulator object, or the name of one in :mod:`imgsync.fakehosts` that
    is created with the given knobs (``token``, ``seed``, ``rate``, ``faults``) and its own
    ``options``.
    """
    from imgsync.fakehosts import emulator_factory
    from imgsync.fakehosts.common import Knobs, listening

    if isinstance(host, str):
        knobs = Knobs(token=token, seed=seed, rate=rate, faults=dict(faults or {}))
        host = emulator_factory(host)(knobs, **options)
    async with listening(host) as url:
        yield RunningEmulator(host, url)


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Serve any aiohttp ``app`` on a free loopback port; yields its base URL (for replies
    no emulator gives)."""
    from imgsync.fakehosts.common import listening

    async with listening(app) as url:
        yield url


def remote_for(
    kind: str,
    emulator: RunningEmulator | None = None,
    *,
    name: str = "r",
    token: str | None = None,
    **options: Any,
) -> RemoteConfig:
    """A ``RemoteConfig`` of type ``kind`` aimed at ``emulator`` with its token (or
    ``token``), validated as the config file would be."""
    from imgsync.config import parse_config

    table: dict[str, Any] = {"type": kind, **options}
    if emulator is not None:
        table["base_url"] = emulator.url
        table["token"] = token if token is not None else emulator.token
    elif token is not None:
        table["token"] = token
    return parse_config({"remotes": {name: table}}).remotes[name]
