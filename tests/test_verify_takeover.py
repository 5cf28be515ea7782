"""A repair killed while its upload was in flight: the next repair takes over its lease
and, as the copy engine does, searches the destination first, so the image the killed
run already sent is found and recorded, not uploaded a second time."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

import aiohttp
from helpers import run_cli_async, write_config

from imgsync.fakehosts.images import seed_image
from imgsync.testing import serve_emulator


async def _until(cond: object, seconds: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await cond():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_killed_repairs_upload_is_found_at_the_destination_not_sent_again(
    tmp_path: Path,
) -> None:
    async with serve_emulator("chevereto") as chv, serve_emulator("guizhan") as gz:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.chv]\ntype = "chevereto"\nbase_url = "{chv.url}"\n'
            'token_env = "CHV_TOKEN"\n'
            f'[remotes.gz]\ntype = "guizhan"\nbase_url = "{gz.url}"\ntoken_env = "GZ_TOKEN"\n',
        )
        env = {**os.environ, "CHV_TOKEN": chv.token, "GZ_TOKEN": gz.token}
        pics = tmp_path / "pics"
        pics.mkdir()
        for i in range(3):
            data, ext = seed_image(i)
            (pics / f"p{i}.{ext}").write_bytes(data)
        copy = await run_cli_async("--config", str(cfg), "copy", str(pics), "chv:", env=env)
        assert copy.returncode == 0, copy.stderr
        db = sqlite3.connect(os.environ["IMGSYNC_STATE"])
        (url, sha), *_ = db.execute(
            "SELECT url, sha256 FROM locations WHERE remote LIKE 'chevereto:%' ORDER BY url"
        ).fetchall()
        db.close()
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{chv.url}/_fakehost/break", json={"url": url, "how": "delete"}) as r,
        ):
            assert r.status == 200

        # the repair's upload reaches gz, which stores it and holds the reply: killed then
        gz.host.knobs.slow_seconds = 120.0
        gz.host.fail_next("stall")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "imgsync",
            "--config",
            str(cfg),
            "verify",
            "chv:",
            "--repair",
            "gz:",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        async def stored() -> bool:
            return bool((await gz.stats())["uploads"] == 1)

        try:
            await _until(stored)
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        db = sqlite3.connect(os.environ["IMGSYNC_STATE"])
        held = db.execute("SELECT sha256 FROM claims").fetchall()
        db.close()
        assert held == [(sha,)]  # the dead run's lease, left behind

        again = await run_cli_async(
            "--config", str(cfg), "verify", "chv:", "--repair", "gz:", "--json", env=env
        )
        assert again.returncode == 0, again.stderr
        (rep,) = json.loads(again.stdout)["repairs"]
        assert rep["action"] == "found" and rep["new_url"], rep
        stats = await gz.stats()
        assert stats["uploads"] == 1, stats  # the killed run's upload, not a second one
        async with aiohttp.ClientSession() as s, s.get(rep["new_url"]) as r:
            assert hashlib.sha256(await r.read()).hexdigest() == sha
        db = sqlite3.connect(os.environ["IMGSYNC_STATE"])
        assert db.execute("SELECT COUNT(*) FROM claims").fetchone() == (0,)
        gz_urls = db.execute("SELECT url FROM locations WHERE remote LIKE 'guizhan:%'").fetchall()
        db.close()
        assert gz_urls == [(rep["new_url"],)]


async def test_a_repair_whose_upload_reply_broke_off_finds_it_instead_of_sending_twice(
    tmp_path: Path,
) -> None:
    from imgsync.config import parse_config
    from imgsync.pipeline.run import JobSpec, run_job
    from imgsync.pipeline.summary import CopyOptions
    from imgsync.pipeline.verify import VerifyOptions, run_verify

    async with serve_emulator("chevereto") as chv, serve_emulator("guizhan") as gz:
        cfg = parse_config(
            {
                "remotes": {
                    "chv": {"type": "chevereto", "base_url": chv.url, "token": chv.token},
                    "gz": {"type": "guizhan", "base_url": gz.url, "token": gz.token},
                }
            }
        )
        pics = tmp_path / "pics"
        pics.mkdir()
        data, ext = seed_image(4)
        (pics / f"p.{ext}").write_bytes(data)
        s = await run_job(cfg, JobSpec("copy", str(pics), "chv:", CopyOptions(verb="copy")))
        assert s.copied == 1
        db = sqlite3.connect(cfg.state_path)
        ((url,),) = db.execute("SELECT url FROM locations WHERE remote LIKE 'chevereto:%'")
        db.close()
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{chv.url}/_fakehost/break", json={"url": url, "how": "alter"}) as r,
        ):
            assert r.status == 200
        gz.host.fail_next("truncate")  # gz stores the upload; its reply breaks off
        report = await run_verify(cfg, ["chv:"], VerifyOptions(repair_to="gz:"))
        (rep,) = report.repairs
        assert rep.action == "found" and rep.new_url, rep
        assert (await gz.stats())["uploads"] == 1
        assert report.exit_code == 0
