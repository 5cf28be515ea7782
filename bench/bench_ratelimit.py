"""Benchmark: does the per-host limiter reach a host's limit without ever crossing it?

1. A minimal aiohttp server on 127.0.0.1 enforces 20 requests per sliding second (it
   answers 429 beyond that). 64 concurrent callers go through :class:`ApiClient` with the
   limit configured as ``"20/second"`` for ``--seconds`` (default 60). Printed: the
   achieved rate as a fraction of the limit (target >= 0.97), the requests the server
   refused (target 0), and the most requests the server saw in any one second.
2. The limiter's own cost per slot on a host with no limit (target < 50 µs), measured over
   100,000 ``async with limiter.slot()``; and, for comparison, on a host whose window is
   configured but never full.

Usage: ``python bench/bench_ratelimit.py [--seconds 60] [--callers 64]``. No assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections import deque

import structlog
from aiohttp import web

from imgsync.config import LimitConfig
from imgsync.errors import ProviderError
from imgsync.http import ApiClient
from imgsync.ratelimit import HostLimiter, LimiterRegistry

LIMIT = 20  # requests per second, enforced by the server and configured in the client


class RateServer:
    """Accepts at most LIMIT requests in any sliding second; 429 beyond that."""

    def __init__(self) -> None:
        self.recent: deque[float] = deque()
        self.accepted: list[float] = []
        self.refused = 0

    async def handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        while self.recent and self.recent[0] <= now - 1.0:
            self.recent.popleft()
        if len(self.recent) >= LIMIT:
            self.refused += 1
            return web.json_response({"error": "too many requests"}, status=429)
        self.recent.append(now)
        self.accepted.append(now)
        return web.json_response({"ok": True})


def max_per_second(stamps: list[float]) -> int:
    """The most stamps in any half-open one-second interval."""
    best, lo = 0, 0
    for hi, t in enumerate(stamps):
        while stamps[lo] <= t - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def rate_run(seconds: float, callers: int) -> None:
    server = RateServer()
    app = web.Application()
    app.router.add_get("/api", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/api"

    registry = LimiterRegistry({f"127.0.0.1:{port}": LimitConfig(rates=(f"{LIMIT}/second",))})
    client_errors = 0
    latencies: list[float] = []
    async with ApiClient(registry) as client:

        async def caller() -> None:
            nonlocal client_errors
            for _ in range(10**9):
                started = time.monotonic()
                try:
                    await client.request("GET", url, remote="bench")
                except ProviderError:
                    client_errors += 1
                latencies.append(time.monotonic() - started)

        tasks = [asyncio.create_task(caller()) for _ in range(callers)]
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stats = registry.for_url(url).statistics()
    await runner.cleanup()

    in_window = [t for t in server.accepted if t0 <= t < t0 + seconds]
    rate = len(in_window) / seconds
    latencies.sort()
    p50 = latencies[len(latencies) // 2] if latencies else 0.0
    print(f"rate test: {callers} callers, limit {LIMIT}/second, {seconds:.0f} s")
    print(f"  accepted by server      {len(in_window)} requests in {seconds:.0f} s")
    print(f"  achieved rate / limit   {rate / LIMIT:.4f}   ({rate:.2f}/s; target >= 0.97)")
    print(f"  refused by server (429) {server.refused}   (target 0)")
    print(f"  max in any 1 s (server) {max_per_second(server.accepted)}   (limit {LIMIT})")
    print(f"  client-side errors      {client_errors}")
    print(f"  limiter throttled count {stats['throttled']}")
    print(f"  median wait+request     {p50 * 1000:.0f} ms (64 callers share 20/s)")


async def overhead(n: int) -> None:
    unlimited = HostLimiter("bench.unlimited")
    roomy = HostLimiter("bench.roomy", ["100000000/second"])
    for label, limiter in (("no limit", unlimited), ("window never full", roomy)):
        for _ in range(1000):  # warm up
            async with limiter.slot():
                pass
        started = time.perf_counter()
        for _ in range(n):
            async with limiter.slot():
                pass
        per = (time.perf_counter() - started) / n
        target = "   (target < 50 µs)" if label == "no limit" else ""
        print(f"  {label:<18} {per * 1e6:6.2f} µs per acquire+release{target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--acquires", type=int, default=100_000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    asyncio.run(rate_run(args.seconds, args.callers))
    print(f"limiter overhead ({args.acquires} slots):")
    asyncio.run(overhead(args.acquires))


if __name__ == "__main__":
    main()
