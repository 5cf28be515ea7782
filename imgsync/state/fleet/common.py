"""What every part of fleet mode uses: the driver, and URLs without their password."""

from __future__ import annotations

import logging
import re
from typing import Any

from imgsync.errors import StateError

SCHEMES = ("postgresql://", "postgres://")


def is_url(text: str) -> bool:
    """Whether ``text`` names a shared state (a PostgreSQL URL) rather than a file."""
    return text.startswith(SCHEMES)


def redact(url: str) -> str:
    """The URL without its password (it may appear in errors and logs)."""
    url = re.sub(r"(://[^:/@?]*):[^@/?]*@", r"\1:***@", url)
    # a password given as a parameter (``?password=...``) is hidden as well
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


def describe(url: str, exc: BaseException) -> StateError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StateError(f"shared state {redact(url)}: {redact(text)}")


def driver() -> Any:
    """The ``psycopg`` module, or a one-line StateError naming the extra to install."""
    try:
        import psycopg
    except ImportError:
        raise StateError(
            "[state] url needs the PostgreSQL driver: pip install 'imgsync[postgres]'"
        ) from None
    # the driver's own warnings (a rollback failing on a dropped connection) would print
    # lines of their own; every failure reaches the user as one StateError instead
    quiet = logging.getLogger("psycopg")
    if quiet.propagate:
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
    return psycopg
