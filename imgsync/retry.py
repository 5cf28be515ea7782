"""Bounded retries with exponential backoff and full jitter.

:class:`RetryPolicy` is pure logic around one callable: it runs ``fn(attempt)`` at most
``attempts`` times, and only tries again when the exception's *class* says so
(``retryable = True`` in :mod:`imgsync.errors`: ``TransientError``, ``RateLimited``,
``ProviderTimeout``). Everything else -- a 401, a rejected file, an undecodable reply, a
paused host, a bug -- propagates from the first attempt. Nothing here looks at message
text or HTTP status codes; :mod:`imgsync.http` has already turned those into classes.

Between attempts it sleeps ``uniform(0, min(cap, base * 2**(attempt-1)))`` ("full
jitter": parallel workers that failed together do not come back together). A
``RateLimited`` that carries ``retry_after`` waits at least that long. When the attempts
run out (or the optional ``max_elapsed`` budget would be exceeded) the *last* error is
raised, its message extended with the number of attempts made.

Outages are measured in time, not attempts: ``run(..., persist=...)`` keeps retrying past
``attempts`` while ``persist(error, slept)`` says so (``slept``: seconds this operation has
waited so far) -- the HTTP client answers "the host has failed every request since its
last answer, its circuit breaker is still closed, and this request has not yet waited
twice the outage budget" (see :mod:`imgsync.ratelimit`). Those extra waits are
``outage_wait`` seconds at most, so the host is probed often enough that a short outage
costs little more than its length, and the breaker's budget (not a count) decides when to
give up.

This is the low-level retry (one request). Item-level retries -- the same image again in a
later cycle -- belong to the pipeline and its journal. Pacing between *different*
requests belongs to :mod:`imgsync.ratelimit`; the two cooperate: after a 429 both this
policy and the host limiter wait, and since both count from the same moment the waits
overlap rather than add up.

``sleep``, ``clock`` and ``rng`` are injectable so tests run instantly and exactly.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from imgsync.errors import ProviderError, RateLimited

__all__ = ["OnRetry", "RetryPolicy", "is_retryable"]

T = TypeVar("T")

OnRetry = Callable[[int, BaseException, float], None]
"""``on_retry(failed_attempt, error, delay)``, called before each sleep (for logging)."""


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc``'s class declares it worth another attempt."""
    return bool(getattr(type(exc), "retryable", False))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry one operation.

    Args:
        attempts: total tries, the first included (``1`` = never retry).
        base: backoff scale in seconds; the n-th wait is at most ``base * 2**(n-1)``.
        cap: upper bound of one backoff wait (a ``retry_after`` may exceed it).
        sleep: ``await sleep(seconds)``.
        clock: monotonic seconds, for ``max_elapsed``.
        rng: uniform float in ``[0, 1)``.
        max_elapsed: give up early rather than sleep past this many seconds in total.
        outage_wait: the longest wait between the extra attempts ``persist`` asks for.
    """

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    rng: Callable[[], float] = random.random
    max_elapsed: float | None = None
    outage_wait: float = 4.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base < 0 or self.cap < 0:
            raise ValueError("base and cap must not be negative")

    def backoff(self, attempt: int) -> float:
        """The jittered wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt - 1, 62))
        return self.rng() * ceiling

    def delay(self, exc: BaseException, attempt: int) -> float:
        """The wait before retrying ``exc`` from attempt ``attempt``."""
        wait = self.backoff(attempt)
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        return wait

    async def run(
        self,
        fn: Callable[[int], Awaitable[T]],
        *,
        on_retry: OnRetry | None = None,
        persist: Callable[[BaseException, float], bool] | None = None,
    ) -> T:
        """``await fn(attempt)`` until it returns, retrying retryable errors.

        Raises the first non-retryable error at once, or the last retryable one when the
        attempts (or ``max_elapsed``) are used up, noting how many attempts were made.
        Past ``attempts``, a retryable error is retried again while ``persist(error, slept)``.
        """
        started = self.clock()
        attempt = 0
        slept = 0.0
        while True:
            attempt += 1
            try:
                return await fn(attempt)
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                wait = self.delay(exc, attempt)
                extra = attempt >= self.attempts
                if extra and persist is not None and persist(exc, slept):
                    wait = min(self.outage_wait, max(self.base, wait))
                elif extra:
                    _note_attempts(exc, attempt)
                    raise
                if (
                    self.max_elapsed is not None
                    and self.clock() + wait - started > self.max_elapsed
                ):
                    _note_attempts(exc, attempt)
                    raise
                if on_retry is not None:
                    on_retry(attempt, exc, wait)
                slept += wait
                await self.sleep(wait)


def _note_attempts(exc: BaseException, attempts: int) -> None:
    """Say in ``exc``'s own message how many attempts were made before giving up."""
    if attempts < 2:
        return
    note = f"gave up after {attempts} attempts"
    if isinstance(exc, ProviderError):
        # Re-run the base initialiser: it rebuilds the message from the fields, and
        # subclass fields (retry_after, ...) stay as they are.
        ProviderError.__init__(
            exc,
            f"{exc.detail}; {note}",
            remote=exc.remote,
            host=exc.host,
            status=exc.status,
            code=exc.code,
        )
    else:
        exc.add_note(note)
