"""RetryPolicy: bounded attempts, full-jitter backoff, Retry-After, class-based decisions.

Sleep, clock and randomness are injected, so nothing here waits.
"""

from __future__ import annotations

import pytest

from imgsync.errors import AuthError, ProviderTimeout, RateLimited, ResponseError, TransientError
from imgsync.retry import RetryPolicy, is_retryable
from imgsync.testing import FakeClock as FakeTime


def policy(ft: FakeTime, *, rng: float = 1.0, **kwargs: object) -> RetryPolicy:
    return RetryPolicy(sleep=ft.sleep, clock=ft.clock, rng=lambda: rng, **kwargs)  # type: ignore[arg-type]


async def test_stops_at_the_bound_and_says_so() -> None:
    """An always-failing call is tried exactly ``attempts`` times; the last error says how many."""
    ft = FakeTime()
    calls: list[int] = []

    async def fn(attempt: int) -> None:
        calls.append(attempt)
        raise TransientError(f"boom {attempt}", remote="r", status=503)

    with pytest.raises(TransientError) as info:
        await policy(ft).run(fn)
    assert calls == [1, 2, 3, 4, 5]
    assert "boom 5" in str(info.value)
    assert "gave up after 5 attempts" in str(info.value)
    assert info.value.status == 503
    assert len(ft.sleeps) == 4


async def test_non_retryable_errors_are_raised_at_once() -> None:
    """AuthError (a 401), ResponseError and plain bugs are never retried."""
    ft = FakeTime()
    for exc in (AuthError("no", status=401), ResponseError("bad json"), ValueError("bug")):
        calls = 0

        async def fn(attempt: int, exc: Exception = exc) -> None:
            nonlocal calls
            calls += 1
            raise exc

        with pytest.raises(type(exc)):
            await policy(ft).run(fn)
        assert calls == 1
        assert "attempts" not in str(exc)
    assert ft.sleeps == []


async def test_success_after_failures_returns_the_value() -> None:
    """Two timeouts, then a result: the result comes back and two sleeps happened."""
    ft = FakeTime()

    async def fn(attempt: int) -> str:
        if attempt < 3:
            raise ProviderTimeout("slow")
        return f"ok on {attempt}"

    retries: list[tuple[int, float]] = []
    result = await policy(ft).run(fn, on_retry=lambda n, e, d: retries.append((n, d)))
    assert result == "ok on 3"
    assert retries == [(1, 0.5), (2, 1.0)]


async def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    """Upper bounds double from ``base`` to ``cap``; the wait is rng() times that bound."""
    p = RetryPolicy(base=0.5, cap=4.0, rng=lambda: 1.0)
    assert [p.backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert RetryPolicy(rng=lambda: 0.0).backoff(3) == 0.0
    half = RetryPolicy(base=1.0, cap=100.0, rng=lambda: 0.5)
    assert half.backoff(4) == 4.0
    assert half.backoff(10_000) == 100.0 * 0.5  # no overflow for absurd attempt numbers


async def test_rate_limited_waits_at_least_retry_after() -> None:
    """RateLimited(retry_after=45) waits 45 s even though jitter would give 0 and cap is 30."""
    ft = FakeTime()

    async def fn(attempt: int) -> str:
        if attempt == 1:
            raise RateLimited(retry_after=45.0)
        if attempt == 2:
            raise RateLimited(retry_after=None)
        return "done"

    assert await policy(ft, rng=0.0).run(fn) == "done"
    assert ft.sleeps == [45.0, 0.0]


async def test_max_elapsed_gives_up_early() -> None:
    """With a 3 s budget the policy stops before a sleep that would overrun it."""
    ft = FakeTime()
    calls = 0

    async def fn(attempt: int) -> None:
        nonlocal calls
        calls += 1
        raise TransientError("down")

    with pytest.raises(TransientError, match="gave up after 3 attempts"):
        await policy(ft, base=1.0, max_elapsed=3.0).run(fn)
    assert calls == 3  # slept 1 + 2 = 3; the next sleep (4) would exceed the budget
    assert ft.sleeps == [1.0, 2.0]


async def test_single_attempt_policy_never_sleeps() -> None:
    """attempts=1 means no retry, and the message is left as it was."""
    ft = FakeTime()

    async def fn(attempt: int) -> None:
        raise TransientError("once")

    with pytest.raises(TransientError) as info:
        await policy(ft, attempts=1).run(fn)
    assert "attempts" not in str(info.value)
    assert ft.sleeps == []


def test_retryable_is_decided_by_class() -> None:
    """The class attribute decides, not the message or status."""
    assert is_retryable(TransientError("x"))
    assert is_retryable(RateLimited())
    assert is_retryable(ProviderTimeout("x"))
    assert not is_retryable(AuthError("temporarily unavailable", status=503))
    assert not is_retryable(OSError("reset"))


def test_invalid_policies_are_refused() -> None:
    """Zero attempts or negative backoff are programming errors."""
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(base=-1)
