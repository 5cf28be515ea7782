"""Fleet mode: the leases and locations several workers share through a real PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from helpers import run_cli_async, start_fake, write_config

from imgsync.errors import ConfigError, StateError
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.guizhan import GuizhanFake
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import seed_image
from imgsync.models import RemoteItem
from imgsync.state import queries
from imgsync.state.fleet import Fleet, redact
from imgsync.state.store import StateStore

SHAS = [f"{i:064x}" for i in range(20)]


async def test_a_checksum_is_leased_to_one_worker_at_a_time(pg_url: str) -> None:
    a = await Fleet(pg_url, "host-a:1").open()
    b = await Fleet(pg_url, "host-b:2").open()
    try:
        mine_a, present_a = await a.lease("dst", SHAS[:10])
        mine_b, present_b = await b.lease("dst", SHAS[5:15])
        assert mine_a == set(SHAS[:10]) and not present_a
        assert mine_b == set(SHAS[10:15]) and not present_b  # 5..9 are a's
        # a records 5 and releases it: b is told it is there, not given a lease
        await a.record_locations("dst", [("id5", SHAS[5], "https://x/5", None, None, None)])
        await a.release("dst", [SHAS[5]])
        mine_b, present_b = await b.lease("dst", [SHAS[5], SHAS[6]])
        assert mine_b == set() and present_b == {SHAS[5]}
        # a releases 6 without an upload (it failed): b may now take it over
        await a.release("dst", [SHAS[6]])
        mine_b, _ = await b.lease("dst", [SHAS[6]])
        assert mine_b == {SHAS[6]}
    finally:
        await a.close()
        await b.close()


async def test_concurrent_leases_never_give_a_checksum_twice(pg_url: str) -> None:
    fleets = [await Fleet(pg_url, f"host-{i}:{i}").open() for i in range(4)]
    try:
        got = await asyncio.gather(
            *(f.lease("dst", SHAS[::-1] if i % 2 else SHAS) for i, f in enumerate(fleets))
        )
        taken = [s for mine, _ in got for s in mine]
        assert sorted(taken) == sorted(SHAS)  # each exactly once
    finally:
        for f in fleets:
            await f.close()


async def test_an_expired_or_dead_workers_lease_is_taken_over(pg_url: str) -> None:
    gone = await Fleet(pg_url, "far-host:1", ttl=-1.0).open()  # its leases expire at once
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()
    dead = await Fleet(pg_url, f"{socket.gethostname()}:{proc.pid}").open()  # exited
    live = await Fleet(pg_url, "other-host:3").open()
    me = await Fleet(pg_url, f"{socket.gethostname()}:{os.getpid()}").open()
    try:
        assert (await gone.lease("dst", [SHAS[0]]))[0] == {SHAS[0]}
        assert (await dead.lease("dst", [SHAS[1]]))[0] == {SHAS[1]}
        assert (await live.lease("dst", [SHAS[2]]))[0] == {SHAS[2]}
        mine, _ = await me.lease("dst", SHAS[:3])
        assert mine == {SHAS[0], SHAS[1]}  # the live one on another host keeps its lease
        assert await me.held_by_others("dst") == 1
        assert not await me.settle("dst", within=0.0)
    finally:
        for f in (gone, dead, live, me):
            await f.close()


async def test_a_worker_on_another_machine_whose_session_ended_is_taken_over_at_once(
    pg_url: str,
) -> None:
    """Its pid means nothing here and its leases (and page) have not expired, but its
    database session ended (a killed process's connection drops): its leases and its
    page are another worker's at once, not a TTL later. A
    worker on another machine whose session lives keeps its leases."""
    from vclock import VirtualClock

    from imgsync.state.fleet import pages

    clock = VirtualClock()
    killed = await Fleet(pg_url, "machine-a.example:11", clock=clock.time).open()
    alive = await Fleet(pg_url, "machine-c.example:12", clock=clock.time).open()
    me = await Fleet(pg_url, "machine-b.example:13", clock=clock.time).open()
    try:
        assert (await killed.lease("dst", SHAS[:2])).mine == set(SHAS[:2])
        assert (await alive.lease("dst", [SHAS[2]])).mine == {SHAS[2]}
        round_ = await pages.begin_round(killed, "src", "dst", appends=False)
        assert await pages.claim_page(killed, "src", "dst", round_) is not None
        assert await me.held_by_others("dst") == 3
        assert await me.lease("dst", SHAS[:3]) == (set(), set())  # all held, none expired
        assert killed._conn is not None
        await killed._conn.close()  # the kill: its connection drops, nothing is released
        await clock.sleep(1.0)  # far less than the 30 s TTL
        got = await me.lease("dst", SHAS[:3])
        assert got.mine == set(SHAS[:2])  # the killed worker's, searched for (it may have sent)
        assert got.taken_over == set(SHAS[:2]) and set(got.since) == set(SHAS[:2])
        assert await me.holders("dst", SHAS[:3]) == {SHAS[2]: "machine-c.example:12"}
        assert await me.held_by_others("dst") == 1
        claim = await pages.claim_page(me, "src", "dst", round_)
        assert claim is not None and claim.seq == 0  # its page, listed again by me
    finally:
        for f in (killed, alive, me):
            await f.close()


async def test_a_dead_workers_page_is_taken_over_before_the_pages_still_free(
    pg_url: str,
) -> None:
    """A worker (another machine) dies holding page 0 while page 1 is free: the next
    claim gets page 0 at once, not after every free page of the pass (its takeover
    searches then read the destination back seconds, not the whole pass)."""
    from vclock import VirtualClock

    from imgsync.state.fleet import pages

    clock = VirtualClock()
    killed = await Fleet(pg_url, "machine-a.example:21", clock=clock.time).open()
    me = await Fleet(pg_url, "machine-b.example:22", clock=clock.time).open()
    try:
        round_ = await pages.begin_round(killed, "src", "dst", appends=False)
        first = await pages.claim_page(killed, "src", "dst", round_)
        assert first is not None and first.seq == 0
        await pages.page_listed(killed, "src", "dst", first, "cursor-1")  # page 1 is free
        assert killed._conn is not None
        await killed._conn.close()  # killed: its session ends
        claim = await pages.claim_page(me, "src", "dst", round_)
        assert claim is not None and claim.seq == 0, claim
        claim = await pages.claim_page(me, "src", "dst", round_)
        assert claim is not None and claim.seq == 1 and claim.cursor == "cursor-1"
    finally:
        for f in (killed, me):
            await f.close()


async def test_the_store_leases_through_the_fleet_and_imports_its_locations(
    pg_url: str, tmp_path: Path
) -> None:
    async with (
        StateStore(tmp_path / "a.db", pg_url) as a,
        StateStore(tmp_path / "b.db", pg_url) as b,
    ):
        b.owner = "another-host:1"  # two machines, as far as the leases go
        assert b.fleet is not None
        b.fleet.owner = b.owner
        mine, _ = await a.lease("dst", [SHAS[0]])
        assert mine == {SHAS[0]}
        assert await b.lease("dst", [SHAS[0]]) == (set(), set())  # held by a
        item = RemoteItem(remote_id="r0", name="r0.png", url="https://d/r0.png", size=3)
        await queries.record_locations(a, "dst", [(SHAS[0], item)])
        await a.flush()
        await a.release("dst", [SHAS[0]])
        assert await b.lease("dst", [SHAS[0]]) == (set(), {SHAS[0]})
        assert await queries.import_fleet_locations(b, "dst") == 1
        assert b.fleet is not None
    from imgsync.state.reader import must_open

    with must_open(tmp_path / "b.db") as db:
        assert db.items_at("dst") == {"r0": SHAS[0]}


async def test_a_bad_url_is_a_one_line_state_error_without_the_password(tmp_path: Path) -> None:
    url = "postgresql://me:s3cret@127.0.0.1:1/nothing"
    with pytest.raises(StateError) as err:
        async with StateStore(tmp_path / "s.db", url):
            pass
    assert "s3cret" not in str(err.value) and "\n" not in str(err.value)
    assert redact(url) == "postgresql://me:***@127.0.0.1:1/nothing"
    assert "s3cret" not in repr(Fleet(url, "x:1"))


GY_TOKEN = "gyazo-fleet-token-1234"
GZ_TOKEN = "guizhan-fleet-token-5678"


def _fleet_config(path: Path, gyazo_url: str, guizhan_url: str, extra: str = "") -> Path:
    return write_config(
        path,
        extra
        + f"""
[remotes.gy]
type = "gyazo"
base_url = "{gyazo_url}"
token_env = "GY_TOKEN"

[remotes.gz]
type = "guizhan"
base_url = "{guizhan_url}"
token_env = "GZ_TOKEN"
""",
    )


async def _get_json(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        data: dict[str, int] = await r.json()
        return data


async def test_three_workers_migrate_one_library_uploading_each_image_once(
    pg_url: str, tmp_path: Path
) -> None:
    """Three `imgsync migrate` processes, each with its own (empty) SQLite state, on one
    PostgreSQL state and each allowed the destination's whole 20/second: every image is
    uploaded once, the host never throttles the fleet, and every worker's map is complete."""
    n = 90
    gyazo = await start_fake(GyazoFake(Knobs(token=GY_TOKEN, seed=n)))
    # every destination request takes a while, so the three runs overlap
    slow = Knobs(token=GZ_TOKEN, rate="20/second", faults={"slow": 1.0}, slow_seconds=0.05)
    guizhan = await start_fake(GuizhanFake(slow))
    try:
        limit = f'[limits."{guizhan.authority}"]\nrate = "20/second"\n'
        cfg = _fleet_config(tmp_path / "cfg.toml", gyazo.url, guizhan.url, limit)
        runs = []
        for w in range(3):
            env = {
                "GY_TOKEN": GY_TOKEN,
                "GZ_TOKEN": GZ_TOKEN,
                "IMGSYNC_STATE": str(tmp_path / f"worker{w}" / "state.db"),
                "IMGSYNC_STATE_URL": pg_url,
            }
            args = ("--config", str(cfg), "migrate", "gy:", "gz:", "--json")
            runs.append(run_cli_async(*args, "--map", str(tmp_path / f"map{w}.csv"), env=env))
        done = await asyncio.gather(*runs)
        for proc in done:
            assert proc.returncode == 0, proc.stderr
            for secret in (GY_TOKEN, GZ_TOKEN):
                assert secret not in proc.stdout + proc.stderr
        summaries = [json.loads(p.stdout) for p in done]
        print("copied by each worker:", [s["copied"] for s in summaries])
        src = await _get_json(gyazo.url + "/_fakehost/stats")
        dst = await _get_json(guizhan.url + "/_fakehost/stats")
        assert src["items"] == n
        assert dst["uploads"] == src["distinct_checksums"] == dst["items"]
        # 3 workers, each allowed the whole 20/second, held the limit together (without the
        # shared ledger the host throttles ~20 of them; a request counts there until its
        # answer, so one delayed on a loaded machine still lands inside its window)
        assert dst["throttled"] == 0
        assert sum(s["copied"] for s in summaries) == src["distinct_checksums"]
        for w in range(3):
            with (tmp_path / f"map{w}.csv").open() as fh:
                rows = list(csv.DictReader(fh))
            assert len(rows) == 2 * n  # each image's file URL and permalink
            assert all(r["new_url"].startswith(guizhan.url) for r in rows)
        # status shows the fleet's totals, from any worker: every item of the job done once
        status = await run_cli_async("--config", str(cfg), "status", env=env)
        assert status.returncode == 0, status.stderr
        assert "(shared by the fleet)" in status.stdout
        assert f"  gz: {n} items\n" in status.stdout
        assert "0 uploads in flight by 0 workers" in status.stdout
        assert f"{guizhan.authority}: " in status.stdout
        assert "listing gy -> gz, pass 1: " in status.stdout, status.stdout
        assert "pages done, complete" in status.stdout
        shown = await run_cli_async("--config", str(cfg), "status", "--json", env=env)
        report = json.loads(shown.stdout)
        (stages,) = report["jobs"].values()
        assert stages.get("uploaded", 0) + stages.get("verified", 0) == n, stages
        assert report["objects"] == n and report["bytes"] > 0
        assert len([r for r in report["recent_runs"] if r["finished"]]) == 3
        (listing,) = report["fleet"]["listings"].values()
        assert listing["complete"] and listing["done"] == listing["pages"] >= 1, listing
    finally:
        await gyazo.close()
        await guizhan.close()


async def test_verbs_fleet_mode_does_not_cover_are_refused_in_one_line(tmp_path: Path) -> None:
    env = {"IMGSYNC_STATE_URL": "postgresql://me:s3cret@127.0.0.1:1/x"}
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a.png").write_bytes(seed_image(0)[0])
    refused: tuple[tuple[str, ...], ...] = (
        ("sync", str(src), str(dst)),
        ("verify", str(dst), "--repair", str(dst)),
    )
    for args in refused:
        proc = await run_cli_async(*args, env=env)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "does not work with a shared state" in proc.stderr
        assert "instead" in proc.stderr.lower() and "s3cret" not in proc.stderr
    # an unreachable shared state: exit 75, one line, no password
    unreachable: tuple[tuple[str, ...], ...] = (("copy", str(src), str(dst)), ("verify", str(dst)))
    for args in unreachable:
        proc = await run_cli_async(*args, env=env)
        assert proc.returncode == 75, proc.stderr
        assert proc.stderr.count("\n") == 1 and "s3cret" not in proc.stderr
        assert "shared state postgresql://me:***@127.0.0.1:1/x" in proc.stderr


async def test_verify_in_fleet_mode_checks_every_workers_uploads(
    pg_url: str, tmp_path: Path
) -> None:
    """Worker 0 uploads 4 images; one is then deleted on the host's website. Worker 1
    (another machine: its own empty SQLite, nothing uploaded) runs `imgsync verify gz:`
    on the shared state: all 4 are checked, the deleted one is reported gone, exit 1."""
    host = GuizhanFake(Knobs(token=GZ_TOKEN, rate="none"))
    guizhan = await start_fake(host)
    try:
        src = tmp_path / "shots"
        src.mkdir()
        for i in range(4):
            data, ext = seed_image(i)
            (src / f"v{i}.{ext}").write_bytes(data)
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gz]\ntype = "guizhan"\nbase_url = "{guizhan.url}"\n'
            f'token_env = "GZ_TOKEN"\n[limits."{guizhan.authority}"]\nrate = "none"\n',
        )

        def env(w: int) -> dict[str, str]:
            return {
                "GZ_TOKEN": GZ_TOKEN,
                "IMGSYNC_STATE": str(tmp_path / f"worker{w}" / "state.db"),
                "IMGSYNC_STATE_URL": pg_url,
            }

        up = await run_cli_async("--config", str(cfg), "copy", str(src), "gz:", env=env(0))
        assert up.returncode == 0, up.stderr
        (gone,) = [m.name for m in host.images.values()][:1]
        assert host.delete_images([gone])
        check = await run_cli_async("--config", str(cfg), "verify", "gz:", "--json", env=env(1))
        assert check.returncode == 1, check.stderr
        report = json.loads(check.stdout)
        (remote,) = report["remotes"]
        assert remote["checked"] == 4, remote
        assert remote["alive"] == 3, remote
        assert [p["status"] for p in remote["problems"]] == ["gone"], remote
        assert GZ_TOKEN not in check.stdout + check.stderr
    finally:
        await guizhan.close()


def test_the_state_url_comes_from_the_config_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imgsync.config import parse_config

    assert parse_config({}).state_url is None
    url = "postgresql://imgsync@db/imgsync"
    assert parse_config({"state": {"url": url}}).state_url == url
    monkeypatch.setenv("IMGSYNC_STATE_URL", "postgresql://other@db/x")
    assert parse_config({"state": {"url": url}}).state_url == "postgresql://other@db/x"
    with pytest.raises(ConfigError) as err:
        parse_config({"state": {"url": "mysql://db/x"}})
    assert "state.url" in str(err.value.problems)


async def test_a_worker_killed_mid_run_loses_nothing(pg_url: str, tmp_path: Path) -> None:
    """SIGKILL one of three workers mid-run: the others finish and name what it left (exit
    1, "run again"); running it again completes the job, every image at the destination
    and its map complete, each image uploaded once (what it had in flight is searched
    for by whoever takes its leases over)."""
    n = 90
    gyazo = await start_fake(GyazoFake(Knobs(token=GY_TOKEN, seed=n)))
    slow = Knobs(token=GZ_TOKEN, rate="none", faults={"slow": 1.0}, slow_seconds=0.05)
    guizhan = await start_fake(GuizhanFake(slow))
    try:
        unlimited = f'[limits."{guizhan.authority}"]\nrate = "none"\n'  # not Guizhan's 60/min
        cfg = _fleet_config(tmp_path / "cfg.toml", gyazo.url, guizhan.url, unlimited)

        def env(w: int) -> dict[str, str]:
            return {
                **os.environ,
                "GY_TOKEN": GY_TOKEN,
                "GZ_TOKEN": GZ_TOKEN,
                "IMGSYNC_STATE": str(tmp_path / f"worker{w}" / "state.db"),
                "IMGSYNC_STATE_URL": pg_url,
            }

        def args(w: int) -> list[str]:
            return ["--config", str(cfg), "migrate", "gy:", "gz:", "--json",
                    "--map", str(tmp_path / f"map{w}.csv")]  # fmt: skip

        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "imgsync",
                *args(w),
                env=env(w),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for w in range(3)
        ]
        for _ in range(600):  # until the fleet is well under way
            if (await _get_json(guizhan.url + "/_fakehost/stats"))["uploads"] >= n // 4:
                break
            await asyncio.sleep(0.05)
        procs[0].kill()
        await procs[0].wait()
        for p in procs[1:]:
            out, err = await asyncio.wait_for(p.communicate(), 120)
            assert p.returncode in (0, 1), err.decode()
            summary = json.loads(out)
            print("survivor:", summary["copied"], "copied,", summary["failed"], "left")
            for f in summary["failures"]:  # only what the killed worker held, if anything
                assert "left by another worker" in f["error"]
        again = await run_cli_async(*args(0), env=env(0))
        assert again.returncode == 0, again.stderr
        src = await _get_json(gyazo.url + "/_fakehost/stats")
        dst = await _get_json(guizhan.url + "/_fakehost/stats")
        assert dst["distinct_checksums"] == src["distinct_checksums"]  # nothing lost
        # each image uploaded once: what the killed worker had sent is found by the
        # takeover search, not sent again
        assert dst["uploads"] == src["distinct_checksums"] == n
        with (tmp_path / "map0.csv").open() as fh:
            assert len(list(csv.DictReader(fh))) == 2 * n
    finally:
        await gyazo.close()
        await guizhan.close()


async def test_the_fleet_ledger_holds_a_host_limit_across_workers(pg_url: str) -> None:
    """Two workers' limiters, each allowing the host's whole 20/second, admit 50 requests
    together: the shared log never holds more than 20 in any window of a second."""
    from imgsync.ratelimit import HostLimiter
    from imgsync.state.fleet import FleetLedger

    ledgers = [FleetLedger(pg_url, f"host-{i}:1") for i in range(2)]
    limiters = [HostLimiter("api.example", ["20/second"], gate=g) for g in ledgers]

    async def one(lim: HostLimiter) -> None:
        async with lim.slot() as slot:
            slot.answered()

    try:
        await asyncio.gather(*(one(limiters[i % 2]) for i in range(50)))
    finally:
        for g in ledgers:
            await g.close()
    import psycopg

    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute(
            "SELECT stamp FROM fleet_rate_log WHERE authority = 'api.example' ORDER BY stamp"
        )
        stamps = [float(r[0]) for r in await cur.fetchall()]
    assert len(stamps) == 50
    for i, start in enumerate(stamps):  # every window that starts at a request
        assert sum(1 for t in stamps[i:] if t < start + 1.0) <= 20


async def test_losing_the_shared_state_mid_run_is_exit_75_in_one_line(
    pg_url: str, tmp_path: Path
) -> None:
    """PostgreSQL drops the worker's connections mid-run (a restart, a failover): the worker
    stops with the state error (exit 75, one line, no password), not an internal error."""
    import psycopg

    gyazo = await start_fake(GyazoFake(Knobs(token=GY_TOKEN, seed=60)))
    slow = Knobs(token=GZ_TOKEN, rate="none", faults={"slow": 1.0}, slow_seconds=0.05)
    guizhan = await start_fake(GuizhanFake(slow))
    try:
        unlimited = f'[limits."{guizhan.authority}"]\nrate = "none"\n'  # not Guizhan's 60/min
        cfg = _fleet_config(tmp_path / "cfg.toml", gyazo.url, guizhan.url, unlimited)
        env = {
            **os.environ,
            "GY_TOKEN": GY_TOKEN,
            "GZ_TOKEN": GZ_TOKEN,
            "IMGSYNC_STATE_URL": pg_url,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "imgsync", "--config", str(cfg), "migrate", "gy:", "gz:",
            "--map", str(tmp_path / "map.csv"), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        for _ in range(600):
            if (await _get_json(guizhan.url + "/_fakehost/stats"))["uploads"] >= 10:
                break
            await asyncio.sleep(0.05)
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        _out, err = await asyncio.wait_for(proc.communicate(), 120)
        text = err.decode()
        assert proc.returncode == 75, text
        assert text.count("\n") == 1 and text.startswith("imgsync: shared state postgresql://")
    finally:
        await gyazo.close()
        await guizhan.close()
