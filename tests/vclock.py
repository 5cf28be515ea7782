"""A virtual clock for timing-dependent tests (imported as ``from vclock import VirtualClock``).

``sleep`` advances the clock instead of waiting (then yields once to the event loop), so a
test that waits out a one-minute flood window or a 30-second outage runs in milliseconds and
asserts exact virtual times. Concurrent sleepers each advance it: waits add up rather than
overlap, which only ever makes the virtual run look slower than a real one.
"""

from __future__ import annotations

from typing import Any

from imgsync.http import ApiClient
from imgsync.ratelimit import LimiterRegistry
from imgsync.retry import RetryPolicy
from imgsync.testing import FakeClock


class VirtualClock(FakeClock):
    """Monotonic and wall time in one (unix seconds), advanced only by :meth:`sleep`
    (``imgsync.testing.FakeClock`` started at the same value for both)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        super().__init__(start=start, start_wall=start)

    def client(self, attempts: int = 5, **retry: Any) -> ApiClient:
        """An ``ApiClient`` whose retries, limiter and pauses all run on this clock."""
        limiters = LimiterRegistry(clock=self.time, wall=self.time, sleep=self.sleep)
        policy = RetryPolicy(attempts=attempts, sleep=self.sleep, clock=self.time, **retry)
        return ApiClient(limiters, retry=policy)
