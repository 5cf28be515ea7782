"""The SQLite schema and its migrations, keyed on ``PRAGMA user_version``.

What the tables guarantee (DESIGN.md "State"):

* ``objects``: one row per content checksum (SHA-256), and ``locations``: every place
  (remote, remote id) that holds those bytes, with url, delete url (secret), metadata and
  the MD5 the host reported for what it stored (``stored_md5``: a converted upload's).
* ``journal``: one row per (job, source item, destination) with its stage
  (listed -> fetched -> uploaded -> verified, or failed/skipped) so a run resumes.
* ``claims``: (checksum, destination) claimed before an upload starts; the primary key
  makes the claim atomic across workers, jobs and processes.
* ``local_files``: size/mtime/inode/ctime per scanned file, so unchanged files are not
  re-hashed (a ctime change alone is re-hashed, not re-sent, unless the bytes changed).
* ``cursors``: saved listing cursors; ``host_pauses``: host-wide pauses that survive a restart;
  ``host_usage``: the requests recent runs made to each host, so the next process's limiter
  counts them (two runs in a row do not each spend a whole daily budget).
* ``owners``: (destination, checksum, source job) for every source that put bytes at a
  destination (``wrote`` = 1) or found them there and relies on them (``wrote`` = 0):
  ``sync`` deletes only what its own source wrote and no other source relies on.
* ``checks``: the last link-rot verdict (alive / gone / altered / unreachable) per location
  with its time, and what repaired it; ``verify_passes``: the pass each remote is in.
* ``scan_marks``: the fingerprint of a folder scan (every path, size, mtime, inode, ctime)
  after a run that left nothing to do for a destination, with that destination's location
  count and generation (``generations``: bumped by every write of its locations, never a
  clock): a re-run whose scan and destination both match has nothing to do.
* ``locations.file_*``: for a file imgsync wrote into a folder, its mtime, ctime and inode
  then: a file there since overwritten with bytes of the same size is noticed;
  ``locations.sidecar``: the name a backup sidecar was written under.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # version 1
    """
    CREATE TABLE objects (
        sha256     TEXT PRIMARY KEY,
        size       INTEGER NOT NULL,
        md5        TEXT,
        mime       TEXT,
        first_seen REAL NOT NULL
    );
    CREATE TABLE locations (
        remote     TEXT NOT NULL,
        remote_id  TEXT NOT NULL,
        sha256     TEXT NOT NULL,
        url        TEXT,
        delete_url TEXT,
        meta       TEXT,
        updated    REAL NOT NULL,
        PRIMARY KEY (remote, remote_id)
    );
    CREATE INDEX locations_by_sha ON locations (sha256, remote);
    CREATE INDEX locations_by_update ON locations (remote, updated);
    CREATE TABLE local_files (
        root     TEXT NOT NULL,
        rel      TEXT NOT NULL,
        size     INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        inode    INTEGER NOT NULL,
        sha256   TEXT NOT NULL,
        md5      TEXT,
        PRIMARY KEY (root, rel)
    ) WITHOUT ROWID;
    CREATE TABLE claims (
        sha256     TEXT NOT NULL,
        dest       TEXT NOT NULL,
        owner      TEXT NOT NULL,
        claimed_at REAL NOT NULL,
        PRIMARY KEY (sha256, dest)
    ) WITHOUT ROWID;
    CREATE TABLE journal (
        job        TEXT NOT NULL,
        source     TEXT NOT NULL,
        source_id  TEXT NOT NULL,
        dest       TEXT NOT NULL,
        sha256     TEXT,
        stage      TEXT NOT NULL,
        error      TEXT,
        attempts   INTEGER NOT NULL DEFAULT 0,
        updated    REAL NOT NULL,
        PRIMARY KEY (job, source, source_id, dest)
    ) WITHOUT ROWID;
    CREATE INDEX journal_by_stage ON journal (job, stage);
    CREATE TABLE cursors (
        remote  TEXT NOT NULL,
        scope   TEXT NOT NULL,
        cursor  TEXT,
        done    INTEGER NOT NULL DEFAULT 0,
        updated REAL NOT NULL,
        PRIMARY KEY (remote, scope)
    );
    CREATE TABLE host_pauses (
        authority TEXT PRIMARY KEY,
        until     REAL NOT NULL,
        reason    TEXT NOT NULL
    );
    CREATE TABLE runs (
        id       INTEGER PRIMARY KEY,
        job      TEXT NOT NULL,
        verb     TEXT NOT NULL,
        started  REAL NOT NULL,
        finished REAL,
        summary  TEXT
    );
    CREATE TABLE scan_marks (
        root        TEXT NOT NULL,
        dest        TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        dest_count  INTEGER NOT NULL,
        dest_latest REAL,
        PRIMARY KEY (root, dest)
    );
    CREATE TABLE url_map (
        job     TEXT NOT NULL,
        old_url TEXT NOT NULL,
        new_url TEXT,
        sha256  TEXT NOT NULL,
        PRIMARY KEY (job, old_url)
    );
    """,
    # version 2: how much of each host's budget recent runs spent (answer times, unix)
    """
    CREATE TABLE host_usage (
        authority TEXT PRIMARY KEY,
        times     TEXT NOT NULL
    );
    """,
    # version 3: the host's page for an item (documents link to it as well as to the file)
    """
    ALTER TABLE locations ADD COLUMN page_url TEXT;
    """,
    # version 4: the destination folders' mtimes at a scan mark (files removed by hand)
    """
    ALTER TABLE scan_marks ADD COLUMN dest_state TEXT NOT NULL DEFAULT '';
    """,
    # version 5: who relies on what at a destination (sync deletes only its own writes).
    # Earlier uploads recorded in the journal, and folder copies (a destination location
    # whose bytes a scanned folder holds), count as written by that source.
    """
    CREATE TABLE owners (
        dest    TEXT NOT NULL,
        sha256  TEXT NOT NULL,
        source  TEXT NOT NULL,
        wrote   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (dest, sha256, source)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO owners (dest, sha256, source, wrote)
        SELECT DISTINCT dest, sha256, source, 1 FROM journal
        WHERE stage IN ('uploaded', 'verified') AND sha256 IS NOT NULL;
    INSERT OR IGNORE INTO owners (dest, sha256, source, wrote)
        SELECT DISTINCT l.remote, l.sha256, 'local:' || lf.root, 1 FROM locations l
        JOIN local_files lf ON lf.sha256 = l.sha256 WHERE l.remote LIKE 'local:%';
    """,
    # version 6: the MD5 the host reported for the bytes it stored; for a host that converts
    # uploads (Chevereto: BMP -> PNG) it is not the source's, which stays the row's sha256
    """
    ALTER TABLE locations ADD COLUMN stored_md5 TEXT;
    """,
    # version 7: what folders relied on before owners were recorded: a folder whose files'
    # bytes are at a destination it was copied to (a finished run's scan mark, or journal
    # rows of its own) relies on them, so another folder's sync does not delete them
    """
    INSERT OR IGNORE INTO owners (dest, sha256, source, wrote)
        SELECT DISTINCT l.remote, l.sha256, 'local:' || lf.root, 0 FROM locations l
        JOIN local_files lf ON lf.sha256 = l.sha256
        WHERE EXISTS (SELECT 1 FROM scan_marks m WHERE m.root = lf.root AND m.dest = l.remote)
        OR EXISTS (SELECT 1 FROM journal j WHERE j.source = 'local:' || lf.root
                   AND j.dest = l.remote);
    """,
    # version 7: link-rot checks (``imgsync verify``): the last verdict per recorded
    # location, kept after a gone location is forgotten so its repair can be resumed; and
    # one verify pass per remote, so an interrupted full pass resumes where it stopped.
    """
    CREATE TABLE checks (
        remote        TEXT NOT NULL,
        remote_id     TEXT NOT NULL,
        sha256        TEXT NOT NULL,
        url           TEXT,
        page_url      TEXT,
        status        TEXT NOT NULL,
        detail        TEXT,
        seen_sha256   TEXT,
        checked_at    REAL NOT NULL,
        repaired_url  TEXT,
        repaired_page TEXT,
        repaired_at   REAL,
        PRIMARY KEY (remote, remote_id)
    );
    CREATE INDEX checks_by_status ON checks (remote, status);
    CREATE TABLE verify_passes (
        remote   TEXT PRIMARY KEY,
        started  REAL NOT NULL,
        finished REAL
    );
    """,
    # version 8: for a host that converts uploads (Lsky Pro re-encodes every PNG and JPEG),
    # the SHA-256 of the bytes it serves, once read back: the row's sha256 stays the source's
    """
    ALTER TABLE locations ADD COLUMN stored_sha256 TEXT;
    CREATE INDEX locations_by_stored ON locations (stored_sha256, remote)
        WHERE stored_sha256 IS NOT NULL;
    """,
    # version 10: edits that keep size and mtime. ``local_files.ctime_ns``: a scanned file's
    # ctime (NULL for rows from before: taken at the next scan without re-hashing);
    # ``locations.file_*``: the mtime, ctime and inode of a file imgsync wrote into a folder,
    # so ``check`` notices it overwritten with other bytes of the same size, and the name its
    # backup sidecar was written under (a user's file named like one is not taken for it);
    # ``generations``:
    # a counter per destination bumped by every change to its locations, which a scan mark
    # saves (``dest_gen``) instead of the newest update time, so no wall clock is trusted.
    """
    ALTER TABLE local_files ADD COLUMN ctime_ns INTEGER;
    ALTER TABLE locations ADD COLUMN file_mtime_ns INTEGER;
    ALTER TABLE locations ADD COLUMN file_ctime_ns INTEGER;
    ALTER TABLE locations ADD COLUMN file_inode INTEGER;
    ALTER TABLE locations ADD COLUMN sidecar TEXT;
    CREATE TABLE generations (
        remote TEXT PRIMARY KEY,
        gen    INTEGER NOT NULL
    ) WITHOUT ROWID;
    ALTER TABLE scan_marks ADD COLUMN dest_gen INTEGER NOT NULL DEFAULT -1;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class NewerSchema(RuntimeError):
    """A state written by a newer imgsync (schema ``found``; this one knows ``known``):
    refused rather than misread."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(
            f"state database has schema version {found}; this imgsync knows up to "
            f"{known} (upgrade imgsync)"
        )
        self.found, self.known = found, known


def steps(current: int, latest: int) -> range:
    """The migration numbers (from 1) that bring a schema at version ``current`` (0: none
    yet) to ``latest``, in order: the one loop both states' migrations run (SQLite's here,
    the shared PostgreSQL state's in ``state/fleet/schema.py``). Raises
    :class:`NewerSchema` when ``current`` is newer than ``latest``."""
    if current > latest:
        raise NewerSchema(current, latest)
    return range(current + 1, latest + 1)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring ``conn`` up to :data:`SCHEMA_VERSION` in one exclusive transaction.

    The version is read *inside* the write lock, so two processes opening a fresh file at
    once cannot both migrate from the version they saw before the other committed. An
    up-to-date file costs one unlocked read. Raises ``sqlite3.DatabaseError`` on a corrupt
    file and ``RuntimeError`` when the file was written by a newer imgsync.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if not steps(version, SCHEMA_VERSION):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number in steps(version, SCHEMA_VERSION):
            for stmt in MIGRATIONS[number - 1].split(";"):
                if stmt.strip():
                    conn.execute(stmt)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
