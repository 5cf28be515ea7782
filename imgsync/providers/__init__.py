"""The provider registry: remote type -> provider class, imported only when used.

Adding a remote type is one line in ``REGISTRY``; everything else about it (options,
token, ``base_url``, default limits, emulator) is declared by the provider class itself
in its :class:`~imgsync.providers.base.ProviderInfo`. ``tests/test_registry.py`` checks
that every registered type is complete (emulator, documented config block, README row,
features that agree with the methods).

Lazy imports keep a local-folder run from importing the HTTP stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imgsync.providers.base import Provider, ProviderInfo

REGISTRY: dict[str, str] = {
    "local": "imgsync.providers.local:LocalProvider",
    "memory": "imgsync.providers.memory:MemoryProvider",
    "gyazo": "imgsync.providers.gyazo:GyazoProvider",
    "guizhan": "imgsync.providers.guizhan:GuizhanProvider",
    "chevereto": "imgsync.providers.chevereto:CheveretoProvider",
    "discordimages": "imgsync.providers.discordimages:DiscordImagesProvider",
    "lskypro": "imgsync.providers.lskypro:LskyProProvider",
}


def kinds() -> tuple[str, ...]:
    """Every registered remote type, in registry order."""
    return tuple(REGISTRY)


def provider_class(kind: str) -> type[Provider]:
    """The class registered for remote type ``kind``. Raises ``KeyError`` if unknown."""
    module, _, name = REGISTRY[kind].partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module), name)
    return cls


def provider_info(kind: str) -> ProviderInfo:
    """The declaration of remote type ``kind``. Raises ``KeyError`` if unknown."""
    return provider_class(kind).info
