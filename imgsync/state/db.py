"""Opening the state database synchronously (planner, ``imgsync status``, migrations).

No event loop and no aiosqlite here, so a no-op re-run stays cheap. The async handle
with the one writer task is :class:`imgsync.state.store.StateStore`.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Self

from imgsync.errors import StateError
from imgsync.pids import pid_alive
from imgsync.state.schema import migrate

BUSY_TIMEOUT_MS = 5000
_SQLITE_HEADER = b"SQLite format 3\x00"


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


# The database holds delete URLs (a credential each) and the rest of the user's library
# map: it and its WAL/SHM are the user's alone, in a folder only the user can enter.
_FILE_MODE = 0o600
_DIR_MODE = 0o700
_SIDE_FILES = ("-wal", "-shm", "-journal")


_warned: set[str] = set()


def _warn(text: str) -> None:
    if text not in _warned:  # the database is opened several times per run: say it once
        _warned.add(text)
        print(f"imgsync: warning: {text}", file=sys.stderr)


def make_private(path: Path) -> None:
    """Create the database's folder 0700 and the file 0600, and tighten them (with a
    warning) when found readable by others.

    A folder that holds more than imgsync's own files (a home folder, a shared folder the
    user pointed ``state.path`` into) is not changed (only warned about when others can
    write to it); the files in it are still made private.
    """
    if path.exists() and not path.is_file():
        # a folder (a typo, `~/Pictures`): refused before anything of the user's is changed
        raise IsADirectoryError(
            f"not a file (state.path names the database file, e.g. {path / 'state.db'})"
        )
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        os.chmod(folder, _DIR_MODE)  # whatever the umask
    else:
        mode = stat.S_IMODE(folder.stat().st_mode)
        if mode & 0o077:
            ours = all(
                e.name.startswith(path.name) or e.name in ("rewrites", "spool")
                for e in folder.iterdir()
            )
            if ours and folder.stat().st_uid == os.getuid():
                os.chmod(folder, _DIR_MODE)
                _warn(f"state folder {folder} was open to others ({mode:o}); made it 700")
            elif mode & 0o022:  # others could replace the database (a readable one is fine)
                _warn(
                    f"state folder {folder} is writable by others ({mode:o}) and holds other "
                    "files; imgsync keeps its own files 600 there, but a private folder is safer"
                )
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, _FILE_MODE))
        os.chmod(path, _FILE_MODE)
    for f in (path, *(path.with_name(path.name + s) for s in _SIDE_FILES)):
        try:
            mode = stat.S_IMODE(f.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(f, _FILE_MODE)
            _warn(f"state file {f} was readable by others ({mode:o}); made it 600")


def _foreign(conn: sqlite3.Connection) -> bool:
    """A SQLite database imgsync never wrote: version 0 (imgsync's first migration sets
    it) yet tables in it, another program's."""
    if conn.execute("PRAGMA user_version").fetchone()[0]:
        return False
    return conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None


def foreign_database(path: Path) -> bool:
    """Whether ``path`` is another program's SQLite database (read without changing it).

    Read through SQLite only: closing any other descriptor of the file would drop the
    locks this process's open connections hold on it (POSIX locks are per process), and
    another process could then checkpoint and remove the WAL under them."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except (OSError, sqlite3.Error):
        return False  # opening it for real says what is wrong
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return _foreign(conn)
    except sqlite3.Error:
        return False  # not a database at all, or locked: opening it for real says so
    finally:
        conn.close()


def open_sync(path: Path, *, create: bool = True) -> sqlite3.Connection | None:
    """A migrated sqlite3 connection, or None when ``create`` is False and there is no file.

    Raises ``StateError`` for a corrupt, locked or unwritable database, or another
    program's SQLite database (never changed, nor its mode).
    """
    if not create and not path.exists():
        return None
    if path.is_file() and foreign_database(path):
        raise StateError(
            f"state database {path} is another program's SQLite database, not an imgsync "
            "state (left as it is; name another file)"
        )
    try:
        make_private(path)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        _pragmas(conn)
        migrate(conn)
    except (sqlite3.Error, OSError, RuntimeError) as exc:
        raise describe_error(path, exc) from None
    return conn


def open_readonly(path: Path) -> sqlite3.Connection:
    """A connection that reads the state file ``path`` without changing it or its mode
    (``imgsync state copy FROM``, ``status --state``): opened read-only; a file an older
    imgsync wrote is copied into memory and migrated there. Raises ``LocalIOError`` when
    there is no file or it is not a SQLite database, ``StateError`` otherwise."""
    from imgsync.errors import LocalIOError
    from imgsync.state.schema import SCHEMA_VERSION

    try:
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_HEADER))
    except IsADirectoryError:
        raise LocalIOError(f"{path} is a folder, not a state database", path=str(path)) from None
    except FileNotFoundError:
        raise LocalIOError(f"no state database at {path}", path=str(path)) from None
    except OSError as exc:
        raise LocalIOError(f"cannot read {path}: {exc.strerror}", path=str(path)) from None
    if head != _SQLITE_HEADER:
        raise LocalIOError(f"{path} is not an imgsync state database", path=str(path))
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if _foreign(conn):
            conn.close()
            raise LocalIOError(f"{path} is not an imgsync state database", path=str(path))
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            memory = sqlite3.connect(":memory:", isolation_level=None)
            conn.backup(memory)
            conn.close()
            conn = memory
            migrate(conn)
    except (sqlite3.Error, RuntimeError) as exc:
        raise describe_error(path, exc) from None
    return conn


def owner_id() -> str:
    """Who holds a claim: host and pid, so a dead owner's claims can be taken over."""
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def describe_owner(owner: str) -> str:
    """``pid P`` for an owner on this machine, else the owner (``host:pid``)."""
    import socket

    host, _, pid = owner.rpartition(":")
    return f"pid {pid}" if host == socket.gethostname() else owner


def owner_alive(owner: str) -> bool:
    import socket

    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # cannot tell; the TTL decides
    try:
        return pid_alive(int(pid))
    except ValueError:
        return False


class Leased(tuple[set[str], set[str]]):
    """What a lease call answers: ``(mine, present)`` (leased to the caller; already
    recorded at the destination), and ``taken_over``: those of ``mine`` whose lease was
    taken from a previous holder that did not finish (its process died, or its lease
    expired) and may have sent the bytes before it stopped, so an upload of one of these
    looks at the destination first; a fresh lease costs nothing extra. ``since``: for each
    of ``taken_over`` whose time is known, the earliest time (unix seconds, this machine's
    clock) a holder can have sent it: the search goes back to then."""

    taken_over: frozenset[str]
    since: dict[str, float]

    def __new__(
        cls,
        mine: set[str],
        present: set[str],
        taken_over: Iterable[str] = (),
        since: Mapping[str, float] | None = None,
    ) -> Self:
        self = super().__new__(cls, (mine, present))
        self.taken_over = frozenset(taken_over) & frozenset(mine)
        self.since = {s: t for s, t in (since or {}).items() if s in self.taken_over}
        return self

    @property
    def mine(self) -> set[str]:
        return self[0]

    @property
    def present(self) -> set[str]:
        return self[1]
