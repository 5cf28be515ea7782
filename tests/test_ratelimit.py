"""HostLimiter and LimiterRegistry: windows, sharing, penalties, pauses, connection cap.

Most tests run on a *virtual-time* event loop: whenever every task is waiting, the loop's
clock jumps straight to the next timer. Minutes of pacing take milliseconds, and times
are exact, so "never above the limit" can be checked to the microsecond. The limiter is
given ``clock=loop.time`` and sleeps with ``asyncio.sleep``, as in production.
"""

from __future__ import annotations

import asyncio
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import pytest

from imgsync.config import LimitConfig
from imgsync.errors import RemotePaused, RemoteUnavailable
from imgsync.ratelimit import HostLimiter, LimiterRegistry, authority_of, next_utc_midnight

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):
    """A selector that, instead of blocking for ``timeout``, advances virtual time."""

    now = 1000.0

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:  # nothing scheduled at all: a real wait for I/O
            return super().select(None)
        ready = super().select(0)
        if not ready and timeout > 0:
            self.now += timeout
        return ready


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` only moves when everything is asleep."""

    def __init__(self) -> None:
        self._jumper = _JumpingSelector()
        super().__init__(self._jumper)

    def time(self) -> float:
        return self._jumper.now


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``main()`` on a fresh virtual-time loop."""
    with asyncio.Runner(loop_factory=VirtualLoop) as runner:
        return runner.run(main())


def registry(**kwargs: Any) -> LimiterRegistry:
    """A registry on the running (virtual) loop's clock."""
    return LimiterRegistry(clock=asyncio.get_running_loop().time, **kwargs)


def max_in_window(times: list[float], period: float) -> int:
    """The most admissions falling in any half-open interval [t, t + period)."""
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - period:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def hammer(
    limiter: HostLimiter,
    callers: int,
    duration: float,
    latency: float,
    times: list[float],
) -> None:
    """``callers`` tasks taking slots back to back for ``duration`` virtual seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + duration

    async def caller() -> None:
        while loop.time() < end:
            async with limiter.slot():
                times.append(loop.time())
                await asyncio.sleep(latency)

    async with asyncio.TaskGroup() as tg:
        for _ in range(callers):
            tg.create_task(caller())


# --- keys ----------------------------------------------------------------------------------


def test_authority_is_lowercased_host_and_port_as_written() -> None:
    """The key keeps an explicit port, drops userinfo, and ignores case, path and query."""
    assert authority_of("https://API.gzssimg.com/v1/upload?token=x") == "api.gzssimg.com"
    assert authority_of("http://127.0.0.1:8080/a") == "127.0.0.1:8080"
    assert authority_of("https://user:pw@Example.com:443/") == "example.com:443"
    with pytest.raises(ValueError, match="no host"):
        authority_of("/relative/path")


async def test_registry_returns_one_limiter_per_authority() -> None:
    """URLs on one authority share a limiter; another port is another limiter."""
    reg = LimiterRegistry()
    a = reg.for_url("https://Api.Example.com/one")
    assert a is reg.for_url("https://api.example.com/two?x=1")
    assert a is reg.for_authority("API.EXAMPLE.COM")
    assert a is not reg.for_url("https://api.example.com:8443/one")


# --- rate accuracy -------------------------------------------------------------------------


def test_fifty_callers_get_the_configured_rate_and_never_more() -> None:
    """60/minute under 50 concurrent callers: ≤ 60 in every 60 s window, ≥ 95 % overall."""

    async def main() -> list[float]:
        lim = registry(limits={"h": LimitConfig(rates=("60/minute",))}).for_authority("h")
        times: list[float] = []
        await hammer(lim, callers=50, duration=600, latency=0.2, times=times)
        return times

    times = run_virtual(main)
    start = min(times)
    in_ten_windows = [t for t in times if t < start + 600]
    assert max_in_window(times, 60.0) == 60
    assert len(in_ten_windows) >= 0.95 * 600
    assert len(in_ten_windows) <= 600


def test_several_windows_hold_at_once() -> None:
    """["5/second", "100/minute"]: both limits hold in every window; the minute one binds."""

    async def main() -> list[float]:
        reg = registry(limits={"h": LimitConfig(rates=("5/second", "100/minute"))})
        times: list[float] = []
        await hammer(reg.for_authority("h"), callers=50, duration=180, latency=0.05, times=times)
        return times

    times = run_virtual(main)
    start = min(times)
    assert max_in_window(times, 1.0) <= 5
    assert max_in_window(times, 60.0) <= 100
    assert len([t for t in times if t < start + 180]) >= 0.95 * 300


def test_window_counts_until_the_answer_arrives() -> None:
    """A slow reply holds its window place: the next window opens P after the *answer*."""

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        lim = registry(limits={"h": LimitConfig(rates=("2/second",))}).for_authority("h")
        times: list[float] = []

        async def one(latency: float) -> None:
            async with lim.slot() as slot:
                times.append(loop.time())
                await asyncio.sleep(latency)
                slot.answered()

        t0 = loop.time()
        await asyncio.gather(one(5.0), one(0.0), one(0.0))
        return [t - t0 for t in times]

    assert run_virtual(main) == [0.0, 0.0, 1.0]


def test_burst_spreads_a_window_when_asked() -> None:
    """set_default(..., burst=3) for 60/minute: three at once, then one per second."""

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        reg = registry()
        reg.set_default("h", "60/minute", burst=3)
        lim = reg.for_authority("h")
        t0 = loop.time()
        times = []
        for _ in range(6):
            async with lim.slot():
                times.append(round(loop.time() - t0, 6))
        return times

    assert run_virtual(main) == [0.0, 0.0, 0.0, 1.0, 2.0, 3.0]


# --- sharing -------------------------------------------------------------------------------


def test_two_remotes_on_one_host_share_one_budget() -> None:
    """Two remotes calling the same host (any URL spelling) get 10/second together."""

    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        reg = registry(limits={"api.example.com": LimitConfig(rates=("10/second",))})
        admitted: list[float] = []

        async def remote(url: str) -> None:
            for _ in range(20):
                async with reg.for_url(url).slot():
                    admitted.append(loop.time())

        t0 = loop.time()
        await asyncio.gather(
            remote("https://api.example.com/a"), remote("https://API.example.com/b?token=x")
        )
        first_second = len([t for t in admitted if t < t0 + 1.0])
        return first_second, len(admitted)

    assert run_virtual(main) == (10, 40)


def test_two_hosts_do_not_share() -> None:
    """Two authorities each get their own 10/second."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        limits = {a: LimitConfig(rates=("10/second",)) for a in ("a.example", "b.example")}
        reg = registry(limits=limits)
        admitted: list[float] = []

        async def remote(url: str) -> None:
            for _ in range(10):
                async with reg.for_url(url).slot():
                    admitted.append(loop.time())

        t0 = loop.time()
        await asyncio.gather(remote("https://a.example/x"), remote("https://b.example/x"))
        return len([t for t in admitted if t == t0])

    assert run_virtual(main) == 20


def test_shared_authorities_use_one_budget() -> None:
    """After share(), two authorities draw from one 10/second budget: 20 requests take
    two seconds of virtual time instead of one."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        reg = registry(limits={"api.example": LimitConfig(rates=("10/second",))})
        reg.share("upload.example", "api.example")

        async def remote(url: str) -> None:
            for _ in range(10):
                async with reg.for_url(url).slot():
                    pass

        t0 = loop.time()
        await asyncio.gather(remote("https://api.example/x"), remote("https://upload.example/y"))
        return loop.time() - t0

    assert run_virtual(main) >= 1.0


def test_config_overrides_provider_default() -> None:
    """The config's rate and concurrency win over set_default; other hosts keep defaults."""
    reg = LimiterRegistry(
        {"api.gyazo.com": LimitConfig(rates=("2/second",), concurrency=2)},
        defaults={"api.gyazo.com": "10/second", "api.gzssimg.com": ["60/minute"]},
    )
    reg.set_default("upload.gyazo.com", "5/second", concurrency=8)
    assert reg.for_authority("api.gyazo.com").rates == ("2/second",)
    assert reg.for_authority("api.gyazo.com").concurrency == 2
    assert reg.for_authority("api.gzssimg.com").rates == ("60/minute",)
    assert reg.for_authority("upload.gyazo.com").concurrency == 8
    assert reg.for_authority("elsewhere.example").rates == ()
    # a default declared after first use reconfigures the live limiter
    reg.set_default("elsewhere.example", "3/second")
    assert reg.for_authority("elsewhere.example").rates == ("3/second",)
    with pytest.raises(ValueError, match="bad rate"):
        reg.set_default("x.example", "fast")


# --- adaptive backoff ----------------------------------------------------------------------


def test_retry_after_is_honoured_exactly() -> None:
    """After report_throttled(7.0) the next request starts exactly 7 s later."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        lim = registry().for_authority("h")
        async with lim.slot() as slot:
            slot.throttled(7.0)
        t0 = loop.time()
        async with lim.slot():
            return loop.time() - t0

    assert pytest.approx(run_virtual(main), abs=1e-9) == 7.0


def test_penalty_doubles_then_decays_on_success() -> None:
    """Throttles without Retry-After wait 1, 2, 4, 8 s (capped); successes bring it to 0."""

    async def main() -> tuple[list[float], list[float]]:
        loop = asyncio.get_running_loop()
        lim = registry(max_penalty=8.0).for_authority("h")
        waits = []
        for _ in range(5):
            t0 = loop.time()
            async with lim.slot() as slot:
                waits.append(loop.time() - t0)
                slot.throttled(None)
        t0 = loop.time()
        async with lim.slot():
            waits.append(loop.time() - t0)
        delays = []
        for _ in range(8):
            async with lim.slot() as slot:
                slot.succeeded()
            delays.append(lim.delay)
        return waits, delays

    waits, delays = run_virtual(main)
    assert [round(w, 6) for w in waits] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert delays == [4.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.0, 0.0]


def test_one_burst_of_parallel_429s_escalates_once() -> None:
    """Four requests sent together and all throttled double the penalty once, not 4 times."""

    async def main() -> float:
        lim = registry().for_authority("h")
        slots = [await lim.acquire() for _ in range(4)]
        for s in slots:
            s.throttled(None)
            s.release()
        return lim.delay

    assert run_virtual(main) == 1.0


def test_spacing_during_recovery() -> None:
    """While a penalty is in force requests are spaced by it, not released together."""

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        lim = registry().for_authority("h")
        async with lim.slot() as slot:
            slot.throttled(None)  # penalty 1 s
        t0 = loop.time()
        times: list[float] = []

        async def one() -> None:
            async with lim.slot():
                times.append(round(loop.time() - t0, 6))

        await asyncio.gather(*(one() for _ in range(3)))
        return times

    assert run_virtual(main) == [1.0, 2.0, 3.0]


# --- pauses --------------------------------------------------------------------------------


def test_pause_refuses_at_once_and_wakes_waiters() -> None:
    """A paused host raises RemotePaused immediately, also for callers already waiting."""

    async def main() -> tuple[float, float, list[str]]:
        loop = asyncio.get_running_loop()
        lim = registry(limits={"h": LimitConfig(rates=("1/hour",))}).for_authority("h")
        async with lim.slot():
            pass
        outcomes: list[str] = []

        async def waiter() -> None:
            try:
                async with lim.slot():
                    outcomes.append("admitted")
            except RemotePaused as exc:
                outcomes.append(f"paused {exc.until}")

        t0 = loop.time()
        task = asyncio.create_task(waiter())
        await asyncio.sleep(10)  # the waiter is now blocked on the hourly window
        until = time.time() + 3600
        await lim.pause_until(until, "daily budget spent")
        await task
        waited = loop.time() - t0
        t1 = loop.time()
        with pytest.raises(RemotePaused, match="daily budget spent") as info:
            await lim.acquire()
        assert until == info.value.until
        return waited, loop.time() - t1, outcomes

    waited, second, outcomes = run_virtual(main)
    assert pytest.approx(waited) == 10.0
    assert second == 0.0
    assert len(outcomes) == 1 and outcomes[0].startswith("paused")


async def test_pause_survives_a_new_process(tmp_path: Path) -> None:
    """Registry A reports a pause, the run stores it in SQLite; registry B loads it and refuses.

    An expired pause in the same table is ignored.
    """
    db_path = tmp_path / "state.db"
    async with aiosqlite.connect(db_path) as db:
        await db.execute("CREATE TABLE host_pauses (authority TEXT PRIMARY KEY, until, reason)")
        await db.execute(
            "INSERT INTO host_pauses VALUES ('old.example', ?, 'expired')", (time.time() - 5,)
        )
        await db.commit()

        async def record(authority: str, until: float, reason: str) -> None:
            await db.execute(
                "INSERT OR REPLACE INTO host_pauses VALUES (?, ?, ?)", (authority, until, reason)
            )
            await db.commit()

        a = LimiterRegistry(on_pause=record)
        until = next_utc_midnight()
        await a.for_url("https://api.gzssimg.com/v1/upload").pause_until(until, "daily budget")

    # "new process": nothing shared but the file
    async with aiosqlite.connect(db_path) as db:
        rows = await db.execute_fetchall("SELECT authority, until, reason FROM host_pauses")
    calls: list[str] = []

    async def must_not_be_called(authority: str, until: float, reason: str) -> None:
        calls.append(authority)

    b = LimiterRegistry(on_pause=must_not_be_called)
    b.load_pauses({r[0]: (r[1], r[2]) for r in rows})
    with pytest.raises(RemotePaused) as info:
        async with b.for_url("https://API.gzssimg.com/v1/list").slot():
            pass
    assert until == info.value.until
    assert info.value.host == "api.gzssimg.com"
    assert {"api.gzssimg.com": (until, "daily budget")} == b.pauses()
    async with b.for_url("https://old.example/").slot():
        pass  # expired pause ignored
    assert calls == []


async def test_pause_shorter_than_current_is_ignored_and_expiry_lifts_it() -> None:
    """pause_until only extends; once the wall clock passes ``until`` requests flow again."""
    now = [1_000_000.0]
    reported: list[float] = []

    async def record(authority: str, until: float, reason: str) -> None:
        reported.append(until)

    lim = LimiterRegistry(wall=lambda: now[0], on_pause=record).for_authority("h")
    await lim.pause_until(now[0] + 100, "a")
    await lim.pause_until(now[0] + 50, "b")
    assert [now[0] + 100] == reported
    assert lim.pause_reason == "a"
    now[0] += 101
    assert lim.paused_until is None
    async with lim.slot():
        pass


# --- connection cap and housekeeping -------------------------------------------------------


async def test_connection_cap_holds() -> None:
    """No more than ``concurrency`` slots are ever held at once."""
    lim = LimiterRegistry({"h": LimitConfig(concurrency=3)}).for_authority("h")
    current = peak = 0

    async def one() -> None:
        nonlocal current, peak
        async with lim.slot():
            current += 1
            peak = max(peak, current)
            await asyncio.sleep(0.002)
            current -= 1

    await asyncio.gather(*(one() for _ in range(30)))
    assert peak == 3
    assert lim.statistics()["in_flight"] == 0
    assert lim.statistics()["acquired"] == 30


def test_cancelled_waiter_gives_its_connection_back() -> None:
    """A caller cancelled while waiting for the window leaves nothing held."""

    async def main() -> dict[str, Any]:
        lim = registry(limits={"h": LimitConfig(rates=("1/minute",), concurrency=1)})
        h = lim.for_authority("h")
        async with h.slot():
            pass
        task = asyncio.create_task(h.acquire())
        await asyncio.sleep(5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        slot = await h.acquire()  # the single connection is free again (waits for the window)
        slot.release()
        return h.statistics()

    stats = run_virtual(main)
    assert stats["in_flight"] == 0
    assert stats["acquired"] == 2


def test_limiter_modules_do_not_import_aiohttp() -> None:
    """ratelimit, retry and log load without the HTTP stack (local runs stay light)."""
    code = (
        "import sys, imgsync.ratelimit, imgsync.retry, imgsync.log; "
        "sys.exit('aiohttp' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_statistics_shape() -> None:
    """statistics() reports counters, the penalty and any pause, JSON-ready."""

    async def main() -> dict[str, Any]:
        lim = registry(limits={"h": LimitConfig(rates=("5/second",))}).for_authority("h")
        async with lim.slot() as slot:
            slot.throttled(2.0)
        return lim.statistics()

    stats = run_virtual(main)
    assert {"acquired": 1, "throttled": 1, "paused_until": None, "rates": ["5/second"]}.items() <= (
        stats.items()
    )
    assert pytest.approx(stats["wait"]) == 2.0


def test_a_budget_used_up_for_hours_becomes_a_recorded_pause() -> None:
    """With a daily budget spent, the next caller does not sleep until tomorrow: the host
    is paused (reported through on_pause, so it is stored) and RemotePaused is raised."""
    paused: list[tuple[str, float, str]] = []

    async def record(authority: str, until: float, reason: str) -> None:
        paused.append((authority, until, reason))

    async def main() -> None:
        reg = LimiterRegistry(
            {"api.example": LimitConfig(rates=("3/day",))},
            clock=asyncio.get_running_loop().time,
            wall=lambda: 1_000_000.0,
            on_pause=record,
        )
        limiter = reg.for_authority("api.example")
        for _ in range(3):
            async with limiter.slot():
                pass
        with pytest.raises(RemotePaused):
            async with limiter.slot():
                pass

    run_virtual(main)
    assert len(paused) == 1
    authority, until, reason = paused[0]
    assert authority == "api.example" and "3/day" in reason
    assert until == pytest.approx(1_000_000.0 + 86_400, abs=5)


def test_budget_spent_by_an_earlier_process_still_counts() -> None:
    """usage() saved at the end of one process and load_usage() in the next: the second
    process waits for the first one's requests to leave the window."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        wall_base = 2_000_000.0

        def wall() -> float:
            return wall_base + loop.time()

        limits = {"api.example": LimitConfig(rates=("3/minute",))}
        first = LimiterRegistry(limits, clock=loop.time, wall=wall)
        for _ in range(3):
            async with first.for_authority("api.example").slot():
                pass
        saved = first.usage()
        assert len(saved["api.example"]) == 3
        second = LimiterRegistry(limits, clock=loop.time, wall=wall)  # "the next process"
        second.load_usage(saved)
        t0 = loop.time()
        async with second.for_authority("api.example").slot():
            pass
        return loop.time() - t0

    assert run_virtual(main) == pytest.approx(60.0, abs=1.0)


def test_saved_usage_waits_for_the_providers_default_rate() -> None:
    """Usage loaded before a provider declares the host's rate is applied once it does."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        reg = LimiterRegistry(clock=loop.time, wall=lambda: 5_000.0 + loop.time())
        now = 5_000.0 + loop.time()
        reg.load_usage({"api.example": [now - 1, now - 1]})
        reg.for_authority("api.example")  # created before the default is known
        reg.set_default("api.example", "2/minute")
        t0 = loop.time()
        async with reg.for_authority("api.example").slot():
            pass
        return loop.time() - t0

    assert run_virtual(main) == pytest.approx(59.0, abs=1.0)


# --- [limits] read again (the daemon's SIGHUP) ------------------------------------------------


def test_new_limits_keep_what_the_limiter_has_counted() -> None:
    """reconfigure() gives a live limiter its new rate: the requests already answered in
    the window still count (no fresh burst), a pause stays, and an unchanged host is left
    as it was."""

    async def main() -> tuple[list[float], list[str], bool, bool]:
        loop = asyncio.get_running_loop()
        reg = registry(
            limits={"h": LimitConfig(rates=("2/minute",)), "other": LimitConfig(concurrency=3)}
        )
        lim, other = reg.for_authority("h"), reg.for_authority("other")
        paused = reg.for_authority("p")
        await paused.pause_for(3600, "daily budget spent")
        t0 = loop.time()
        times = []
        for _ in range(2):
            async with lim.slot():
                times.append(loop.time() - t0)
        changed = reg.reconfigure(
            {
                "h": LimitConfig(rates=("3/minute",), concurrency=2),
                "other": LimitConfig(concurrency=3),
                "p": LimitConfig(rates=("10/second",)),
            }
        )
        for _ in range(3):  # one more fits the new window now; the next waits a minute
            async with lim.slot():
                times.append(loop.time() - t0)
        same = reg.for_authority("other") is other and other.concurrency == 3
        return times, changed, same, paused.paused_until is not None

    times, changed, same, still_paused = run_virtual(main)
    assert times == pytest.approx([0.0, 0.0, 0.0, 60.0, 60.0])
    assert changed == ["h", "p"]
    assert same and still_paused


def test_breaker_settings_come_from_the_hosts_limits() -> None:
    """outage_budget and cooldown in a host's [limits] table set its breaker (others keep
    the defaults), also when changed on a live limiter."""

    async def main() -> list[tuple[float | None, float]]:
        reg = registry(limits={"slow.example": LimitConfig(outage_budget=120.0, cooldown=5.0)})
        a, b = reg.for_authority("slow.example"), reg.for_authority("fast.example")
        out = [(a.outage_budget, a.cooldown), (b.outage_budget, b.cooldown)]
        reg.reconfigure({"fast.example": LimitConfig(outage_budget=10.0)})
        out += [(a.outage_budget, a.cooldown), (b.outage_budget, b.cooldown)]
        return out

    assert run_virtual(main) == [(120.0, 5.0), (30.0, 60.0), (30.0, 60.0), (10.0, 60.0)]


async def test_a_budget_from_the_config_opens_the_breaker_when_it_says() -> None:
    """A host given outage_budget = 90 s still takes requests after 60 s of failures and
    refuses them at 90 s; its cooldown of 10 s closes the breaker again."""
    from vclock import VirtualClock

    clock = VirtualClock()
    reg = LimiterRegistry(
        {"h:1": LimitConfig(outage_budget=90.0, cooldown=10.0)},
        clock=clock.time,
        wall=clock.time,
        sleep=clock.sleep,
    )
    limiter = reg.for_authority("h:1")
    slot = await limiter.acquire()
    clock.now += 60
    assert slot.failed("refused") is False  # the built-in 30 s would have opened it
    clock.now += 30
    assert slot.failed("refused") is True
    slot.release()
    with pytest.raises(RemoteUnavailable, match="for 90 s"):
        await limiter.acquire()
    clock.now += 10
    (await limiter.acquire()).release()


def test_a_limit_can_cover_one_part_of_a_host() -> None:
    """A key ``authority/path`` gives that part of the host its own limiter (the longest
    matching prefix, whole path segments only); the rest of the host keeps its own."""
    reg = LimiterRegistry(
        {
            "h.example/api": LimitConfig(rates=("10/minute",)),
            "h.example/api/v2": LimitConfig(rates=("5/minute",)),
        }
    )
    reg.set_default("h.example:8080/api/v1", "60/minute")
    assert reg.key_of("https://h.example/api/v1/upload?x=1") == "h.example/api"
    assert reg.key_of("https://H.example/api/v2/images") == "h.example/api/v2"
    assert reg.key_of("https://h.example/api") == "h.example/api"
    assert reg.key_of("https://h.example/apix/1") == "h.example"
    assert reg.key_of("https://h.example/i/a.png") == "h.example"
    assert reg.key_of("http://h.example:8080/api/v1/images") == "h.example:8080/api/v1"
    assert reg.for_url("http://h.example:8080/api/v1/x").rates == ("60/minute",)
    assert reg.for_url("http://h.example:8080/i/x.png").rates == ()
