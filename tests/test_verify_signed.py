"""Discord-style expiring URLs: a signed URL past its ``ex`` answers 404 while the image is
still there. verify renews it (and records the fresh URL) instead of calling it gone; a host
that gives no fresh URL leaves it unreachable; an image deleted for real is gone."""

from __future__ import annotations

import contextlib
from pathlib import Path

import aiohttp

from imgsync.config import Config, parse_config
from imgsync.fakehosts.images import seed_image
from imgsync.models import signed_expiry
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions
from imgsync.pipeline.verify import VerifyOptions, run_verify
from imgsync.testing import FakeClock, RunningEmulator, fast_client, serve_emulator

DAY = 86400.0


def _config(dis: RunningEmulator) -> Config:
    return parse_config(
        {"remotes": {"dis": {"type": "discordimages", "base_url": dis.url, "token": dis.token}}}
    )


async def _upload(cfg: Config, tmp: Path, n: int) -> dict[str, str]:
    folder = tmp / "pics"
    folder.mkdir()
    for i in range(n):
        data, ext = seed_image(i)
        (folder / f"s{i}.{ext}").write_bytes(data)
    s = await run_job(cfg, JobSpec("copy", str(folder), "dis:", CopyOptions(verb="copy")))
    assert s.copied == n
    return _urls(cfg)


def _urls(cfg: Config) -> dict[str, str]:
    """remote id -> the URL state records for it."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(cfg.state_path)) as db:
        rows = db.execute(
            "SELECT remote_id, url FROM locations WHERE remote LIKE 'discordimages:%'"
        ).fetchall()
    return {str(rid): str(url) for rid, url in rows}


async def test_an_expired_signed_url_is_renewed_not_gone(tmp_path: Path) -> None:
    clock = FakeClock()
    async with serve_emulator("discordimages", signed_ttl=DAY, clock=clock.wall) as dis:
        cfg = _config(dis)
        first = await _upload(cfg, tmp_path, 3)
        assert all(signed_expiry(u) for u in first.values())
        opts = VerifyOptions(wall=clock.wall)
        fresh = await run_verify(cfg, ["dis:"], opts)
        assert fresh.remotes[0].counts["alive"] == 3

        clock.advance(2 * DAY)  # every URL recorded has expired; the files are still there
        async with aiohttp.ClientSession() as s, s.get(next(iter(first.values()))) as r:
            assert r.status == 404
        later = await run_verify(cfg, ["dis:"], opts)
        assert later.remotes[0].counts == {"alive": 3, "gone": 0, "altered": 0, "unreachable": 0}
        renewed = _urls(cfg)
        assert set(renewed) == set(first)
        for rid, url in renewed.items():  # the fresh URLs are recorded in place of the old
            assert url != first[rid] and (signed_expiry(url) or 0) > clock.wall()
            async with aiohttp.ClientSession() as s, s.get(url) as r:
                assert r.status == 200

        # one image is deleted for real: its renewed URL is 404 too, so it is gone
        victim = min(renewed)
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{dis.url}/_fakehost/break", json={"url": renewed[victim], "how": "delete"}
            ) as r,
        ):
            assert r.status == 200
        clock.advance(2 * DAY)
        again = await run_verify(cfg, ["dis:"], opts)
        assert again.remotes[0].counts == {"alive": 2, "gone": 1, "altered": 0, "unreachable": 0}
        (dead,) = again.remotes[0].problems
        assert dead.remote_id == victim and dead.url == renewed[victim]


async def test_an_expired_url_the_host_cannot_renew_is_unreachable_not_gone(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    async with serve_emulator(
        "discordimages", signed_ttl=DAY, refresh=False, clock=clock.wall
    ) as dis:
        cfg = _config(dis)
        first = await _upload(cfg, tmp_path, 9)
        clock.advance(2 * DAY)
        report = await run_verify(
            cfg, ["dis:"], VerifyOptions(wall=clock.wall, repair_to="dis:", transfers=1)
        )
        (r,) = report.remotes
        assert r.counts == {"alive": 0, "gone": 0, "altered": 0, "unreachable": 9}
        assert all("signed URL expired" in v.detail for v in r.problems)
        assert r.complete and not r.gave_up  # expired URLs are not a host that is down
        assert report.repairs == [] and report.exit_code == 1  # nothing re-hosted
        assert _urls(cfg) == first


async def test_a_refresh_route_that_renews_nothing_leaves_it_unreachable_not_gone(
    tmp_path: Path,
) -> None:
    """The refresh endpoint is a guess (Discord Images documents none): a host whose route
    answers with the expired URL itself, unrenewed, does not make the image gone."""
    clock = FakeClock()
    async with serve_emulator(
        "discordimages", signed_ttl=DAY, refresh_echo=True, clock=clock.wall
    ) as dis:
        cfg = _config(dis)
        first = await _upload(cfg, tmp_path, 3)
        clock.advance(2 * DAY)
        report = await run_verify(
            cfg, ["dis:"], VerifyOptions(wall=clock.wall, repair_to="dis:", transfers=1)
        )
        (r,) = report.remotes
        assert r.counts == {"alive": 0, "gone": 0, "altered": 0, "unreachable": 3}
        assert all("no fresh one" in v.detail for v in r.problems), r.problems
        assert report.repairs == [] and _urls(cfg) == first


async def test_a_clock_behind_the_hosts_does_not_make_an_expired_url_gone(
    tmp_path: Path,
) -> None:
    """Our clock runs 5 minutes behind the host's: a URL the host already calls expired
    (404) still has a minute to go by ours. It is treated as expired (a margin for clock
    differences), not gone, and with no refresh route it is unreachable."""
    clock = FakeClock()
    async with serve_emulator(
        "discordimages", signed_ttl=DAY, refresh=False, clock=clock.wall
    ) as dis:
        cfg = _config(dis)
        first = await _upload(cfg, tmp_path, 2)
        clock.advance(DAY + 240)  # the host: expired 4 minutes ago

        def behind() -> float:
            return clock.wall() - 300.0  # ours: a minute left

        report = await run_verify(cfg, ["dis:"], VerifyOptions(wall=behind, repair_to="dis:"))
        (r,) = report.remotes
        assert r.counts == {"alive": 0, "gone": 0, "altered": 0, "unreachable": 2}
        assert report.repairs == [] and _urls(cfg) == first


async def _delete_on_host(dis: RunningEmulator, url: str) -> None:
    """Delete the file behind ``url`` through the host's own delete route (it then
    forgets the file: its refresh route renews nothing for it)."""
    name = url.split("?", 1)[0].rsplit("/", 1)[-1]
    headers = {"token": dis.token}
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{dis.url}/api/uploads", headers=headers) as r:
            files = (await r.json())["files"]
        (entry,) = [f for f in files if f["name"] == name]
        async with s.post(
            f"{dis.url}/api/upload/delete", json={"id": entry["id"]}, headers=headers
        ) as r:
            assert (await r.json())["success"] is True


async def test_an_image_deleted_behind_an_expired_url_is_gone_when_the_refresh_proves_it(
    tmp_path: Path,
) -> None:
    """The host deleted one image for real: its expired URL answers 404 as the others'
    do, and the refresh route renews nothing for it. Asked in the same request for
    another image of the remote (one last seen alive), the route renews that one: a
    definite answer that it no longer has this one. It is gone, the others renewed."""
    clock = FakeClock()
    async with serve_emulator(
        "discordimages", signed_ttl=DAY, delete=True, clock=clock.wall
    ) as dis:
        cfg = _config(dis)
        first = await _upload(cfg, tmp_path, 3)
        opts = VerifyOptions(wall=clock.wall, transfers=1)
        assert (await run_verify(cfg, ["dis:"], opts)).remotes[0].counts["alive"] == 3
        victim = min(first)
        await _delete_on_host(dis, first[victim])
        clock.advance(2 * DAY)
        for _ in range(2):  # and again: the verdict holds, nothing else moves
            report = await run_verify(cfg, ["dis:"], opts)
            (r,) = report.remotes
            assert r.counts == {"alive": 2, "gone": 1, "altered": 0, "unreachable": 0}, r
            (dead,) = r.problems
            assert dead.remote_id == victim and dead.url == first[victim]
            assert "no longer has it" in dead.detail, dead.detail
            clock.advance(2 * DAY)


async def test_without_a_definite_answer_an_image_behind_an_expired_url_stays_unreachable(
    tmp_path: Path,
) -> None:
    """No proof, no verdict: the deleted image is the remote's only one (no other image
    to ask about with it), or the refresh route fails (503) when asked: unreachable, not
    gone, and nothing is re-hosted."""
    clock = FakeClock()
    async with serve_emulator(
        "discordimages", signed_ttl=DAY, delete=True, clock=clock.wall
    ) as dis:
        cfg = _config(dis)
        first = await _upload(cfg, tmp_path, 1)
        opts = VerifyOptions(wall=clock.wall, transfers=1)
        assert (await run_verify(cfg, ["dis:"], opts)).remotes[0].counts["alive"] == 1
        await _delete_on_host(dis, next(iter(first.values())))
        clock.advance(2 * DAY)
        (r,) = (await run_verify(cfg, ["dis:"], opts)).remotes
        assert r.counts == {"alive": 0, "gone": 0, "altered": 0, "unreachable": 1}, r
    clock = FakeClock()
    async with serve_emulator(
        "discordimages", signed_ttl=DAY, delete=True, clock=clock.wall
    ) as dis:
        cfg = _config(dis)
        (tmp_path / "two").mkdir()
        first = await _upload(cfg, tmp_path / "two", 3)
        opts = VerifyOptions(wall=clock.wall, transfers=1)
        assert (await run_verify(cfg, ["dis:"], opts)).remotes[0].counts["alive"] == 3
        await _delete_on_host(dis, first[min(first)])
        clock.advance(2 * DAY)
        dis.host.fail_next("5xx", 1000)  # the host answers 503 to everything
        async with fast_client(attempts=2) as http:
            report = await run_verify(cfg, ["dis:"], opts, http=http)
        dis.host.scripted_faults.clear()
        (r,) = report.remotes
        assert r.counts["gone"] == 0 and r.counts["alive"] == 0, r
