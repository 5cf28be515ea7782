"""Secrets at rest: the state database (which holds delete URLs) and its WAL/SHM are the
user's alone, and the config's credentials are warned about when others can read them."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgsync.errors import StateError
from imgsync.models import ItemMeta, RemoteItem
from imgsync.state import queries
from imgsync.state.db import open_sync
from imgsync.state.schema import MIGRATIONS
from imgsync.state.store import StateStore


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


async def test_new_database_and_wal_are_private(tmp_path: Path, loose_umask: None) -> None:
    """Created 0600 (and its -wal/-shm too) in a 0700 folder, whatever the umask."""
    path = tmp_path / "deep" / "imgsync" / "state.db"
    async with StateStore(path) as store:
        await queries.record_objects(store, [("ab" * 32, 10, None, "image/png")])
        await queries.record_locations(
            store,
            "imgz",
            [("ab" * 32, RemoteItem("x", "a.png", meta=ItemMeta(title="t")))],
        )
        await store.flush()
        wal, shm = path.with_name("state.db-wal"), path.with_name("state.db-shm")
        assert wal.exists() and shm.exists()
        assert (_mode(path), _mode(wal), _mode(shm)) == (0o600, 0o600, 0o600)
    assert _mode(path.parent) == 0o700


def test_wide_database_is_fixed_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database an older imgsync left 0644 in a 0755 folder is made 0600/0700, and the
    user is told once."""
    folder = tmp_path / "imgsync"
    folder.mkdir()
    path = folder / "state.db"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA journal_mode = WAL")
    raw.executescript(MIGRATIONS[0])  # what the first imgsync wrote: its tables, version 1
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    os.chmod(folder, 0o755)
    os.chmod(path, 0o644)
    os.chmod(path.with_name("state.db-wal"), 0o644)
    conn = open_sync(path)
    assert conn is not None
    conn.close()
    raw.close()
    assert _mode(path) == 0o600 and _mode(folder) == 0o700
    err = capsys.readouterr().err
    assert "was readable by others (644); made it 600" in err
    assert "made it 700" in err
    conn = open_sync(path)  # nothing more to say the second time
    assert conn is not None
    conn.close()
    assert capsys.readouterr().err == ""


def test_shared_folder_is_left_alone_but_the_file_is_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """state.path inside a folder that holds other things (a home folder): the folder's
    mode is not the tool's to change, the database is still 0600; a warning only when
    others can write to that folder."""
    (tmp_path / "notes.txt").write_text("mine")
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "state.db"
    conn = open_sync(path)
    assert conn is not None
    conn.close()
    assert _mode(tmp_path) == 0o755 and _mode(path) == 0o600
    assert capsys.readouterr().err == ""
    os.chmod(tmp_path, 0o777)
    conn = open_sync(path)
    assert conn is not None
    conn.close()
    os.chmod(tmp_path, 0o755)
    assert _mode(path) == 0o600
    assert "is writable by others (777) and holds other files" in capsys.readouterr().err


def test_rewrite_journal_creates_the_state_folder_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A first `rewrite` (before any state database exists) makes the state folder 0700,
    so opening the database later has nothing to tighten or warn about."""
    from imgsync.cli import main

    state = tmp_path / "fresh" / "state.db"
    monkeypatch.setenv("IMGSYNC_STATE", str(state))
    (tmp_path / "map.json").write_text('{"https://h/a.png": "https://n/b.png"}')
    (tmp_path / "a.md").write_text("![x](https://h/a.png)\n")
    assert main(["rewrite", "--map", str(tmp_path / "map.json"), str(tmp_path / "a.md")]) == 0
    assert _mode(state.parent) == 0o700 and _mode(state.parent / "rewrites") == 0o700
    capsys.readouterr()
    conn = open_sync(state)
    assert conn is not None
    conn.close()
    assert "warning" not in capsys.readouterr().err


async def test_delete_urls_stay_in_a_private_database_and_out_of_status(
    image_tree: Path, tmp_path: Path
) -> None:
    """After uploads to a Chevereto site (each reply carries a delete URL, a credential),
    the state database and its folder are private, and `status` (text and JSON) prints no
    delete URL."""
    from helpers import run_cli_async, start_fake, write_config

    from imgsync.fakehosts.chevereto import CheveretoFake
    from imgsync.fakehosts.common import Knobs

    key = "chv-key-0123456789abcdef"
    running = await start_fake(CheveretoFake(Knobs(token=key)))
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.chv]\ntype = "chevereto"\nbase_url = "{running.url}"\ntoken_env = "CHV"\n',
        )
        env = {"CHV": key}
        copy = await run_cli_async("--config", str(cfg), "copy", str(image_tree), "chv:", env=env)
        assert copy.returncode == 0, copy.stderr
        text = await run_cli_async("--config", str(cfg), "status", env=env)
        as_json = await run_cli_async("--config", str(cfg), "status", "--json", env=env)
    finally:
        await running.close()
    state = tmp_path / "state" / "state.db"
    db = sqlite3.connect(state)
    rows = db.execute("SELECT delete_url FROM locations").fetchall()
    db.close()
    assert [r for r in rows if r[0] and "/delete/" in r[0]]  # they are kept ...
    assert _mode(state) == 0o600 and _mode(state.parent) == 0o700  # ... privately
    for out in (copy, text, as_json):
        assert "/delete/" not in out.stdout + out.stderr and key not in out.stdout + out.stderr


def test_a_state_path_naming_a_folder_is_refused_and_the_folder_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`[state] path` pointing at a folder (a typo, `~/Pictures`) is a state error that
    changes nothing: it used to chmod the user's folder to 600 ("made it 600")."""
    folder = tmp_path / "Pictures"
    folder.mkdir()
    (folder / "cat.png").write_bytes(b"x")
    os.chmod(folder, 0o755)
    with pytest.raises(StateError, match="not a file"):
        open_sync(folder)
    assert _mode(folder) == 0o755
    assert "made it" not in capsys.readouterr().err
