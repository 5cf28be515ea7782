"""The runtime: one limiter registry per process, pauses written to and read from state."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from imgsync import runtime
from imgsync.config import Config, parse_config
from imgsync.errors import RemotePaused
from imgsync.runtime import Runtime


def _cfg(tmp_path: Path) -> Config:
    host = "http://127.0.0.1:9"
    return parse_config(
        {
            "state": {"path": str(tmp_path / "state.db")},
            "remotes": {
                "a": {"type": "gyazo", "base_url": host, "token": "token-aaaa"},
                "b": {"type": "gyazo", "base_url": host, "token": "token-bbbb"},
            },
        }
    )


async def test_two_runs_and_two_remotes_share_one_budget(tmp_path: Path) -> None:
    """Two runtimes (two jobs of a daemon) and two remotes on one host get the same
    limiter for that host."""
    cfg = _cfg(tmp_path)
    async with Runtime(cfg) as one, Runtime(cfg) as two:
        a = await one.open(cfg.remotes["a"])
        b = await two.open(cfg.remotes["b"])
        assert a.http.limiters is b.http.limiters
        assert a.http.limiters.for_url("http://127.0.0.1:9/x") is b.http.limiters.for_url(
            "http://127.0.0.1:9/y"
        )


async def test_a_pause_survives_a_new_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pause reported by the limiter is written to state; a fresh process (a new
    registry) refuses the host at once."""
    cfg = _cfg(tmp_path)
    until = time.time() + 3600
    async with Runtime(cfg) as rt:
        provider = await rt.open(cfg.remotes["a"])
        await provider.http.limiters.for_authority("127.0.0.1:9").pause_until(until, "budget")
    monkeypatch.setattr(runtime, "_REGISTRIES", {})  # as in a new process
    async with Runtime(cfg) as rt:
        provider = await rt.open(cfg.remotes["b"])
        with pytest.raises(RemotePaused):
            await provider.http.limiters.for_authority("127.0.0.1:9").acquire()


async def test_back_to_back_runs_stay_inside_the_hosts_limit(
    image_tree: Path, tmp_path: Path
) -> None:
    """`copy` then an immediate `ls` (two processes) against a host enforcing 3/second:
    the second process knows what the first spent, and the host refuses nothing."""
    from helpers import run_cli_async, start_fake, write_config

    from imgsync.fakehosts.common import Knobs
    from imgsync.fakehosts.guizhan import GuizhanFake

    fake = await start_fake(GuizhanFake(Knobs(token="gz-token-123456", rate="3/second")))
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f"""
[remotes.gz]
type = "guizhan"
base_url = "{fake.url}"
token_env = "GZ"

[limits."{fake.authority}"]
rate = "3/second"
""",
        )
        env = {"GZ": "gz-token-123456"}
        for verb in (("copy", str(image_tree), "gz:"), ("ls", "gz:"), ("ls", "gz:")):
            proc = await run_cli_async("--config", str(cfg), *verb, env=env)
            assert proc.returncode == 0, proc.stderr
        assert (await fake.stats())["throttled"] == 0
    finally:
        await fake.close()


async def test_a_self_hosted_site_gets_its_types_default_limit(tmp_path: Path) -> None:
    """Lsky Pro declares a default for the API of "the remote's own host": a fresh remote
    at any base_url has its API requests paced by it (not its image files, which the host
    does not throttle), and the config's [limits] still win."""
    cfg = parse_config(
        {
            "state": {"path": str(tmp_path / "state.db")},
            "remotes": {
                "lsky": {"type": "lskypro", "base_url": "https://img.example.org/", "token": "t"},
                "lan": {"type": "lskypro", "base_url": "http://127.0.0.1:9/lsky", "token": "k"},
                "chv": {"type": "chevereto", "base_url": "https://chv.example", "token": "k"},
                "own": {"type": "lskypro", "base_url": "https://pics.example:8443", "token": "t"},
            },
            "limits": {"pics.example:8443/api/v1": {"rate": "300/minute"}},
        }
    )
    async with Runtime(cfg) as rt:
        for name in ("lsky", "lan", "chv", "own"):
            await rt.open(cfg.remotes[name])
        limiters = runtime.shared_limiters(cfg)

        def rates(url: str) -> tuple[str, ...]:
            return tuple(limiters.for_url(url).rates)

        assert rates("https://img.example.org/api/v1/upload") == ("60/minute",)
        assert rates("https://img.example.org/i/2026/11/30/a.png") == ()
        assert rates("http://127.0.0.1:9/lsky/api/v1/images?page=2") == ("60/minute",)
        assert rates("http://127.0.0.1:9/lsky/i/a.png") == ()
        assert rates("https://pics.example:8443/api/v1/images") == ("300/minute",)
        assert rates("https://chv.example/api/1/upload") == ()


async def test_guizhan_anywhere_gets_its_default_limit_and_rate_none_lifts_it(
    tmp_path: Path,
) -> None:
    """Guizhan's 60 requests a minute applies to the API of whatever host base_url names
    (a stand-in such as the emulator too: three fleet workers against it with no [limits]
    were throttled 19 times); a whole-host [limits] table wins over it, and its
    rate = "none" lifts it."""
    cfg = parse_config(
        {
            "state": {"path": str(tmp_path / "state.db")},
            "remotes": {
                "pub": {"type": "guizhan", "token": "t"},
                "emu": {"type": "guizhan", "base_url": "http://127.0.0.1:9", "token": "t"},
                "fast": {"type": "guizhan", "base_url": "http://127.0.0.1:10", "token": "t"},
                "free": {"type": "guizhan", "base_url": "http://127.0.0.1:11", "token": "t"},
            },
            "limits": {"127.0.0.1:10": {"rate": "20/second"}, "127.0.0.1:11": {"rate": "none"}},
        }
    )
    async with Runtime(cfg) as rt:
        for name in ("pub", "emu", "fast", "free"):
            await rt.open(cfg.remotes[name])
        limiters = runtime.shared_limiters(cfg)

        def rates(url: str) -> tuple[str, ...]:
            return tuple(limiters.for_url(url).rates)

        assert rates("https://api.gzssimg.com/v1/images?page=1") == ("60/minute",)
        assert rates("http://127.0.0.1:9/v1/images") == ("60/minute",)
        assert rates("http://127.0.0.1:9/21w03/abc.png") == ()  # image files: not the API
        assert rates("http://127.0.0.1:10/v1/images") == ("20/second",)
        assert rates("http://127.0.0.1:11/v1/images") == ()
