"""The provider registry: remote type -> provider class, imported only when used.

Lazy imports keep a local-folder run from importing the HTTP stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imgsync.providers.base import Provider

REGISTRY: dict[str, str] = {
    "local": "imgsync.providers.local:LocalProvider",
    "gyazo": "imgsync.providers.gyazo:GyazoProvider",
    "guizhan": "imgsync.providers.guizhan:GuizhanProvider",
    "chevereto": "imgsync.providers.chevereto:CheveretoProvider",
    "discordimages": "imgsync.providers.discordimages:DiscordImagesProvider",
}


def provider_class(kind: str) -> type[Provider]:
    """The class registered for remote type ``kind``. Raises ``KeyError`` if unknown."""
    module, _, name = REGISTRY[kind].partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module), name)
    return cls
