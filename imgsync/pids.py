"""Whether a process runs on this machine: the one check every floor uses (a lease's
holder, a staging folder's writer, the test suite's PostgreSQL starter)."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """False when no process ``pid`` runs here (a pid of 0 or below, which ``kill`` reads
    as a process group, or one past what the kernel hands out included); True when one
    does, also another user's that cannot be signalled."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True
