"""The verify engine in-process: resumed passes, rotating samples, unreachable hosts kept
apart from gone ones, what a host's answer means (redirects, placeholders, validators),
folders, and the daemon's ``kind = "verify"`` job."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import anyio
from aiohttp import web

from imgsync.config import Config, parse_config
from imgsync.daemon import run_job_once, verify_figures
from imgsync.fakehosts.images import seed_image
from imgsync.metrics import DaemonStats
from imgsync.models import RemoteItem
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions
from imgsync.pipeline.verify import VerifyOptions, run_verify
from imgsync.state import queries
from imgsync.state.checks import Verdict
from imgsync.state.reader import must_open
from imgsync.state.store import StateStore
from imgsync.testing import RunningEmulator, fast_client, serve_app, serve_emulator


def _config(
    gy: RunningEmulator, chv: RunningEmulator, jobs: list[dict[str, Any]] | None = None
) -> Config:
    return parse_config(
        {
            "remotes": {
                "gy": {"type": "gyazo", "base_url": gy.url, "token": gy.token},
                "chv": {"type": "chevereto", "base_url": chv.url, "token": chv.token},
            },
            "jobs": jobs or [],
        }
    )


async def _migrate(cfg: Config, tmp: Path) -> None:
    s = await run_job(
        cfg,
        JobSpec("backup", "gy:", str(tmp / "backup"), CopyOptions(verb="backup", sidecars=True)),
    )
    assert s.failed == 0
    s = await run_job(
        cfg,
        JobSpec("migrate", "gy:", "chv:", CopyOptions(verb="migrate"), map_path=tmp / "map.csv"),
    )
    assert s.failed == 0


async def test_an_interrupted_pass_resumes_and_samples_rotate(tmp_path: Path) -> None:
    async with serve_emulator("gyazo", seed=8) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv)
        await _migrate(cfg, tmp_path)
        stop = anyio.Event()
        seen: list[str] = []

        def stop_after_three(_remote: str, v: Verdict) -> None:
            seen.append(v.remote_id)
            if len(seen) == 3:
                stop.set()

        before = (await chv.stats())["requests"]
        first = await run_verify(
            cfg, ["chv:"], VerifyOptions(transfers=1), stop=stop, on_verdict=stop_after_three
        )
        (r1,) = first.remotes
        assert not r1.complete and r1.checked == 3 and not r1.resumed
        assert (await chv.stats())["requests"] - before == 3

        second = await run_verify(cfg, ["chv:"], VerifyOptions(), on_verdict=stop_after_three)
        (r2,) = second.remotes
        assert r2.resumed and r2.complete
        assert r2.checked == 8 and r2.counts["alive"] == 8  # the whole pass is reported
        assert (await chv.stats())["requests"] - before == 8  # but nothing was checked twice
        assert len(set(seen)) == 8

        # a fresh pass starts over; samples take the least recently checked first
        order: list[str] = []
        for _ in range(3):
            report = await run_verify(
                cfg,
                ["chv:"],
                VerifyOptions(sample=3),
                on_verdict=lambda _r, v: order.append(v.remote_id),
            )
            assert report.remotes[0].checked == 3
        assert len(set(order[:6])) == 6  # two samples of 3: six different images
        assert set(order[:6]) | set(order[6:]) == set(seen)

        with must_open(cfg.state_path) as db:
            status = db.status()["verify"]
        key = next(iter(status))
        assert status[key]["alive"] == 8 and status[key]["last_check"] > 0


async def test_a_dead_host_is_unreachable_not_gone(tmp_path: Path) -> None:
    """A host that is down is unreachable, never gone: nothing is repaired or forgotten,
    and after 8 failures in a row the rest waits for the next run (the pass resumes)."""
    async with serve_emulator("gyazo", seed=12) as gy:
        async with serve_emulator("chevereto") as chv:
            cfg = _config(gy, chv)
            await _migrate(cfg, tmp_path)
        # the Chevereto emulator is stopped: connections are refused
        async with fast_client(attempts=2) as http:
            opts = VerifyOptions(repair_to="gy:", transfers=1)
            report = await run_verify(cfg, ["chv:"], opts, http=http)
        (r,) = report.remotes
        assert r.counts == {"alive": 0, "gone": 0, "altered": 0, "unreachable": 8}
        assert not r.complete and "8 unreachable in a row" in r.gave_up
        assert report.repairs == [] and report.exit_code == 1
        with must_open(cfg.state_path) as db:
            assert db.status()["remotes"]  # nothing forgotten


async def test_what_a_hosts_answer_means(tmp_path: Path) -> None:
    """Redirect to a removed.png (Imgur-style), 200 with HTML, 410, a 403 hotlink block, a
    Content-MD5 that vouches (body never needed) or contradicts, and plain bytes."""
    images = [seed_image(i)[0] for i in range(8)]
    placeholder = seed_image(20)[0]
    md5s = [hashlib.md5(d).hexdigest() for d in images]

    async def serve(request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        if n == 0:
            raise web.HTTPFound("/removed.png")
        if n == 1:
            return web.Response(text="<html><body>gone</body></html>", content_type="text/html")
        if n == 2:
            return web.Response(status=410)
        if n == 3:
            return web.Response(status=403)
        if n == 4:  # the host vouches for the recorded bytes
            digest = base64.b64encode(bytes.fromhex(md5s[4])).decode()
            return web.Response(
                body=images[4], content_type="image/png", headers={"Content-MD5": digest}
            )
        if n == 5:  # same length, other bytes, and an MD5 ETag that says so
            other = images[5][:-4] + b"\x00\x00\x00\x00"
            return web.Response(
                body=other,
                content_type="image/png",
                headers={"ETag": f'"{hashlib.md5(other).hexdigest()}"'},
            )
        if n == 6:
            return web.Response(body=images[6] + b"more", content_type="image/png")
        return web.Response(body=images[7], content_type="image/png")

    async def removed(_request: web.Request) -> web.Response:
        return web.Response(body=placeholder, content_type="image/png")

    app = web.Application()
    app.router.add_get("/removed.png", removed)
    app.router.add_get("/i/{n}.png", serve)
    async with serve_app(app) as base:
        cfg = parse_config({})
        key = f"chevereto:{base}/"
        async with StateStore(cfg.state_path) as store:
            shas = [hashlib.sha256(d).hexdigest() for d in images]
            await queries.record_objects(
                store,
                [(s, len(d), m, "image/png") for s, d, m in zip(shas, images, md5s, strict=True)],
            )
            await queries.record_locations(
                store,
                key,
                [
                    (s, RemoteItem(remote_id=str(i), name=f"{i}.png", url=f"{base}/i/{i}.png"))
                    for i, s in enumerate(shas)
                ],
            )
        async with fast_client(attempts=1) as http:
            report = await run_verify(cfg, None, VerifyOptions(), http=http)
            full = await run_verify(cfg, None, VerifyOptions(full=True), http=http)
    got = {v.remote_id: (v.status, v.detail) for v in report.remotes[0].problems}
    assert got["0"][0] == "gone" and "removed.png" in got["0"][1]
    assert got["1"][0] == "gone" and "HTML" in got["1"][1]
    assert got["2"] == ("gone", "HTTP 410")
    assert got["3"][0] == "unreachable" and "403" in got["3"][1]
    assert "4" not in got  # alive on the host's word
    assert got["5"] == ("altered", "the host's checksum differs from the recorded one")
    assert got["6"][0] == "altered"
    assert report.remotes[0].counts == {"alive": 2, "gone": 3, "altered": 2, "unreachable": 1}
    assert full.remotes[0].counts == report.remotes[0].counts  # --full hashes, same verdicts
    assert report.exit_code == 1


async def test_a_folder_is_verified_by_hashing_its_files(tmp_path: Path) -> None:
    async with serve_emulator("gyazo", seed=4) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv)
        await _migrate(cfg, tmp_path)
    files = sorted(
        p for p in (tmp_path / "backup").rglob("*") if p.suffix in (".png", ".jpg", ".gif")
    )
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes() + b"rot")
    report = await run_verify(cfg, [str(tmp_path / "backup")], VerifyOptions())
    assert report.remotes[0].counts == {"alive": 2, "gone": 1, "altered": 1, "unreachable": 0}


async def test_the_daemon_verify_job_repairs_and_rewrites(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    async with serve_emulator("gyazo", seed=3) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv)
        await _migrate(cfg, tmp_path)
        with must_open(cfg.state_path) as db:
            chv_key = next(k for k in db.status()["remotes"] if k.startswith("chevereto"))
        with must_open(cfg.state_path) as db:
            urls = sorted(
                u
                for _old, u, _sha in db.url_map(
                    next(k for k in db.status()["remotes"] if k.startswith("gyazo")), chv_key
                )
                if "/images/" in u
            )
        (docs / "post.md").write_text("".join(f"![a]({u})\n" for u in urls))
        import aiohttp

        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{chv.url}/_fakehost/break", json={"url": urls[0], "how": "alter"}) as r,
        ):
            assert r.status == 200
        job_cfg = _config(
            gy,
            chv,
            [
                {
                    "name": "rot",
                    "kind": "verify",
                    "source": "chv:",
                    "repair_to": "chv:",
                    "rewrite": [str(docs)],
                    "interval": "1h",
                }
            ],
        )
        await run_job_once(job_cfg, job_cfg.jobs[0])
        text = (docs / "post.md").read_text()
        assert urls[0] not in text and urls[1] in text and urls[2] in text
        new = text.splitlines()[0][len("![a](") : -1]
        async with aiohttp.ClientSession() as s, s.get(new) as r:
            data = await r.read()
        with must_open(cfg.state_path) as db:
            assert db.status()["verify"][chv_key]["repaired"] == 1
        # the daemon's /metrics shows the figures by remote name
        _ctype, text_bytes = DaemonStats(
            started=0.0, verify=lambda: verify_figures(job_cfg)
        ).metrics_text()
        metrics = text_bytes.decode()
        assert 'imgsync_verify_locations{remote="chv",status="alive"} 2.0' in metrics
        assert 'imgsync_verify_locations{remote="chv",status="repaired"} 1.0' in metrics
        assert 'imgsync_verify_last_check_timestamp_seconds{remote="chv"}' in metrics
        assert hashlib.sha256(data).hexdigest() in {sha for _o, _n, sha in db_rows(cfg)}


def db_rows(cfg: Config) -> list[tuple[str, str, str]]:
    with must_open(cfg.state_path) as db:
        keys = list(db.status()["remotes"])
        gy = next(k for k in keys if k.startswith("gyazo"))
        chv = next(k for k in keys if k.startswith("chevereto"))
        return db.url_map(gy, chv)


async def test_a_glitch_is_looked_at_again_before_anything_moves(tmp_path: Path) -> None:
    """A placeholder page seen once (a CDN glitch) is checked again before the repair:
    alive again, nothing is uploaded and the location stays."""
    image = seed_image(3)[0]
    hits = {"n": 0}

    async def serve(_request: web.Request) -> web.Response:
        hits["n"] += 1
        if hits["n"] == 1:  # only the first answer is the glitch
            return web.Response(text="<html>Service busy</html>", content_type="text/html")
        return web.Response(body=image, content_type="image/png")

    app = web.Application()
    app.router.add_get("/a.png", serve)
    async with serve_app(app) as base, serve_emulator("chevereto") as chv:
        cfg = parse_config(
            {"remotes": {"chv": {"type": "chevereto", "base_url": chv.url, "token": chv.token}}}
        )
        key = f"chevereto:{base}/"
        sha = hashlib.sha256(image).hexdigest()
        async with StateStore(cfg.state_path) as store:
            await queries.record_objects(store, [(sha, len(image), None, "image/png")])
            item = RemoteItem(remote_id="a", name="a.png", url=f"{base}/a.png")
            await queries.record_locations(store, key, [(sha, item)])
        fixed = await run_verify(cfg, None, VerifyOptions(repair_to="chv:"))
        assert fixed.remotes[0].counts["gone"] == 1  # what the check saw
        (rep,) = fixed.repairs
        assert rep.action == "alive again" and hits["n"] == 2 and fixed.exit_code == 0
        assert (await chv.stats())["uploads"] == 0
        with must_open(cfg.state_path) as db:
            assert db.status()["verify"][key]["alive"] == 1
            assert db.items_at(key) == {"a": sha}


async def test_bytes_come_from_another_host_when_no_folder_has_them(tmp_path: Path) -> None:
    async with serve_emulator("gyazo", seed=2) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv)
        s = await run_job(cfg, JobSpec("migrate", "gy:", "chv:", CopyOptions(verb="migrate")))
        assert s.copied == 2
        rows = db_rows(cfg)
        dead = next(new for _old, new, _sha in rows if "/images/" in new)
        import aiohttp

        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{chv.url}/_fakehost/break", json={"url": dead, "how": "delete"}) as r,
        ):
            assert r.status == 200
        report = await run_verify(cfg, ["chv:"], VerifyOptions(repair_to="chv:"))
        (rep,) = report.repairs
        assert rep.action == "uploaded" and rep.source.startswith("gy: ")
        assert (await chv.stats())["uploads"] == 3


async def test_documents_missed_earlier_follow_every_later_repair(tmp_path: Path) -> None:
    """Repaired once without --rewrite, then the replacement dies too: the next repair
    with --rewrite takes the document straight to the live copy (A -> B -> C gives A -> C)."""
    import aiohttp

    from imgsync.verifycmd import verify_once

    docs = tmp_path / "docs"
    docs.mkdir()
    async with serve_emulator("gyazo", seed=1) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv)
        await _migrate(cfg, tmp_path)
        ((_old, first, sha),) = [r for r in db_rows(cfg) if "/images/" in r[1]]
        (docs / "post.md").write_text(f"![a]({first})\n")

        async def alter(url: str) -> None:
            async with (
                aiohttp.ClientSession() as s,
                s.post(f"{chv.url}/_fakehost/break", json={"url": url, "how": "alter"}) as r,
            ):
                assert r.status == 200

        await alter(first)
        opts = VerifyOptions(repair_to="chv:")
        one = await verify_once(cfg, ["chv:"], opts, [], None)
        (rep,) = one.report.repairs
        second = rep.new_url
        assert rep.action == "uploaded" and second and second != first
        assert (docs / "post.md").read_text() == f"![a]({first})\n"  # not asked to rewrite

        await alter(second)
        two = await verify_once(cfg, ["chv:"], opts, [docs], tmp_path / "map.csv")
        (rep2,) = two.report.repairs
        third = rep2.new_url
        assert rep2.old_url == second and third not in (first, second)
        assert (docs / "post.md").read_text() == f"![a]({third})\n"
        async with aiohttp.ClientSession() as s, s.get(str(third)) as r:
            assert hashlib.sha256(await r.read()).hexdigest() == sha
        mapped = (tmp_path / "map.csv").read_text()
        assert f"{first},{third}," in mapped and f"{second},{third}," in mapped


async def test_a_hosts_own_conversion_is_alive_and_a_later_change_is_not(tmp_path: Path) -> None:
    """Chevereto stores a BMP as a PNG and says so (its md5): that copy is alive, by the
    stored bytes' MD5; when its bytes change afterwards, it is altered."""
    import aiohttp

    bmp = (Path(__file__).parent / "fixtures/chevereto-4.2.0/inputs/bitmap1.bmp").read_bytes()
    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "bitmap1.bmp").write_bytes(bmp)
    (folder / "a.png").write_bytes(seed_image(0)[0])
    async with serve_emulator("chevereto") as chv:
        cfg = parse_config(
            {"remotes": {"chv": {"type": "chevereto", "base_url": chv.url, "token": chv.token}}}
        )
        s = await run_job(cfg, JobSpec("copy", str(folder), "chv:", CopyOptions(verb="copy")))
        assert s.copied == 2
        first = await run_verify(cfg, ["chv:"], VerifyOptions())
        assert first.remotes[0].counts["alive"] == 2
        png = next(i for i in chv.host.images() if i.title.startswith("bitmap1"))  # type: ignore[attr-defined]
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{chv.url}/_fakehost/break", json={"url": chv.url + png.path(), "how": "alter"}
            ) as r,
        ):
            assert r.status == 200
        again = await run_verify(cfg, ["chv:"], VerifyOptions())
        assert again.remotes[0].counts == {"alive": 1, "gone": 0, "altered": 1, "unreachable": 0}


def test_extending_a_map_repoints_dead_targets_and_keeps_the_rest(tmp_path: Path) -> None:
    import json

    from imgsync.urlmap import extend_map, read_map

    as_json = tmp_path / "map.json"
    as_json.write_text(
        json.dumps({"https://g/a.png": "https://c/a.png", "https://g/b.png": "https://c/b.png"})
    )
    assert extend_map(as_json, {"https://c/a.png": "https://n/a.png"}, {}) == 3
    assert read_map(as_json) == {
        "https://g/a.png": "https://n/a.png",
        "https://g/b.png": "https://c/b.png",
        "https://c/a.png": "https://n/a.png",
    }
    as_csv = tmp_path / "new" / "map.csv"  # a map that does not exist yet is created
    assert (
        extend_map(as_csv, {"https://c/a.png": "https://n/a.png"}, {"https://c/a.png": "ab12"}) == 1
    )
    assert as_csv.read_text() == "old_url,new_url,sha256\nhttps://c/a.png,https://n/a.png,ab12\n"
