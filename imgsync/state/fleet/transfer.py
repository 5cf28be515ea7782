"""``imgsync state copy FROM TO``: what a state shares, from a SQLite file into a shared
PostgreSQL state or back (or between two of a kind).

Copied: every location (with its page URL, metadata and the stored bytes' checksums),
the journal, listing cursors, host pauses, owners (who relies on what at a destination)
and the objects (checksum, size). The URL maps are written from the locations, so they
come along. Not copied: delete URLs into PostgreSQL (a credential each; they stay in the
SQLite file of the worker that uploaded, and a copy back keeps those a file already
has), and what only one machine can use (its folder scans, link-rot checks, runs).

Each table is upserted on its key in one transaction on the target, so a copy that
stops half way changes nothing, and running it again copies the same rows again
(nothing twice). A pause keeps the later end; an owner's "wrote" is never taken back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

from imgsync.errors import LocalIOError, StateError, UsageError
from imgsync.state.db import describe_error, foreign_database, open_readonly, open_sync
from imgsync.state.fleet import schema
from imgsync.state.fleet.common import describe, driver, is_url, redact


@dataclass(frozen=True)
class Table:
    """One shared table: its SQLite and PostgreSQL names, columns (the key first) and
    the upsert each side applies to a copied row."""

    name: str
    local: str
    shared: str
    columns: tuple[str, ...]
    key: int
    local_upsert: str
    shared_upsert: str


def _set(columns: Sequence[str], table: str, rules: dict[str, str], greatest: str) -> str:
    return ", ".join(
        f"{c} = " + rules.get(c, "excluded." + c).format(t=table, max=greatest) for c in columns
    )


def _table(
    name: str,
    local: str,
    shared: str,
    columns: tuple[str, ...],
    key: int,
    rules: dict[str, str] | None = None,
    *,
    keep: bool = False,
) -> Table:
    """``rules``: column -> expression for an existing row (``{t}`` is the table, ``{max}``
    the larger of two values on either side); ``keep``: an existing row stays as it is."""
    rules = rules or {}
    cols = ", ".join(columns)
    conflict = ", ".join(columns[:key])

    def upsert(table: str, mark: str, greatest: str) -> str:
        marks = ", ".join([mark] * len(columns))
        head = f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT ({conflict}) DO "
        if keep or len(columns) == key:
            return head + "NOTHING"
        return head + "UPDATE SET " + _set(columns[key:], table, rules, greatest)

    return Table(
        name,
        local,
        shared,
        columns,
        key,
        upsert(local, "?", "MAX"),
        upsert(shared, "%s", "GREATEST"),
    )


_COALESCE = "COALESCE(excluded.{c}, {{t}}.{c})"  # a value known on the target is kept
TABLES: tuple[Table, ...] = (
    _table("objects", "objects", "fleet_objects",
           ("sha256", "size", "md5", "mime", "first_seen"), 1, keep=True),
    _table(
        "locations", "locations", "fleet_locations",
        ("remote", "remote_id", "sha256", "url", "page_url", "meta", "stored_md5",
         "stored_sha256", "updated"), 2,
        {c: _COALESCE.format(c=c) for c in ("url", "page_url", "stored_md5", "stored_sha256")},
    ),
    _table("journal", "journal", "fleet_journal",
           ("job", "source", "source_id", "dest", "sha256", "stage", "error", "attempts",
            "updated"), 4),
    _table("cursors", "cursors", "fleet_cursors",
           ("remote", "scope", "cursor", "done", "updated"), 2),
    _table("pauses", "host_pauses", "fleet_pauses", ("authority", "until", "reason"), 1,
           {"until": "{max}({t}.until, excluded.until)",
            "reason": "CASE WHEN excluded.until > {t}.until THEN excluded.reason "
                      "ELSE {t}.reason END"}),
    _table("owners", "owners", "fleet_owners", ("dest", "sha256", "source", "wrote"), 3,
           {"wrote": "{max}({t}.wrote, excluded.wrote)"}),
)  # fmt: skip


@dataclass
class Copied:
    source: str  # the FROM and TO as shown (a URL without its password)
    target: str
    rows: dict[str, int] = field(default_factory=dict)


def _side(text: str, what: str) -> str | Path:
    if is_url(text):
        return text
    if "://" in text:
        raise UsageError(
            f"state copy: {what} {redact(text)} is neither a SQLite state file "
            "nor a postgresql:// URL"
        )
    return Path(text).expanduser()


def _shown(side: str | Path) -> str:
    return redact(side) if isinstance(side, str) else str(side)


def copy_state(src_text: str, dst_text: str) -> Copied:
    """Copy what state ``src_text`` shares into ``dst_text`` (each a SQLite file or a
    postgresql:// URL). Raises ``UsageError`` (bad argument), ``LocalIOError`` (no state
    at FROM) or ``StateError`` (a database that cannot be opened or reached)."""
    src, dst = _side(src_text, "FROM"), _side(dst_text, "TO")
    if isinstance(src, Path) and isinstance(dst, Path):
        same = src.resolve() == dst.resolve()
    else:
        same = src == dst
    if same:
        raise UsageError(f"state copy: FROM and TO are the same state ({_shown(src)})")
    rows = _read_shared(src) if isinstance(src, str) else _read_local(src)
    if isinstance(dst, str):
        _write_shared(dst, rows)
    else:
        _write_local(dst, rows)
    return Copied(_shown(src), _shown(dst), {t.name: len(rows[t.name]) for t in TABLES})


Rows = dict[str, list[tuple[Any, ...]]]


def _read_local(path: Path) -> Rows:
    try:
        conn = open_readonly(path)  # FROM is read, never changed
    except LocalIOError as exc:
        raise LocalIOError(f"state copy: {exc}", path=str(path)) from None
    try:
        return {
            t.name: [
                tuple(r) for r in conn.execute(f"SELECT {', '.join(t.columns)} FROM {t.local}")
            ]
            for t in TABLES
        }
    except sqlite3.Error as exc:
        raise describe_error(path, exc) from None
    finally:
        conn.close()


def _write_local(path: Path, rows: Rows) -> None:
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as fh:
            theirs = fh.read(16) != b"SQLite format 3\x00"
        if theirs or foreign_database(path):  # not a file of the user's to change
            raise UsageError(f"state copy: TO {path} exists and is not an imgsync state database")
    conn = open_sync(path)  # created private (0600) and migrated when new
    assert conn is not None
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for t in TABLES:
                fix = _to_local.get(t.name)
                data = rows[t.name] if fix is None else [fix(r) for r in rows[t.name]]
                conn.executemany(t.local_upsert, data)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise describe_error(path, exc) from None
    finally:
        conn.close()


def _shared(url: str, work: Callable[[Any], Any]) -> Any:
    psycopg = driver()
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            return work(conn)
    except (psycopg.Error, OSError) as exc:
        raise describe(url, exc) from None


def _read_shared(url: str) -> Rows:
    def work(conn: Any) -> Rows:
        if schema.version_sync(conn) < schema.SCHEMA_VERSION:
            # an older shared state is brought up to date first (it has no journal yet)
            if schema.version_sync(conn) == 0:
                raise LocalIOError(f"state copy: no imgsync state at {redact(url)}")
            conn.commit()
            schema.migrate_sync(conn)
        out: Rows = {}
        for t in TABLES:
            cur = conn.execute(f"SELECT {', '.join(t.columns)} FROM {t.shared}")
            out[t.name] = [tuple(r) for r in cur.fetchall()]
        return out

    rows: Rows = _shared(url, work)
    return rows


def _write_shared(url: str, rows: Rows) -> None:
    def work(conn: Any) -> None:
        conn.commit()
        schema.migrate_sync(conn)  # a new database gets its tables here
        with conn.transaction(), conn.cursor() as cur:
            for t in TABLES:
                fix = _to_shared.get(t.name)
                data = rows[t.name] if fix is None else [fix(r) for r in rows[t.name]]
                if data:  # in key order, as workers write: two writers never deadlock
                    order = itemgetter(slice(0, t.key))
                    cur.executemany(t.shared_upsert, sorted(data, key=order))

    _shared(url, work)


# the few columns whose types differ: a cursor's "done" (0/1 in SQLite, a boolean here)
_to_shared: dict[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]] = {
    "cursors": lambda r: (*r[:3], bool(r[3]), r[4]),
}
_to_local: dict[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]] = {
    "cursors": lambda r: (*r[:3], int(bool(r[3])), r[4]),
}

__all__ = ["TABLES", "Copied", "StateError", "copy_state"]
