"""`imgsync migrate` between two emulated hosts, resumed after failures, then `rewrite`."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
from pathlib import Path

import aiohttp
from helpers import run_cli_async, start_fake, write_config

from imgsync.fakehosts.chevereto import CheveretoFake
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake

GY_TOKEN = "gyazo-secret-token-1234"
CHV_TOKEN = "chv_secret_key_5678"


async def _get(url: str) -> bytes:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200, url
        return await r.read()


async def test_migrate_resumes_writes_the_map_and_rewrites_documents(tmp_path: Path) -> None:
    """Gyazo -> Chevereto: a first run that fails part of the items, a second run that
    uploads only the rest, a complete map whose new URLs serve the same bytes, and a
    Markdown document rewritten from it."""
    gyazo = await start_fake(GyazoFake(Knobs(token=GY_TOKEN, seed=15)))
    # the destination refuses the larger images in the first run
    chv_host = CheveretoFake(Knobs(token=CHV_TOKEN, max_upload_bytes=3000))
    chv = await start_fake(chv_host)
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f"""
[remotes.gy]
type = "gyazo"
base_url = "{gyazo.url}"
token_env = "GY_TOKEN"

[remotes.chv]
type = "chevereto"
base_url = "{chv.url}"
token_env = "CHV_TOKEN"
""",
        )
        env = {"GY_TOKEN": GY_TOKEN, "CHV_TOKEN": CHV_TOKEN}
        map_path = tmp_path / "map.csv"
        args = ("--config", str(cfg), "migrate", "gy:", "chv:", "--map", str(map_path), "--json")

        first = await run_cli_async(*args, env=env)
        assert first.returncode == 1, first.stderr
        one = json.loads(first.stdout)
        assert one["failed"] > 0 and one["copied"] > 0
        assert one["copied"] + one["failed"] == 15
        assert one["map_rows"] == 2 * one["copied"]  # file URL and permalink each

        conn = sqlite3.connect(os.environ["IMGSYNC_STATE"])
        stages = dict(conn.execute("SELECT stage, COUNT(*) FROM journal GROUP BY stage"))
        conn.close()
        assert stages == {"verified": one["copied"], "failed": one["failed"]}

        chv_host.knobs.max_upload_bytes = 50 * 1024 * 1024
        second = await run_cli_async(*args, env=env)
        assert second.returncode == 0, second.stderr
        two = json.loads(second.stdout)
        assert two["copied"] == one["failed"]  # only what was missing
        assert two["map_rows"] == 30
        assert (await chv.stats())["uploads"] == 15

        third = await run_cli_async(*args, env=env)
        assert json.loads(third.stdout)["copied"] == 0
        assert (await chv.stats())["uploads"] == 15

        with map_path.open() as fh:
            every = list(csv.DictReader(fh))
        rows = [r for r in every if r["old_url"].rpartition(".")[2] in ("png", "jpg", "gif")]
        pages = [r for r in every if r not in rows]
        assert len(rows) == 15 and len(pages) == 15
        for row in rows:
            old, new = await _get(row["old_url"]), await _get(row["new_url"])
            assert old == new
            assert hashlib.sha256(new).hexdigest() == row["sha256"]
        for page in pages:  # Gyazo permalink -> Chevereto viewer page
            assert page["old_url"].startswith(gyazo.url) and "/image/" in page["new_url"]
            await _get(page["new_url"])

        doc = tmp_path / "notes.md"
        doc.write_text("".join(f"![shot]({row['old_url']})\n" for row in rows))
        proc = await run_cli_async("rewrite", "--map", str(map_path), str(doc))
        assert proc.returncode == 0, proc.stderr
        assert doc.read_text() == "".join(f"![shot]({row['new_url']})\n" for row in rows)

        # the journal: every item listed, fetched, then verified against Chevereto's md5
        conn = sqlite3.connect(os.environ["IMGSYNC_STATE"])
        stages = dict(conn.execute("SELECT stage, COUNT(*) FROM journal GROUP BY stage"))
        conn.close()
        assert stages == {"verified": 15}

        proc = await run_cli_async("--config", str(cfg), "status", env=env)
        assert "chv: 15 items" in proc.stdout
        for secret in (GY_TOKEN, CHV_TOKEN):
            for out in (first, second, third, proc):
                assert secret not in out.stdout and secret not in out.stderr
    finally:
        await gyazo.close()
        await chv.close()
