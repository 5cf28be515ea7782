"""Hostile-user findings of the breaker pass: each test failed on the code before its fix."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

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


async def _stats(url: str) -> dict[str, int]:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(url + "/_fakehost/stats") as r:
        data: dict[str, int] = await r.json()
        return data


async def test_a_rerun_after_postgresql_dropped_the_worker_uploads_nothing_twice(
    pg_url: str, tmp_path: Path
) -> None:
    """By hand: two workers, 1,500 images Gyazo -> Chevereto, PostgreSQL stopped with
    `pg_ctl -m immediate` mid-run (exit 75, one line: held), started again, the command
    run again: 1,507 uploads of 1,500 checksums, and the fleet's journal still said 93
    "fetched" after the complete re-run. Now the uploads in flight when the state fails
    finish and are recorded in the worker's own state, and the re-run shares them with
    the fleet (Chevereto cannot be listed: no search could find them)."""
    import psycopg
    from helpers import start_fake, write_config

    from imgsync.fakehosts.chevereto import CheveretoFake
    from imgsync.fakehosts.common import Knobs
    from imgsync.fakehosts.gyazo import GyazoFake

    gyazo = await start_fake(GyazoFake(Knobs(token="gy-breaker-token-1", seed=200)))
    chv = await start_fake(CheveretoFake(Knobs(token="chv-breaker-token-2")))
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{gyazo.url}"\ntoken_env = "GY_T"\n'
            f'[remotes.chv]\ntype = "chevereto"\nbase_url = "{chv.url}"\ntoken_env = "CHV_T"\n',
        )
        env = {
            **os.environ,
            "GY_T": "gy-breaker-token-1",
            "CHV_T": "chv-breaker-token-2",
            "IMGSYNC_STATE_URL": pg_url,
        }
        args = [
            sys.executable, "-m", "imgsync", "--config", str(cfg), "migrate", "gy:", "chv:",
            "--map", str(tmp_path / "map.csv"), "--transfers", "8",
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        while (await _stats(chv.url))["uploads"] < 40 and proc.returncode is None:
            await asyncio.sleep(0.01)
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 75, err.decode()
        again = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        _, err = await asyncio.wait_for(again.communicate(), 120)
        assert again.returncode == 0, err.decode()
        stats = await _stats(chv.url)
        assert stats["uploads"] == stats["distinct_checksums"] == 200, stats
        # and the fleet knows it all: every location, no lease left, no item half-done
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:

            async def one(sql: str) -> Any:
                row = await (await conn.execute(sql)).fetchone()
                return row[0] if row else None

            where = "WHERE remote LIKE 'chevereto:%%'"
            assert await one(f"SELECT COUNT(DISTINCT sha256) FROM fleet_locations {where}") == 200
            assert await one("SELECT COUNT(*) FROM fleet_claims") == 0
            cur = await conn.execute("SELECT stage, COUNT(*) FROM fleet_journal GROUP BY stage")
            stages: dict[str, int] = {str(k): int(n) for k, n in await cur.fetchall()}
            assert stages == {"verified": 200}, stages  # the dropped run's last rows too
    finally:
        await gyazo.close()
        await chv.close()


def test_max_item_size_fails_a_large_file_in_a_folder_copy_too(tmp_path: Path) -> None:
    """README: `--max-item-size SIZE` fails one item larger than SIZE. A 5 MB file copied
    folder -> folder with `--max-item-size 1M` was copied, exit 0."""
    from imgsync.config import load_config
    from imgsync.pipeline.run import JobSpec, run_job
    from imgsync.pipeline.summary import CopyOptions

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(5_000_000))
    (src / "small.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert main(["copy", str(src), str(dst), "--max-item-size", "1M", "--no-progress"]) == 1
    assert (dst / "small.png").is_file() and not (dst / "big.png").exists()
    # run again in-process: the file is not taken for done, and fails with one line again
    opts = CopyOptions(job="c", max_item_bytes=1024**2)
    again = asyncio.run(run_job(load_config(None), JobSpec("copy", str(src), str(dst), opts)))
    assert again.exit_code == 1 and again.failed == 1 and again.copied == 0, again
    assert again.failures == [("big.png", "larger than the per-item size cap of 1048576 bytes")]
    assert not (dst / "big.png").exists()
