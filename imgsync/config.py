"""TOML config -> typed, validated config. Every problem is collected and reported at once.

The format is documented key by key in ``config.example.toml``. Credentials are uniform
across remotes: ``token`` (inline, warns), ``token_env`` (an environment variable) or
``token_file`` (a file whose stripped content is the token; works with systemd credentials).

A remote is checked against its type's own declaration
(:class:`~imgsync.providers.base.ProviderInfo`: options with their types, ranges and
choices, whether it takes a token, a ``base_url`` or a ``path``); nothing here is written
per remote type. Only the types a config uses are imported.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from imgsync.errors import ConfigError

JOB_KINDS = ("watch", "mirror", "migrate", "backup", "verify")

_COMMON_REMOTE_KEYS = {"type", "base_url", "token", "token_env", "token_file", "description"}
_TOKEN_KEYS = ("token", "token_env", "token_file")


_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
_RATE_RE = r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$"


def parse_rate(text: str) -> tuple[float, float]:
    """``"60/minute"`` -> ``(60.0, 60.0)`` (requests, period in seconds).

    Accepts ``N/second|minute|hour|day`` (and short forms ``s m h d``), optionally with a
    multiplier (``"100/15m"``). Raises ``ValueError`` with a readable message.
    """
    m = re.match(_RATE_RE, text.lower())
    if not m or m.group(3) not in _UNITS:
        raise ValueError(f"bad rate {text!r}: write it like 60/minute, 5/second or 12500/day")
    count = float(m.group(1))
    period = float(m.group(2) or 1) * _UNITS[m.group(3)]
    if count <= 0 or period <= 0:
        raise ValueError(f"bad rate {text!r}: count and period must be positive")
    return count, period


def parse_duration(value: str | float) -> float:
    """``30``, ``"30s"``, ``"5m"``, ``"1h"`` -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", str(value).lower())
    if not m or (m.group(2) and m.group(2) not in _UNITS):
        raise ValueError(f"bad duration {value!r}: write it like 30s, 5m or 1h")
    return float(m.group(1)) * (_UNITS[m.group(2)] if m.group(2) else 1.0)


def default_config_path() -> Path:
    """``$IMGSYNC_CONFIG``, else ``<user config dir>/imgsync/config.toml``."""
    env = os.environ.get("IMGSYNC_CONFIG")
    if env:
        return Path(env).expanduser()
    return _user_dir("XDG_CONFIG_HOME", ".config") / "config.toml"


_PG_SCHEMES = ("postgresql://", "postgres://")


def default_state_url(configured: str | None) -> str | None:
    """``IMGSYNC_STATE_URL`` when set (it wins over ``[state] url``), else ``configured``."""
    return os.environ.get("IMGSYNC_STATE_URL") or configured


def default_state_path() -> Path:
    """``<user state dir>/imgsync/state.db`` (``~/.local/state/imgsync`` on Linux)."""
    env = os.environ.get("IMGSYNC_STATE")
    if env:
        return Path(env).expanduser()
    return _user_dir("XDG_STATE_HOME", ".local/state") / "state.db"


def _user_dir(xdg_var: str, below_home: str) -> Path:
    """platformdirs' ``user_config_path("imgsync")`` / ``user_state_path("imgsync")``.

    On Linux the plain case is worked out here (an absolute ``$XDG_...`` variable, else
    that folder below an absolute ``$HOME``), as platformdirs does it: importing it costs
    a no-op re-run about 4 ms. Anything else (other systems, Android, an unusual
    ``$HOME``) asks platformdirs.
    """
    home = os.environ.get("HOME", "")
    if sys.platform == "linux" and "ANDROID_DATA" not in os.environ and os.path.isabs(home):
        base = os.environ.get(xdg_var, "")
        return Path(base if os.path.isabs(base) else os.path.join(home, below_home), "imgsync")
    import platformdirs

    if xdg_var == "XDG_CONFIG_HOME":
        return platformdirs.user_config_path("imgsync")
    return platformdirs.user_state_path("imgsync")


@dataclass(frozen=True)
class RemoteConfig:
    """One ``[remotes.NAME]`` table. ``token`` is secret and kept out of ``repr``."""

    name: str
    type: str
    path: Path | None = None
    base_url: str | None = None
    token: str | None = field(default=None, repr=False)
    options: dict[str, Any] = field(default_factory=dict)

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


@dataclass(frozen=True)
class LimitConfig:
    """One ``[limits."<authority>"]`` table. ``None``: the built-in default. ``unlimited``:
    ``rate = "none"`` (no rate windows, not even a provider's default)."""

    rates: tuple[str, ...] = ()
    unlimited: bool = False
    concurrency: int | None = None
    outage_budget: float | None = None  # seconds of failing every request before the breaker
    cooldown: float | None = None  # seconds an open breaker stays open


@dataclass(frozen=True)
class JobConfig:
    """One ``[[jobs]]`` entry."""

    name: str
    kind: str
    source: str
    destinations: tuple[str, ...]
    map_path: Path | None = None
    gallery: bool = True  # backup: keep the folder's index.html gallery up to date
    report_path: Path | None = None  # migrate: write the report page after every run
    interval: float = 3600.0
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    delete: bool = False
    # verify: check ``source``'s recorded copies; repair onto ``repair_to`` and rewrite
    # the documents under ``rewrite`` (map_path: a URL map to extend)
    repair_to: str | None = None
    rewrite: tuple[Path, ...] = ()
    sample: int | None = None
    full: bool = False
    ignore_unreachable_dest: bool = False  # verify with repair_to: see VerifyOptions


DEFAULT_IGNORE = (".*", "~*", "*~", "*.tmp", "*.part", "*.crdownload", "*.download", "*.swp")


@dataclass(frozen=True)
class DaemonConfig:
    debounce: float = 2.0  # a watched file must have been quiet this long before it is sent
    rescan_interval: float = 3600.0
    shutdown_grace: float = 8.0  # inside docker stop's 10 s
    retry: float = 30.0  # first retry after a failed run; doubles up to retry_max
    retry_max: float = 900.0
    ignore: tuple[str, ...] = DEFAULT_IGNORE  # watched names never sent (hidden, temporary)
    listen: tuple[str, int] | None = None  # serve /healthz and /metrics here
    lease_wait: float = 300.0  # wait this long for leases another imgsync holds (--lease-wait)


@dataclass(frozen=True)
class Config:
    """The whole validated config. ``warnings`` are reported but not fatal."""

    path: Path | None = None
    state_path: Path = field(default_factory=default_state_path)
    # fleet mode: the shared PostgreSQL state several workers coordinate through
    state_url: str | None = field(default_factory=lambda: default_state_url(None))
    # fleet mode: seconds a worker's leases (items, listing pages) outlive its last renewal
    lease_ttl: float = 30.0
    transfers: int = 4
    log_level: str = "info"
    log_format: str = "auto"
    remotes: dict[str, RemoteConfig] = field(default_factory=dict)
    limits: dict[str, LimitConfig] = field(default_factory=dict)
    jobs: tuple[JobConfig, ...] = ()
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    warnings: tuple[str, ...] = ()


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def add(self, key: str, msg: str) -> None:
        self.errors.append(f"{self.source}: {key}: {msg}")

    def warn(self, key: str, msg: str) -> None:
        self.warnings.append(f"{self.source}: {key}: {msg}")


def load_config(path: Path | None, *, explicit: bool = False, tokens: bool = True) -> Config:
    """Read and validate the config at ``path``.

    A missing file at the default location means "embedded defaults" (an empty config);
    a missing file the user named (``explicit``, or through ``$IMGSYNC_CONFIG``) is an
    error. Raises ``ConfigError`` listing every problem.
    """
    named_by = ""
    if path is None:
        env = os.environ.get("IMGSYNC_CONFIG")
        if env:
            path, explicit, named_by = Path(env).expanduser(), True, " (named by IMGSYNC_CONFIG)"
        else:
            path = default_config_path()
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}: config file not found{named_by}")
        return Config(path=None)
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    cfg = parse_config(data, source=str(path), base_dir=path.parent, tokens=tokens)
    remotes = data.get("remotes")
    inline = isinstance(remotes, dict) and any(
        isinstance(t, dict) and "token" in t for t in remotes.values()
    )
    if inline and (mode := _readable_by_others(path)) is not None:
        warning = (
            f"{path}: holds inline tokens and is readable by other users (mode {mode:o}); "
            f"chmod 600 it, or move the tokens to token_env / token_file"
        )
        cfg = replace(cfg, warnings=(*cfg.warnings, warning))
    return cfg


def _readable_by_others(path: Path) -> int | None:
    """The file's mode when users other than its owner can read it, else None."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return None
    return mode if mode & 0o044 else None


def parse_config(
    data: dict[str, Any],
    *,
    source: str = "<config>",
    base_dir: Path | None = None,
    tokens: bool = True,
) -> Config:
    """Validate a parsed TOML document. Raises ``ConfigError`` with every problem."""
    p = _Problems(source)
    known = {"state", "transfers", "log", "remotes", "limits", "jobs", "daemon"}
    for key in data:
        if key not in known:
            p.add(key, f"unknown top-level key (known: {', '.join(sorted(known))})")

    state = _table(p, data, "state")
    state_path = default_state_path()
    if "path" in state:
        if isinstance(state["path"], str) and state["path"]:
            state_path = _expand(state["path"], base_dir)
        else:
            p.add("state.path", "must be a non-empty string")
    state_url = None
    if "url" in state:
        if isinstance(state["url"], str) and state["url"].startswith(_PG_SCHEMES):
            state_url = state["url"]
        else:
            p.add("state.url", "must be a postgresql:// URL")
    state_url = default_state_url(state_url)
    lease_ttl = 30.0
    if "lease_ttl" in state:
        value = state["lease_ttl"]
        if isinstance(value, int | float) and not isinstance(value, bool) and 5 <= value <= 3600:
            lease_ttl = float(value)
        else:
            p.add("state.lease_ttl", "must be a number of seconds from 5 to 3600")
    for key in state:
        if key not in ("path", "url", "lease_ttl"):
            p.add(f"state.{key}", "unknown key")

    transfers = data.get("transfers", 4)
    if not isinstance(transfers, int) or isinstance(transfers, bool) or not 1 <= transfers <= 64:
        p.add("transfers", "must be an integer from 1 to 64")
        transfers = 4

    log = _table(p, data, "log")
    level = log.get("level", "info")
    if level not in ("debug", "info", "warning", "error"):
        p.add("log.level", "must be one of debug, info, warning, error")
    fmt = log.get("format", "auto")
    if fmt not in ("auto", "console", "json"):
        p.add("log.format", "must be one of auto, console, json")

    remotes = {
        name: r
        for name, tbl in _table(p, data, "remotes").items()
        if (r := _remote(p, name, tbl, base_dir, tokens)) is not None
    }
    limits = {
        auth: lim
        for auth, tbl in _table(p, data, "limits").items()
        if (lim := _limit(p, auth, tbl)) is not None
    }
    jobs = _jobs(p, data.get("jobs", []), remotes, base_dir)
    daemon = _daemon(p, _table(p, data, "daemon"))

    if p.errors:
        raise ConfigError(p.errors)
    return Config(
        path=Path(source) if source != "<config>" else None,
        state_path=state_path,
        state_url=state_url,
        lease_ttl=lease_ttl,
        transfers=transfers,
        log_level=str(level),
        log_format=str(fmt),
        remotes=remotes,
        limits=limits,
        jobs=tuple(jobs),
        daemon=daemon,
        warnings=tuple(p.warnings),
    )


def _table(p: _Problems, data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        p.add(key, "must be a table")
        return {}
    return value


def _expand(value: str, base_dir: Path | None) -> Path:
    path = Path(os.path.expandvars(value)).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def _remote(
    p: _Problems, name: str, tbl: Any, base_dir: Path | None, tokens: bool = True
) -> RemoteConfig | None:
    key = f"remotes.{name}"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        p.add(key, "remote names may hold only letters, digits, '_', '-' and '.'")
    if not isinstance(tbl, dict):
        p.add(key, "must be a table")
        return None
    from imgsync.providers import kinds, provider_info

    rtype = tbl.get("type")
    if not isinstance(rtype, str) or rtype not in kinds():
        p.add(f"{key}.type", f"must be one of {', '.join(kinds())} (got {rtype!r})")
        return None
    info = provider_info(rtype)
    options: dict[str, Any] = {}
    for k, v in tbl.items():
        if k in _COMMON_REMOTE_KEYS or (k == "path" and info.path):
            continue
        if (problem := info.option_problem(k, v)) is not None:
            p.add(f"{key}.{k}", problem)
        else:
            options[k] = v
    path = None
    if info.path:
        raw = tbl.get("path")
        if not isinstance(raw, str) or not raw:
            p.add(f"{key}.path", f"a {rtype} remote needs a path")
        else:
            path = _expand(raw, base_dir)
    base_url = tbl.get("base_url")
    if base_url is not None and info.base_url == "none":
        p.add(f"{key}.base_url", f"a {rtype} remote takes no base_url")
        base_url = None
    elif base_url is not None and (
        not isinstance(base_url, str) or not re.match(r"^https?://[^/\s]+", base_url)
    ):
        p.add(f"{key}.base_url", "must be an http(s) URL such as https://www.imgz.io")
        base_url = None
    if info.base_url == "required" and not base_url and tbl.get("base_url") is None:
        p.add(f"{key}.base_url", f"a {rtype} remote needs base_url (every site has its own)")
    token = None
    if info.token == "none":
        for k in _TOKEN_KEYS:
            if k in tbl:
                p.add(f"{key}.{k}", f"a {rtype} remote takes no credential")
    elif info.token == "required" or any(k in tbl for k in _TOKEN_KEYS):
        # without tokens, credential problems are dropped: nothing will be sent anyway
        token = _token(p if tokens else _Problems(p.source), key, tbl, base_dir)
    return RemoteConfig(
        name=name, type=rtype, path=path, base_url=base_url, token=token, options=options
    )


def _token(p: _Problems, key: str, tbl: dict[str, Any], base_dir: Path | None) -> str | None:
    given = [k for k in ("token", "token_env", "token_file") if k in tbl]
    if len(given) > 1:
        p.add(key, f"set only one of token, token_env, token_file (got {', '.join(given)})")
        return None
    if not given:
        p.add(key, 'needs a credential: token_env = "VAR", token_file = "path" or token')
        return None
    kind = given[0]
    value = tbl[kind]
    if not isinstance(value, str) or not value:
        p.add(f"{key}.{kind}", "must be a non-empty string")
        return None
    if kind == "token":
        p.warn(f"{key}.token", "inline token in the config file; prefer token_env or token_file")
        return value
    if kind == "token_env":
        env = os.environ.get(value)
        if not env:
            p.add(f"{key}.token_env", f"environment variable {value} is not set or empty")
            return None
        return env.strip()
    path = _expand(value, base_dir)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        p.add(f"{key}.token_file", f"cannot read {path}: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError:
        p.add(f"{key}.token_file", f"{path} is not UTF-8 text")
        return None
    if not text:
        p.add(f"{key}.token_file", f"{path} is empty")
        return None
    if (mode := _readable_by_others(path)) is not None:
        p.warn(
            f"{key}.token_file",
            f"{path} is readable by other users (mode {mode:o}); chmod 600 it",
        )
    return text


def _limit(p: _Problems, auth: str, tbl: Any) -> LimitConfig | None:
    key = f'limits."{auth}"'
    if not isinstance(tbl, dict):
        p.add(key, "must be a table")
        return None
    raw = tbl.get("rate", [])
    unlimited = isinstance(raw, str) and raw.strip().lower() == "none"
    if unlimited:
        raw = []
    rates = (raw,) if isinstance(raw, str) else tuple(raw) if isinstance(raw, list) else None
    if rates is None or not all(isinstance(r, str) for r in rates):
        p.add(f"{key}.rate", 'must be a string like "60/minute", a list of them, or "none"')
        rates = ()
    for r in rates:
        try:
            parse_rate(r)
        except ValueError as exc:
            p.add(f"{key}.rate", str(exc))
    conc = tbl.get("concurrency")
    if conc is not None and (not isinstance(conc, int) or isinstance(conc, bool) or conc < 1):
        p.add(f"{key}.concurrency", "must be a positive integer")
        conc = None
    breaker = {k: _positive_duration(p, f"{key}.{k}", tbl[k]) for k in _BREAKER_KEYS if k in tbl}
    for k in tbl:
        if k not in ("rate", "concurrency", *_BREAKER_KEYS):
            p.add(
                f"{key}.{k}", f"unknown key (known: rate, concurrency, {', '.join(_BREAKER_KEYS)})"
            )
    return LimitConfig(rates=tuple(rates), concurrency=conc, unlimited=unlimited, **breaker)


_BREAKER_KEYS = ("outage_budget", "cooldown")


def _positive_duration(p: _Problems, key: str, value: Any) -> float | None:
    """A duration above zero (``"30s"``, ``"5m"``, 30), or ``None`` with the problem noted."""
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        p.add(key, str(exc))
        return None
    if not 0 < seconds <= 86400 * 7:
        p.add(key, f"must be above 0 and at most 7d (got {value!r})")
        return None
    return seconds


def _jobs(
    p: _Problems, raw: Any, remotes: dict[str, RemoteConfig], base_dir: Path | None
) -> list[JobConfig]:
    if not isinstance(raw, list):
        p.add("jobs", "must be an array of tables ([[jobs]])")
        return []
    jobs: list[JobConfig] = []
    seen: set[str] = set()
    for i, tbl in enumerate(raw):
        key = f"jobs[{i}]"
        if not isinstance(tbl, dict):
            p.add(key, "must be a table")
            continue
        name = tbl.get("name", f"job{i + 1}")
        if name in seen:
            p.add(f"{key}.name", f"duplicate job name {name!r}")
        seen.add(name)
        kind = tbl.get("kind")
        if kind not in JOB_KINDS:
            p.add(f"{key}.kind", f"must be one of {', '.join(JOB_KINDS)}")
        source = tbl.get("source")
        if not isinstance(source, str) or not _remote_known(source, remotes):
            p.add(f"{key}.source", f"{source!r} is not a configured remote or a folder path")
        dests = tbl.get("destinations", [])
        if isinstance(dests, str):
            dests = [dests]
        if kind == "verify":
            if dests:
                p.add(f"{key}.destinations", "a verify job has none (repair_to names a host)")
            dests = []
        elif not dests or not isinstance(dests, list):
            p.add(f"{key}.destinations", "needs at least one destination")
            dests = []
        for d in dests:
            if not isinstance(d, str) or not _remote_known(d, remotes):
                p.add(f"{key}.destinations", f"{d!r} is not a configured remote or a folder path")
        map_path = None
        if kind == "migrate":
            if not isinstance(tbl.get("map"), str):
                p.add(f"{key}.map", 'a migrate job needs map = "path/to/map.csv"')
            else:
                map_path = _expand(tbl["map"], base_dir)
        verify_opts = _verify_job(p, key, tbl, kind, remotes, base_dir)
        if kind == "verify" and isinstance(tbl.get("map"), str):
            map_path = _expand(tbl["map"], base_dir)
        report_path = None
        if "report" in tbl:
            if kind != "migrate" or not isinstance(tbl["report"], str):
                p.add(f"{key}.report", 'only a migrate job has a report = "path/to/report.html"')
            else:
                report_path = _expand(tbl["report"], base_dir)
        gallery = tbl.get("gallery", True)
        if not isinstance(gallery, bool) or ("gallery" in tbl and kind != "backup"):
            p.add(f"{key}.gallery", "true or false, for a backup job")
            gallery = True
        interval = 3600.0
        if "interval" in tbl:
            try:
                interval = parse_duration(tbl["interval"])
            except ValueError as exc:
                p.add(f"{key}.interval", str(exc))
        globs = {}
        for gk in ("include", "exclude"):
            g = tbl.get(gk, [])
            g = [g] if isinstance(g, str) else g
            if not isinstance(g, list) or not all(isinstance(x, str) for x in g):
                p.add(f"{key}.{gk}", "must be a glob string or a list of them")
                g = []
            globs[gk] = tuple(g)
        for k in tbl:
            if k not in {
                "name",
                "kind",
                "source",
                "destinations",
                "map",
                "interval",
                "include",
                "exclude",
                "delete",
                "gallery",
                "report",
                *_VERIFY_KEYS,
            }:
                p.add(f"{key}.{k}", "unknown key")
        jobs.append(
            JobConfig(
                name=str(name),
                kind=str(kind),
                source=str(source),
                destinations=tuple(str(d) for d in dests),
                map_path=map_path,
                gallery=gallery,
                report_path=report_path,
                interval=interval,
                include=globs["include"],
                exclude=globs["exclude"],
                delete=bool(tbl.get("delete")),
                **verify_opts,
            )
        )
    return jobs


_VERIFY_KEYS = ("repair_to", "rewrite", "sample", "full", "ignore_unreachable_dest")


def _verify_job(
    p: _Problems,
    key: str,
    tbl: dict[str, Any],
    kind: Any,
    remotes: dict[str, RemoteConfig],
    base_dir: Path | None,
) -> dict[str, Any]:
    """The keys only a ``kind = "verify"`` job takes."""
    out: dict[str, Any] = {}
    if kind != "verify":
        for k in _VERIFY_KEYS:
            if k in tbl:
                p.add(f"{key}.{k}", 'only a kind = "verify" job takes this')
        return out
    repair_to = tbl.get("repair_to")
    if repair_to is not None:
        if not isinstance(repair_to, str) or not _remote_known(repair_to, remotes):
            p.add(f"{key}.repair_to", f"{repair_to!r} is not a configured remote")
        elif not (repair_to.endswith(":") and repair_to[:-1] in remotes) or (
            remotes[repair_to[:-1]].type == "local"
        ):
            p.add(f"{key}.repair_to", "must be a host remote (NAME:): documents link to URLs")
        else:
            out["repair_to"] = repair_to
    rewrite = tbl.get("rewrite", [])
    rewrite = [rewrite] if isinstance(rewrite, str) else rewrite
    if not isinstance(rewrite, list) or not all(isinstance(x, str) for x in rewrite):
        p.add(f"{key}.rewrite", "must be a path or a list of paths")
    elif rewrite:
        if repair_to is None:
            p.add(f"{key}.rewrite", "needs repair_to (documents are rewritten to the new copies)")
        out["rewrite"] = tuple(_expand(x, base_dir) for x in rewrite)
    if "map" in tbl and (not isinstance(tbl["map"], str) or repair_to is None):
        p.add(f"{key}.map", 'a verify job extends map = "path" only with repair_to')
    sample = tbl.get("sample")
    if sample is not None:
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
            p.add(f"{key}.sample", "must be a whole number of locations, at least 1")
        else:
            out["sample"] = sample
    full = tbl.get("full", False)
    if not isinstance(full, bool):
        p.add(f"{key}.full", "true or false")
    elif full and sample is not None:
        p.add(f"{key}.full", "full and sample do not go together")
    else:
        out["full"] = full
    ignore = tbl.get("ignore_unreachable_dest", False)
    if not isinstance(ignore, bool):
        p.add(f"{key}.ignore_unreachable_dest", "true or false")
    elif ignore and repair_to is None:
        p.add(f"{key}.ignore_unreachable_dest", "needs repair_to")
    else:
        out["ignore_unreachable_dest"] = ignore
    return out


def _remote_known(spec: str, remotes: dict[str, RemoteConfig]) -> bool:
    if spec.endswith(":") and ("/" not in spec):
        return spec[:-1] in remotes
    return True  # a folder path


_DAEMON_DURATIONS = (
    "debounce",
    "rescan_interval",
    "shutdown_grace",
    "retry",
    "retry_max",
    "lease_wait",
)


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"``, ``"[::1]:9464"``, ``":9464"`` -> (host, port). ``ValueError``."""
    m = re.fullmatch(r"\s*(?:\[([0-9a-fA-F:.]+)\]|([^\s:\[\]]*)):(\d{1,5})\s*", text)
    if not m or int(m.group(3)) > 65535:
        raise ValueError(f"bad address {text!r}: write it like 127.0.0.1:9464")
    return (m.group(1) or m.group(2) or "127.0.0.1"), int(m.group(3))


def _daemon(p: _Problems, tbl: dict[str, Any]) -> DaemonConfig:
    values: dict[str, Any] = {}
    for k, value in tbl.items():
        if k == "ignore":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
                p.add("daemon.ignore", "must be a list of glob strings (names never sent)")
            else:
                values[k] = tuple(value)
        elif k == "listen":
            try:
                values[k] = parse_listen(value) if isinstance(value, str) else None
            except ValueError as exc:
                p.add("daemon.listen", str(exc))
            if not isinstance(value, str):
                p.add("daemon.listen", 'must be a string like "127.0.0.1:9464"')
        elif k in _DAEMON_DURATIONS:
            try:
                values[k] = parse_duration(value)
            except ValueError as exc:
                p.add(f"daemon.{k}", str(exc))
        else:
            known = ", ".join((*_DAEMON_DURATIONS, "ignore", "listen"))
            p.add(f"daemon.{k}", f"unknown key (known: {known})")
    if values.get("retry", 1.0) <= 0 or values.get("debounce", 0.0) < 0:
        p.add("daemon", "retry must be positive and debounce not negative")
    if not 0 <= values.get("lease_wait", 0.0) <= 86400:
        p.add("daemon.lease_wait", "must be from 0 (do not wait) to 1d")
        values.pop("lease_wait")
    return DaemonConfig(**values)
