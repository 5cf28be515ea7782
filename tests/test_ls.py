"""`imgsync ls`: what a remote holds, and how a failing remote is reported."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli_async, start_fake, write_config

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake


async def test_ls_lists_and_a_refused_token_exits_3(tmp_path: Path) -> None:
    """With the right token every item is listed (exit 0); a wrong token is a remote-wide
    failure: exit 3 (as README documents), one line, the token nowhere."""
    fake = await start_fake(GyazoFake(Knobs(token="the-right-token-42", seed=3)))
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
        )
        ok = await run_cli_async(
            "--config", str(cfg), "ls", "gy:", "--json", env={"GY": "the-right-token-42"}
        )
        assert ok.returncode == 0, ok.stderr
        assert len([json.loads(line) for line in ok.stdout.splitlines()]) == 3
        bad = await run_cli_async("--config", str(cfg), "ls", "gy:", env={"GY": "wrong-token-99"})
        assert bad.returncode == 3, bad.stderr
        assert "wrong-token-99" not in bad.stdout + bad.stderr
        assert "Traceback" not in bad.stderr
        assert bad.stderr.strip().count("\n") == 0 or "imgsync:" in bad.stderr.splitlines()[-1]
    finally:
        await fake.close()
