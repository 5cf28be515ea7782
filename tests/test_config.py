"""Config: the example validates, every problem is reported at once, credentials resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import run_cli

from imgsync.config import load_config, parse_config, parse_duration, parse_rate
from imgsync.errors import ConfigError
from imgsync.providers import kinds

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"


def test_example_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config.example.toml documents a valid config once its credentials exist."""
    for var in re.findall(r'(?m)^token_env\s*=\s*"([^"]+)"', EXAMPLE.read_text()):
        monkeypatch.setenv(var, "secret-" + var)
    token = tmp_path / "guizhan.token"
    token.write_text("  gz-secret\n")
    text = EXAMPLE.read_text().replace("~/.config/imgsync/guizhan.token", str(token))
    cfg_file = tmp_path / "config.toml"
    cfg_file.write_text(text)
    cfg = load_config(cfg_file, explicit=True)
    assert {"shots", "gyazo", "guizhan", "imgz", "di"} <= set(cfg.remotes)
    assert {remote.type for remote in cfg.remotes.values()} == set(kinds())
    assert cfg.remotes["guizhan"].token == "gz-secret"
    assert cfg.remotes["gyazo"].token == "secret-GYAZO_TOKEN"
    assert cfg.limits["api.gzssimg.com"].rates == ("60/minute",)
    assert [j.kind for j in cfg.jobs] == ["watch", "backup", "migrate", "verify"]
    verify = cfg.jobs[-1]
    assert (verify.source, verify.repair_to, verify.destinations) == ("imgz:", "gyazo:", ())
    assert verify.rewrite == (Path("~/blog/posts").expanduser(),)
    assert "secret" not in repr(cfg.remotes["gyazo"])


def test_every_problem_reported_at_once() -> None:
    """Several mistakes produce one ConfigError listing each with its key."""
    data = {
        "transfers": 0,
        "remotes": {
            "a": {"type": "nope"},
            "b": {"type": "chevereto", "token": "t"},
            "c": {"type": "gyazo", "token_env": "IMGSYNC_TEST_UNSET_VAR", "colour": "red"},
        },
        "limits": {"example.com": {"rate": "fast"}},
        "jobs": [{"kind": "copy", "source": "missing:"}],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="cfg.toml")
    text = "\n".join(info.value.problems)
    for key in (
        "transfers",
        "remotes.a.type",
        "remotes.b.base_url",
        "remotes.c.token_env",
        "remotes.c.colour",
        'limits."example.com".rate',
        "jobs[0].kind",
        "jobs[0].source",
        "jobs[0].destinations",
    ):
        assert key in text, key
    assert all(p.startswith("cfg.toml: ") for p in info.value.problems)


def test_option_values_are_checked() -> None:
    """Out-of-range page sizes, unknown access policies and bad expirations are caught by
    `config check`, before any run."""
    data = {
        "remotes": {
            "g": {"type": "gyazo", "token": "t", "per_page": 500, "access_policy": "all"},
            "z": {"type": "guizhan", "token": "t", "per_page": 4},
            "c": {
                "type": "chevereto",
                "token": "t",
                "base_url": "https://x.io",
                "expiration": "3 days",
            },
        }
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    text = "\n".join(info.value.problems)
    for key in (
        "remotes.g.per_page",
        "remotes.g.access_policy",
        "remotes.z.per_page",
        "remotes.c.expiration",
    ):
        assert key in text, key
    ok = {"type": "chevereto", "token": "t", "base_url": "https://x.io", "expiration": "P3D"}
    assert parse_config({"remotes": {"c": ok}}).remotes["c"].option("expiration") == "P3D"


def test_one_credential_only() -> None:
    """token and token_env together is an error; none at all is an error."""
    with pytest.raises(ConfigError, match="only one of"):
        parse_config({"remotes": {"g": {"type": "gyazo", "token": "a", "token_env": "B"}}})
    with pytest.raises(ConfigError, match="needs a credential"):
        parse_config({"remotes": {"g": {"type": "gyazo"}}})


def test_inline_token_warns() -> None:
    """An inline token works but produces a warning."""
    cfg = parse_config({"remotes": {"g": {"type": "gyazo", "token": "abc"}}})
    assert cfg.remotes["g"].token == "abc"
    assert any("inline token" in w for w in cfg.warnings)


def test_rates_and_durations() -> None:
    """Rates and durations read the way the docs write them."""
    assert parse_rate("60/minute") == (60.0, 60.0)
    assert parse_rate("12500/day") == (12500.0, 86400.0)
    assert parse_rate("100/15m") == (100.0, 900.0)
    assert parse_duration("1h") == 3600.0
    assert parse_duration(30) == 30.0
    with pytest.raises(ValueError):
        parse_rate("sixty per minute")


def test_missing_default_config_means_embedded_defaults(tmp_path: Path) -> None:
    """No file at the default place is fine; a named file that is missing is an error."""
    assert load_config(tmp_path / "absent.toml").remotes == {}
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", explicit=True)


def test_cli_config_check_exit_78_one_line_each(tmp_path: Path) -> None:
    """`config check` prints one line per problem and exits 78; bad TOML too."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[remotes.x]\ntype = "gyazo"\n[remotes.y]\ntype = "local"\n')
    proc = run_cli("--config", str(bad), "config", "check")
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("imgsync: config error:") for line in lines)
    bad.write_text("this is = = not toml")
    proc = run_cli("--config", str(bad), "config", "check")
    assert proc.returncode == 78 and "not valid TOML" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_any_verb_with_bad_config_exits_78(tmp_path: Path) -> None:
    """A bad config stops every verb with exit 78, not just `config check`."""
    bad = tmp_path / "bad.toml"
    bad.write_text("transfers = 'many'\n")
    proc = run_cli("--config", str(bad), "status")
    assert proc.returncode == 78


def test_verify_job_keys_are_checked() -> None:
    """A verify job takes no destinations; repair_to must be a host; rewrite and map need
    repair_to; sample and full exclude each other; other kinds refuse the verify keys."""
    remotes = {"chv": {"type": "chevereto", "base_url": "https://c.example", "token": "k-1234"},
               "pics": {"type": "local", "path": "/tmp/pics"}}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "remotes": remotes,
                "jobs": [
                    {"kind": "verify", "source": "chv:", "destinations": ["pics:"]},
                    {"kind": "verify", "source": "chv:", "repair_to": "pics:"},
                    {"kind": "verify", "source": "chv:", "rewrite": "docs", "map": "m.csv"},
                    {"kind": "verify", "source": "chv:", "sample": 0},
                    {"kind": "verify", "source": "chv:", "sample": 5, "full": True},
                    {"kind": "backup", "source": "chv:", "destinations": ["pics:"], "full": True},
                    {"kind": "verify", "source": "chv:", "ignore_unreachable_dest": True},
                    {"kind": "verify", "source": "chv:", "ignore_unreachable_dest": "yes"},
                ],
            }
        )
    text = "\n".join(info.value.problems)
    assert "jobs[0].destinations: a verify job has none" in text
    assert "jobs[1].repair_to: must be a host remote" in text
    assert "jobs[2].rewrite: needs repair_to" in text
    assert "jobs[2].map: a verify job extends" in text
    assert "jobs[3].sample: must be a whole number" in text
    assert "jobs[4].full: full and sample do not go together" in text
    assert 'jobs[5].full: only a kind = "verify" job' in text
    assert "jobs[6].ignore_unreachable_dest: needs repair_to" in text
    assert "jobs[7].ignore_unreachable_dest: true or false" in text
    both = {"repair_to": "chv:", "ignore_unreachable_dest": True}
    job = {"kind": "verify", "source": "chv:", **both}
    assert parse_config({"remotes": remotes, "jobs": [job]}).jobs[0].ignore_unreachable_dest
    ok = parse_config(
        {"remotes": remotes, "jobs": [{"kind": "verify", "source": "chv:", "sample": 50}]}
    )
    assert ok.jobs[0].sample == 50 and ok.jobs[0].repair_to is None


def test_breaker_and_lease_wait_keys_are_read_and_checked(tmp_path: Path) -> None:
    """A host's outage budget and breaker cooldown, and the daemon's lease wait, are config
    keys; bad values are one line each naming the key, and `config check` exits 78."""
    cfg = parse_config(
        {
            "limits": {"img.example.org": {"outage_budget": "90s", "cooldown": "5m"}},
            "daemon": {"lease_wait": "45s"},
        }
    )
    assert cfg.limits["img.example.org"].outage_budget == 90.0
    assert cfg.limits["img.example.org"].cooldown == 300.0
    assert cfg.daemon.lease_wait == 45.0
    assert parse_config({}).daemon.lease_wait == 300.0
    assert parse_config({"daemon": {"lease_wait": 0}}).daemon.lease_wait == 0.0
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[limits."h.example"]\noutage_budget = "soon"\ncooldown = -5\n'
        '[daemon]\nlease_wait = "-1s"\n'
    )
    proc = run_cli("--config", str(bad), "config", "check")
    assert proc.returncode == 78, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert 'limits."h.example".outage_budget: bad duration' in lines[0]
    assert 'limits."h.example".cooldown: must be above 0' in lines[1]
    assert "daemon.lease_wait:" in lines[2]
    assert "Traceback" not in proc.stderr


def test_example_documents_the_breaker_and_lease_wait_keys() -> None:
    """config.example.toml shows each of the keys (set or commented out)."""
    text = EXAMPLE.read_text()
    for key in ("outage_budget", "cooldown", "lease_wait"):
        assert re.search(rf"(?m)^#?\s*{key}\s*=", text), key
