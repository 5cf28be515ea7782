"""Hosts that stumble or die (issue 14), on a virtual clock shared by client and emulator.

* an outage shorter than the outage budget loses nothing;
* a host that fails every request trips its circuit breaker: the run stops work for that
  remote and exits 3 within about a minute, counting the items it left;
* an upload whose reply broke off after the host got it is never re-sent blindly: a host
  that can be listed is searched first, an upload-only host gets it once more and the
  possible duplicate is reported (summary, ``--json``, ``status``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import RunningFake, run_cli_async, start_fake, write_config
from vclock import VirtualClock

from imgsync.config import RemoteConfig, load_config
from imgsync.errors import RemoteUnavailable
from imgsync.fakehosts.chevereto import CheveretoFake
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import seed_image
from imgsync.http import ApiClient
from imgsync.pipeline.copy import CopyRun
from imgsync.pipeline.plan import plan_local
from imgsync.pipeline.progress import Progress
from imgsync.pipeline.summary import CopyOptions, Summary
from imgsync.providers.base import Provider, ProviderContext
from imgsync.providers.chevereto import CheveretoProvider
from imgsync.providers.gyazo import GyazoProvider
from imgsync.ratelimit import HostLimiter
from imgsync.runtime import Runtime
from imgsync.state.reader import must_open
from imgsync.state.store import StateStore

KEY = "chv_outage_key_0123456789"


def folder_of(root: Path, count: int) -> Path:
    root.mkdir()
    for i in range(count):
        data, ext = seed_image(i)
        (root / f"img{i:02d}.{ext}").write_bytes(data)
    return root


def chevereto(url: str, http: ApiClient) -> CheveretoProvider:
    cfg = RemoteConfig(name="chv", type="chevereto", base_url=url, token=KEY)
    return CheveretoProvider(cfg, ProviderContext(http=http))


async def copy_into(folder: Path, dst: Provider, transfers: int = 4) -> Summary:
    """``copy FOLDER DST`` in-process, with ``dst`` built by the test (its own client)."""
    cfg = load_config(None)
    dst_key = f"{dst.info.kind}:test"
    with must_open(cfg.state_path) as db:
        plan = plan_local(db, folder, dst_key)
    async with StateStore(cfg.state_path) as store, Runtime(cfg) as rt:
        src = await rt.open(RemoteConfig(name=str(folder), type="local", path=folder))
        opts = CopyOptions(transfers=transfers)
        run = CopyRun(store, src, f"local:{folder}", dst, dst_key, opts, Progress())
        summary = await run.run_local(plan)
        await run.finish()
    return summary


@contextlib.asynccontextmanager
async def serving(host: Any) -> AsyncIterator[RunningFake]:
    running = await start_fake(host)
    try:
        yield running
    finally:
        await running.close()


class DiesAfter(CheveretoFake):
    """Goes down for ``outage`` seconds of its clock right after its ``after``-th upload."""

    def __init__(self, knobs: Knobs, *, after: int, outage: float, **kw: Any) -> None:
        super().__init__(knobs, **kw)
        self.after, self.outage = after, outage

    def _success(self, *args: Any, **kw: Any) -> web.Response:
        reply = super()._success(*args, **kw)
        if self.stats.uploads == self.after:
            self.go_down(self.outage)
        return reply


# --- the breaker, on its own -----------------------------------------------------------------


async def test_breaker_opens_after_the_budget_and_an_answer_ends_a_failing_spell() -> None:
    """Failures start a failing spell; any answer ends it; a spell of ``outage_budget``
    seconds opens the breaker (requests fail at once), which closes after ``cooldown``."""
    clock = VirtualClock()
    limiter = HostLimiter(
        "h:1", clock=clock.time, wall=clock.time, sleep=clock.sleep, outage_budget=30
    )
    slot = await limiter.acquire()
    assert (slot.failed("reset"), limiter.failing) == (False, True)
    slot.release()
    clock.now += 20
    limiter.report_success()  # an answer: the spell is over
    assert (limiter.failing, limiter.failing_for) == (False, 0)
    slot = await limiter.acquire()
    clock.now += 29
    assert (slot.failed("refused"), limiter.failing_for) == (False, 29)
    clock.now += 1
    assert (slot.failed("refused"), limiter.breaker_open, limiter.failing) == (True, True, False)
    slot.release()
    with pytest.raises(RemoteUnavailable, match="failed every request for 30 s"):
        await limiter.acquire()
    clock.now += 60
    assert limiter.breaker_open is False
    (await limiter.acquire()).release()


async def test_a_failure_reported_late_counts_from_the_last_answer() -> None:
    """A request sent long before the host's last answer (a slow timeout) does not open the
    breaker at once: the spell starts at that answer."""
    clock = VirtualClock()
    limiter = HostLimiter("h:1", clock=clock.time, wall=clock.time, sleep=clock.sleep)
    slot = await limiter.acquire()
    clock.now += 50
    limiter.report_success()
    clock.now += 10
    assert not slot.failed("timeout") and limiter.failing_for == 10


# --- through the HTTP client and the engine ---------------------------------------------------


async def test_a_six_second_outage_mid_run_loses_nothing(tmp_path: Path) -> None:
    """The site drops every connection for 6 s after its 3rd upload: all 12 images arrive,
    exit 0, nothing failed, and the run waited about as long as the outage."""
    clock = VirtualClock()
    host = DiesAfter(Knobs(token=KEY), after=3, outage=6.0, clock=clock.time)
    folder = folder_of(tmp_path / "pics", 12)
    async with serving(host) as running, clock.client() as http:
        summary = await copy_into(folder, chevereto(running.url, http))
        stats = await running.stats()
    assert summary.exit_code == 0, summary.line()
    assert summary.copied == 12 and summary.failed == 0 and not summary.possible_duplicates
    assert stats["uploads"] == 12 == stats["distinct_checksums"]
    assert 6 <= clock.elapsed < 20


async def test_fifteen_images_under_a_ten_per_minute_flood_guard_all_arrive(
    tmp_path: Path,
) -> None:
    """``copy`` of 15 images (and a BMP) into a site that floods at 10 uploads a minute:
    exit 0, every image there once, the site's window waited out, nothing failed."""
    clock = VirtualClock()
    host = CheveretoFake(Knobs(token=KEY, rate="10/minute"), clock=clock.time)
    folder = folder_of(tmp_path / "pics", 15)
    bmp = Path(__file__).parent / "fixtures" / "chevereto-4.2.0" / "inputs" / "bitmap1.bmp"
    (folder / "bitmap1.bmp").write_bytes(bmp.read_bytes())
    async with serving(host) as running, clock.client() as http:
        summary = await copy_into(folder, chevereto(running.url, http))
        again = await copy_into(folder, chevereto(running.url, http))
        stats = await running.stats()
    assert summary.exit_code == 0, summary.line()
    assert summary.copied == 16 and summary.failed == 0
    assert (again.copied, again.present, again.exit_code) == (0, 16, 0)
    assert stats["uploads"] == 16 and stats["throttled"] >= 1
    # concurrent sleepers add up on the virtual clock: uploads refused together each wait
    # the window out, so the bound is one window per refusal, never more
    assert 60 <= clock.elapsed <= 60 * stats["throttled"]


async def test_a_dead_host_stops_the_remote_with_exit_3_within_90_seconds(tmp_path: Path) -> None:
    """Nothing listens any more: the breaker opens after its 30 s budget, the remote stops
    (exit 3, the reason and the count of items left in the summary) well inside 90 s."""
    clock = VirtualClock()
    host = CheveretoFake(Knobs(token=KEY), clock=clock.time)
    folder = folder_of(tmp_path / "pics", 20)
    async with serving(host) as running:
        url = running.url
    async with clock.client() as http:  # the port is closed now: connection refused
        summary = await copy_into(folder, chevereto(url, http))
    assert summary.exit_code == 3, summary.line()
    assert summary.remote_failure and "failed every request for 30 s" in summary.remote_failure
    assert summary.copied == 0 and summary.failed <= 1
    assert summary.failed + summary.not_attempted == 20
    assert "not attempted" in summary.line()
    assert 30 <= clock.elapsed <= 90


async def test_cut_off_upload_replies_are_sent_once_more_and_reported(tmp_path: Path) -> None:
    """``--faults truncate=0.3`` on an upload-only host: every cut reply costs at most one
    extra copy, every one is reported, and nothing is sent a third time."""
    clock = VirtualClock()
    host = CheveretoFake(Knobs(token=KEY, faults={"truncate": 0.3}), clock=clock.time)
    folder = folder_of(tmp_path / "pics", 30)
    async with serving(host) as running, clock.client() as http:
        summary = await copy_into(folder, chevereto(running.url, http))
        stats = await running.stats()
    cuts = stats["faults"]
    print(f"cut replies {cuts}, uploads {stats['uploads']}, {summary.line()}")
    assert cuts > 0 and summary.copied + summary.failed == 30
    # each cut reply left one copy nobody recorded; nothing was sent a third time
    assert stats["uploads"] == len(host.received_names) == summary.copied + cuts
    # every item whose first reply was cut is reported once (a second cut fails it)
    assert len(summary.possible_duplicates) == cuts - summary.failed
    assert all("possible duplicate" in error for _, error in summary.failures)
    reported = {item for item, _ in summary.possible_duplicates}
    assert {item for item, _ in summary.failures} <= reported


async def test_a_listable_host_is_searched_before_sending_again(tmp_path: Path) -> None:
    """Gyazo (listed newest first) with cut-off upload replies: the upload is found in the
    listing, recorded, and never sent a second time; no duplicate to report."""
    clock = VirtualClock()
    host = GyazoFake(Knobs(token="gy-token-0123456789", faults={"truncate": 0.3}))
    folder = folder_of(tmp_path / "pics", 15)
    async with serving(host) as running, clock.client() as http:
        cfg = RemoteConfig(
            name="gy", type="gyazo", base_url=running.url, token="gy-token-0123456789"
        )
        summary = await copy_into(folder, GyazoProvider(cfg, ProviderContext(http=http)))
        stats = await running.stats()
    assert summary.exit_code == 0, summary.line()
    assert summary.copied == 15 and not summary.possible_duplicates
    assert stats["faults"] > 0
    assert len(host.received_names) == 15  # each image sent exactly once


async def test_cli_reports_possible_duplicates_in_summary_json_and_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI round trip: ``--json`` lists the possible duplicates, the summary line counts
    them, and ``imgsync status`` shows them from state."""
    monkeypatch.setenv("CHV_KEY", KEY)
    folder = folder_of(tmp_path / "pics", 12)
    host = CheveretoFake(Knobs(token=KEY, faults={"truncate": 0.25}, random_seed=7))
    async with serving(host) as running:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.chv]\ntype = "chevereto"\nbase_url = "{running.url}"\n'
            'token_env = "CHV_KEY"\n',
        )
        proc = await run_cli_async("--config", str(cfg), "copy", str(folder), "chv:", "--json")
        line = await run_cli_async("--config", str(cfg), "copy", str(folder), "chv:")
        status = await run_cli_async("--config", str(cfg), "status", "--json")
        stats = await running.stats()
    summary = json.loads(proc.stdout)
    duplicates = summary["possible_duplicates"]
    assert stats["faults"] > 0 and duplicates, proc.stdout
    assert all("possible duplicate" in d["note"] for d in duplicates)
    assert KEY not in proc.stdout + proc.stderr and "/delete/" not in proc.stdout
    noted = json.loads(status.stdout)["possible_duplicates"]
    assert {d["item"] for d in noted} >= {d["item"] for d in duplicates if "first" in d["note"]}
    assert line.returncode in (0, 1)


async def test_lsky_pro_finds_an_upload_whose_reply_was_cut_off(tmp_path: Path) -> None:
    """Lsky Pro (listed oldest first by default, and re-encoding what it stores) with
    cut-off upload replies: the lost upload is found among the newest images by its name
    and size and recorded, never sent a second time; no duplicate to report."""
    from imgsync.fakehosts.lskypro import LskyProFake
    from imgsync.providers.lskypro import LskyProProvider

    token = "5|lsky0outage0token0aaaaaaaaaaaaaaaaaaaaaaaaaa"
    clock = VirtualClock()
    host = LskyProFake(Knobs(token=token, rate="none", faults={"truncate": 0.3}))
    folder = folder_of(tmp_path / "pics", 15)
    async with serving(host) as running, clock.client() as http:
        cfg = RemoteConfig(name="lsky", type="lskypro", base_url=running.url, token=token)
        summary = await copy_into(folder, LskyProProvider(cfg, ProviderContext(http=http)))
        stats = await running.stats()
    assert summary.exit_code == 0, summary.line()
    assert summary.copied == 15 and not summary.possible_duplicates, summary.line()
    assert stats["faults"] > 0
    assert len(host.received_names) == 15  # each image sent exactly once


async def test_the_lost_reply_search_looks_past_the_first_page() -> None:
    """Uploads that went on meanwhile may push the lost one off the first page of a
    newest-first listing: the search reads on (here Gyazo at 2 a page, the lost upload 6th
    from the top), and a file that was never stored is still not found."""
    from imgsync.models import ItemMeta, UploadSource

    token = "gy-token-0123456789"
    clock = VirtualClock()
    async with serving(GyazoFake(Knobs(token=token))) as running, clock.client() as http:
        cfg = RemoteConfig(
            name="gy", type="gyazo", base_url=running.url, token=token, options={"per_page": 2}
        )
        gyazo = GyazoProvider(cfg, ProviderContext(http=http))
        sources = []
        for i in range(7):
            data, ext = seed_image(40 + i)
            src = UploadSource(
                name=f"p{i}.{ext}", size=len(data), sha256=f"{i:064x}",
                md5=hashlib.md5(data).hexdigest(), mime="image/png", data=data,
            )  # fmt: skip
            sources.append(src)
            if i < 6:
                await gyazo.upload(src, ItemMeta(), rel_path=src.name)
        found = await gyazo.find_upload(sources[0], rel_path=sources[0].name)
        missing = await gyazo.find_upload(sources[6], rel_path=sources[6].name)
    assert found is not None and missing is None
