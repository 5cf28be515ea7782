"""Lsky Pro end to end through the CLI: folder -> lskypro, backup, migrate, check.

The host re-encodes what it stores, so these runs prove that imgsync recognises its own
uploads by the SHA-256 of what it sent, whatever the host's md5 says, in both directions.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from helpers import RunningFake, run_cli_async, start_fake, tree_files, write_config

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import seed_image
from imgsync.fakehosts.lskypro import LskyProFake

TOKEN = "3|cli0token0aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
GY_TOKEN = "gyazo-secret-token-lsky"


class CountingLsky(LskyProFake):
    """The emulator, also counting file downloads."""

    def __init__(self, knobs: Knobs, **kw: Any) -> None:
        super().__init__(knobs, **kw)
        self.downloads = 0

    def serve_file(self, request: web.Request, key: str | None) -> web.Response:
        self.downloads += 1
        return super().serve_file(request, key)


def make_folder(root: Path, count: int) -> dict[str, bytes]:
    root.mkdir()
    files = {}
    for i in range(count):
        data, ext = seed_image(i)
        files[f"img{i:02d}.{ext}"] = data
        (root / f"img{i:02d}.{ext}").write_bytes(data)
    return files


def config(tmp_path: Path, lsky: RunningFake, extra: str = "") -> Path:
    # the emulator runs without its API throttle here: so does imgsync's default pacing
    return write_config(
        tmp_path / "cfg.toml",
        f"""
[remotes.lsky]
type = "lskypro"
base_url = "{lsky.url}"
token_env = "LSKY_TOKEN"

[limits."{lsky.authority}/api/v1"]
rate = "1000/second"
{extra}
""",
    )


async def run(cfg: Path, *args: str) -> dict[str, Any]:
    proc = await run_cli_async("--config", str(cfg), *args, "--json", env={"LSKY_TOKEN": TOKEN})
    assert proc.stdout, proc.stderr
    summary: dict[str, Any] = json.loads(proc.stdout)
    assert proc.returncode == summary["exit_code"] == 0, proc.stderr
    return summary


async def test_folder_to_lsky_backup_and_back_upload_and_download_once(tmp_path: Path) -> None:
    """50 images -> lskypro (50 uploads, a re-run 0); backup -> ./bk writes each once with a
    sidecar (a re-run downloads nothing); copying the folder again still uploads nothing,
    although the backup saw bytes different from those sent; check finds nothing missing."""
    host = CountingLsky(Knobs(token=TOKEN, rate="none"))
    lsky = await start_fake(host)
    try:
        cfg = config(tmp_path, lsky)
        sent = make_folder(tmp_path / "src", 50)
        first = await run(cfg, "copy", str(tmp_path / "src"), "lsky:")
        assert (first["copied"], host.stats.uploads) == (50, 50)
        # the host's md5 describes its own re-encoded bytes: nothing is "verified" by it
        with sqlite3.connect(os.environ["IMGSYNC_STATE"]) as conn:
            stages = dict(conn.execute("SELECT stage, COUNT(*) FROM journal GROUP BY stage"))
        assert stages == {"uploaded": 50}
        again = await run(cfg, "copy", str(tmp_path / "src"), "lsky:")
        assert (again["copied"], again["already_present"], host.stats.uploads) == (0, 50, 50)

        bk = tmp_path / "bk"
        backup = await run(cfg, "backup", "lsky:", str(bk))
        assert backup["copied"] == 50 and host.downloads == 50
        images = sorted(bk / rel for rel in tree_files(bk) if not rel.endswith(".json"))
        assert len(images) == 50 and {p.name for p in images} == set(sent)
        stored = {image.md5 for image in host.images.values()}
        for image in images:
            side = json.loads(image.with_name(image.name + ".json").read_text())
            assert side["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
            assert hashlib.md5(image.read_bytes()).hexdigest() in stored  # the stored bytes
        assert sum(p.read_bytes() != sent[p.name] for p in images) == 40  # PNG/JPEG converted

        rerun = await run(cfg, "backup", "lsky:", str(bk))
        assert rerun["copied"] == 0 and host.downloads == 50

        third = await run(cfg, "copy", str(tmp_path / "src"), "lsky:")
        assert third["copied"] == 0 and host.stats.uploads == 50
        back = await run(cfg, "copy", str(bk), "lsky:")  # the host's own bytes: already there
        assert back["copied"] == 0 and host.stats.uploads == 50

        for folder in ("src", "bk"):  # converted copies are not reported missing
            check = await run_cli_async(
                "--config", str(cfg), "check", str(tmp_path / folder), "lsky:", "--json",
                env={"LSKY_TOKEN": TOKEN},
            )  # fmt: skip
            assert check.returncode == 0, check.stderr
            assert json.loads(check.stdout)["missing"] == [], folder
        verify = await run(cfg, "copy", str(tmp_path / "src"), "lsky:", "--verify-dest")
        assert verify["copied"] == 0 and host.stats.uploads == 50
        # an image deleted at the host is found by --verify-dest and sent again, once
        deleted = next(iter(host.user_images()))
        host._remove(deleted)
        verify = await run(cfg, "copy", str(tmp_path / "src"), "lsky:", "--verify-dest")
        assert verify["copied"] == 1 and host.stats.uploads == 51

        # sync: two files dropped from the folder are deleted at the host (confirmed gone)
        (tmp_path / "src" / "img01.png").unlink()
        (tmp_path / "src" / "img03.jpg").unlink()
        before = host.stats.requests
        synced = await run(cfg, "sync", str(tmp_path / "src"), "lsky:")
        assert synced["deleted"] == 2 and host.stats.deletes == 2
        # each delete: is it there (its recorded URL), DELETE, is it gone -- no listing scans
        assert host.stats.requests - before == 2 * 3
        assert len(host.user_images()) == 48
    finally:
        await lsky.close()


async def test_migrate_gyazo_to_lsky_writes_a_complete_map(tmp_path: Path) -> None:
    """gyazo: -> lskypro: with --map: every Gyazo URL maps to a Lsky URL serving the image
    (converted); a re-run uploads nothing."""
    gyazo = await start_fake(GyazoFake(Knobs(token=GY_TOKEN, seed=12)))
    host = CountingLsky(Knobs(token=TOKEN, rate="none"))
    lsky = await start_fake(host)
    try:
        extra = f'\n[remotes.gy]\ntype = "gyazo"\nbase_url = "{gyazo.url}"\ntoken = "{GY_TOKEN}"\n'
        cfg = config(tmp_path, lsky, extra)
        map_path = tmp_path / "map.csv"
        one = await run(cfg, "migrate", "gy:", "lsky:", "--map", str(map_path))
        assert one["copied"] == 12 and host.stats.uploads == 12
        with map_path.open() as fh:
            rows = list(csv.DictReader(fh))
        assert rows and all(r["new_url"].startswith(lsky.url + "/i/") for r in rows)
        assert {r["new_url"] for r in rows} == {
            f"{lsky.url}/i/{image.pathname}" for image in host.images.values()
        }
        async with aiohttp.ClientSession() as session:
            for row in rows:
                async with session.get(row["new_url"]) as resp:
                    assert resp.status == 200
        two = await run(cfg, "migrate", "gy:", "lsky:", "--map", str(map_path))
        assert two["copied"] == 0 and host.stats.uploads == 12
    finally:
        await gyazo.close()
        await lsky.close()
