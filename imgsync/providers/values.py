"""Reading loosely typed values out of host replies (JSON numbers that arrive as strings).

Shared by the providers; no I/O, no imports from the rest of imgsync.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["as_int"]

_INTEGER = re.compile(r"[+-]?[0-9]+")


def as_int(value: Any, *, negative: bool = True) -> int | None:
    """An integer from an int or a decimal string (``"12"``, ``" -3 "``), else ``None``.

    Booleans, floats, ``"1.5"``, ``"--5"`` and non-ASCII digits (``"²"``) are not integers;
    with ``negative=False`` neither is a value below zero (page numbers, sizes, ids).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        return None
    return None if number < 0 and not negative else number
