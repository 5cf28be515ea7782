"""The synchronous side of the state door: the planner, ``status``, the URL map, sync's
delete plan and the process-wide limiter's saved pauses.

No event loop and no aiosqlite here, so a no-op re-run stays cheap. Every method turns an
SQLite failure (a corrupt page met at any point, a lock held too long) into ``StateError``
(exit 75, with the "move it aside" advice for a corrupt file). The few writes here run
before the async writer exists (or from another thread, each its own short transaction).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from imgsync.state import queries
from imgsync.state.db import describe_error, open_sync
from imgsync.state.queries import KnownFile

if TYPE_CHECKING:
    from imgsync.state import reports

# (state.checks and state.reports are imported by the methods that use them: the planner
# of a no-op re-run needs neither)

T = TypeVar("T")


class StateReader:
    """A short-lived synchronous handle (``with open_reader(path) as db: ...``)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _q(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(self._conn, *args)
        except sqlite3.Error as exc:
            raise describe_error(self.path, exc) from None

    # ---- planning a folder source --------------------------------------------------

    def local_files(self, root: str, dest: str) -> dict[str, tuple[Any, ...]]:
        """rel key -> (rel, size, mtime_ns, inode, ctime_ns, sha256, md5, present at
        ``dest``)."""
        return self._q(queries.local_files, root, dest)

    def adopt_ctimes(self, root: str, rows: list[tuple[str, int]]) -> None:
        """Record the ctime of files known from before schema 10 ((rel key, ctime_ns))."""
        self._q(queries.adopt_ctimes, root, rows)

    def scan_mark(self, root: str, dest: str) -> tuple[str, int, int, str]:
        return self._q(queries.scan_mark, root, dest)

    def dest_generation(self, dest: str) -> tuple[int, int]:
        return self._q(queries.dest_generation, dest)

    def save_scan_mark(self, root: str, dest: str, fingerprint: str, dest_state: str) -> None:
        """Remember a complete no-op run (only a speed-up: failures are ignored)."""
        try:
            queries.save_scan_mark_sync(self._conn, root, dest, fingerprint, dest_state)
        except sqlite3.Error:
            return

    def forget_locations(self, remote: str, remote_ids: list[str]) -> None:
        self._q(queries.forget_locations_sync, remote, remote_ids)

    # ---- what a destination holds --------------------------------------------------

    def items_at(self, remote: str) -> dict[str, str]:
        """remote id -> sha256 of every recorded item of ``remote``."""
        return self._q(queries.items_at, remote)

    def stamps_at(self, remote: str) -> dict[str, tuple[int | None, queries.Stamp | None, str]]:
        """remote id -> (recorded size, (mtime, ctime, inode) as imgsync wrote the file or
        None, sha256) of every item of the folder ``remote``."""
        return self._q(queries.stamps_at, remote)

    def refresh_stamps(self, remote: str, rows: list[tuple[str, queries.Stamp]]) -> None:
        """Files imgsync wrote at ``remote``, read again and unchanged: their new stamps."""
        self._q(queries.refresh_stamps, remote, rows)

    def sidecars_at(self, remote: str) -> dict[str, str]:
        """remote id -> the name its backup sidecar was written under (when recorded)."""
        return self._q(queries.sidecars_at, remote)

    def shas_at(self, remote: str) -> set[str]:
        """Every checksum ``remote`` holds (with what a converting host serves)."""
        return self._q(queries.shas_at, remote)

    def stored_at(self, remote: str) -> dict[str, str]:
        """remote id -> sha256 of the bytes served, for the items ``remote`` converted."""
        return self._q(queries.stored_at, remote)

    def cursor_of(self, remote: str, scope: str) -> tuple[str | None, bool]:
        return self._q(queries.cursor_of, remote, scope)

    def delete_candidates(
        self, source: str, dest: str, src_root: str
    ) -> tuple[list[tuple[str, str, str | None, str | None]], set[str], set[str]]:
        """What ``source`` wrote at ``dest`` that no other source relies on:
        ((remote id, sha256, delete url, url)...), and the folder's current (rel keys, shas)."""
        return self._q(queries.delete_candidates, source, dest, src_root)

    def url_map(self, source: str, dest: str) -> list[tuple[str, str, str]]:
        """(old url, new url, sha256) for every item of ``source`` that ``dest`` holds."""
        return self._q(queries.url_map, source, dest)

    def adopt_key(self, old: str, new: str) -> bool:
        """Move what state knows under the key ``old`` (a remote's name, before
        destinations were keyed by what they are) to ``new``, when ``new`` has nothing
        yet. Returns True when something moved."""
        return self._q(queries.adopt_key, old, new)

    # ---- status and hosts ----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What ``imgsync status`` shows, with the last link-rot check per remote."""
        from imgsync.state import checks

        return {**self._q(queries.status), "verify": self._q(checks.summary)}

    def host_pauses(self) -> dict[str, tuple[float, str]]:
        return self._q(queries.host_pauses)

    def host_usage(self) -> dict[str, list[float]]:
        return self._q(queries.host_usage)

    def save_pause(self, authority: str, until: float, reason: str) -> None:
        self._q(queries.save_pause_sync, authority, until, reason)

    def save_usage(self, usage: dict[str, list[float]]) -> None:
        self._q(queries.save_host_usage, usage)

    # ---- the pages: a backup folder's gallery, a migration report (state/reports.py) ----

    def stored_items(self, remote: str) -> list[reports.StoredItem]:
        """Every item recorded at ``remote``, oldest record first."""
        from imgsync.state import reports

        return self._q(reports.items_at, remote)

    def other_places(self, remote: str) -> dict[str, list[reports.Place]]:
        """sha256 -> where else (with a URL) the bytes held at ``remote`` are."""
        from imgsync.state import reports

        return self._q(reports.other_places, remote)

    def pages_generation(self, remote: str) -> tuple[Any, ...]:
        """Changes whenever :meth:`stored_items` or :meth:`other_places` may have."""
        from imgsync.state import reports

        return self._q(reports.generation, remote)

    def places_of(self, remote: str) -> dict[str, reports.Place]:
        from imgsync.state import reports

        return self._q(reports.places_of, remote)

    def by_checksum(self, remote: str) -> dict[str, reports.Place]:
        from imgsync.state import reports

        return self._q(reports.by_checksum, remote)

    def local_copies(self, shas: set[str]) -> dict[str, tuple[str, str]]:
        from imgsync.state import reports

        return self._q(reports.local_copies, shas)

    def object_sizes(self, shas: set[str]) -> dict[str, int]:
        from imgsync.state import reports

        return self._q(reports.object_sizes, shas)

    def journal_of(self, job: str, source: str, dest: str) -> list[reports.JournalRow]:
        from imgsync.state import reports

        return self._q(reports.journal_of, job, source, dest)

    def latest_run(
        self, verbs: tuple[str, ...], source: str | None, dest: str | None
    ) -> reports.RunRow | None:
        from imgsync.state import reports

        return self._q(reports.latest_run, verbs, source, dest)


def open_reader(path: Path, *, create: bool = True) -> StateReader | None:
    """A migrated reader, or None when ``create`` is False and there is no file.
    Raises ``StateError``."""
    conn = open_sync(path, create=create)
    return None if conn is None else StateReader(path, conn)


def must_open(path: Path) -> StateReader:
    reader = open_reader(path)
    assert reader is not None
    return reader


__all__ = ["KnownFile", "StateReader", "must_open", "open_reader"]
