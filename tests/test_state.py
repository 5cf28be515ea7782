"""State database guarantees: migrations, the one writer, atomic claims, errors."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from imgsync.errors import StateError
from imgsync.models import ItemMeta, RemoteItem
from imgsync.state import queries
from imgsync.state.db import open_sync
from imgsync.state.schema import SCHEMA_VERSION
from imgsync.state.store import StateStore


def test_migrations_set_user_version_and_wal(tmp_path: Path) -> None:
    """A new database is migrated to the current version, in WAL mode."""
    conn = open_sync(tmp_path / "s.db")
    assert conn is not None
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer imgsync is refused with a clear StateError."""
    path = tmp_path / "s.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    raw.close()
    with pytest.raises(StateError, match="upgrade imgsync"):
        open_sync(path)


async def test_writer_batches_and_flushes(tmp_path: Path) -> None:
    """Thousands of queued writes land after one flush, through one writer."""
    path = tmp_path / "s.db"
    async with StateStore(path) as store:
        for i in range(3000):
            await queries.record_objects(store, [(f"{i:064x}", i, None, "image/png")])
        await store.flush()
        row = await store.fetchone("SELECT COUNT(*) FROM objects")
        assert row == (3000,)


async def test_one_object_row_with_many_locations(tmp_path: Path) -> None:
    """One row per SHA-256, with every remote that holds it."""
    sha = "ab" * 32
    async with StateStore(tmp_path / "s.db") as store:
        await queries.record_objects(store, [(sha, 10, "m" * 32, "image/png")])
        await queries.record_objects(store, [(sha, 10, "m" * 32, "image/png")])
        meta = ItemMeta(title="t")
        await queries.record_locations(
            store, "gyazo", [(sha, RemoteItem("id1", "a.png", meta=meta))]
        )
        await queries.record_locations(store, "imgz", [(sha, RemoteItem("x2", "a.png"))])
        await store.flush()
        assert await store.fetchall("SELECT COUNT(*) FROM objects") == [(1,)]
        rows = await store.fetchall(
            "SELECT remote FROM locations WHERE sha256 = ? ORDER BY remote", (sha,)
        )
        assert rows == [("gyazo",), ("imgz",)]


async def test_claims_are_exclusive_across_stores(tmp_path: Path) -> None:
    """Two processes' stores claiming the same checksums: each checksum goes to one."""
    path = tmp_path / "s.db"
    shas = [f"{i:064x}" for i in range(200)]
    a, b = StateStore(path), StateStore(path)
    await a.open()
    await b.open()
    b.owner = "otherhost:1"  # another live process (different host: never considered dead)
    try:
        got_a, got_b = await asyncio.gather(a.claim("dest", shas), b.claim("dest", shas))
        assert got_a.isdisjoint(got_b)
        assert got_a | got_b == set(shas)
        await a.release("dest", got_a)
        await a.flush()
        assert await b.claim("dest", sorted(got_a)) == got_a
    finally:
        await a.close()
        await b.close()


async def test_dead_owner_claims_are_taken_over(tmp_path: Path) -> None:
    """A claim left by a crashed process on this host is taken over."""
    import socket

    path = tmp_path / "s.db"
    conn = open_sync(path)
    assert conn is not None
    conn.execute(
        "INSERT INTO claims VALUES (?, 'dest', ?, strftime('%s','now'))",
        ("c" * 64, f"{socket.gethostname()}:999999999"),
    )
    async with StateStore(path) as store:
        assert await store.claim("dest", ["c" * 64]) == {"c" * 64}


async def test_locked_database_is_a_state_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database held by another writer gives StateError naming the lock."""
    monkeypatch.setattr("imgsync.state.db.BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr("imgsync.state.store.BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "s.db"
    open_sync(path)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    store = StateStore(path)
    try:
        with pytest.raises(StateError, match="locked"):
            await store.open()
            await queries.record_objects(store, [("d" * 64, 1, None, None)])
            await store.flush()
    finally:
        holder.execute("ROLLBACK")
        await store.close()


def test_version_1_database_is_migrated(tmp_path: Path) -> None:
    """A database at schema version 1 gains the version-2 table and keeps its rows."""
    from imgsync.state.schema import MIGRATIONS

    path = tmp_path / "old.db"
    raw = sqlite3.connect(path)
    raw.executescript(MIGRATIONS[0])
    raw.execute("INSERT INTO objects VALUES ('a', 1, NULL, NULL, 0)")
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    conn = open_sync(path)
    assert conn is not None
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT COUNT(*) FROM host_usage").fetchone()[0] == 0
    assert conn.execute("SELECT sha256 FROM objects").fetchall() == [("a",)]


def test_upgrading_keeps_what_other_folders_relied_on(tmp_path: Path) -> None:
    """State from before owners were recorded: folder A uploaded X to ``gy``; folder B
    found X there (a finished run). After the upgrade, A wrote X and B relies on it, so
    A's sync alone may not delete it."""
    from imgsync.state.reader import open_reader
    from imgsync.state.schema import MIGRATIONS

    path = tmp_path / "v4.db"
    raw = sqlite3.connect(path)
    for script in MIGRATIONS[:4]:
        raw.executescript(script)
    raw.executescript(
        """
        INSERT INTO locations (remote, remote_id, sha256, updated) VALUES ('gy', 'id1', 'X', 0);
        INSERT INTO local_files VALUES ('/a', 'x.png', 1, 1, 1, 'X', NULL);
        INSERT INTO local_files VALUES ('/b', 'same.png', 1, 1, 2, 'X', NULL);
        INSERT INTO journal VALUES ('copy', 'local:/a', 'x.png', 'gy', 'X', 'verified', NULL,
                                    1, 0);
        INSERT INTO scan_marks VALUES ('/b', 'gy', 'f', 1, 0, '');
        PRAGMA user_version = 4;
        """
    )
    raw.commit()
    raw.close()
    reader = open_reader(path)
    assert reader is not None
    with reader:
        rows, _rels, _shas = reader.delete_candidates("local:/a", "gy", "/a")
    assert rows == []  # B still relies on X
    conn = sqlite3.connect(path)
    owners = set(conn.execute("SELECT source, wrote FROM owners WHERE sha256 = 'X'"))
    conn.close()
    assert owners == {("local:/a", 1), ("local:/b", 0)}
