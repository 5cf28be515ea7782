"""Path keys, printable names and filesystem errors.

A relative path is stored in SQLite and JSON as a *key* (:func:`path_key`): the path itself
when it is valid UTF-8, else ``b64:`` and its raw bytes in base64, so names that are not
valid UTF-8 survive the round trip.
"""

from __future__ import annotations

import base64
import errno
import os
from collections.abc import Iterable
from pathlib import Path

from imgsync.errors import LocalIOError

TMP_PREFIX = ".imgsync-tmp-"


def path_key(rel: str) -> str:
    """A text key for a relative path that SQLite and JSON can hold, reversibly.

    Names that are valid UTF-8 are kept as they are; others are stored as ``b64:`` +
    the base64 of their bytes.
    """
    if rel.isascii():
        return rel
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "b64:" + base64.b64encode(os.fsencode(rel)).decode("ascii")
    return rel


def key_path(key: str) -> str:
    """The inverse of :func:`path_key`."""
    if key.startswith("b64:"):
        return os.fsdecode(base64.b64decode(key[4:]))
    return key


def display(rel: str) -> str:
    """A one-line, printable form of a file name (newlines and bad bytes escaped)."""
    text = os.fsencode(rel).decode("utf-8", "backslashreplace")
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def safe_name(name: str) -> str:
    """A host-given file name made safe to write: no folders, no control characters."""
    name = name.replace("/", "_").replace("\\", "_").strip()
    name = "".join(ch if ch.isprintable() else "_" for ch in name)
    name = name.lstrip(".") or "image"
    return name[:200]


def io_error(exc: OSError, target: str | Path) -> LocalIOError:
    """A filesystem failure as the error tree's ``LocalIOError`` (disk full said plainly)."""
    if exc.errno == errno.ENOSPC:
        return LocalIOError(
            f"destination disk is full writing {display(str(target))}", path=str(target)
        )
    return LocalIOError(f"cannot write {display(str(target))}: {exc.strerror}", path=str(target))


def missing(root: str | Path, keys: Iterable[str]) -> list[str]:
    """The keys of ``keys`` with no file (or link) under ``root`` any more."""
    return [k for k in keys if not os.path.lexists(os.path.join(root, key_path(k)))]
