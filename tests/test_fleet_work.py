"""Fleet mode's work sharing, against a real PostgreSQL: leases renewed while held and
expiring after a TTL (on a virtual clock), listing pages claimed by one worker each, the
shared rate ledger counting a request until its answer, who holds what."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from helpers import run_cli_async, start_fake, write_config
from vclock import VirtualClock

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.guizhan import GuizhanFake
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.ratelimit import HostLimiter
from imgsync.state.fleet import Fleet, FleetLedger
from imgsync.state.fleet import pages as fleet_pages
from imgsync.state.store import StateStore

SHAS = [f"{i:064x}" for i in range(20)]


async def test_a_lease_renewed_while_held_survives_its_ttl_and_expires_once_not(
    pg_url: str,
) -> None:
    clock = VirtualClock()
    a = await Fleet(pg_url, "host-a:1", ttl=30.0, clock=clock.time).open()
    b = await Fleet(pg_url, "host-b:2", ttl=30.0, clock=clock.time).open()
    try:
        assert (await a.lease("dst", SHAS[:2]))[0] == set(SHAS[:2])
        await clock.sleep(20)
        assert await a.renew() == 2  # a long transfer: the lease is pushed to t+50
        await clock.sleep(20)  # t+40: past the first expiry, not the renewed one
        assert (await b.lease("dst", SHAS[:2]))[0] == set()
        assert await b.holders("dst", SHAS[:2]) == {SHAS[0]: "host-a:1", SHAS[1]: "host-a:1"}
        await clock.sleep(11)  # t+51: a stopped renewing (it died on another machine)
        assert (await b.lease("dst", SHAS[:2]))[0] == set(SHAS[:2])
        assert await a.renew() == 0  # a's leases are b's now
    finally:
        await a.close()
        await b.close()


async def test_the_renewal_task_renews_every_third_of_the_ttl(pg_url: str) -> None:
    clock = VirtualClock()
    ticks: asyncio.Queue[float] = asyncio.Queue()
    renewed = asyncio.Event()

    async def tick(seconds: float) -> None:  # the renewal loop's sleep, driven by the test
        renewed.set()
        await clock.sleep(await ticks.get())
        assert seconds == 10.0

    a = await Fleet(pg_url, "host-a:1", ttl=30.0, clock=clock.time, sleep=tick).open(renew=True)
    b = await Fleet(pg_url, "host-b:2", ttl=30.0, clock=clock.time).open()
    try:
        await a.lease("dst", [SHAS[0]])
        for _ in range(6):  # a minute: six renewals, the lease never lapses
            renewed.clear()
            ticks.put_nowait(10.0)
            await renewed.wait()  # the loop renewed and sleeps again
            assert (await b.lease("dst", [SHAS[0]]))[0] == set()
        assert clock.elapsed >= 60
    finally:
        await a.close()
        await b.close()


async def test_in_fleet_mode_the_store_names_the_worker_holding_a_lease(
    pg_url: str, tmp_path: Path
) -> None:
    async with (
        StateStore(tmp_path / "a.db", pg_url) as a,
        StateStore(tmp_path / "b.db", pg_url) as b,
    ):
        assert a.fleet is not None and b.fleet is not None
        a.owner = a.fleet.owner = "machine-a:41"  # two machines, as far as leases go
        assert (await a.lease("dst", [SHAS[0]]))[0] == {SHAS[0]}
        assert await b.holders("dst", [SHAS[0], SHAS[1]]) == {SHAS[0]: "machine-a:41"}


async def test_each_listing_page_goes_to_one_worker_and_a_dead_ones_comes_back(
    pg_url: str,
) -> None:
    clock = VirtualClock()
    fleets = [
        await Fleet(pg_url, f"host-{i}:{i}", ttl=30.0, clock=clock.time).open() for i in range(3)
    ]
    try:
        rounds = {await fleet_pages.begin_round(f, "src", "dst", appends=False) for f in fleets}
        assert rounds == {1}  # started together: one round
        # the listing has 6 pages; workers claim and list concurrently
        listed: list[tuple[str, int]] = []

        async def work(f: Fleet, stop_after: int | None) -> None:
            n = 0
            while True:
                claim = await fleet_pages.claim_page(f, "src", "dst", 1)
                if claim is None:
                    state = await fleet_pages.round_state(f, "src", "dst", 1)
                    if state.complete or state.done == 5:  # all but the dead worker's page
                        return
                    await asyncio.sleep(0.01)
                    continue
                listed.append((f.owner, claim.seq))
                nxt = f"c{claim.seq + 1}" if claim.seq < 5 else None
                assert claim.cursor == (f"c{claim.seq}" if claim.seq else None)
                await fleet_pages.page_listed(f, "src", "dst", claim, nxt)
                n += 1
                if stop_after is not None and n >= stop_after:
                    return  # dies holding its page: never marks it done
                await fleet_pages.page_done(f, "src", "dst", claim)

        # worker 0 lists the first page and dies; the others list the rest between them
        await work(fleets[0], 1)
        await asyncio.gather(work(fleets[1], None), work(fleets[2], None))
        dead_page = 0
        assert listed[0] == ("host-0:0", 0)
        assert {o for o, _s in listed[1:]} <= {"host-1:1", "host-2:2"}
        assert sorted(seq for _o, seq in listed) == list(range(6))  # each page listed once
        state = await fleet_pages.round_state(fleets[1], "src", "dst", 1)
        assert not state.complete and state.holders == ("host-0:0",)
        await clock.sleep(31)  # its lease expires: the page is claimed again
        claim = await fleet_pages.claim_page(fleets[2], "src", "dst", 1)
        assert claim is not None and claim.seq == dead_page
        await fleet_pages.page_done(fleets[2], "src", "dst", claim)
        assert (await fleet_pages.round_state(fleets[1], "src", "dst", 1)).complete
        # a worker starting now begins the next pass over the source, from the start
        assert await fleet_pages.begin_round(fleets[0], "src", "dst", appends=False) == 2
        claim = await fleet_pages.claim_page(fleets[0], "src", "dst", 2)
        assert claim is not None and (claim.seq, claim.cursor) == (0, None)
    finally:
        for f in fleets:
            await f.close()


async def test_a_request_counts_in_the_fleet_ledger_until_its_answer(pg_url: str) -> None:
    """A slow request arrives at the host long after it was let through. Counted from its
    admission only, the next window's requests would land in the same host window as it;
    counted until its answer, no window of the host's (arrival) clock holds more than 5."""
    ledgers = [FleetLedger(pg_url, f"host-{i}:1") for i in range(2)]
    limiters = [HostLimiter("api.example", ["5/second"], gate=g) for g in ledgers]
    arrivals: list[float] = []

    async def request(lim: HostLimiter, latency: float) -> None:
        async with lim.slot() as slot:
            await asyncio.sleep(latency)  # on its way (a busy machine, a big body)
            arrivals.append(time.time())  # the host counts it now
            slot.answered()

    try:
        first = [request(limiters[0], 1.3)]  # the first request is the slow one
        await asyncio.gather(*first, *(request(limiters[i % 2], 0.0) for i in range(1, 15)))
    finally:
        for g in ledgers:
            await g.close()
    arrivals.sort()
    worst = max(sum(1 for t in arrivals[i:] if t < start + 1.0) for i, start in enumerate(arrivals))
    assert len(arrivals) == 15
    assert worst <= 5, f"{worst} requests reached the host within one second"


GY_TOKEN = "gyazo-fleetwork-token-1234"
GZ_TOKEN = "guizhan-fleetwork-token-5678"


def _worker_env(tmp: Path, w: int, url: str) -> dict[str, str]:
    return {
        **os.environ,
        "GY_TOKEN": GY_TOKEN,
        "GZ_TOKEN": GZ_TOKEN,
        "IMGSYNC_STATE": str(tmp / f"worker{w}" / "state.db"),
        "IMGSYNC_STATE_URL": url,
    }


async def _stats(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as s, s.get(url + "/_fakehost/stats") as r:
        data: dict[str, int] = await r.json()
        return data


async def test_three_workers_split_the_listing_hold_the_limit_and_survive_a_kill(
    pg_url: str, tmp_path: Path
) -> None:
    """Issue 18's run, small: three `imgsync migrate` processes (each its own empty SQLite)
    on one PostgreSQL state, the destination limited to 40/second and every worker allowed
    all of it. One is SIGKILLed mid-run. The survivors take over its pages and leases and
    finish; then: every image at the destination, each uploaded once (the killed worker's
    uploads in flight are found by the takeover search), the host never throttled the fleet, the source
    listed and downloaded about once in all (not once per worker), every map complete."""
    n, per_page, transfers = 240, 20, 4
    gyazo = await start_fake(GyazoFake(Knobs(token=GY_TOKEN, seed=n)))
    slow = Knobs(token=GZ_TOKEN, rate="40/second", faults={"slow": 1.0}, slow_seconds=0.02)
    guizhan = await start_fake(GuizhanFake(slow))
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f"""
transfers = {transfers}
[limits."{guizhan.authority}"]
rate = "40/second"

[remotes.gy]
type = "gyazo"
base_url = "{gyazo.url}"
token_env = "GY_TOKEN"
per_page = {per_page}

[remotes.gz]
type = "guizhan"
base_url = "{guizhan.url}"
token_env = "GZ_TOKEN"
""",
        )

        def args(w: int) -> list[str]:
            return ["--config", str(cfg), "migrate", "gy:", "gz:", "--json",
                    "--map", str(tmp_path / f"map{w}.csv")]  # fmt: skip

        async def start(w: int) -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "imgsync",
                *args(w),
                env=_worker_env(tmp_path, w, pg_url),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )

        procs = [await start(w) for w in range(3)]
        for _ in range(1200):  # until the fleet is well under way
            if (await _stats(guizhan.url))["uploads"] >= n // 4:
                break
            await asyncio.sleep(0.05)
        procs[0].kill()
        await procs[0].wait()
        for p in procs[1:]:
            out, err = await asyncio.wait_for(p.communicate(), 180)
            assert p.returncode == 0, err.decode()
            for secret in (GY_TOKEN, GZ_TOKEN):
                assert secret not in out.decode() + err.decode()
            assert json.loads(out)["map_rows"] == 2 * n  # each survivor's map is complete
        again = await run_cli_async(*args(0), env=_worker_env(tmp_path, 0, pg_url))
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["copied"] == 0  # the job was done: nothing to send
        src = await _stats(gyazo.url)
        dst = await _stats(guizhan.url)
        print("source", src, "destination", dst)
        assert dst["distinct_checksums"] == src["distinct_checksums"] == n  # nothing lost
        # each image uploaded once: the killed worker's uploads in flight are searched
        # for (back to when it began sending them) by the worker taking them over
        assert dst["uploads"] == n
        assert dst["throttled"] == 0
        # downloads: each image once, plus what was on the killed worker's unfinished
        # pages (listed and fetched again by the worker taking them over); listings: about
        # two requests a page (a page is resumed from its cursor by whoever claims it)
        pages = n // per_page + 1
        assert src["requests"] <= n + 3 * per_page + 4 * pages * 2, src
        with (tmp_path / "map0.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 2 * n
        assert all(r["new_url"].startswith(guizhan.url) for r in rows)
    finally:
        await gyazo.close()
        await guizhan.close()


async def test_a_location_held_back_is_committed_with_the_lease_release(pg_url: str) -> None:
    """A worker sends the location of an upload with the release of its lease (one
    transaction): another worker never finds the lease gone but the location missing."""
    a = await Fleet(pg_url, "host-a:1").open()
    b = await Fleet(pg_url, "host-b:2").open()
    try:
        assert (await a.lease("dst", [SHAS[0]]))[0] == {SHAS[0]}
        row = ("id0", SHAS[0], "https://d/0.png", None, None, None)
        await a.record_locations("dst", [row], later=True)
        await a.record_locations(
            "src", [("s0", SHAS[0], "https://s/0", None, None, None)], later=True
        )
        assert await b.lease("dst", [SHAS[0]]) == (set(), set())  # still a's, not there yet
        assert await b.locations_at("dst") == []
        await a.release("dst", [SHAS[0]])
        assert await b.lease("dst", [SHAS[0]]) == (set(), {SHAS[0]})  # there: not leased again
        assert [r[0] for r in await b.locations_at("src")] == ["s0"]  # sent in the same go
    finally:
        await a.close()
        await b.close()


def _other_machine() -> list[str] | None:
    """A command prefix running a process under another host name (a UTS namespace), so
    its liveness cannot be checked by pid: the leases' TTL alone decides; None if not
    allowed here."""
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(
        ["unshare", "-u", "sh", "-c", "hostname imgsync-other && hostname"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0 or probe.stdout.strip() != "imgsync-other":
        return None
    return ["unshare", "-u", "sh", "-c", 'hostname imgsync-other && exec "$@"', "sh"]


async def test_a_worker_killed_on_another_machine_is_taken_over_by_its_ended_session(
    pg_url: str, tmp_path: Path
) -> None:
    """Its pid means nothing here, and its leases would outlive the test (`lease_ttl =
    600`): its database session, which ends when the kill drops its connection, is what
    gives its pages and images to the survivor at once. The survivor finishes the job:
    every image there once, its map complete, exit 0."""
    other = _other_machine()
    if other is None:
        pytest.skip("cannot run a process under another host name here (unshare -u)")
    n = 300
    gyazo = await start_fake(GyazoFake(Knobs(token=GY_TOKEN, seed=n)))
    slow = Knobs(token=GZ_TOKEN, rate="none", faults={"slow": 1.0}, slow_seconds=0.02)
    guizhan = await start_fake(GuizhanFake(slow))
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f"""
[state]
lease_ttl = 600

[limits."{guizhan.authority}"]
rate = "none"

[remotes.gy]
type = "gyazo"
base_url = "{gyazo.url}"
token_env = "GY_TOKEN"
per_page = 30

[remotes.gz]
type = "guizhan"
base_url = "{guizhan.url}"
token_env = "GZ_TOKEN"
""",
        )
        procs = []
        for w, prefix in enumerate((other, [])):
            args = ["--config", str(cfg), "migrate", "gy:", "gz:", "--json",
                    "--map", str(tmp_path / f"map{w}.csv")]  # fmt: skip
            procs.append(
                await asyncio.create_subprocess_exec(
                    *prefix,
                    sys.executable,
                    "-m",
                    "imgsync",
                    *args,
                    env=_worker_env(tmp_path, w, pg_url),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        for _ in range(1200):
            if (await _stats(guizhan.url))["uploads"] >= n // 3:
                break
            await asyncio.sleep(0.05)
        procs[0].kill()  # sh exec'd into imgsync: the worker itself
        await procs[0].wait()
        out, err = await asyncio.wait_for(procs[1].communicate(), 180)
        assert procs[1].returncode == 0, err.decode()
        assert json.loads(out)["map_rows"] == 2 * n
        dst = await _stats(guizhan.url)
        assert dst["distinct_checksums"] == n
        assert dst["uploads"] == n  # its uploads in flight found, not sent again
    finally:
        await gyazo.close()
        await guizhan.close()


def test_the_lease_ttl_is_a_state_setting_with_bounds() -> None:
    from imgsync.config import parse_config
    from imgsync.errors import ConfigError

    assert parse_config({}).lease_ttl == 30.0
    assert parse_config({"state": {"lease_ttl": 45}}).lease_ttl == 45.0
    for bad in (1, 0, -3, "30", True, 7200):
        with pytest.raises(ConfigError) as err:
            parse_config({"state": {"lease_ttl": bad}})
        assert "state.lease_ttl" in str(err.value.problems)


# A worker whose Guizhan default rate is 20/second instead of 60/minute (the provider's
# declared key unchanged), so the test takes seconds, not minutes.
_FAST_DEFAULT = """
import dataclasses, sys
from imgsync.cli import main
from imgsync.providers.guizhan import GuizhanProvider as G
G.info = dataclasses.replace(G.info, default_limits={k: "20/second" for k in G.info.default_limits})
sys.exit(main(sys.argv[1:]))
"""


async def test_three_workers_hold_guizhans_default_limit_with_no_limits_configured(
    pg_url: str, tmp_path: Path
) -> None:
    """No [limits] at all: Guizhan's own default (here 20/second, the emulator's too) paces
    the fleet as a whole through the shared ledger, wherever base_url points. Three workers
    against Guizhan's default got 19 HTTP 429s: the default was only for api.gzssimg.com."""
    n = 150
    gyazo = await start_fake(GyazoFake(Knobs(token=GY_TOKEN, seed=n)))
    guizhan = await start_fake(GuizhanFake(Knobs(token=GZ_TOKEN, rate="20/second")))
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f"""
[remotes.gy]
type = "gyazo"
base_url = "{gyazo.url}"
token_env = "GY_TOKEN"

[remotes.gz]
type = "guizhan"
base_url = "{guizhan.url}"
token_env = "GZ_TOKEN"
""",
        )

        def args(w: int) -> list[str]:
            return ["-c", _FAST_DEFAULT, "--config", str(cfg), "migrate", "gy:", "gz:",
                    "--json", "--map", str(tmp_path / f"map{w}.csv")]  # fmt: skip

        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                *args(w),
                env=_worker_env(tmp_path, w, pg_url),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for w in range(3)
        ]
        for p in procs:
            out, err = await asyncio.wait_for(p.communicate(), 120)
            assert p.returncode == 0, err.decode()
            assert json.loads(out)["map_rows"] == 2 * n
        dst = await _stats(guizhan.url)
        assert dst["uploads"] == dst["distinct_checksums"] == n
        assert dst["throttled"] == 0, dst
    finally:
        await gyazo.close()
        await guizhan.close()


async def test_a_worker_with_other_filters_cannot_join_a_round_under_way(
    pg_url: str, tmp_path: Path
) -> None:
    """Pages are split by position: a worker skipping what the others copy (or the other
    way round) would leave items undone. So a round under way is joined only with the same
    filters (exit 2, one line); once the round is complete, a new pass may use others."""
    from imgsync.state.fleet.pages import FiltersDiffer, filter_text

    a = await Fleet(pg_url, "host-a:1").open()
    b = await Fleet(pg_url, "host-b:2").open()
    try:
        mine = filter_text(["*.png"], [], False)
        assert mine == "--include *.png"
        assert await fleet_pages.begin_round(a, "src", "dst", appends=False, filters=mine) == 1
        assert await fleet_pages.begin_round(b, "src", "dst", appends=False, filters=mine) == 1
        with pytest.raises(FiltersDiffer) as err:
            other = filter_text([], [], True)
            await fleet_pages.begin_round(b, "src", "dst", appends=False, filters=other)
        assert err.value.exit_code == 2
        assert "--include *.png" in str(err.value) and "--include-non-images" in str(err.value)
        claim = await fleet_pages.claim_page(a, "src", "dst", 1)
        assert claim is not None
        await fleet_pages.page_listed(a, "src", "dst", claim, None)
        await fleet_pages.page_done(a, "src", "dst", claim)  # the pass is complete
        assert await fleet_pages.begin_round(b, "src", "dst", appends=False, filters="") == 2
    finally:
        await a.close()
        await b.close()

    # through the CLI: a worker started with other filters than the round's
    gyazo = await start_fake(GyazoFake(Knobs(token=GY_TOKEN, seed=3)))
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{gyazo.url}"\ntoken_env = "GY_TOKEN"\n',
        )
        from imgsync.state.store import StateStore

        first = await run_cli_async(
            "--config", str(cfg), "backup", "gy:", str(tmp_path / "out"), "--json",
            "--include-non-images", env=_worker_env(tmp_path, 0, pg_url),
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        async with StateStore(tmp_path / "w.db", pg_url) as store:
            assert store.fleet is not None
            ((src_key, dst_key),) = await store.fleet.tx(lambda cur: _keys(cur))
            # a round under way (another worker still listing) with --include-non-images
            await fleet_pages.begin_round(
                store.fleet, src_key, dst_key, appends=False, filters="--include-non-images"
            )
        again = await run_cli_async(
            "--config", str(cfg), "backup", "gy:", str(tmp_path / "out"),
            env=_worker_env(tmp_path, 1, pg_url),
        )  # fmt: skip
        assert again.returncode == 2, again.stderr
        assert again.stderr.count("\n") == 1 and "other filters" in again.stderr, again.stderr
    finally:
        await gyazo.close()


async def _keys(cur: object) -> list[tuple[str, str]]:
    await cur.execute(  # type: ignore[attr-defined]
        "SELECT DISTINCT src, dst FROM fleet_rounds WHERE src LIKE 'gyazo:%'"
    )
    return [tuple(r) for r in await cur.fetchall()]  # type: ignore[attr-defined]
