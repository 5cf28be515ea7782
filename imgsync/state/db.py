"""Opening the state database synchronously (planner, ``imgsync status``, migrations).

No event loop and no aiosqlite here, so a no-op re-run stays cheap. The async handle
with the one writer task is :class:`imgsync.state.store.StateStore`.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from imgsync.errors import StateError
from imgsync.state.schema import migrate

BUSY_TIMEOUT_MS = 5000


def describe_error(path: Path, exc: BaseException) -> StateError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StateError(f"state database {path} is locked by another process ({text})")
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return StateError(
            f"state database {path} is corrupt ({text}); move it aside to start fresh"
        )
    return StateError(f"state database {path}: {text}")


def _pragmas(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")


def open_sync(path: Path, *, create: bool = True) -> sqlite3.Connection | None:
    """A migrated sqlite3 connection, or None when ``create`` is False and there is no file.

    Raises ``StateError`` for a corrupt, locked or unwritable database.
    """
    if not create and not path.exists():
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        _pragmas(conn)
        migrate(conn)
    except (sqlite3.Error, OSError, RuntimeError) as exc:
        raise describe_error(path, exc) from None
    return conn


def owner_id() -> str:
    """Who holds a claim: host and pid, so a dead owner's claims can be taken over."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str) -> bool:
    import socket

    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # cannot tell; the TTL decides
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True
