"""Targets of the conformance suite: every registered remote type, opened the same way.

A type with an emulator is tested against it (``info.emulator``, with
``info.emulator_options``); a local folder in a temp dir; memory in its own bucket.
Each gets ``info.full_options`` (every ability on). Nothing here names a type: adding a
provider to the registry adds it to the suite.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgsync.config import RemoteConfig
from imgsync.fakehosts.images import seed_image
from imgsync.providers import memory as memory_mod
from imgsync.providers import provider_class, provider_info
from imgsync.providers.base import Provider, ProviderContext
from imgsync.testing import FakeClock, RunningEmulator, fast_client, serve_emulator

TOKEN = "conformance-token-3b9e7d"
# Generous enough that no case meets a host's own default limit (Guizhan's 60/minute);
# the throttle case sets its own.
NO_LIMIT = "100000/second"


@dataclass
class Target:
    """One provider under test, open, with what it was seeded with."""

    kind: str
    provider: Provider
    seeded: int
    clock: FakeClock
    emulator: RunningEmulator | None = None
    root: Path | None = None
    pauses: list[tuple[str, float, str]] = field(default_factory=list)

    async def stored(self) -> int:
        """How many items the host holds now, as the host itself counts them."""
        if self.emulator is not None:
            return (await self.emulator.stats())["items"]
        if self.root is not None:
            return sum(1 for p in self.root.rglob("*") if p.is_file())
        return len(memory_mod.store(self.provider.options.bucket).items())


Open = Callable[..., contextlib.AbstractAsyncContextManager[Target]]


def target_opener(kind: str, tmp_path: Path) -> Open:
    """``async with open_target(seed=N, token=..., rate=...) as target`` for ``kind``."""

    @contextlib.asynccontextmanager
    async def opener(
        *, seed: int = 0, token: str = TOKEN, rate: str = NO_LIMIT, **overrides: Any
    ) -> AsyncIterator[Target]:
        info = provider_info(kind)
        cls = provider_class(kind)
        options = {**info.full_options, **overrides}
        clock = FakeClock()
        async with contextlib.AsyncExitStack() as stack:
            emulator = None
            root = None
            base_url = None
            if info.emulator is not None:
                emulator = await stack.enter_async_context(
                    serve_emulator(
                        info.emulator, token=TOKEN, seed=seed, rate=rate, **info.emulator_options
                    )
                )
                base_url = emulator.url
            elif info.path:
                root = tmp_path / "target"
                root.mkdir()
                for i in range(seed):
                    data, ext = seed_image(i)
                    folder = root / ("sub" if i % 2 else "")
                    folder.mkdir(exist_ok=True)
                    (folder / f"seed{i:02d}.{ext}").write_bytes(data)
            else:
                memory_mod.reset()
                bucket = memory_mod.store(f"conformance-{kind}")
                for i in range(seed):
                    data, ext = seed_image(i)
                    bucket.put(f"seed{i:02d}.{ext}", data)
                options.setdefault("bucket", f"conformance-{kind}")
            pauses: list[tuple[str, float, str]] = []

            async def on_pause(authority: str, until: float, reason: str) -> None:
                pauses.append((authority, until, reason))

            ctx = ProviderContext()
            if info.base_url != "none":
                ctx.http = await stack.enter_async_context(fast_client(clock, on_pause=on_pause))
            remote = RemoteConfig(
                name="conf",
                type=kind,
                path=root,
                base_url=base_url,
                token=token if info.token != "none" else None,
                options=options,
            )
            provider = await stack.enter_async_context(cls(remote, ctx))
            yield Target(kind, provider, seed, clock, emulator, root, pauses)

    return opener
