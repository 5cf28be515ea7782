"""The takeover search (fleet mode, issue 18): a worker taking over a lease whose holder
started sending searches the destination back to that send's time, however many uploads
came since; not only the newest 100 items."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import start_fake
from vclock import VirtualClock

from imgsync.config import RemoteConfig
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.guizhan import GuizhanFake
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import seed_image
from imgsync.models import ItemMeta, UploadSource
from imgsync.providers.base import FIND_SINCE_SLACK, Provider, ProviderContext
from imgsync.providers.guizhan import GuizhanProvider
from imgsync.providers.gyazo import GyazoProvider


def _source(i: int) -> UploadSource:
    data, ext = seed_image(i)
    return UploadSource(
        name=f"img{i}.{ext}", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data).hexdigest(), mime="image/png", data=data,
    )  # fmt: skip


class Wall:
    """The emulator's wall clock: one second a step, set by the test."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


async def _busy_destination(
    provider: Callable[[str, ProviderContext], Provider], host: GuizhanFake | GyazoFake, wall: Wall
) -> tuple[int, float, int]:
    """Upload the target at wall time T, then 150 others one a second: (requests the
    uploads took, T, the emulator's request count after them)."""
    running = await start_fake(host)
    try:
        clock = VirtualClock()
        async with clock.client() as http:
            prov = provider(running.url, ProviderContext(http=http))
            target = _source(1)
            sent_at = wall.now
            await prov.upload(target, ItemMeta(), rel_path=target.name)
            for i in range(150):  # a busy fleet: 150 uploads after the one taken over
                wall.now += 1.0
                src = _source(100 + i)
                await prov.upload(src, ItemMeta(), rel_path=src.name)
            before = (await running.stats())["requests"]
            # the newest 100: not found (that was the whole search before)
            assert await prov.find_upload(target, rel_path=target.name) is None
            # back to the holder's send: found
            found = await prov.find_upload(target, rel_path=target.name, since=sent_at)
            assert found is not None
            # a bound after it (beyond the clock slack): not found, and the search stops
            # at the bound instead of reading the whole listing
            late = sent_at + FIND_SINCE_SLACK + 60
            start = (await running.stats())["requests"]
            assert await prov.find_upload(target, rel_path=target.name, since=late) is None
            listed = (await running.stats())["requests"] - start
            return listed, sent_at, before
        # (unreachable)
    finally:
        await running.close()


async def test_guizhan_search_goes_back_to_the_time_bound() -> None:
    token = "gz-search-token-0123"
    wall = Wall(1_800_000_000.0)
    host = GuizhanFake(Knobs(token=token, rate="none"), wall_clock=wall)

    def make(url: str, ctx: ProviderContext) -> Provider:
        cfg = RemoteConfig(name="gz", type="guizhan", base_url=url, token=token)
        return GuizhanProvider(cfg, ctx)

    listed, _sent, _before = await _busy_destination(make, host, wall)
    # 150 - 60 - 15 = 75 newer than the bound, 20 a page: 4 or 5 pages (same-size images
    # are downloaded once per provider: none of the later search's)
    assert listed <= 6, listed


async def test_the_default_search_goes_back_to_the_time_bound() -> None:
    token = "gy-search-token-0123"
    wall = Wall(1_800_000_000.0)
    host = GyazoFake(Knobs(token=token, rate="none"), wall_clock=wall)

    def make(url: str, ctx: ProviderContext) -> Provider:
        cfg = RemoteConfig(
            name="gy", type="gyazo", base_url=url, token=token, options={"per_page": 20}
        )
        return GyazoProvider(cfg, ctx)

    listed, _sent, _before = await _busy_destination(make, host, wall)
    assert listed <= 5, listed


async def test_a_lease_taken_over_tells_when_a_holder_first_took_it(pg_url: str) -> None:
    """The lease is the send mark (no transaction per upload says "sending now"): the
    fleet keeps when a holder first leased each image, through every takeover (the
    earliest lease counts), and a taker searches back to then."""
    from imgsync.state.fleet import Fleet

    shas = [f"{i:064x}" for i in range(3)]
    clock = VirtualClock()
    fleets = [
        await Fleet(pg_url, f"host-{i}:1", ttl=30.0, clock=clock.time).open() for i in range(3)
    ]
    a, b, c = fleets
    try:
        start = clock.time()
        assert (await a.lease("dst", shas[:2])).mine == set(shas[:2])
        await clock.sleep(40)  # a died on another machine: its leases expire
        got = await b.lease("dst", shas)
        # the two a leased may have been sent: searched back to a's lease; the third is new
        assert got.mine == set(shas) and got.taken_over == set(shas[:2])
        assert got.since == {shas[0]: start, shas[1]: start}
        await clock.sleep(40)
        got = await c.lease("dst", shas)
        assert got.taken_over == set(shas)
        assert got.since == {shas[0]: start, shas[1]: start, shas[2]: start + 40}
        await c.release("dst", shas)  # done: a later lease is a fresh one
        again = await a.lease("dst", shas)
        assert again.mine == set(shas) and not again.taken_over and not again.since
    finally:
        for f in fleets:
            await f.close()


async def test_a_fleet_upload_costs_no_send_mark_transaction(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fleet worker uploading a folder of N images makes about one shared-state
    transaction per upload (its release, with its location), not two: no transaction per
    upload says "sending now" (the lease, taken just before, is the mark)."""
    from imgsync.config import parse_config
    from imgsync.pipeline.run import JobSpec, run_job
    from imgsync.state.fleet import Fleet

    n = 30
    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(n):
        data, ext = seed_image(i)
        (folder / f"p{i:03d}.{ext}").write_bytes(data)
    token = "gz-sendmark-token-0123"
    host = await start_fake(GuizhanFake(Knobs(token=token, rate="none")))
    calls: list[str] = []
    real_tx = Fleet.tx

    async def counted(self: Fleet, work: Callable[..., object]) -> object:
        calls.append(getattr(work, "__qualname__", "?"))
        return await real_tx(self, work)

    monkeypatch.setattr(Fleet, "tx", counted)
    try:
        cfg = parse_config(
            {
                "state": {"path": str(tmp_path / "w" / "state.db"), "url": pg_url},
                "remotes": {
                    "gz": {"type": "guizhan", "base_url": host.url, "token": token},
                },
                "limits": {host.authority: {"rate": "none"}},
            },
            tokens=True,
        )
        summary = await run_job(cfg, JobSpec("copy", str(folder), "gz:"))
        assert summary.copied == n, summary
        assert (await host.stats())["uploads"] == n
        per_item = [c for c in calls if c.startswith(("Fleet.release", "Fleet.sending"))]
        print(len(calls), "transactions:", sorted(set(calls)))
        assert len(per_item) <= n, per_item  # one per upload (its release), no send mark
    finally:
        await host.close()


async def test_a_lease_taken_from_a_dead_process_tells_when_it_was_taken(
    tmp_path: Path,
) -> None:
    """One machine, no fleet: the search goes back to when the dead process leased it."""
    import asyncio
    import sys

    from imgsync.state.store import StateStore

    sha = f"{7:064x}"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()
    before = time.time()
    async with StateStore(tmp_path / "s.db") as dead:
        dead.owner = f"{dead.owner.rpartition(':')[0]}:{proc.pid}"  # exited
        assert (await dead.lease("dst", [sha])).mine == {sha}
        await dead.flush()
    async with StateStore(tmp_path / "s.db") as me:
        got = await me.lease("dst", [sha])
        assert got.taken_over == {sha}
        assert before <= got.since[sha] <= time.time()
