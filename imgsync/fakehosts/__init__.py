"""Host emulators (``imgsync fakehost KIND``), and their registry.

An emulator is a module here with a ``create(knobs, **options)`` factory returning a
:class:`~imgsync.fakehosts.common.FakeHostBase`; its module name is its name. Nothing
else registers it: :func:`emulators` finds every such module. A provider names its
emulator in ``ProviderInfo.emulator`` (a name, not an import: emulators share no code
with providers), and ``tests/test_registry.py`` checks that the names agree.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imgsync.fakehosts.common import FakeHostBase, Knobs

Factory = Callable[..., "FakeHostBase"]


def emulators() -> tuple[str, ...]:
    """The name of every emulator module (those with a ``create`` factory), sorted."""
    names = []
    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("_") or mod.ispkg:
            continue
        if callable(getattr(importlib.import_module(f"{__name__}.{mod.name}"), "create", None)):
            names.append(mod.name)
    return tuple(sorted(names))


def emulator_factory(name: str) -> Factory:
    """``create`` of emulator ``name``. Raises ``KeyError`` when there is none."""
    if name not in emulators():
        raise KeyError(f"no emulator called {name!r} (known: {', '.join(emulators())})")
    factory: Factory = importlib.import_module(f"{__name__}.{name}").create
    return factory


def create(name: str, knobs: Knobs, **options: Any) -> FakeHostBase:
    """A new emulator ``name`` with ``knobs`` and its own ``options``."""
    return emulator_factory(name)(knobs, **options)
