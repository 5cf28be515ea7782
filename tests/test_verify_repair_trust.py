"""Repair's trust in a copy already at the destination, and repairs running side by side.

A copy DEST already holds is only re-used when it is checked alive (same bytes) during the
repair; a dead one is replaced by a fresh upload and one that cannot be checked is not
relied on. Two repairs at once (two in one process, as the daemon may run them) upload
each image once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
from dataclasses import replace
from pathlib import Path

import aiohttp

from imgsync.config import Config, LimitConfig, parse_config
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions
from imgsync.pipeline.verify import Repair, VerifyOptions, run_verify
from imgsync.state import queries
from imgsync.state.reader import must_open
from imgsync.testing import RunningEmulator, fast_client, serve_emulator
from imgsync.verifycmd import _print_repairs


def _config(gy: RunningEmulator, chv: RunningEmulator) -> Config:
    return parse_config(
        {
            "remotes": {
                "gy": {"type": "gyazo", "base_url": gy.url, "token": gy.token},
                "chv": {"type": "chevereto", "base_url": chv.url, "token": chv.token},
            }
        }
    )


async def _setup(cfg: Config, tmp: Path) -> list[tuple[str, str, str]]:
    """Backup gy to a folder, migrate gy -> chv: (gy url, chv url, sha256) per image."""
    s = await run_job(
        cfg, JobSpec("backup", "gy:", str(tmp / "backup"), CopyOptions(verb="backup"))
    )
    assert s.failed == 0
    s = await run_job(cfg, JobSpec("migrate", "gy:", "chv:", CopyOptions(verb="migrate")))
    assert s.failed == 0
    with must_open(cfg.state_path) as db:
        keys = list(db.status()["remotes"])
        gy = next(k for k in keys if k.startswith("gyazo"))
        chv = next(k for k in keys if k.startswith("chevereto"))
        rows = db.url_map(gy, chv)
    return sorted((old, new, sha) for old, new, sha in rows if "/images/" in new)


async def _break(emu: RunningEmulator, url: str, how: str) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{emu.url}/_fakehost/break", json={"url": url, "how": how}) as r,
    ):
        assert r.status == 200, await r.text()


async def _get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.read()


async def test_a_live_copy_at_the_destination_is_relinked_and_the_report_says_checked(
    tmp_path: Path,
) -> None:
    async with serve_emulator("gyazo", seed=3) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv)
        rows = await _setup(cfg, tmp_path)
        gy_url, chv_url, _sha = rows[0]
        await _break(gy, gy_url, "delete")
        before = (await chv.stats())["uploads"]
        report = await run_verify(cfg, ["gy:"], VerifyOptions(repair_to="chv:"))
        (rep,) = report.repairs
        assert rep.action == "relinked" and rep.new_url == chv_url
        assert rep.dest_copy == "alive"  # checked during this repair: same bytes
        assert "checked alive" in rep.to_json()["note"]
        assert (await chv.stats())["uploads"] == before
        assert report.exit_code == 0


async def test_a_dead_copy_at_the_destination_is_not_trusted(tmp_path: Path) -> None:
    """The image died on gy *and* on chv: relinking to chv's dead URL would send the
    documents to a 404. The bytes come from the backup and are uploaded again."""
    async with serve_emulator("gyazo", seed=3) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv)
        rows = await _setup(cfg, tmp_path)
        gy_url, chv_url, sha = rows[1]
        await _break(gy, gy_url, "delete")
        await _break(chv, chv_url, "alter")
        before = (await chv.stats())["uploads"]
        report = await run_verify(cfg, ["gy:"], VerifyOptions(repair_to="chv:"))
        (rep,) = report.repairs
        assert rep.action == "uploaded", rep
        assert rep.source.startswith(str(tmp_path / "backup"))
        assert rep.dest_copy == "altered"
        assert "altered" in rep.to_json()["note"]
        assert rep.new_url and rep.new_url != chv_url
        status, data = await _get(rep.new_url)
        assert status == 200 and hashlib.sha256(data).hexdigest() == sha
        assert (await chv.stats())["uploads"] == before + 1
        # the dead copy at chv was replaced too: a document linking to it follows the map
        assert report.mapping().get(chv_url) == rep.new_url
        assert report.exit_code == 0


async def test_a_copy_at_the_destination_that_cannot_be_checked_is_not_relied_on(
    tmp_path: Path,
) -> None:
    async with serve_emulator("gyazo", seed=3) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv)
        rows = await _setup(cfg, tmp_path)
        gy_url, chv_url, _sha = rows[2]
        await _break(gy, gy_url, "delete")
        before = (await chv.stats())["uploads"]
        chv.host.fail_next("5xx", 500)  # chv answers nothing but 503 for now
        async with fast_client(attempts=2) as http:
            report = await run_verify(cfg, ["gy:"], VerifyOptions(repair_to="chv:"), http=http)
        chv.host.scripted_faults.clear()
        (rep,) = report.repairs
        assert rep.action == "failed" and rep.new_url is None, rep
        assert rep.dest_copy == "unreachable"
        assert "could not be checked" in rep.error
        assert (await chv.stats())["uploads"] == before  # no second copy either
        assert report.exit_code == 1 and report.mapping() == {}
        # the next run, with chv answering, checks it and relinks
        again = await run_verify(cfg, ["gy:"], VerifyOptions(repair_to="chv:"))
        (rep2,) = again.repairs
        assert (rep2.action, rep2.new_url, rep2.dest_copy) == ("relinked", chv_url, "alive")
        assert (await chv.stats())["uploads"] == before


async def test_two_repairs_in_one_process_upload_each_image_once(tmp_path: Path) -> None:
    async with serve_emulator("gyazo", seed=6) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv)
        rows = await _setup(cfg, tmp_path)
        for _gy_url, chv_url, _sha in rows:
            await _break(chv, chv_url, "alter")
        before = (await chv.stats())["uploads"]
        opts = VerifyOptions(repair_to="chv:", transfers=2)
        one, two = await asyncio.gather(
            run_verify(cfg, ["chv:"], opts), run_verify(cfg, ["chv:"], opts)
        )
        assert (await chv.stats())["uploads"] - before == 6
        repairs: list[Repair] = [*one.repairs, *two.repairs]
        assert sum(r.action == "uploaded" for r in repairs) == 6
        assert {r.action for r in repairs} <= {"uploaded", "relinked"}
        for r in repairs:
            assert r.new_url is not None
            status, data = await _get(r.new_url)
            assert status == 200 and hashlib.sha256(data).hexdigest() == r.sha256
        third = await run_verify(cfg, ["chv:"], opts)
        assert third.repairs == [] and third.exit_code == 0
        assert (await chv.stats())["uploads"] - before == 6


async def test_a_repair_waits_for_a_lease_another_run_of_this_process_holds(
    tmp_path: Path,
) -> None:
    """The lease is the copy pipeline's: held by another run of this process (a daemon
    job), the repair waits for it on its clock, then leaves it, uploading nothing."""
    from imgsync.state.store import StateStore
    from imgsync.testing import FakeClock

    async with serve_emulator("gyazo", seed=2) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv)
        rows = await _setup(cfg, tmp_path)
        _gy_url, chv_url, sha = rows[0]
        await _break(chv, chv_url, "delete")
        with must_open(cfg.state_path) as db:
            chv_key = next(k for k in db.status()["remotes"] if k.startswith("chevereto"))
        before = (await chv.stats())["uploads"]
        clock = FakeClock()
        opts = VerifyOptions(
            repair_to="chv:", lease_wait=30.0, lease_poll=5.0, clock=clock, sleep=clock.sleep
        )
        found = await run_verify(cfg, ["chv:"], VerifyOptions())
        assert found.remotes[0].counts["gone"] == 1
        async with StateStore(cfg.state_path) as other:
            # another run of this process is past the point of forgetting the dead copy
            (dead_id,) = [v.remote_id for v in found.remotes[0].problems]
            await queries.forget_location(other, chv_key, dead_id)
            await other.flush()
            mine, _present = await other.lease(chv_key, [sha])
            assert mine == {sha}
            report = await run_verify(cfg, ["chv:"], opts)
            (rep,) = report.repairs
            assert rep.action == "failed" and "another run" in rep.error, rep
            assert clock.elapsed == 30.0 and clock.sleeps == [5.0] * 6
            assert (await chv.stats())["uploads"] == before
        # the other run ended without uploading (its store closed): the next repair does it
        report = await run_verify(cfg, ["chv:"], opts)
        (rep,) = report.repairs
        assert rep.action == "uploaded" and (await chv.stats())["uploads"] == before + 1


async def test_a_copy_at_the_destination_that_always_refuses_has_a_way_through(
    tmp_path: Path,
) -> None:
    """DEST's copy answers 403 to every check (a hotlink block that never lifts): the
    repair does not trust it and says how to get past it; with ``ignore_unreachable_dest``
    (``--ignore-unreachable-dest``) that copy is treated as dead: uploaded again, and its
    URL mapped to the new one."""
    async with serve_emulator("gyazo", seed=3) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv)
        rows = await _setup(cfg, tmp_path)
        gy_url, chv_url, sha = rows[0]
        await _break(gy, gy_url, "delete")
        await _break(chv, chv_url, "forbid")
        status, _ = await _get(chv_url)
        assert status == 403
        before = (await chv.stats())["uploads"]
        for _ in range(2):  # a re-run does not get past it either
            report = await run_verify(cfg, ["gy:"], VerifyOptions(repair_to="chv:"))
            (rep,) = report.repairs
            assert rep.action == "failed" and rep.dest_copy == "unreachable", rep
            assert "403" in rep.error and "--ignore-unreachable-dest" in rep.error
            assert (await chv.stats())["uploads"] == before
        opts = VerifyOptions(repair_to="chv:", ignore_unreachable_dest=True)
        dry = await run_verify(cfg, ["gy:"], replace(opts, dry_run=True))
        assert [r.action for r in dry.repairs] == ["would upload"]
        assert (await chv.stats())["uploads"] == before
        report = await run_verify(cfg, ["gy:"], opts)
        (rep,) = report.repairs
        assert rep.action == "uploaded" and rep.new_url not in (None, chv_url), rep
        assert rep.dest_copy == "unreachable" and "ignore-unreachable-dest" in rep.note
        status, data = await _get(rep.new_url or "")
        assert status == 200 and hashlib.sha256(data).hexdigest() == sha
        assert (await chv.stats())["uploads"] == before + 1
        mapping = report.mapping()
        assert mapping[gy_url] == mapping[chv_url] == rep.new_url  # (and the pages')
        assert report.exit_code == 0
        again = await run_verify(cfg, ["gy:"], opts)  # done: nothing left to repair
        assert again.repairs == [] and (await chv.stats())["uploads"] == before + 1


async def test_a_repair_whose_upload_fails_keeps_what_state_knew(tmp_path: Path) -> None:
    """The repair forgets the dead locations before it leases and uploads; when the
    upload then fails, they are put back as they were (the copy at DEST with its delete
    link), so the next run starts from the same state, not from a poorer one."""
    import sqlite3

    async with serve_emulator("gyazo", seed=3) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv)
        rows = await _setup(cfg, tmp_path)
        gy_url, chv_url, _sha = rows[0]
        await _break(gy, gy_url, "delete")
        await _break(chv, chv_url, "forbid")

        def locations() -> list[tuple[object, ...]]:
            with sqlite3.connect(cfg.state_path) as db:
                return sorted(db.execute("SELECT * FROM locations").fetchall(), key=repr)

        before = locations()
        assert any(chv_url in row for row in before)
        chv.host.fail_next("5xx", 50)  # the upload is refused (the checks are not: 403)
        opts = VerifyOptions(repair_to="chv:", ignore_unreachable_dest=True)
        async with fast_client(attempts=2) as http:
            report = await run_verify(cfg, ["gy:"], opts, http=http)
        chv.host.scripted_faults.clear()
        (rep,) = report.repairs
        assert rep.action == "failed", rep
        assert locations() == before
        report = await run_verify(cfg, ["gy:"], opts)  # and the next run finishes it
        assert [r.action for r in report.repairs] == ["uploaded"]


async def test_ignore_unreachable_dest_never_takes_a_timeout_or_a_5xx_for_dead(
    tmp_path: Path,
) -> None:
    """``--ignore-unreachable-dest`` is for a copy DEST refuses for good (403 to every
    check). A copy that could not be checked because DEST did not answer (5xx, a
    timeout) is no evidence of death: even with the option, it is not uploaded again nor
    mapped away; the repair is left for the next run, and says why."""
    async with serve_emulator("gyazo", seed=3) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv)
        rows = await _setup(cfg, tmp_path)
        gy_url, chv_url, _sha = rows[0]
        await _break(gy, gy_url, "delete")
        before = (await chv.stats())["uploads"]
        opts = VerifyOptions(repair_to="chv:", ignore_unreachable_dest=True)
        for how in ("unavailable", "slow"):
            # chv's copy answers 503, or too late (its uploads work: an upload would land)
            await _break(chv, chv_url, how)
            # retried per the policy (a short outage budget, so the test is quick), and
            # the breaker closes again at once: the upload would go through
            limits = {chv.url.split("//")[1]: LimitConfig(outage_budget=1.0, cooldown=0.0)}
            async with fast_client(attempts=2, read_timeout=0.3, limits=limits) as http:
                report = await run_verify(cfg, ["gy:"], opts, http=http)
            chv.host.broken.clear()
            (rep,) = report.repairs
            assert rep.action == "failed" and rep.new_url is None, (how, rep)
            assert rep.dest_copy == "unreachable" and rep.dest_transient, rep
            assert "not treated as dead" in rep.error and "run again" in rep.error, rep.error
            assert "ignore-unreachable-dest" not in rep.note or "uploaded" not in rep.note
            assert (await chv.stats())["uploads"] == before, how  # no second copy
            assert report.mapping() == {} and report.exit_code == 1
            assert report.left_for_next_run == 1
            assert report.to_json()["left_for_next_run"] == 1
            shown = io.StringIO()
            with contextlib.redirect_stdout(shown):
                _print_repairs(report.repairs, "chv", False)
            assert "1 left for the next run: the copy already at chv did not answer" in (
                shown.getvalue()
            )
        # chv answers again: its copy is checked alive and relinked, nothing uploaded
        again = await run_verify(cfg, ["gy:"], opts)
        (rep2,) = again.repairs
        assert (rep2.action, rep2.new_url, rep2.dest_copy) == ("relinked", chv_url, "alive")
        assert (await chv.stats())["uploads"] == before and again.exit_code == 0
