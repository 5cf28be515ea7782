"""A one-line progress display for a TTY: counts, bytes and rate, redrawn at most 8x/s."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@dataclass
class Progress:
    """Counters the pipeline bumps; ``render`` draws them when enabled."""

    enabled: bool = False
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    total: int = 0
    done: int = 0
    copied: int = 0
    failed: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    _last: float = 0.0

    def tick(self, *, done: int = 0, copied: int = 0, failed: int = 0, nbytes: int = 0) -> None:
        self.done += done
        self.copied += copied
        self.failed += failed
        self.bytes += nbytes
        if self.enabled:
            now = time.monotonic()
            if now - self._last >= 0.125:
                self._last = now
                self.render()

    def render(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        total = f"/{self.total}" if self.total else ""
        line = (
            f"\r{self.done}{total} checked, {self.copied} copied, {self.failed} failed, "
            f"{human_bytes(self.bytes)} at {human_bytes(self.bytes / elapsed)}/s"
        )
        self.stream.write(line.ljust(78))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.render()
            self.stream.write("\n")
            self.stream.flush()
