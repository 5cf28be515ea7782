"""What a watch job hands to a run, and when: complete files only, on a clock tests drive.

Screenshot tools, cameras, browsers and sync clients write a file over seconds, often
under a temporary or hidden name first. A watched folder therefore sends a file only
when:

* its name is not ignored (``[daemon] ignore``: hidden ``.*`` names, ``~*``/``*~``,
  ``*.tmp``, ``*.part``, ``*.crdownload`` ... by default), and
* it has been quiet for ``debounce`` seconds: its mtime is at least that old, or its
  size, mtime and inode have not changed between two looks at least that far apart (the
  second rule covers mtimes from another machine's clock), and
* no process has it open for writing, where that can be known (Linux ``/proc``, for the
  processes this user may inspect).

A file moved into the folder keeps its old mtime, so it is sent at once. A file still
being written is *deferred*: the run leaves it alone and the job runs again when it
would be quiet. Time comes from a :class:`Clock`, so tests drive it without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from imgsync.localfs import ScanEntry
    from imgsync.pipeline.plan import LocalPlan


class Clock(Protocol):
    """Monotonic time for waiting, wall time for comparing with file mtimes."""

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        """Wait until ``event`` is set or ``seconds`` pass; True if it is set."""
        ...


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def wait(self, event: asyncio.Event, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=max(0.0, seconds))
        return event.is_set()


def ignored(rel: str, patterns: Iterable[str]) -> bool:
    """True when a name on a path relative to the watched folder matches one of the ignore
    globs: the file's own name, or a folder it is in (``.stversions/``, ``.cache/``)."""
    patterns = tuple(patterns)
    return any(
        fnmatch.fnmatchcase(part, pat)
        for part in rel.replace(os.sep, "/").split("/")
        if part and part != "."
        for pat in patterns
    )


def backoff(attempt: int, first: float, cap: float) -> float:
    """The wait before retry number ``attempt`` (0-based): first, 2x, 4x ... up to cap."""
    return min(cap, first * 2.0 ** min(attempt, 30))


def open_for_writing(paths: Iterable[str]) -> set[str] | None:
    """Which of ``paths`` (absolute) some process has open for writing, as far as this
    user can see in ``/proc``; None where that cannot be known (not Linux)."""
    if not os.path.isdir("/proc/self/fd"):
        return None
    wanted = {os.path.realpath(p) for p in paths}
    if not wanted:
        return set()
    found: set[str] = set()
    me = os.getpid()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target not in wanted:
                continue
            flags = 0
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as fh:
                    for line in fh:
                        if line.startswith("flags:"):
                            flags = int(line.split()[1], 8)  # octal open(2) flags
                            break
            except (OSError, ValueError, IndexError):
                continue
            if flags & (os.O_WRONLY | os.O_RDWR):
                found.add(target)
    return found


@dataclass
class Settler:
    """Keeps what a watch job has seen of files not yet sent, and decides which are ready."""

    clock: Clock
    debounce: float
    ignore: tuple[str, ...] = ()
    check_writers: bool = True
    # rel -> (size, mtime_ns, inode, monotonic time of the first look with these values)
    seen: dict[str, tuple[int, int, int, float]] = field(default_factory=dict)
    deferred: int = 0  # files held back in the current (or last) run
    due: float | None = None  # monotonic time when the first held-back file may be ready
    _held: set[str] = field(default_factory=set)
    _now: tuple[float, float] = (0.0, 0.0)

    def begin(self) -> None:
        """Start a run: every destination of it gets the same decisions (one time for the
        whole run); looks at files not held back by the last run are forgotten."""
        self._now = (self.clock.monotonic(), self.clock.time())
        for rel in list(self.seen):
            if rel not in self._held:
                del self.seen[rel]
        self._held, self.deferred, self.due = set(), 0, None

    def admit(self, plan: LocalPlan) -> LocalPlan:
        """Drop ignored and unsettled files from ``plan`` (in place), as of :meth:`begin`.

        When a file is held back, the plan's fingerprint is cleared so the run does not
        record the folder as done (the file would then never be sent)."""
        now, wall = self._now
        held: list[str] = []
        due: float | None = self.due

        def ready(e: ScanEntry) -> bool:
            nonlocal due
            if ignored(e.rel, self.ignore):
                return False
            age = wall - e.mtime_ns / 1e9
            look = self.seen.get(e.rel)
            if look is None or look[:3] != (e.size, e.mtime_ns, e.inode):
                look = (e.size, e.mtime_ns, e.inode, now)
                self.seen[e.rel] = look
            quiet = now - look[3]
            if 0 <= age < self.debounce and quiet < self.debounce:
                held.append(e.rel)
                wake = now + self.debounce - max(age, quiet)
                due = wake if due is None else min(due, wake)
                return False
            if age < 0 and quiet < self.debounce:  # an mtime in the future: trust looks only
                held.append(e.rel)
                wake = look[3] + self.debounce
                due = wake if due is None else min(due, wake)
                return False
            return True

        hashing = [e for e in plan.to_hash if ready(e)]
        sending = [(e, k) for e, k in plan.to_send if ready(e)]
        if self.check_writers and (hashing or sending):
            root = str(plan.root)
            busy = open_for_writing(
                os.path.join(root, e.rel) for e in [*hashing, *(e for e, _ in sending)]
            )
            if busy:
                rels = [e.rel for e in hashing] + [e.rel for e, _ in sending]
                held.extend(r for r in rels if os.path.realpath(os.path.join(root, r)) in busy)
                hashing = [e for e in hashing if e.rel not in held]
                sending = [(e, k) for e, k in sending if e.rel not in held]
                wake = now + self.debounce  # no event says when a writer closes: look again
                due = wake if due is None else min(due, wake)
        plan.to_hash, plan.to_send = hashing, sending
        self._held.update(held)
        self.deferred, self.due = len(self._held), due
        if held:
            plan.fingerprint = ""
        return plan
