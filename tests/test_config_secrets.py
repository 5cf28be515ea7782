"""Config edges: IMGSYNC_CONFIG naming a missing file, and credentials others can read."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from helpers import run_cli

from imgsync.cli import main


def _main(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_imgsync_config_naming_a_missing_file_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A typo in $IMGSYNC_CONFIG stops with 78, as --config does; it does not silently
    run on embedded defaults and the default state database."""
    typo = tmp_path / "typo.toml"
    proc = run_cli("status", env={"IMGSYNC_CONFIG": str(typo)})
    assert proc.returncode == 78
    assert proc.stderr.strip() == (
        f"imgsync: config error: {typo}: config file not found (named by IMGSYNC_CONFIG)"
    )
    monkeypatch.setenv("IMGSYNC_CONFIG", str(typo))
    assert _main("copy", str(tmp_path / "a"), str(tmp_path / "b"))[0] == 78
    # --config still wins over the variable
    good = tmp_path / "good.toml"
    good.write_text("transfers = 2\n")
    code, out, _ = _main("--config", str(good), "config", "check")
    assert code == 0 and "config OK" in out


def test_world_readable_token_file_is_warned_about(tmp_path: Path) -> None:
    token = tmp_path / "gyazo.token"
    token.write_text("tok-123456\n")
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[remotes.g]\ntype = "gyazo"\ntoken_file = "{token}"\n')
    os.chmod(cfg, 0o644)
    os.chmod(token, 0o644)
    code, out, err = _main("--config", str(cfg), "config", "check")
    assert code == 0 and "config OK" in out
    assert f"remotes.g.token_file: {token} is readable by other users (mode 644)" in err
    assert "tok-123456" not in err + out
    os.chmod(token, 0o600)
    assert _main("--config", str(cfg), "config", "check")[2] == ""


def test_config_with_inline_tokens_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[remotes.g]\ntype = "gyazo"\ntoken = "tok-abcdef"\n')
    os.chmod(cfg, 0o644)
    err = _main("--config", str(cfg), "config", "check")[2]
    assert "holds inline tokens and is readable by other users (mode 644)" in err
    assert "tok-abcdef" not in err
    os.chmod(cfg, 0o600)
    err = _main("--config", str(cfg), "config", "check")[2]
    assert "readable by other users" not in err and "inline token" in err
