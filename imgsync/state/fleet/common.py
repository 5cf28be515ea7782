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


def _secrets(url: str) -> list[str]:
    """The password of ``url`` and, when it holds characters a URL needs %-encoded (a
    pasted ``p@ss/w?rd``), the pieces a parser would split it into."""
    _, sep, rest = url.partition("://")
    found: list[str] = []
    if sep and "@" in rest:
        userinfo = rest.rsplit("@", 1)[0]  # the last @ ends the user part
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    found += re.findall(r"[?&]password=([^&]*)", url, flags=re.IGNORECASE)
    pieces = [p for s in found for p in re.split(r"[@/?#&]", s) if len(p) >= 3]
    return sorted({*found, *pieces} - {""}, key=len, reverse=True)


def redact(url: str) -> str:
    """The URL without its password (it may appear in errors and logs)."""
    head, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo, host = rest.rsplit("@", 1)  # a pasted password may hold @ / ? #
        if ":" in userinfo:
            url = f"{head}://{userinfo.split(':', 1)[0]}:***@{host}"
    # a password given as a parameter (``?password=...``) is hidden as well
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


def describe(url: str, exc: BaseException) -> StateError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    for secret in _secrets(url):  # the driver may quote a piece of it as a host name
        text = text.replace(secret, "***")
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
