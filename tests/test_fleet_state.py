"""Fleet mode's shared record on a real PostgreSQL: the journal and pauses every worker
sees, schema migrations, `imgsync status` on either state, and `imgsync state copy`."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from imgsync import runtime
from imgsync.cli import main
from imgsync.config import parse_config
from imgsync.errors import LocalIOError, RemotePaused, StateError, UsageError
from imgsync.models import RemoteItem
from imgsync.state import queries
from imgsync.state.fleet import Fleet, schema
from imgsync.state.fleet.report import shared_status
from imgsync.state.fleet.transfer import TABLES, copy_state
from imgsync.state.reader import must_open
from imgsync.state.store import StateStore

SHAS = [f"{i:064x}" for i in range(12)]
DST = "chevereto:https://img.example/acct"
SRC = "gyazo:https://api.gyazo.example/acct"


async def _connect(url: str) -> Any:
    import psycopg

    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def test_an_older_shared_schema_is_upgraded_keeping_its_rows(pg_url: str) -> None:
    """A database a version-2 imgsync made (leases, locations, ledger only) is brought to
    the current version by the first worker that connects; its rows stay."""
    conn = await _connect(pg_url)
    try:
        await conn.set_autocommit(False)
        await schema.migrate(conn, upto=2)
        await conn.execute(
            "INSERT INTO fleet_locations (remote, remote_id, sha256, url, updated) "
            "VALUES ('dst', 'r1', %s, 'https://d/1', 1.0)",
            (SHAS[1],),
        )
        await conn.commit()
        # status on it first: it is read as the current version (migrated as a worker would)
        assert (await asyncio.to_thread(shared_status, pg_url))["remotes"] == {"dst": {"items": 1}}
        fleet = await Fleet(pg_url, "w:1").open()
        try:
            assert await fleet.locations_at("dst") == [
                ("r1", SHAS[1], "https://d/1", None, None, None, 1.0)
            ]
            await fleet.journal([("job", "src", "s1", "dst", SHAS[1], "uploaded", None, 1, 2.0)])
            await fleet.push()
            assert fleet.totals == {"job": {"uploaded": 1}}
        finally:
            await fleet.close()
        cur = await conn.execute("SELECT version FROM fleet_schema ORDER BY version")
        assert [r[0] for r in await cur.fetchall()] == list(range(1, schema.SCHEMA_VERSION + 1))
        # a database a newer imgsync wrote is refused in one line, not misread
        await conn.execute("INSERT INTO fleet_schema (version) VALUES (%s)", (99,))
        await conn.commit()
    finally:
        await conn.close()
    with pytest.raises(StateError) as err:
        await Fleet(pg_url, "w:2").open()
    assert "version 99" in str(err.value) and "\n" not in str(err.value)


async def test_the_fleets_journal_adds_up_what_every_worker_did(
    pg_url: str, tmp_path: Path
) -> None:
    """Two workers of one job: what each did lands in the shared journal, and news from a
    worker that found an item already there does not take back another's upload."""
    async with (
        StateStore(tmp_path / "a.db", pg_url) as a,
        StateStore(tmp_path / "b.db", pg_url) as b,
    ):
        job = "migrate:gy:->gz:"
        # both list the whole source (each its own pass)
        listed = [(f"s{i}", SHAS[i]) for i in range(6)]
        await queries.journal_many(a, job, SRC, DST, "listed", listed)
        await queries.journal_many(b, job, SRC, DST, "listed", listed)
        for i in range(3):  # a uploads 0..2, b uploads 3, fails 4
            await queries.journal(a, job, SRC, f"s{i}", DST, "uploaded", sha256=SHAS[i])
        await queries.journal(b, job, SRC, "s3", DST, "verified", sha256=SHAS[3])
        await queries.journal(b, job, SRC, "s4", DST, "failed", error="boom", attempt=True)
        assert a.fleet is not None and b.fleet is not None
        await a.fleet.push()
        await b.fleet.push()
        # b's pass reaches 0..2 later: already there, still "listed" in its own journal
        await queries.journal_many(b, job, SRC, DST, "listed", listed[:3])
        await b.fleet.push()
        assert b.fleet.totals[job] == {"uploaded": 3, "verified": 1, "failed": 1, "listed": 1}
    report = shared_status(pg_url)
    assert report["jobs"] == {job: {"failed": 1, "listed": 1, "uploaded": 3, "verified": 1}}
    assert [f["item"] for f in report["recent_failures"]] == ["s4"]
    # each worker's own journal holds only its own news
    with must_open(tmp_path / "b.db") as db:
        assert db.status()["jobs"][job] == {"failed": 1, "listed": 4, "verified": 1}


async def test_a_pause_one_worker_stores_stops_every_worker(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker A is told to wait an hour (a 429 with Retry-After, a spent budget): worker B,
    already running, stops sending to that host too, and a worker started later starts
    paused."""
    monkeypatch.setattr(runtime, "PAUSE_POLL", 0.05)
    cfgs = [
        parse_config({"state": {"path": str(tmp_path / f"w{i}" / "state.db"), "url": pg_url}})
        for i in range(3)
    ]
    try:
        async with runtime.Runtime(cfgs[0]) as rt_a, runtime.Runtime(cfgs[1]) as rt_b:
            await rt_a.http()
            await rt_b.http()  # B runs, and watches for the fleet's pauses
            host_b = runtime.shared_limiters(cfgs[1]).for_authority("api.example")
            assert host_b.pause_reason == ""
            until = (
                await runtime.shared_limiters(cfgs[0])
                .for_authority("api.example")
                .pause_for(3600, "429 Too Many Requests (Retry-After: 3600)")
            )
            for _ in range(200):
                if host_b.paused_until is not None:
                    break
                await asyncio.sleep(0.05)
            assert host_b.paused_until == pytest.approx(until)
            with pytest.raises(RemotePaused) as err:
                async with host_b.slot():
                    pass
            assert "Retry-After" in str(err.value)
            # the database drops every connection (a restart): B's watch connects again
            conn = await _connect(pg_url)
            try:
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await conn.close()
            other_b = runtime.shared_limiters(cfgs[1]).for_authority("upload.example")
            await (
                runtime.shared_limiters(cfgs[0])
                .for_authority("upload.example")
                .pause_for(600, "outage")
            )
            for _ in range(200):
                if other_b.pause_reason:
                    break
                await asyncio.sleep(0.05)
            assert other_b.pause_reason == "outage"
        late = runtime.shared_limiters(cfgs[2]).for_authority("api.example")
        assert late.paused_until == pytest.approx(until)
        assert shared_status(pg_url)["paused_hosts"]["api.example"]["until"] == pytest.approx(until)
    finally:
        for cfg in cfgs:
            runtime._REGISTRIES.pop(cfg.state_path, None)


# ---- imgsync state copy ------------------------------------------------------------


async def _sample_state(path: Path) -> None:
    """A single user's state: uploads with delete URLs, a journal, a cursor, a pause."""
    async with StateStore(path) as s:
        await queries.record_objects(
            s, [(SHAS[i], 1000 + i, f"{i:032x}", "image/png") for i in range(6)]
        )
        await queries.record_locations(
            s,
            SRC,
            [
                (SHAS[i], RemoteItem(f"g{i}", f"g{i}.png", url=f"https://i.gyazo/{i}.png",
                                     page_url=f"https://gyazo/{i}"))
                for i in range(6)
            ],
        )  # fmt: skip
        await queries.record_locations(
            s,
            DST,
            [
                (SHAS[i], RemoteItem(f"c{i}", f"c{i}.png", url=f"https://img.example/{i}.png",
                                     delete_url=f"https://img.example/delete/{i}/SECRETKEY"))
                for i in range(4)
            ],
        )  # fmt: skip
        await queries.record_owners(s, DST, SRC, SHAS[:4], wrote=True)
        job = "migrate:gy:->imgz:"
        await queries.journal_many(
            s, job, SRC, DST, "listed", [(f"g{i}", SHAS[i]) for i in range(6)]
        )
        await queries.journal_many(s, job, SRC, DST, "verified", [(f"g{i}", SHAS[i]) for i in range(4)])  # fmt: skip
        await queries.journal(s, job, SRC, "g5", DST, "failed", error="too large", attempt=True)
        await queries.save_cursor(s, SRC, "all", "page-2", done=False)
    with must_open(path) as db:
        db.save_pause("img.example", time.time() + 3600, "flooding detected")


def _local_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as conn:
        return {
            t.name: sorted(
                tuple(r) for r in conn.execute(f"SELECT {', '.join(t.columns)} FROM {t.local}")
            )
            for t in TABLES
        }


def _delete_urls(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT COUNT(*) FROM locations WHERE delete_url IS NOT NULL")
        return int(row.fetchone()[0])


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("objects", "bytes", "remotes", "jobs", "paused_hosts", "cursors")
    out = {k: report[k] for k in keys}
    out["recent_failures"] = [
        {k: v for k, v in f.items() if k != "attempts"} for f in report["recent_failures"]
    ]
    return out


async def test_state_copy_moves_a_sqlite_state_into_postgresql_and_back(
    pg_url: str, tmp_path: Path
) -> None:
    """SQLite -> PostgreSQL -> a new SQLite file: every shared row arrives unchanged, no
    delete URL leaves the first file, status shows the same on all three, and copying
    again changes nothing."""
    first, back = tmp_path / "first.db", tmp_path / "back" / "state.db"
    await _sample_state(first)
    copied = copy_state(str(first), pg_url)
    assert copied.rows == {
        "objects": 6, "locations": 10, "journal": 6, "cursors": 1, "pauses": 1, "owners": 4,
    }  # fmt: skip
    copy_state(pg_url, str(back))
    want = _local_rows(first)
    assert _local_rows(back) == want
    # the shared copy holds no delete URL, the copy back none either
    assert _delete_urls(back) == 0
    conn = await _connect(pg_url)
    try:
        cur = await conn.execute("SELECT * FROM fleet_locations")
        assert "SECRETKEY" not in repr(await cur.fetchall())
    finally:
        await conn.close()
    # status: the same shape and the same answers on each
    with must_open(first) as db:
        local = db.status()
    shared = shared_status(pg_url)
    assert set(local) <= set(shared)
    assert _comparable(shared) == _comparable(local)
    with must_open(back) as db:
        assert _comparable(db.status()) == _comparable(local)
    # again, both ways: nothing doubles, nothing changes; the first file keeps its secrets
    assert copy_state(str(first), pg_url).rows == copied.rows
    copy_state(pg_url, str(back))
    copy_state(pg_url, str(first))
    assert _local_rows(back) == want == _local_rows(first)
    assert _comparable(shared_status(pg_url)) == _comparable(shared)
    assert _delete_urls(first) == 4


def test_state_copy_refuses_bad_arguments_in_one_line(tmp_path: Path) -> None:
    secret = "postgresql://me:s3cret@127.0.0.1:1/x"
    with pytest.raises(UsageError) as usage:
        copy_state("mysql://me:s3cret@db/x", str(tmp_path / "a.db"))
    assert "s3cret" not in str(usage.value)
    with pytest.raises(UsageError):
        copy_state(str(tmp_path / "a.db"), str(tmp_path / "." / "a.db"))
    with pytest.raises(LocalIOError) as missing:
        copy_state(str(tmp_path / "none.db"), secret)
    assert "no state database" in str(missing.value) and "s3cret" not in str(missing.value)


def test_state_copy_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exit codes (2 bad argument, 66 nothing at FROM, 75 a database not reachable), one
    line each, never the password."""
    src = tmp_path / "s.db"
    must_open(src).close()
    secret = "postgresql://me:s3cret@127.0.0.1:1/x"
    for args, code in (
        (["state", "copy", "mysql://me:s3cret@db/x", str(src)], 2),
        (["state", "copy", str(tmp_path / "none.db"), secret], 66),
        (["state", "copy", str(src), secret], 75),
        (["state", "copy", secret, str(tmp_path / "t.db")], 75),
        (["state", "copy", str(src), "postgresql://me@127.0.0.1:1/x?password=s3cret"], 75),
        (["status", "--state", "postgresql://me@127.0.0.1:1/x?sslmode=off&password=s3cret"], 75),
    ):
        assert main(args) == code, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "s3cret" not in err, err
    assert "postgresql://me@127.0.0.1:1/x?sslmode=off&password=***" in err
    assert not (tmp_path / "t.db").exists()
    # a FROM or TO that is some other file is refused, and left exactly as it was
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database")
    notes.chmod(0o644)
    for args, code in (
        (["state", "copy", str(notes), str(tmp_path / "t.db")], 66),
        (["state", "copy", str(src), str(notes)], 2),
        (["status", "--state", str(notes)], 66),
    ):
        assert main(args) == code, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not" in err, err
        assert notes.read_text() == "not a database" and notes.stat().st_mode & 0o777 == 0o644


async def test_state_copy_reads_an_older_state_file_without_changing_it(
    pg_url: str, tmp_path: Path
) -> None:
    """A state file an older imgsync wrote (schema version 5) is copied as it is: migrated
    in memory, the file itself not touched (its version, its bytes, its mode)."""
    from imgsync.state.schema import MIGRATIONS

    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    for number in range(5):
        for stmt in MIGRATIONS[number].split(";"):
            if stmt.strip():
                conn.execute(stmt)
    conn.execute(
        "INSERT INTO locations (remote, remote_id, sha256, url, delete_url, updated, page_url) "
        "VALUES (?, 'r1', ?, 'https://d/1', 'https://d/del/1', 1.0, 'https://d/p/1')",
        (DST, SHAS[1]),
    )
    conn.execute("PRAGMA user_version = 5")
    conn.commit()
    conn.close()
    old.chmod(0o640)
    before = old.read_bytes()
    assert copy_state(str(old), pg_url).rows["locations"] == 1
    assert old.read_bytes() == before and old.stat().st_mode & 0o777 == 0o640
    report = shared_status(pg_url)
    assert report["remotes"] == {DST: {"items": 1}}


async def test_state_copy_and_status_round_trip_through_the_cli(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = tmp_path / "first.db"
    await _sample_state(first)
    assert await asyncio.to_thread(main, ["state", "copy", str(first), pg_url, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["copied"]["locations"] == 10 and out["to"] == pg_url
    reports = []
    for where in (str(first), pg_url):
        assert await asyncio.to_thread(main, ["status", "--state", where, "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert _comparable(reports[0]) == _comparable(reports[1])
    assert await asyncio.to_thread(main, ["status", "--state", pg_url]) == 0
    text = capsys.readouterr().out
    assert "(shared by the fleet)" in text and "job migrate:gy:->imgz:: 1 failed" in text
    assert "paused: img.example until" in text


def test_the_progress_line_shows_the_fleets_totals() -> None:
    from io import StringIO

    from imgsync.pipeline.progress import Progress
    from imgsync.pipeline.run import fleet_note

    totals: dict[str, dict[str, int]] = {}
    progress = Progress(stream=StringIO(), width=400, clock=lambda: 10.0)
    progress.fleet = lambda: fleet_note(totals, "job")
    assert "fleet" not in progress.text()  # nothing pushed yet
    totals["job"] = {"listed": 5, "uploaded": 300, "verified": 12, "failed": 2}
    progress.tick(done=3, copied=3)
    assert progress.text().endswith("| fleet: 312 copied, 2 failed of 319")


# ---- the daemon in fleet mode ------------------------------------------------------


def _daemon_config(tmp_path: Path, url: str, job: str, listen: bool = False) -> Path:
    path = tmp_path / "config.toml"
    daemon = 'listen = "127.0.0.1:0"' if listen else ""
    path.write_text(
        f"""
[state]
path = "{tmp_path / "state" / "state.db"}"
url = "{url}"

[daemon]
debounce = "2s"
{daemon}

{job}
"""
    )
    return path


async def test_the_daemon_runs_copy_jobs_on_a_shared_state_and_shows_the_fleets_totals(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`imgsync run` with a state URL runs a watch job (folder -> host) as a worker of the
    fleet, and its /metrics counts what every worker of that job did, not only its own."""
    import os

    import aiohttp
    from daemonclock import VirtualClock, eventually
    from helpers import start_fake
    from prometheus_client.parser import text_string_to_metric_families

    from imgsync.config import load_config
    from imgsync.daemon import Daemon
    from imgsync.fakehosts.common import Knobs
    from imgsync.fakehosts.guizhan import GuizhanFake
    from imgsync.fakehosts.images import make_png

    clock = VirtualClock()
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"a{i}.png").write_bytes(make_png(9, 9, i))
        os.utime(src / f"a{i}.png", (clock.time() - 60, clock.time() - 60))
    guizhan = await start_fake(GuizhanFake(Knobs(token="gz-token-1234")))
    monkeypatch.setenv("GZ_TOKEN", "gz-token-1234")
    job = (
        f'[remotes.gz]\ntype = "guizhan"\nbase_url = "{guizhan.url}"\ntoken_env = "GZ_TOKEN"\n\n'
        f'[[jobs]]\nname = "shots"\nkind = "watch"\nsource = "{src}"\ndestinations = ["gz:"]\n'
    )
    cfg = load_config(_daemon_config(tmp_path, pg_url, job, listen=True))
    # another worker of the same job already copied two other images
    async with StateStore(tmp_path / "other.db", pg_url) as other:
        await queries.journal_many(
            other, "shots", "local:/elsewhere", "x", "uploaded", [("b0", SHAS[0]), ("b1", SHAS[1])]
        )
    daemon = Daemon(cfg, clock=clock, signals=False, watch_events=False)
    task = asyncio.create_task(daemon.run())
    try:
        await eventually(lambda: daemon.ready.is_set() or task.done())
        await eventually(
            lambda: "shots" in daemon.stats.jobs and daemon.stats.jobs["shots"].runs > 0
        )
        assert daemon.stats.jobs["shots"].items.get(("gz:", "copied")) == 3
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{daemon.port}/metrics") as r,
        ):
            text = await r.text()
        fleet = {
            s.labels["stage"]: s.value
            for f in text_string_to_metric_families(text)
            if f.name == "imgsync_fleet_items"
            for s in f.samples
            if s.labels["job"] == "shots"
        }
        done = fleet.get("uploaded", 0) + fleet.get("verified", 0)
        assert done == 5, fleet  # its own 3 and the other worker's 2
    finally:
        daemon.request_stop()
        assert await task == 0
        await guizhan.close()


async def test_the_daemon_refuses_jobs_that_delete_or_verify_on_a_shared_state(
    tmp_path: Path,
) -> None:
    from helpers import run_cli_async

    src = tmp_path / "src"
    src.mkdir()
    url = "postgresql://me:s3cret@127.0.0.1:1/x"
    job = (
        f'[[jobs]]\nname = "mirror"\nkind = "watch"\nsource = "{src}"\n'
        f'destinations = ["{tmp_path / "dst"}"]\ndelete = true\n'
    )
    proc = await run_cli_async("--config", str(_daemon_config(tmp_path, url, job)), "run")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "s3cret" not in proc.stderr
    assert "job mirror (delete = true) does not work with a shared state" in proc.stderr
