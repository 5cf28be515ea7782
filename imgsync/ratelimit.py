"""Per-host pacing, shared by every job and remote in the process.

One :class:`HostLimiter` exists per host *authority* -- the lowercased ``host[:port]`` as
written in the URL (``api.gzssimg.com``, ``127.0.0.1:8080``). A :class:`LimiterRegistry`
hands them out, so two jobs, or two accounts, talking to the same API host draw on one
budget, while two hosts never slow each other down. ``[limits."<authority>"]`` in the
config sets a host's rates and connection cap; a provider declares the default for its
public host with :meth:`LimiterRegistry.set_default` (the config wins).

What a request goes through
---------------------------
``async with limiter.slot() as slot:`` covers one attempt of one request:

1. **Pause.** A host paused until a wall-clock time (a spent daily budget: "until 00:00
   UTC") refuses at once with :class:`~imgsync.errors.RemotePaused`; nobody waits hours
   inside a request. Pauses are wall-clock (unix seconds) so they survive restarts: the
   run hands saved pauses to :meth:`LimiterRegistry.load_pauses` and records new ones from
   the ``on_pause`` callback. This module imports no state code.
2. **Connection cap.** An ``asyncio.Semaphore`` (default 4 per host) bounds requests in
   flight; a download holds its slot until the body is read.
3. **Rate windows.** Each configured rate (``"5/second"``, ``"12500/day"``; several at
   once) is a window of N requests per P seconds that must hold for *every* interval of
   P seconds, which is how hosts count.
4. **Adaptive penalty.** :meth:`HostLimiter.report_throttled` (a 429, Chevereto's
   "Flooding detected") holds every new request back: exactly ``Retry-After`` when the
   host said; otherwise a penalty that doubles (1 s, 2 s, 4 s ... up to ``max_penalty``)
   and also spaces the following requests that far apart. :meth:`report_success` halves
   the spacing again, down to zero, i.e. back to the configured ceiling. Throttle reports
   from requests sent before the last escalation do not escalate again, so one burst of
   parallel 429s counts as one signal, not eight doublings.

5. **Circuit breaker.** A request that gets no usable answer (no connection, a reset, a
   timeout, a 5xx) reports :meth:`Slot.failed`. From the first such failure after the
   host's last answer, the host counts as *failing*: the HTTP client keeps retrying its
   requests (an outage shorter than ``outage_budget``, 30 s by default or the host's
   ``[limits]`` ``outage_budget``, loses nothing).
   Once it has been failing that long with no answer in between, the breaker opens: every
   request to the host fails at once with :class:`~imgsync.errors.RemoteUnavailable`
   (scope "remote": the run stops work for that remote). After ``cooldown`` (60 s, or the
   host's ``[limits]`` ``cooldown``) the
   breaker closes again, so a daemon's next cycle tries the host afresh. Any answer (a
   success, a refusal, a 429) ends a failing spell.

Rate is taken *after* the connection slot, right before the request is sent, so the
recorded times match what the host sees.

Why the windows are written by hand (and what aiolimiter is used for)
---------------------------------------------------------------------
``aiolimiter.AsyncLimiter(60, 60)`` is a leaky bucket holding 60 that drains at one per
second. It lets 60 requests through at once and then one more every second, so in the
first minute a host sees up to ~119 requests: twice the "60/minute" it asked for. Shrinking
the bucket to one (even spacing every P/N) keeps the count but gives up legitimate bursts,
and it stamps a request when it is *sent*; a host stamps it when it *arrives*, and varying
latency then lets N+1 arrivals fall inside one window. AsyncLimiter also reads
``loop.time()`` (no injectable clock) and has no notion of a pause or a penalty.

So each window here is a sliding log that counts a request from the moment it is admitted
until P seconds after its **answer** arrived (:meth:`Slot.answered`; at the latest when
the slot is released). A request is admitted only while fewer than N requests are in
flight or answered within the last P seconds. Whatever instant between arrival and
answer the host uses to count a request, it lies before our answer stamp, so no P-second
interval on the host's clock can hold more than N of our requests -- whatever the
latency. The price is one latency per window turn (N/(P+latency) instead of N/P: 99.9 %
of 20/second on loopback) and N floats of memory per window (100 KB for ``12500/day``).

AsyncLimiter is used for what it does well, smoothing: with ``burst=B``
(:meth:`LimiterRegistry.set_default`), at most B requests go back to back and the rest
are spread at the tightest window's average rate, for hosts that dislike bursts even
within their budget. Without ``burst`` the full window may go at once, as the host
allows.

Costs
-----
A host with no rate, no penalty and no pause takes the fast path: one semaphore acquire
and a few attribute reads, a few microseconds per slot (``bench/bench_ratelimit.py``
measures it). Waiting callers queue FIFO on a lock; only the head of the queue sleeps,
and it wakes early when an answer frees a window place or a pause is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self
from urllib.parse import urlsplit

from imgsync.config import LimitConfig, parse_rate
from imgsync.errors import RemotePaused, RemoteUnavailable
from imgsync.log import get_logger, redact

if TYPE_CHECKING:  # imported when a burst is configured: aiolimiter's import reads
    # every installed package's metadata for its version (15-80 ms of every start-up)
    from aiolimiter import AsyncLimiter

__all__ = [
    "Gate",
    "HostLimiter",
    "LimiterRegistry",
    "OnPause",
    "Slot",
    "authority_of",
    "next_utc_midnight",
]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]
OnPause = Callable[[str, float, str], Awaitable[None]]
"""``on_pause(authority, until_unix, reason)``: record a new host pause (e.g. in state)."""


class Gate(Protocol):
    """A ledger shared with other processes (fleet mode), asked after this process's own
    windows admitted a request."""

    async def __call__(self, authority: str, windows: Sequence[tuple[int, float]]) -> float:
        """Admit one more request under ``windows`` ((count, period) each): 0.0 when
        admitted, else the seconds to wait before asking again."""

    def answered(self, authority: str) -> None:
        """One request this gate admitted got its answer (or gave up)."""


DEFAULT_CONCURRENCY = 4
OUTAGE_BUDGET = 30.0  # seconds a host may fail every request before its breaker opens
BREAKER_COOLDOWN = 60.0  # seconds an open breaker stays open
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_log = get_logger("imgsync.ratelimit")


def authority_of(url: str) -> str:
    """The limiter key of ``url``: lowercased ``host[:port]`` as written, without userinfo.

    Raises ``ValueError`` when the URL has no host.
    """
    # every request asks: a URL's ``scheme://authority`` part is looked up once (it alone
    # decides the netloc when it holds nothing urlsplit would treat specially)
    end = url.find("/", 8)
    head = url if end < 0 else url[:end]
    if head.startswith(("http://", "https://")) and not _SPECIAL.search(head):
        with contextlib.suppress(ValueError):  # raised below, naming ``url``
            return _authority_of_head(head)
    return _authority(url)


_SPECIAL = re.compile(r"[?#\s\\\x00-\x1f\x7f]")


@functools.lru_cache(maxsize=256)
def _authority_of_head(head: str) -> str:
    return _authority(head + "/")


def _authority(url: str) -> str:
    netloc = urlsplit(url).netloc.rpartition("@")[2].lower()
    if not netloc:
        raise ValueError(f"no host in URL {redact(url)!r}")
    return netloc


def next_utc_midnight(now: float | None = None) -> float:
    """Unix time of the next 00:00 UTC after ``now`` (for "daily budget spent" pauses)."""
    current = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    midnight = current.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return midnight.timestamp()


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class _Window:
    """At most ``count`` requests in any ``period`` seconds (a sliding log, see above)."""

    __slots__ = ("count", "done", "pending", "period", "text")

    def __init__(self, text: str) -> None:
        count, period = parse_rate(text)
        if count < 1:  # "1/2s" is written "0.5/second" by some: one request per 1/count periods
            period /= count
            count = 1.0
        self.text = text
        self.count = int(count)  # a fractional budget rounds down, never up
        self.period = period
        self.pending = 0  # admitted, not answered yet
        self.done: deque[float] = deque(maxlen=self.count)  # answer times, oldest first

    def wait(self, now: float) -> float:
        """Seconds until one more request fits (``inf``: until an answer arrives)."""
        done = self.done
        cutoff = now - self.period
        while done and done[0] <= cutoff:
            done.popleft()
        excess = self.pending + len(done) - self.count + 1
        if excess <= 0:
            return 0.0
        if excess > len(done):
            return math.inf
        return done[excess - 1] + self.period - now


class Slot:
    """One admitted request: a rate place plus a connection. Use ``async with``.

    Call :meth:`answered` as soon as the reply's status line arrived (the HTTP client
    does), so a long body download does not hold the rate window; release does it
    otherwise. :meth:`throttled` and :meth:`succeeded` report the outcome to the limiter,
    tagged with this request's send time.
    """

    __slots__ = ("_answered", "_limiter", "_sem", "sent_at")

    def __init__(self, limiter: HostLimiter) -> None:
        self._limiter = limiter
        self._sem: asyncio.Semaphore | None = None
        self._answered = False
        self.sent_at = 0.0

    async def __aenter__(self) -> Self:
        self._sem, self.sent_at = await self._limiter._acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def answered(self) -> None:
        """The host has seen the request: start its window countdown now. Idempotent."""
        if not self._answered and self._sem is not None:
            self._answered = True
            self._limiter._answered()

    def release(self) -> None:
        """Give the connection back (and stamp the answer if not done). Idempotent."""
        sem, self._sem = self._sem, None
        if sem is not None:
            if not self._answered:
                self._answered = True
                self._limiter._answered()
            self._limiter._in_flight -= 1
            sem.release()

    def throttled(self, retry_after: float | None = None) -> None:
        """The host said "too fast" to this request (see :meth:`HostLimiter.report_throttled`)."""
        self._limiter.report_throttled(retry_after, sent_at=self.sent_at)

    def failed(self, reason: str) -> bool:
        """This request got no usable answer (see :meth:`HostLimiter.report_failure`);
        True when the host's breaker is open."""
        return self._limiter.report_failure(self.sent_at, reason)

    def succeeded(self) -> None:
        """The host answered normally (see :meth:`HostLimiter.report_success`)."""
        self._limiter.report_success()


class HostLimiter:
    """Rate windows + connection cap + adaptive penalty + pause for one authority.

    Normally obtained from :class:`LimiterRegistry`. ``rates`` are strings such as
    ``"60/minute"``; none means no rate limit (the connection cap still applies).
    ``clock`` (monotonic) paces; ``wall`` (unix time) dates pauses; ``sleep`` waits.
    """

    def __init__(
        self,
        authority: str,
        rates: Sequence[str] = (),
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        burst: int | None = None,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        min_penalty: float = 1.0,
        max_penalty: float = 300.0,
        on_pause: OnPause | None = None,
        max_wait: float = 600.0,
        outage_budget: float | None = OUTAGE_BUDGET,
        cooldown: float = BREAKER_COOLDOWN,
        gate: Gate | None = None,
    ) -> None:
        if not 0 < min_penalty <= max_penalty:
            raise ValueError("need 0 < min_penalty <= max_penalty")
        self.authority = authority
        self.max_wait = max_wait
        self.outage_budget = outage_budget
        self.cooldown = cooldown
        self._last_answer = -math.inf  # monotonic time of the host's last usable answer
        self._failing_since: float | None = None
        self._opened_at: float | None = None  # the breaker: open since (monotonic)
        self._open_reason = ""
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._min_penalty = min_penalty
        self._max_penalty = max_penalty
        self._on_pause = on_pause
        self._gate = gate
        self._turnstile = asyncio.Lock()
        self._changed = asyncio.Event()
        self._sem = asyncio.Semaphore(1)
        self._concurrency = 1
        self._rates: tuple[str, ...] = ()
        self._burst: int | None = None
        self._windows: tuple[_Window, ...] = ()
        self._smoother: AsyncLimiter | None = None
        self._gated = False
        self._gate_pending = 0  # admitted by the gate, answer not reported to it yet
        self._delay = 0.0  # penalty spacing between request starts; 0 = none
        self._not_before = -math.inf  # monotonic time before which nothing starts
        self._escalated_at = -math.inf
        self._last_start = -math.inf
        self._paused_until: float | None = None
        self._pause_reason = ""
        self._acquired = 0
        self._throttled = 0
        self._in_flight = 0
        self.configure(rates, concurrency=concurrency, burst=burst)

    def __repr__(self) -> str:
        rates = ", ".join(self._rates) or "unlimited"
        return f"<HostLimiter {self.authority} {rates}, {self._concurrency} connections>"

    # --- configuration -------------------------------------------------------------------

    def configure(
        self, rates: Sequence[str], *, concurrency: int | None = None, burst: int | None = None
    ) -> None:
        """Set the rates, connection cap and burst (raises ``ValueError`` on a bad rate).

        Safe while requests are in flight: new windows start from the history of the
        longest old window, and slots already taken are returned to the cap they came from.
        """
        windows = tuple(_Window(r) for r in rates)
        if burst is not None and burst < 1:
            raise ValueError("burst must be at least 1")
        old = max(self._windows, key=lambda w: w.period, default=None)
        if old is not None:
            for w in windows:
                w.pending = old.pending
                w.done.extend(old.done)
        self._rates = tuple(rates)
        self._windows = windows
        self._burst = burst
        self._smoother = None
        if burst is not None and windows:
            from aiolimiter import AsyncLimiter

            tight = min(windows, key=lambda w: w.count / w.period)
            self._smoother = AsyncLimiter(burst, burst * tight.period / tight.count)
        self._gated = bool(windows)
        if concurrency is not None and concurrency != self._concurrency:
            if concurrency < 1:
                raise ValueError("concurrency must be at least 1")
            self._concurrency = concurrency
            self._sem = asyncio.Semaphore(concurrency)
        self._changed.set()

    @property
    def rates(self) -> tuple[str, ...]:
        """The rate strings in force (empty: unlimited)."""
        return self._rates

    @property
    def concurrency(self) -> int:
        """The connection cap."""
        return self._concurrency

    # --- taking a slot -------------------------------------------------------------------

    def slot(self) -> Slot:
        """``async with limiter.slot() as slot:`` -- one attempt of one request.

        Waits for a connection, then for the rate windows and any penalty. Raises
        :class:`~imgsync.errors.RemotePaused` at once while the host is paused (also when a
        pause is set while waiting).
        """
        return Slot(self)

    async def acquire(self) -> Slot:
        """Like :meth:`slot` but already entered; call ``slot.release()`` when done."""
        return await Slot(self).__aenter__()

    async def _acquire(self) -> tuple[asyncio.Semaphore, float]:
        if self._opened_at is not None:
            self._check_breaker()
        if self._paused_until is not None:
            self._check_pause()
        sem = self._sem
        await sem.acquire()
        try:
            now = self._clock()
            if self._gated or self._delay or self._not_before > now or self._paused_until:
                now = await self._wait_turn()
            else:
                self._last_start = now
        except BaseException:
            sem.release()
            raise
        self._acquired += 1
        self._in_flight += 1
        return sem, now

    async def _wait_turn(self) -> float:
        async with self._turnstile:
            self._check_pause()
            if self._smoother is not None:
                await self._smoother.acquire()
                self._check_pause()
            now = self._clock()
            while (wait := self._wait_time(now)) > 0:
                self._check_breaker()
                if wait > self.max_wait and not math.isinf(wait):
                    # a budget used up for hours (12500/day): pause the host, recorded in
                    # state, instead of a run that sits silent until tomorrow
                    limits = ", ".join(self._rates)
                    await self.pause_for(wait, f"imgsync's own limit ({limits}) is used up")
                    self._check_pause()
                await self._nap(wait)
                self._check_pause()
                now = self._clock()
            if self._gate is not None and self._windows:
                # fleet mode: the other workers' requests count against the same windows
                spec = [(w.count, w.period) for w in self._windows]
                while (wait := await self._gate(self.authority, spec)) > 0:
                    await self._sleep(wait)
                    self._check_pause()
                self._gate_pending += 1
                now = self._clock()
            self._last_start = now
            for w in self._windows:
                w.pending += 1
            return now

    def _wait_time(self, now: float) -> float:
        self._changed.clear()
        wait = self._not_before - now
        if self._delay:
            wait = max(wait, self._last_start + self._delay - now)
        for w in self._windows:
            wait = max(wait, w.wait(now))
        return wait

    async def _nap(self, wait: float) -> None:
        """Sleep ``wait`` seconds, or until an answer, a pause or a new configuration."""
        if math.isinf(wait):
            await self._changed.wait()
            return
        changed = asyncio.ensure_future(self._changed.wait())
        sleeper = asyncio.ensure_future(self._sleep(wait))
        try:
            await asyncio.wait((changed, sleeper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            sleeper.cancel()

    def _answered(self) -> None:
        if self._gate_pending and self._gate is not None:
            self._gate_pending -= 1
            self._gate.answered(self.authority)
        if self._windows:
            now = self._clock()
            for w in self._windows:
                if w.pending:
                    w.pending -= 1
                w.done.append(now)
            self._changed.set()

    # --- feedback ------------------------------------------------------------------------

    def report_throttled(
        self, retry_after: float | None = None, *, sent_at: float | None = None
    ) -> None:
        """The host said "too fast". Hold new requests back.

        With ``retry_after`` (seconds) nothing starts before exactly that long from now.
        Without it the penalty doubles (``min_penalty`` first, at most ``max_penalty``),
        unless the request was sent no later than the last escalation (``sent_at``, monotonic) or,
        when ``sent_at`` is unknown, while a penalty is still running.
        """
        now = self._clock()
        self._throttled += 1
        self._answer(now)
        if retry_after is not None:
            self._not_before = max(self._not_before, now + max(0.0, retry_after))
            return
        stale = (sent_at <= self._escalated_at) if sent_at is not None else now < self._not_before
        if stale:
            return
        self._delay = min(self._max_penalty, max(self._min_penalty, self._delay * 2))
        self._escalated_at = now
        self._not_before = max(self._not_before, now + self._delay)

    def report_success(self) -> None:
        """The host answered normally: halve the penalty spacing, to zero eventually."""
        self._answer(self._clock())
        if self._delay:
            self._delay = self._delay / 2 if self._delay > self._min_penalty / 8 else 0.0

    # --- outages (the circuit breaker) ---------------------------------------------------

    def _answer(self, now: float) -> None:
        self._last_answer = now
        self._failing_since = None

    def report_failure(self, sent_at: float, reason: str) -> bool:
        """A request sent at ``sent_at`` (monotonic) got no usable answer: no connection,
        a reset, a timeout, a 5xx. Returns True when the breaker is (now) open.

        The host counts as failing from the later of ``sent_at`` and its last answer; once
        that has lasted ``outage_budget`` seconds, the breaker opens.
        """
        now = self._clock()
        if self._opened_at is not None:
            return True
        if self.outage_budget is None:  # no breaker: requests are bounded by attempts alone
            return False
        if self._failing_since is None:
            self._failing_since = min(now, max(sent_at, self._last_answer))
        if now - self._failing_since >= self.outage_budget:
            self._opened_at = now
            self._open_reason = reason
            _log.warning(
                "host_unavailable",
                host=self.authority,
                failing_for=round(now - self._failing_since, 1),
                reason=redact(reason),
            )
            self._changed.set()
            return True
        return False

    @property
    def failing(self) -> bool:
        """The host has failed requests since its last answer (an outage may be under way),
        and its breaker is not open: requests to it are worth retrying."""
        return self._failing_since is not None and self._opened_at is None

    @property
    def failing_for(self) -> float:
        """Seconds the host has been failing every request (0 when it answers)."""
        since = self._failing_since
        return 0.0 if since is None else max(0.0, self._clock() - since)

    @property
    def breaker_open(self) -> bool:
        """Whether requests to the host fail at once (closes again after ``cooldown``)."""
        if self._opened_at is not None and self._clock() - self._opened_at >= self.cooldown:
            self._opened_at = None
            self._failing_since = None
        return self._opened_at is not None

    def _check_breaker(self) -> None:
        if self.breaker_open:
            raise RemoteUnavailable(
                f"{self.authority} failed every request for {self.outage_budget or 0:g} s "
                f"({self._open_reason}); stopped sending to it",
                host=self.authority,
            )

    @property
    def delay(self) -> float:
        """The current penalty spacing in seconds (0 when the host is healthy)."""
        return self._delay

    # --- pauses --------------------------------------------------------------------------

    @property
    def paused_until(self) -> float | None:
        """Unix time the host is paused until, or ``None``."""
        until = self._paused_until
        if until is not None and until <= self._wall():
            self._paused_until = until = None
        return until

    @property
    def pause_reason(self) -> str:
        """Why the host is paused ("" when it is not)."""
        return self._pause_reason if self.paused_until is not None else ""

    async def pause_until(self, until: float, reason: str) -> None:
        """Pause the host until ``until`` (unix seconds); report it through ``on_pause``.

        A pause shorter than one already in force changes nothing. Waiting callers wake
        and raise ``RemotePaused``.
        """
        if until <= self._wall() or (self.paused_until or -math.inf) >= until:
            return
        self.restore_pause(until, reason)
        _log.warning("host_paused", host=self.authority, until=_utc(until), reason=redact(reason))
        if self._on_pause is not None:
            await self._on_pause(self.authority, until, reason)

    async def pause_for(self, seconds: float, reason: str) -> float:
        """:meth:`pause_until` ``now + seconds``; returns the unix end time."""
        until = self._wall() + seconds
        await self.pause_until(until, reason)
        return until

    def usage(self) -> list[float]:
        """Unix times of the answers the longest window still counts: what a next process
        must know so that two runs in a row do not each spend the whole budget."""
        if not self._windows:
            return []
        window = max(self._windows, key=lambda w: w.period)
        now = self._clock()
        offset = self._wall() - now
        return [t + offset for t in window.done if t > now - window.period]

    def restore_usage(self, times: Iterable[float]) -> None:
        """Count answers a previous process saw (unix times) against this host's windows."""
        now = self._clock()
        offset = self._wall() - now
        mono = sorted(t - offset for t in times)
        for w in self._windows:
            for t in mono:
                if now - w.period < t <= now:
                    w.done.append(t)
        self._changed.set()

    def restore_pause(self, until: float, reason: str) -> None:
        """Set a pause without reporting it (it came from saved state)."""
        if until > self._wall():
            self._paused_until = until
            self._pause_reason = reason
            self._changed.set()

    def _check_pause(self) -> None:
        until = self.paused_until
        if until is not None:
            raise RemotePaused(
                f"{self.authority} is paused until {_utc(until)}: {self._pause_reason}",
                until=until,
                host=self.authority,
            )

    # --- introspection -------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """Counters and state, JSON-ready."""
        wait = max(0.0, self._not_before - self._clock())
        return {
            "authority": self.authority,
            "rates": list(self._rates),
            "concurrency": self._concurrency,
            "acquired": self._acquired,
            "throttled": self._throttled,
            "in_flight": self._in_flight,
            "delay": self._delay,
            "wait": wait,
            "paused_until": self.paused_until,
            "failing_for": round(self.failing_for, 3),
            "breaker_open": self.breaker_open,
        }


class LimiterRegistry:
    """One :class:`HostLimiter` per authority for the whole process.

    ``limits`` is the config's ``[limits."<authority>"]`` tables; ``defaults`` maps public
    authorities to provider-declared rates (a string or a list of them). The config wins:
    its rates replace the default's when it sets any, and its ``concurrency`` the default
    cap (``concurrency``, 4). ``on_pause`` is called for every new pause, so the caller can
    persist it; saved pauses come back through :meth:`load_pauses`.
    """

    def __init__(
        self,
        limits: Mapping[str, LimitConfig] = _EMPTY,
        *,
        defaults: Mapping[str, str | Sequence[str]] = _EMPTY,
        concurrency: int = DEFAULT_CONCURRENCY,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        on_pause: OnPause | None = None,
        min_penalty: float = 1.0,
        max_penalty: float = 300.0,
        outage_budget: float | None = OUTAGE_BUDGET,
        cooldown: float = BREAKER_COOLDOWN,
        gate: Gate | None = None,
    ) -> None:
        self._gate = gate
        self._limits = {k.lower(): v for k, v in limits.items()}
        self._outage_budget = outage_budget
        self._cooldown = cooldown
        self._scopes: dict[str, list[str]] = {}  # authority -> path prefixes, longest first
        for key in self._limits:
            self._scope(key)
        for key, lim in self._limits.items():
            for r in lim.rates:
                parse_rate(r)  # fail early on a bad rate, naming it
            if lim.concurrency is not None and lim.concurrency < 1:
                raise ValueError(f"limits.{key}: concurrency must be at least 1")
        self._defaults: dict[str, tuple[tuple[str, ...], int | None, int | None]] = {}
        self._concurrency = concurrency
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._on_pause = on_pause
        self._min_penalty = min_penalty
        self._max_penalty = max_penalty
        self._limiters: dict[str, HostLimiter] = {}
        self._shared: dict[str, str] = {}  # authority -> the authority whose budget it uses
        self._usage: dict[str, list[float]] = {}  # saved usage not yet applied
        for authority, rates in defaults.items():
            self.set_default(authority, rates)

    @property
    def gate(self) -> Gate | None:
        """The ledger shared with other processes (fleet mode), if any."""
        return self._gate

    def for_authority(self, authority: str) -> HostLimiter:
        """The limiter for ``authority`` (``host[:port]``, any case), created on first use."""
        key = authority.lower()
        key = self._shared.get(key, key)
        limiter = self._limiters.get(key)
        if limiter is None:
            rates, concurrency, burst = self._settings(key)
            budget, cooldown = self._breaker(key)
            limiter = HostLimiter(
                key,
                rates,
                concurrency=concurrency,
                burst=burst,
                clock=self._clock,
                wall=self._wall,
                sleep=self._sleep,
                min_penalty=self._min_penalty,
                max_penalty=self._max_penalty,
                on_pause=self._on_pause,
                outage_budget=budget,
                cooldown=cooldown,
                gate=self._gate,
            )
            self._limiters[key] = limiter
            self._apply_usage(key)
        return limiter

    def reconfigure(self, limits: Mapping[str, LimitConfig]) -> list[str]:
        """Take new ``[limits]`` tables (the daemon's SIGHUP): every live limiter gets its
        new rates, cap and breaker settings in place, keeping what it has counted (its
        windows' history, pauses, penalty). Returns the authorities whose settings changed.
        Raises ``ValueError`` on a bad rate, changing nothing."""
        new = {k.lower(): v for k, v in limits.items()}
        for key, lim in new.items():
            for r in lim.rates:
                parse_rate(r)
            if lim.concurrency is not None and lim.concurrency < 1:
                raise ValueError(f"limits.{key}: concurrency must be at least 1")
        changed = sorted(k for k in {*new, *self._limits} if new.get(k) != self._limits.get(k))
        self._limits = new
        for key in new:
            self._scope(key)
        for key, limiter in self._limiters.items():
            rates, concurrency, burst = self._settings(key)
            if (rates, concurrency) != (limiter.rates, limiter.concurrency):
                limiter.configure(rates, concurrency=concurrency, burst=burst)
                self._apply_usage(key)
            limiter.outage_budget, limiter.cooldown = self._breaker(key)
        return changed

    def for_url(self, url: str) -> HostLimiter:
        """The limiter for ``url``: its authority's, or a path scope's (:meth:`key_of`)."""
        return self.for_authority(self.key_of(url))

    def key_of(self, url: str) -> str:
        """The limiter key of ``url``: its authority, or ``authority/path`` when a limit
        is set for that part of the host (``img.example.org/api/v1``: a host whose API is
        throttled but whose files are not). The longest matching path wins."""
        authority = authority_of(url)
        scopes = self._scopes.get(authority)
        if scopes:
            path = urlsplit(url).path
            for prefix in scopes:
                if path == prefix or path.startswith(prefix + "/"):
                    if authority in self._limits and authority + prefix not in self._limits:
                        break  # a provider's default scope: the config's whole-host limit wins
                    return authority + prefix
        return authority

    def _scope(self, key: str) -> None:
        """Note ``key`` as a path scope when it is ``authority/path``."""
        authority, slash, path = key.partition("/")
        if slash and path.strip("/"):
            prefix = "/" + path.strip("/")
            scopes = self._scopes.setdefault(authority, [])
            if prefix not in scopes:
                scopes.append(prefix)
                scopes.sort(key=len, reverse=True)

    def set_default(
        self,
        authority: str,
        rates: str | Sequence[str],
        *,
        concurrency: int | None = None,
        burst: int | None = None,
    ) -> None:
        """Declare a host's default rates (a provider, for its public host).

        Call before first use; a limiter already created is reconfigured. The config's
        ``[limits]`` still win. Raises ``ValueError`` on a bad rate string.
        """
        key = authority.lower()
        rate_tuple = (rates,) if isinstance(rates, str) else tuple(rates)
        for r in rate_tuple:
            parse_rate(r)
        self._defaults[key] = (rate_tuple, concurrency, burst)
        self._scope(key)
        limiter = self._limiters.get(key)
        if limiter is not None:
            new_rates, new_conc, new_burst = self._settings(key)
            limiter.configure(new_rates, concurrency=new_conc, burst=new_burst)
            self._apply_usage(key)

    def share(self, authority: str, with_authority: str) -> None:
        """Make ``authority`` use ``with_authority``'s limiter: one budget for two hosts that
        count requests together (Gyazo's API and upload hosts share one daily budget)."""
        self._shared[authority.lower()] = with_authority.lower()

    def _settings(self, key: str) -> tuple[tuple[str, ...], int, int | None]:
        cfg = self._limits.get(key)
        rates, concurrency, burst = self._defaults.get(key, ((), None, None))
        if cfg is not None and (cfg.rates or cfg.unlimited):
            rates = cfg.rates
        if cfg is not None and cfg.concurrency is not None:
            concurrency = cfg.concurrency
        return rates, concurrency or self._concurrency, burst

    def _breaker(self, key: str) -> tuple[float | None, float]:
        """The outage budget and cooldown of ``key``: the config's, else the registry's."""
        cfg = self._limits.get(key)
        budget = self._outage_budget
        if cfg is not None and cfg.outage_budget is not None and budget is not None:
            budget = cfg.outage_budget  # a registry without a breaker (tests) stays without
        cooldown = self._cooldown
        if cfg is not None and cfg.cooldown is not None:
            cooldown = cfg.cooldown
        return budget, cooldown

    def load_pauses(self, pauses: Mapping[str, tuple[float, str]]) -> None:
        """Restore saved pauses (``authority -> (until_unix, reason)``); expired ones are
        ignored and none is reported to ``on_pause`` again."""
        now = self._wall()
        for authority, (until, reason) in pauses.items():
            if until > now:
                self.for_authority(authority).restore_pause(until, reason)

    def load_usage(self, usage: Mapping[str, Sequence[float]]) -> None:
        """Saved answer times per authority (from :meth:`usage` of an earlier process).

        Applied when the host's limiter exists with its rates (a provider may declare them
        later), so the budget a previous run spent still counts.
        """
        for authority, times in usage.items():
            self._usage[authority.lower()] = list(times)
            if authority.lower() in self._limiters:
                self._apply_usage(authority.lower())

    def usage(self) -> dict[str, list[float]]:
        """Answer times still counted, per authority, to save for the next process."""
        out = {key: lim.usage() for key, lim in self._limiters.items()}
        return {key: times for key, times in out.items() if times}

    def _apply_usage(self, key: str) -> None:
        limiter = self._limiters.get(key)
        if limiter is not None and limiter.rates and key in self._usage:
            limiter.restore_usage(self._usage.pop(key))

    def pauses(self) -> dict[str, tuple[float, str]]:
        """Pauses in force now: ``authority -> (until_unix, reason)``."""
        out: dict[str, tuple[float, str]] = {}
        for key, limiter in self._limiters.items():
            until = limiter.paused_until
            if until is not None:
                out[key] = (until, limiter.pause_reason)
        return out

    def statistics(self) -> dict[str, dict[str, Any]]:
        """:meth:`HostLimiter.statistics` of every limiter created so far."""
        return {key: lim.statistics() for key, lim in sorted(self._limiters.items())}

    def held_back(self) -> str:
        """Hosts being held back now, for a progress line: ``host paused 4:59`` (a pause)
        or ``host slowed 2.0s`` (penalty spacing after throttles); "" when none."""
        notes = []
        for key, limiter in sorted(self._limiters.items()):
            until = limiter.paused_until
            if until is not None:
                left = max(0, int(until - self._wall()))
                notes.append(f"{key} paused {left // 60}:{left % 60:02d}")
            elif limiter.delay > 0:
                notes.append(f"{key} slowed {limiter.delay:.1f}s")
        return ", ".join(notes)
