"""`imgsync backup`: a backed-up image deleted by hand is fetched again."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import backup_files, run_cli_async, start_fake, write_config

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake


async def test_backup_restores_a_file_deleted_from_the_backup(tmp_path: Path) -> None:
    """State says an image is backed up, the user deleted the file: the next backup
    downloads exactly that one again."""
    fake = await start_fake(GyazoFake(Knobs(token="backup-token-1", seed=6)))
    out = tmp_path / "backup"
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
        )
        args = ("--config", str(cfg), "backup", "gy:", str(out), "--json")
        env = {"GY": "backup-token-1"}
        first = json.loads((await run_cli_async(*args, env=env)).stdout)
        assert first["copied"] == 6
        victim = min(p for p in backup_files(out) if not p.name.endswith(".json"))
        data = victim.read_bytes()
        victim.unlink()
        second = json.loads((await run_cli_async(*args, env=env)).stdout)
        assert second["copied"] == 1 and second["already_present"] == 5
        assert victim.read_bytes() == data
    finally:
        await fake.close()
