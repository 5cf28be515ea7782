"""``imgsync verify``: the link-rot monitor and its repair, against emulators.

The issue's scenario: back up a Gyazo account, migrate it to Chevereto with a map, rewrite
a Markdown and an HTML document to the Chevereto URLs; then break 15 images on the
Chevereto emulator behind imgsync's back (10 deleted, 3 altered, 2 placeholders).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import aiohttp
from helpers import RunningFake, run_cli_async, start_fake, write_config

from imgsync.fakehosts.chevereto import CheveretoFake
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake

GY_TOKEN = "gyazo-secret-token-1234"
CHV_TOKEN = "chv_secret_key_5678"
ENV = {"GY_TOKEN": GY_TOKEN, "CHV_TOKEN": CHV_TOKEN}
URL_RE = re.compile(rb"https?://[^\s\"')<>\]]+")


async def _fetch(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.read()


async def _break(fake: RunningFake, url: str, how: str) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{fake.url}/_fakehost/break", json={"url": url, "how": how}) as r,
    ):
        assert r.status == 200, await r.text()


class Scenario:
    def __init__(self, tmp: Path, gyazo: RunningFake, chv: RunningFake) -> None:
        self.tmp = tmp
        self.gyazo = gyazo
        self.chv = chv
        self.cfg = write_config(
            tmp / "cfg.toml",
            f"""
[remotes.gyazo]
type = "gyazo"
base_url = "{gyazo.url}"
token_env = "GY_TOKEN"

[remotes.chv]
type = "chevereto"
base_url = "{chv.url}"
token_env = "CHV_TOKEN"
""",
        )
        self.backup = tmp / "backup"
        self.docs = tmp / "docs"
        self.map = tmp / "map.csv"

    async def cli(self, *args: str) -> tuple[int, str, str]:
        proc = await run_cli_async("--config", str(self.cfg), *args, env=ENV)
        for secret in (GY_TOKEN, CHV_TOKEN):
            assert secret not in proc.stdout and secret not in proc.stderr
        return proc.returncode, proc.stdout, proc.stderr

    async def setup(self) -> list[dict[str, str]]:
        """Backup, migrate with a map, two documents rewritten to the Chevereto URLs."""
        code, _out, err = await self.cli("backup", "gyazo:", str(self.backup))
        assert code == 0, err
        code, _out, err = await self.cli("migrate", "gyazo:", "chv:", "--map", str(self.map))
        assert code == 0, err
        with self.map.open() as fh:
            rows = [
                r
                for r in csv.DictReader(fh)
                if r["old_url"].rpartition(".")[2] in ("png", "jpg", "gif")
            ]
        self.docs.mkdir()
        md = "# Notes\r\n\r\n" + "".join(
            f"![shot {i}]({r['old_url']}) and [ref][r{i}]\r\n" for i, r in enumerate(rows)
        )
        md += "".join(f"[r{i}]: {r['old_url']}\r\n" for i, r in enumerate(rows))
        (self.docs / "notes.md").write_bytes(md.encode())
        html = "<html><body>\n" + "".join(
            f'<p><img src="{r["old_url"]}" alt="é{i}"></p>\n' for i, r in enumerate(rows)
        )
        (self.docs / "page.html").write_bytes(b"\xef\xbb\xbf" + html.encode() + b"</body></html>")
        self.original = self.snapshot()
        code, _out, err = await self.cli("rewrite", "--map", str(self.map), str(self.docs))
        assert code == 0, err
        self.migrated = self.snapshot()
        return rows

    def snapshot(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.docs.iterdir())}

    def doc_urls(self) -> set[str]:
        return {u.decode() for data in self.snapshot().values() for u in URL_RE.findall(data)}


async def test_verify_reports_gone_and_altered_then_repairs_and_rewrites(tmp_path: Path) -> None:
    gyazo = await start_fake(GyazoFake(Knobs(token=GY_TOKEN, seed=18)))
    chv = await start_fake(CheveretoFake(Knobs(token=CHV_TOKEN)))
    try:
        sc = Scenario(tmp_path, gyazo, chv)
        rows = await sc.setup()
        assert len(rows) == 18
        assert all(u.startswith(chv.url) for u in sc.doc_urls())
        good = {r["sha256"] for r in rows}

        # nothing broken yet: all alive, exit 0
        code, out, err = await sc.cli("verify", "chv:", "--json")
        assert code == 0, err
        assert json.loads(out)["remotes"][0]["alive"] == 18

        chv_urls = [r["new_url"] for r in rows]
        for url in chv_urls[:10]:
            await _break(chv, url, "delete")
        for url in chv_urls[10:13]:
            await _break(chv, url, "alter")
        for url in chv_urls[13:15]:
            await _break(chv, url, "placeholder")

        code, out, err = await sc.cli("verify", "chv:", "--json")
        assert code == 1, err
        found = json.loads(out)["remotes"][0]
        assert (found["checked"], found["alive"], found["gone"], found["altered"]) == (18, 3, 12, 3)
        assert found["unreachable"] == 0
        by_url = {p["url"]: p["status"] for p in found["problems"]}
        assert {u for u, s in by_url.items() if s == "altered"} == set(chv_urls[10:13])

        code, out, _err = await sc.cli("status")
        assert "verify chv: 3 alive, 12 gone, 3 altered, 0 unreachable" in out

        # dry run: says what it would do, changes nothing
        code, out, err = await sc.cli(
            "verify", "chv:", "--repair", "gyazo:", "--rewrite", str(sc.docs), "--dry-run"
        )
        assert sc.snapshot() == sc.migrated
        assert "would relink" in out and "(dry run)" in out

        code, out, err = await sc.cli(
            "verify", "chv:", "--repair", "gyazo:", "--rewrite", str(sc.docs),
            "--map", str(sc.map), "--json",
        )  # fmt: skip
        assert code == 0, err + out
        rep = json.loads(out)
        assert len(rep["repairs"]) == 15
        assert {r["action"] for r in rep["repairs"]} == {"relinked"}
        assert rep["files_changed"] == 2 and rep["links_replaced"] == 15 * 3

        # every image link in the documents is live and serves the original bytes
        urls = sc.doc_urls()
        assert len(urls) == 18
        for url in urls:
            status, data = await _fetch(url)
            assert status == 200, url
            assert hashlib.sha256(data).hexdigest() in good, url
        assert not urls & set(chv_urls[:15])

        # the map sends nothing to a dead URL, and maps each dead URL to its replacement
        with sc.map.open() as fh:
            mapped = {r["old_url"]: r["new_url"] for r in csv.DictReader(fh)}
        assert not set(mapped.values()) & set(chv_urls[:15])
        for url in chv_urls[:15]:
            status, data = await _fetch(mapped[url])
            assert status == 200

        # a verify now finds only live locations; the repair is not done twice
        code, out, err = await sc.cli("verify", "chv:", "--repair", "gyazo:", "--json")
        assert code == 0, err
        again = json.loads(out)
        assert again["remotes"][0]["checked"] == 3 and again["repairs"] == []

        # undo is exact: back to the Chevereto links, then to the original documents
        code, _out, err = await sc.cli("rewrite", "--undo", str(sc.docs))
        assert code == 0, err
        assert sc.snapshot() == sc.migrated
        code, _out, err = await sc.cli("rewrite", "--undo", str(sc.docs))
        assert code == 0, err
        assert sc.snapshot() == sc.original
    finally:
        await gyazo.close()
        await chv.close()


async def test_repair_onto_the_same_host_uploads_from_the_backup(tmp_path: Path) -> None:
    """With Gyazo gone, the bytes can only come from the backup folder: they are checked
    against the checksum and uploaded again; an image with no other copy is lost."""
    gyazo = await start_fake(GyazoFake(Knobs(token=GY_TOKEN, seed=6)))
    chv = await start_fake(CheveretoFake(Knobs(token=CHV_TOKEN)))
    try:
        sc = Scenario(tmp_path, gyazo, chv)
        rows = await sc.setup()
        await gyazo.close()  # the source account is no more
        chv_urls = [r["new_url"] for r in rows]
        await _break(chv, chv_urls[0], "delete")
        await _break(chv, chv_urls[1], "alter")
        await _break(chv, chv_urls[2], "placeholder")
        # the backup of image 2 rots too: no good copy is left anywhere
        lost = next(
            p
            for p in sc.backup.rglob("*")
            if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == rows[2]["sha256"]
        )
        lost.write_bytes(lost.read_bytes() + b"rot")
        before = (await chv.stats())["uploads"]

        code, out, err = await sc.cli(
            "verify", "chv:", "--repair", "chv:", "--rewrite", str(sc.docs), "--json"
        )
        assert code == 1, err  # one image is lost
        rep = json.loads(out)
        actions = {r["old_url"]: r["action"] for r in rep["repairs"]}
        assert actions == {
            chv_urls[0]: "uploaded",
            chv_urls[1]: "uploaded",
            chv_urls[2]: "lost",
        }
        uploaded = [r for r in rep["repairs"] if r["action"] == "uploaded"]
        assert all(r["source"].startswith(str(sc.backup)) for r in uploaded)
        assert (await chv.stats())["uploads"] == before + 2
        assert rep["lost_in"] == {
            chv_urls[2]: [str(sc.docs / "notes.md"), str(sc.docs / "page.html")]
        }
        for r in rep["repairs"]:
            if r["action"] == "uploaded":
                status, data = await _fetch(r["new_url"])
                assert status == 200 and hashlib.sha256(data).hexdigest() == r["sha256"]
                # a deleted file's name is free again: the host may hand out the same URL
                assert r["new_url"] in sc.doc_urls()
                assert r["old_url"] == r["new_url"] or r["old_url"] not in sc.doc_urls()
    finally:
        await chv.close()


async def test_two_repairs_at_once_upload_each_image_once(tmp_path: Path) -> None:
    """Two processes repairing the same dead images: the lease lets one upload each image;
    the other relinks or says to re-run; a third run finds nothing left to do."""
    import asyncio

    gyazo = await start_fake(GyazoFake(Knobs(token=GY_TOKEN, seed=8)))
    chv = await start_fake(CheveretoFake(Knobs(token=CHV_TOKEN)))
    try:
        sc = Scenario(tmp_path, gyazo, chv)
        rows = await sc.setup()
        for r in rows[:6]:
            await _break(chv, r["new_url"], "alter")
        before = (await chv.stats())["uploads"]
        args = ("verify", "chv:", "--repair", "chv:", "--json")
        one, two = await asyncio.gather(sc.cli(*args), sc.cli(*args))
        assert (await chv.stats())["uploads"] - before == 6
        actions = [r["action"] for out in (one, two) for r in json.loads(out[1])["repairs"]]
        assert actions.count("uploaded") == 6
        assert set(actions) <= {"uploaded", "relinked", "failed"}
        code, out, err = await sc.cli(*args)
        assert code == 0, err
        assert json.loads(out)["repairs"] == []
        assert (await chv.stats())["uploads"] - before == 6
    finally:
        await gyazo.close()
        await chv.close()


async def test_a_repair_killed_mid_run_is_finished_by_the_next_one(tmp_path: Path) -> None:
    """SIGKILL while repairing: the next run re-hosts only what is left (at most the one
    upload in flight at the kill is made twice), and its map covers every dead URL,
    those the killed run repaired included."""
    import asyncio
    import os
    import sys

    gyazo = await start_fake(GyazoFake(Knobs(token=GY_TOKEN, seed=24)))
    chv = await start_fake(CheveretoFake(Knobs(token=CHV_TOKEN)))
    try:
        sc = Scenario(tmp_path, gyazo, chv)
        rows = await sc.setup()
        dead = [r["new_url"] for r in rows]
        for url in dead:
            await _break(chv, url, "alter")
        before = chv.host.stats.uploads
        args = ("verify", "chv:", "--repair", "chv:", "--map", str(sc.map), "--json")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "imgsync", "--config", str(sc.cfg), *args,
            env={**os.environ, **ENV},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        while chv.host.stats.uploads < before + 8 and proc.returncode is None:
            await asyncio.sleep(0.002)
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        assert chv.host.stats.uploads - before < len(dead)  # killed part-way

        code, out, err = await sc.cli(*args)
        assert code == 0, err + out
        assert chv.host.stats.uploads - before <= len(dead) + 1
        with sc.map.open() as fh:
            mapped = {r["old_url"]: r["new_url"] for r in csv.DictReader(fh)}
        for url in dead:  # every dead URL leads to a live copy of its bytes
            status, _data = await _fetch(mapped[url])
            assert status == 200, url
        code, out, err = await sc.cli("verify", "chv:", "--json")
        assert code == 0, err
        assert json.loads(out)["remotes"][0]["gone"] == 0
    finally:
        await gyazo.close()
        await chv.close()


async def test_a_bad_lease_wait_is_a_usage_error(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "cfg.toml",
        '[remotes.chv]\ntype = "chevereto"\nbase_url = "http://127.0.0.1:9"\ntoken_env = "CHV_TOKEN"\n',
    )
    proc = await run_cli_async(
        "--config", str(cfg), "verify", "chv:", "--repair", "chv:", "--lease-wait", "-1", env=ENV
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--lease-wait" in proc.stderr
