"""Shared test set-up: every test gets its own state database and no user config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pgserver import PgServer, pg_server

from imgsync.fakehosts.images import seed_image


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point imgsync at a per-test state file and an empty user config dir (no config)."""
    monkeypatch.setenv("IMGSYNC_STATE", str(tmp_path / "state" / "state.db"))
    monkeypatch.delenv("IMGSYNC_CONFIG", raising=False)
    monkeypatch.delenv("IMGSYNC_STATE_URL", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


@pytest.fixture(autouse=True)
def _structlog_restored() -> Iterator[None]:
    """A test that runs a CLI command in-process configures structlog (its level, its
    stream): later tests get the configuration back as it was, so a test capturing debug
    events, or one logging after another's captured stream was closed, does not depend
    on which tests ran before it."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """A folder of 12 distinct images in nested folders, plus one text file."""
    root = tmp_path / "src"
    for i in range(12):
        data, ext = seed_image(i)
        folder = root / ("sub" if i % 3 == 0 else "") / ("deep" if i % 4 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i:02d}.{ext}").write_bytes(data)
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgServer]:
    """One throwaway PostgreSQL cluster for the whole test session (see tests/pgserver.py)."""
    with pg_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_cluster: PgServer) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL cluster."""
    return pg_cluster.new_database()
