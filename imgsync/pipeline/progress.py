"""A one-line progress display for a TTY, redrawn at most 8x/s: done/total with %, items,
bytes and rate, elapsed time, ETA, the current item and any throttled host.

Log lines go *above* it: :meth:`Progress.log_stream` wraps the terminal stream so that a
complete log line first clears the progress line, is written, and the progress line is
drawn again below it. Plain ANSI (``\\r`` and erase-line); nothing is imported that the
no-op path would pay for.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO

_ERASE = "\r\x1b[K"  # back to the line start, erase to its end


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def clock_text(seconds: float) -> str:
    """``75`` -> ``1:15``; ``3725`` -> ``1:02:05``."""
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


@dataclass
class Progress:
    """Counters the pipeline bumps; ``render`` draws them when enabled.

    ``total`` is set once the run knows how many items there are (a folder source's scan);
    the first tick after that (the items already there) is the ETA's starting mark, so
    instant skips do not make the estimate optimistic. ``current`` is the item being
    transferred (shown with how long it has been, once that is a few seconds: a 300 MB
    upload shows its clock moving); ``throttle`` (optional) names hosts being held back;
    ``fleet`` (fleet mode) what all the workers of the job have done together.
    :meth:`redraw` draws the line every ``redraw_every`` seconds while the run lasts, so
    it moves between items too.
    """

    enabled: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    total: int = 0
    done: int = 0
    copied: int = 0
    failed: int = 0
    bytes: int = 0
    current: str = ""
    throttle: Callable[[], str] | None = None
    fleet: Callable[[], str] | None = None  # fleet mode: the whole fleet's totals
    clock: Callable[[], float] = time.monotonic
    width: int = 0  # columns; 0: the terminal's
    started: float = -1.0
    redraw_every: float = 0.5
    sleep: Callable[[float], Awaitable[object]] | None = None  # None: asyncio.sleep
    _last: float = -1.0
    _item: tuple[str, float] = ("", 0.0)  # the current item as last drawn, and since when
    _sent_for: str = ""  # the item whose bytes are counted ...
    _sent_how: str = "sent"  # ... whether they are "sent" or "received" ...
    _sent_bytes: int = 0  # ... and how many so far
    _mark: tuple[float, int] | None = None
    _shown: bool = False

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    def tick(self, *, done: int = 0, copied: int = 0, failed: int = 0, nbytes: int = 0) -> None:
        self.done += done
        self.copied += copied
        self.failed += failed
        self.bytes += nbytes
        now = self.clock()
        if self._mark is None and self.total:
            self._mark = (now, self.done)
        if self.enabled and (self._last < 0 or now - self._last >= 0.125):
            self._last = now
            self.render()

    def eta(self, now: float) -> float | None:
        """Seconds left at the pace since the mark; None while it cannot be told."""
        if self._mark is None or not self.total:
            return None
        t0, d0 = self._mark
        worked = self.done - d0
        if worked <= 0 or now <= t0:
            return None
        return max(0, self.total - self.done) * (now - t0) / worked

    def text(self) -> str:
        """The progress line (no control characters)."""
        now = self.clock()
        elapsed = max(now - self.started, 1e-6)
        parts = []
        if self.total:
            pct = min(100, 100 * self.done // self.total)
            parts.append(f"{pct:3d}% {self.done}/{self.total}")
        else:
            parts.append(f"{self.done} checked")
        parts.append(f"{self.copied} copied, {self.failed} failed")
        parts.append(f"{human_bytes(self.bytes)} at {human_bytes(self.bytes / elapsed)}/s")
        left = self.eta(now)
        timing = f"elapsed {clock_text(elapsed)}"
        if left is not None:
            timing += f", ETA {clock_text(left)}"
        parts.append(timing)
        line = ", ".join(parts)
        held = self.throttle() if self.throttle is not None else ""
        if held:
            line += f" | {held}"
        together = self.fleet() if self.fleet is not None else ""
        if together:
            line += f" | {together}"
        if self.current:  # a name's control characters must not steer the terminal
            if self._item[0] != self.current:
                self._item = (self.current, now)
            line += " | " + "".join(ch if ch.isprintable() else "?" for ch in self.current)
            sent = self._sent_bytes if self._sent_for == self.current else 0
            if sent:
                line += f" {human_bytes(sent)} {self._sent_how}"
            if now - self._item[1] >= 2:
                line += f" ({clock_text(now - self._item[1])})"
        return line

    def sent(self, item: str, nbytes: int) -> None:
        """``nbytes`` more of ``item``'s upload were read to be sent (from a worker thread:
        it only counts; the next drawing shows it). Kept for the item being shown."""
        self._count(item, nbytes, "sent")

    def received(self, item: str, nbytes: int) -> None:
        """``nbytes`` more of ``item``'s download arrived."""
        self._count(item, nbytes, "received")

    def _count(self, item: str, nbytes: int, how: str) -> None:
        if item != self.current:  # several in flight: the one shown is counted
            return
        if (self._sent_for, self._sent_how) != (item, how):  # plain attributes: nothing to
            self._sent_for, self._sent_how, self._sent_bytes = item, how, 0  # iterate
        self._sent_bytes += nbytes

    async def redraw(self) -> None:
        """Draw the line every ``redraw_every`` seconds until cancelled (the run's end)."""
        if self.sleep is None:
            import asyncio  # here: the no-op path never draws and never pays for it

            self.sleep = asyncio.sleep
        while self.enabled:
            await self.sleep(self.redraw_every)
            if self.enabled:
                self._last = self.clock()
                try:
                    self.render()
                except (OSError, ValueError):  # the terminal went away: stop drawing
                    return

    def render(self) -> None:
        width = self.width
        if not width:  # the terminal's (it may be resized while the line is drawn)
            import shutil  # (only a drawn line needs it: not a no-op re-run's start-up)

            width = shutil.get_terminal_size().columns
        line = self.text()
        if len(line) > width - 1:
            line = line[: max(0, width - 2)] + "…"
        self.stream.write(_ERASE + line)
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        """Erase the progress line (before something else is written there)."""
        if self._shown:
            self.stream.write(_ERASE)
            self._shown = False

    def close(self) -> None:
        if self.enabled:
            self.current = ""
            self.render()
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
            self.enabled = False

    def log_stream(self) -> _AboveProgress:
        """A stream for log lines that puts each one above the progress line."""
        return _AboveProgress(self)


class _AboveProgress:
    """A text stream: complete lines are written above the progress line, which is then
    drawn again; partial writes wait for their newline."""

    def __init__(self, progress: Progress) -> None:
        self._p = progress
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            lines, _, self._pending = self._pending.rpartition("\n")
            p = self._p
            if p.enabled:
                p.clear()
            p.stream.write(lines + "\n")
            if p.enabled:
                p.render()
            else:
                p.stream.flush()
        return len(text)

    def flush(self) -> None:
        self._p.stream.flush()

    def isatty(self) -> bool:
        return self._p.stream.isatty()

    def fileno(self) -> int:
        return self._p.stream.fileno()
