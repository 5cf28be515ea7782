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


async def test_verify_dest_reuploads_what_was_deleted_on_the_host(
    image_tree: Path, tmp_path: Path
) -> None:
    """An image deleted on the host's website is only known to be gone after a re-list:
    --verify-dest lists the destination and the copy uploads it again."""
    import aiohttp

    token = "verify-token-77"
    fake = await start_fake(GyazoFake(Knobs(token=token)))
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
        )
        env = {"GY": token}
        base = ("--config", str(cfg), "copy", str(image_tree), "gy:", "--json")
        assert (await run_cli_async(*base, env=env)).returncode == 0
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(headers=headers) as s:
            async with s.get(f"{fake.url}/api/images") as r:
                victim = (await r.json())[0]["image_id"]
            async with s.delete(f"{fake.url}/api/images/{victim}") as r:
                assert r.status == 200
        plain = json.loads((await run_cli_async(*base, env=env)).stdout)
        assert plain["copied"] == 0  # state still says it is there
        proc = await run_cli_async(*base, "--verify-dest", env=env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["copied"] == 1
        assert "1 items recorded" in proc.stderr
        assert (await fake.stats())["items"] == 12
    finally:
        await fake.close()
