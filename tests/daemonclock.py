"""A virtual clock for the daemon's waits (``imgsync.watch.Clock``): time moves only when a
test says so. (``vclock.VirtualClock`` is the one for pacing and retries.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class VirtualClock:
    """Implements :class:`imgsync.watch.Clock`; :meth:`advance` moves both clocks."""

    def __init__(self, wall: float = 1_800_000_000.0) -> None:
        self.mono = 1000.0
        self._wall_offset = wall - self.mono
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.mono

    def time(self) -> float:
        return self._wall_offset + self.mono

    @property
    def waiters(self) -> int:
        """How many waits are pending (a job loop waiting is idle)."""
        return sum(1 for _d, f in self._sleepers if not f.done())

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.mono + max(0.0, seconds), fut)
        self._sleepers.append(entry)
        if seconds <= 0:
            fut.set_result(None)
        waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
        either: list[asyncio.Future[Any]] = [fut, waiter]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not fut.done():
                fut.cancel()
            self._sleepers.remove(entry)
        return event.is_set()

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        for deadline, fut in list(self._sleepers):
            if deadline <= self.mono and not fut.done():
                fut.set_result(None)


async def eventually(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until it holds (real time is only a safety limit)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
