"""Turning REMOTE arguments into open providers, and the shared resources they use.

A REMOTE is ``NAME:`` for a remote in the config, or a folder path. The HTTP stack (one
``ApiClient`` and one ``LimiterRegistry`` per process) is built only when a host remote
is used, so local-folder runs never import it.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from imgsync.config import Config, RemoteConfig
from imgsync.errors import ConfigError, ImgsyncError, UsageError

if TYPE_CHECKING:
    from imgsync.providers.base import Provider

# (the provider registry and base classes are imported where a provider is opened: a
# folder -> folder no-op re-run resolves its folders here and never loads provider code)


def resolve_spec(cfg: Config, spec: str) -> tuple[RemoteConfig, str]:
    """``NAME:`` or a path -> (remote config, state key). Raises ``UsageError``."""
    if spec.endswith(":") and "/" not in spec and len(spec) > 1:
        name = spec[:-1]
        remote = cfg.remotes.get(name)
        if remote is None:
            known = ", ".join(f"{n}:" for n in sorted(cfg.remotes)) or "none configured"
            raise UsageError(f"unknown remote {spec!r} (known: {known})")
        if remote.type == "local":
            assert remote.path is not None
            return remote, f"local:{remote.path.resolve()}"
        return remote, remote_key(remote)
    if spec in cfg.remotes and not Path(spec).exists():
        raise UsageError(
            f"{spec!r} is read as a folder, but a remote {spec!r} is configured: "
            f"write {spec}: for the remote, or ./{spec} for a folder"
        )
    path = Path(spec).expanduser().resolve()
    return RemoteConfig(name=str(path), type="local", path=path), f"local:{path}"


def remote_key(remote: RemoteConfig) -> str:
    """The state key of a host remote: what it is (normalised base URL + account), not
    its name (see :mod:`imgsync.state.keys`)."""
    from imgsync.providers import provider_class
    from imgsync.state.keys import host_key

    base = remote.base_url
    try:
        cls = provider_class(remote.type)
    except (KeyError, ImportError):
        cls = None
    if cls is not None:
        base = cls.where(remote)
    return host_key(remote.type, base or f"{remote.type}:", remote.token)


_REGISTRIES: dict[Path, Any] = {}


def held_back(cfg: Config) -> str:
    """The hosts this process holds back now (pauses, penalty spacing), for a progress
    line; "" before any limiter exists (it creates none)."""
    registry = _REGISTRIES.get(cfg.state_path)
    return "" if registry is None else str(registry.held_back())


def shared_limiters(cfg: Config) -> Any:
    """The process's one ``LimiterRegistry`` (per state database): every job, remote and
    run of this process draws from the same per-host budgets. Pauses saved in state are
    loaded once; new ones are written back as they happen."""
    registry = _REGISTRIES.get(cfg.state_path)
    if registry is None:
        from imgsync.ratelimit import LimiterRegistry
        from imgsync.state.reader import open_reader

        gate = None
        if cfg.state_url:  # fleet mode: the limits hold for all workers together
            from imgsync.state.db import owner_id
            from imgsync.state.fleet import FleetLedger

            gate = FleetLedger(cfg.state_url, owner_id())
        registry = LimiterRegistry(
            cfg.limits,
            on_pause=functools.partial(_record_pause, cfg.state_path, cfg.state_url),
            gate=gate,
        )
        reader = open_reader(cfg.state_path, create=False)
        if reader is not None:
            with reader:
                registry.load_pauses(reader.host_pauses())
                registry.load_usage(reader.host_usage())
        if cfg.state_url:  # the pauses other workers of the fleet stored
            from imgsync.state.fleet.report import load_pauses

            registry.load_pauses(load_pauses(cfg.state_url))
        _REGISTRIES[cfg.state_path] = registry
    return registry


def reload_limits(cfg: Config) -> list[str]:
    """Apply ``cfg``'s ``[limits]`` to the process's limiters (the daemon's SIGHUP): new
    rates, caps and breaker settings, keeping each host's counted requests and pauses.
    Returns the authorities whose settings changed."""
    changed: list[str] = shared_limiters(cfg).reconfigure(cfg.limits)
    return changed


def limiter_statistics(state_path: Path) -> dict[str, dict[str, Any]]:
    """Per-host counters of this process's limiters (empty before any host is used)."""
    registry = _REGISTRIES.get(state_path)
    return registry.statistics() if registry is not None else {}


async def _record_pause(
    state_path: Path, state_url: str | None, authority: str, until: float, reason: str
) -> None:
    """Store a host pause (its own short connection: it may come from any run); in fleet
    mode in the shared state as well, where every other worker picks it up."""
    import asyncio

    from imgsync.state.reader import must_open

    def write() -> None:
        with must_open(state_path) as db:
            db.save_pause(authority, until, reason)
        if state_url:
            from imgsync.state.fleet.report import save_pause

            save_pause(state_url, authority, until, reason)

    await asyncio.to_thread(write)


# fleet mode: how often a worker looks for pauses another worker stored (seconds)
PAUSE_POLL = 2.0


async def _watch_fleet_pauses(url: str, registry: Any) -> None:
    """Apply the pauses other workers store (a 429 with a long Retry-After, an outage, a
    spent daily budget) to this process's limiters while it runs, so one worker's pause
    stops the whole fleet. A failed look is tried again (the run notices a lost database
    through its own connection)."""
    import asyncio

    from imgsync.errors import StateError
    from imgsync.state.db import owner_id
    from imgsync.state.fleet import Fleet

    fleet: Any = None
    try:
        while True:
            try:
                if fleet is None:
                    fleet = await Fleet(url, owner_id()).open()
                known = registry.pauses()
                fresh = {
                    a: p
                    for a, p in (await fleet.pauses()).items()
                    if a not in known or known[a][0] < p[0]
                }
                registry.load_pauses(fresh)
            except StateError:  # a dropped connection: a new one next time
                if fleet is not None:
                    await fleet.close()
                fleet = None
            await asyncio.sleep(PAUSE_POLL)
    finally:
        if fleet is not None:
            await fleet.close()


async def _save_usage(state_path: Path, usage: dict[str, list[float]]) -> None:
    """Store what this process spent of each host's budget, for the next process."""
    if not usage:
        return
    import asyncio

    from imgsync.state.reader import must_open

    def write() -> None:
        with must_open(state_path) as db:
            db.save_usage(usage)

    await asyncio.to_thread(write)


def own_key(remote: RemoteConfig, default_base_url: str | None, path: str = "") -> str:
    """The limiter key of the host ``remote`` talks to: its ``base_url``'s authority
    (``path`` empty: :data:`~imgsync.providers.base.OWN_HOST`), or with ``path``
    ("/api/v1") that part of the site (below the base_url's own path)."""
    from urllib.parse import urlsplit

    from imgsync.providers.base import OWN_HOST
    from imgsync.ratelimit import authority_of

    url = remote.base_url or default_base_url
    if not url:
        raise ConfigError(f"remotes.{remote.name}: needs base_url")
    if path == OWN_HOST:
        return authority_of(url)
    base = urlsplit(url).path.rstrip("/")
    parts = path.strip("/").split("/")
    for k in range(len(parts), 0, -1):  # a base_url already ending in "/api": no "/api/api"
        overlap = "/" + "/".join(parts[:k])
        if base.endswith(overlap):
            base = base.removesuffix(overlap)
            break
    return authority_of(url) + base + path


class Runtime:
    """Opens providers on demand and closes everything at the end (``async with``)."""

    def __init__(self, cfg: Config, http: Any = None) -> None:
        """``http``: an ``ApiClient`` to use (the caller closes it); by default the
        runtime makes one on the process's shared limiters when a host is opened."""
        self.cfg = cfg
        self._http: Any = http
        self._own_http = http is None
        self._limiters: Any = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        gate = getattr(self._limiters, "gate", None)
        if gate is not None:  # fleet mode: the last answers reach the shared rate ledger
            with contextlib.suppress(ImgsyncError, OSError):
                await gate.flush()
        if self._limiters is not None and self._own_http:
            # best effort: a locked or full state database must not mask the run's outcome
            with contextlib.suppress(ImgsyncError, OSError):
                await _save_usage(self.cfg.state_path, self._limiters.usage())

    async def _http_client(self) -> Any:
        if self._http is not None and self._limiters is None:
            self._limiters = self._http.limiters  # a client given by the caller
        if self._http is None:
            from imgsync.http import ApiClient

            self._limiters = shared_limiters(self.cfg)
            self._http = ApiClient(self._limiters)
            self._stack.push_async_callback(self._http.aclose)
            if self.cfg.state_url:
                self._watch_pauses(self.cfg.state_url)
        return self._http

    def _watch_pauses(self, url: str) -> None:
        import asyncio

        task = asyncio.create_task(_watch_fleet_pauses(url, self._limiters))

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._stack.push_async_callback(stop)

    async def http(self) -> Any:
        """The process's ``ApiClient`` (paced by the shared per-host limiter)."""
        return await self._http_client()

    async def open(self, remote: RemoteConfig) -> Provider:
        """A ready provider for ``remote``. Raises ``ConfigError`` for an unknown type."""
        from imgsync.providers import provider_class
        from imgsync.providers.base import OWN_HOST, ProviderContext

        try:
            cls = provider_class(remote.type)
        except (KeyError, ImportError) as exc:
            raise ConfigError(
                f"remotes.{remote.name}: type {remote.type!r} is not available ({exc})"
            ) from None
        ctx = ProviderContext()
        info = cls.info
        if info.base_url != "none":
            ctx.http = await self._http_client()
            limiters = self._limiters
            assert limiters is not None
            for authority, rate in info.default_limits.items():
                if authority == OWN_HOST or authority.startswith("/"):  # a self-hosted site
                    authority = own_key(remote, info.default_base_url, authority)
                limiters.set_default(authority, rate)  # the config's [limits] still win
            for authority, budget in info.shared_limits.items():
                limiters.share(authority, budget)
        provider = cls(remote, ctx)
        await self._stack.enter_async_context(provider)
        return provider
