"""Hostile-user findings of the breaker pass: each test failed on the code before its fix."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from imgsync.cli import main
from imgsync.state.reader import must_open


def _foreign(path: Path) -> bytes:
    """Another program's SQLite database (a browser's history, say), world-readable."""
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
    conn.execute("INSERT INTO moz_places (url) VALUES ('https://example.org/')")
    conn.commit()
    conn.close()
    path.chmod(0o644)
    return path.read_bytes()


def test_another_programs_sqlite_database_is_never_taken_for_a_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`state copy s.db places.sqlite` (or --state places.sqlite) used to add imgsync's
    tables to that database and chmod it 600: a SQLite header was all it checked."""
    src = tmp_path / "s.db"
    must_open(src).close()
    other = tmp_path / "places.sqlite"
    before = _foreign(other)
    for args, code in (
        (["state", "copy", str(src), str(other)], 2),
        (["state", "copy", str(other), str(tmp_path / "t.db")], 66),
        (["status", "--state", str(other)], 66),
    ):
        assert main(args) == code, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not an imgsync state" in err, err
        assert other.read_bytes() == before
        assert other.stat().st_mode & 0o777 == 0o644
        assert not (tmp_path / "t.db").exists()
    tables = sqlite3.connect(other).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("moz_places",)]


@pytest.mark.parametrize(
    "password", ["se@cr3tpw", "se/cr3tpw", "se?cr3tpw", "se#cr3tpw", "a@b@cr3tpw"]
)
def test_a_state_url_password_with_unencoded_url_characters_never_shows(
    password: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A pasted password with an unencoded @ / ? # (the URL needs them %-encoded) used to
    show whole or in part: the redaction stopped at the first @, / or ?, and the driver's
    message named the rest as a host ("failed to resolve host 'cr3tpw@127.0.0.1'")."""
    url = f"postgresql://me:{password}@127.0.0.1:1/x"
    assert main(["status", "--state", url]) == 75
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "cr3tpw" not in err, err
