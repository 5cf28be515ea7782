"""What a user reads names remotes as the user configured them (``gy:``) and folders by
their path, never by imgsync's internal state keys (``gyazo:http://host#fingerprint``,
``local:/path``)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli_async, start_fake, write_config

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import make_png

TOKEN = "names-token-2024"
ENV = {"GY": TOKEN, "GY_WRONG": "not-the-token-0"}


async def test_summaries_status_and_reports_use_the_configured_names(tmp_path: Path) -> None:
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN, seed=4)))
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n'
            f'[remotes.wrong]\ntype = "gyazo"\nbase_url = "{fake.url}"\n'
            'token_env = "GY_WRONG"\n',
        )
        c = ("--config", str(cfg))
        dest, src = tmp_path / "backup", tmp_path / "shots"
        src.mkdir()
        (src / "a.png").write_bytes(make_png(9, 9, 1))
        backup = await run_cli_async(*c, "backup", "gy:", str(dest), "--no-progress", env=ENV)
        refused = await run_cli_async(*c, "copy", str(src), "wrong:", "--json", env=ENV)
        status = await run_cli_async(*c, "status", env=ENV)
        as_json = await run_cli_async(*c, "status", "--json", env=ENV)
        report = await run_cli_async(*c, "report", str(tmp_path / "r.html"), env=ENV)
    finally:
        await fake.close()
    assert backup.returncode == 0, backup.stderr
    assert backup.stdout.startswith(f"backup gy: -> {dest}: 4 checked"), backup.stdout
    assert refused.returncode == 3
    summary = json.loads(refused.stdout)
    assert (summary["source"], summary["dest"]) == (str(src), "wrong:")
    assert summary["source_key"] == f"local:{src}" and summary["dest_key"].startswith("gyazo:")
    assert status.returncode == 0 and report.returncode == 0, status.stderr + report.stderr
    assert f"  {dest}: 4 items" in status.stdout and "  gy: 4 items" in status.stdout
    failures = json.loads(as_json.stdout)["recent_failures"]
    assert failures and {(f["source"], f["dest"]) for f in failures} == {(str(src), "wrong:")}
    assert failures[0]["dest_key"] == summary["dest_key"]
    page = (tmp_path / "r.html").read_text()
    assert f"<title>copy report: {src} → wrong:</title>" in page  # the latest run
    # (the --json summary names the keys too, on purpose: source_key, dest_key)
    for shown in (backup.stdout, backup.stderr, refused.stderr, status.stdout, report.stdout):
        assert "gyazo:http" not in shown and "local:/" not in shown, shown
