"""A remote that fails as a whole (bad credentials) stops that destination cleanly."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli_async, start_fake, write_config

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake


async def test_bad_token_stops_the_remote_with_exit_3(image_tree: Path, tmp_path: Path) -> None:
    """A refused token: exit 3, one line saying what to check, the items not tried counted
    (not reported as failures), nothing uploaded, and the token nowhere in the output."""
    fake = await start_fake(GyazoFake(Knobs(token="the-right-token-42")))
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
        )
        env = {"GY": "a-wrong-token-99"}
        proc = await run_cli_async("--config", str(cfg), "copy", str(image_tree), "gy:", env=env)
        assert proc.returncode == 3, proc.stderr
        assert "token" in proc.stdout and "a-wrong-token-99" not in proc.stdout + proc.stderr
        proc = await run_cli_async(
            "--config", str(cfg), "copy", str(image_tree), "gy:", "--json", env=env
        )
        summary = json.loads(proc.stdout)
        assert summary["copied"] == 0
        assert summary["failed"] + summary["not_attempted"] == 12
        assert summary["not_attempted"] > 0
        assert (await fake.stats())["uploads"] == 0
    finally:
        await fake.close()
