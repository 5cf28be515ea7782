"""Downloads cut off mid-way are fetched again within the same run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web
from helpers import run_cli_async, start_fake, tree_files, write_config

from imgsync.fakehosts.common import Knobs, sha256_hex
from imgsync.fakehosts.guizhan import GuizhanFake

TOKEN = "gz-cut-token-5150"


class CuttingGuizhan(GuizhanFake):
    """Sends the first ``cuts`` downloads of each file only half-way (the full length is
    announced, then the connection is closed), as a flaky CDN does."""

    def __init__(self, knobs: Knobs, cuts: int, **kw: Any) -> None:
        super().__init__(knobs, **kw)
        self.cuts = cuts
        self.served: Counter[str] = Counter()

    async def serve_file(self, request: web.Request) -> web.StreamResponse:  # type: ignore[override]
        name = request.match_info["fullname"]
        self.served[name] += 1
        resp = await super().serve_file(request)
        body = getattr(resp, "body", None)
        if self.served[name] > self.cuts or not isinstance(body, bytes) or resp.status != 200:
            return resp
        stream = web.StreamResponse(
            status=200,
            headers={"Content-Type": resp.content_type, "Content-Length": str(len(body))},
        )
        await stream.prepare(request)
        await stream.write(body[: len(body) // 2])
        if request.transport is not None:
            request.transport.close()
        return stream


async def _backup(tmp_path: Path, fake: GuizhanFake) -> tuple[int, dict[str, Any], str, Path]:
    running = await start_fake(fake)
    dest = tmp_path / "backup"
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gz]\ntype = "guizhan"\nbase_url = "{running.url}"\n'
            f'token_env = "GZ"\n[limits."{running.authority}"]\nrate = "1000/second"\n',
        )
        proc = await run_cli_async(
            "--config", str(cfg), "backup", "gz:", str(dest), "--json", env={"GZ": TOKEN}
        )
    finally:
        await running.close()
    return proc.returncode, json.loads(proc.stdout), proc.stderr, dest


async def test_cut_off_downloads_are_retried_in_the_same_run(tmp_path: Path) -> None:
    """Every file's first download breaks off half-way: one run still backs up all 12,
    byte for byte, exit 0, each file fetched exactly twice, no staging litter."""
    fake = CuttingGuizhan(Knobs(token=TOKEN, seed=12, rate="none"), cuts=1)
    code, summary, err, dest = await _backup(tmp_path, fake)
    assert code == 0, err
    assert summary["copied"] == 12 and summary["failed"] == 0
    assert set(fake.served.values()) == {2}
    images = {k: v for k, v in tree_files(dest).items() if not k.endswith(".json")}
    assert sorted(sha256_hex(v) for v in images.values()) == sorted(fake.stored_checksums())
    assert not [p for p in dest.rglob("*") if p.name.startswith(".imgsync-tmp")]


async def test_a_file_that_always_breaks_off_fails_after_four_attempts(tmp_path: Path) -> None:
    """Bounded: a file cut off every time fails the item (exit 1) after 4 attempts, says
    so, and leaves nothing behind."""
    fake = CuttingGuizhan(Knobs(token=TOKEN, seed=2, rate="none"), cuts=99)
    code, summary, err, dest = await _backup(tmp_path, fake)
    assert code == 1
    assert summary["failed"] == 2 and summary["copied"] == 0
    assert set(fake.served.values()) == {4}
    assert "gave up after 4 attempts" in json.dumps(summary) + err
    # (the backup's gallery page may be there, listing nothing)
    assert not dest.exists() or tree_files(dest) == {}
    assert not [p for p in dest.rglob("*") if p.name.startswith(".imgsync-tmp")]
