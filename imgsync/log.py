"""Logging for imgsync.

Secret redaction
----------------
Credentials reach imgsync from the config (API tokens), from host replies (Chevereto's
``delete_url``, which is itself the deletion credential) and from URLs built with them
(``?access_token=...``). None of them may appear in a log line or an exception text.

Three layers do the masking, all in :func:`redact`:

* every string registered with :func:`register_secret` (process-wide, so the structlog
  processor :func:`redact_event` sees the same set as the HTTP client), plus any extra
  ``secrets`` the caller passes;
* credential-looking query parameters (``access_token=``, ``token=``, ``key=``,
  ``api_key=``, ``password=`` ...) and passwords in ``user:pass@host`` URLs, even when
  nobody registered them;
* ``Bearer <token>`` and JSON fields such as ``"access_token": "..."`` that hosts echo
  back in error bodies.

Redaction is plain substring replacement: a secret registered here is masked wherever it
appears, whatever the surrounding text. Secrets shorter than four characters are ignored
(masking ``"a"`` everywhere would make logs unreadable and protects nothing).

The structlog configuration (console/JSON renderers, contextvars) is added below this
part; it should put :func:`redact_event` last before the renderer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any, cast

import structlog
from structlog.typing import FilteringBoundLogger

__all__ = [
    "MASK",
    "get_logger",
    "redact",
    "redact_event",
    "register_secret",
    "registered_secrets",
]

MASK = "***"
_MIN_SECRET_LEN = 4

_secrets: set[str] = set()
# Longest first, so a secret that contains another is masked whole. Rebuilt lazily.
_ordered: tuple[str, ...] = ()
# Past a few dozen secrets (a Chevereto migration registers every upload's delete URL),
# testing each one against every text makes each redact cost grow with the run: secrets
# are then found through their last characters instead (one dict lookup per position).
_INDEX_ABOVE = 32
_by_tail: dict[str, list[str]] = {}

_CREDENTIAL_NAMES = (
    r"access_token|refresh_token|token|api_?key|apikey|key|auth|password|passwd|secret"
    r"|client_secret|signature|sig|delete_?key|delete_?hash"
)
# The lookahead keeps redaction idempotent: "token=***: x" must not lose its colon.
_QUERY_RE = re.compile(rf"(?i)([?&;](?:{_CREDENTIAL_NAMES})=)(?!\*\*\*)[^&#;\s\"'<>]+")
_USERINFO_RE = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/@:\s]*:)[^/@\s]+@")
_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}")
_JSON_RE = re.compile(rf"(?i)(\"(?:{_CREDENTIAL_NAMES})\"\s*:\s*\")[^\"]*")


def register_secret(secret: str | None) -> None:
    """Mask ``secret`` in every later :func:`redact` call in this process.

    ``None``, empty and very short strings are ignored. Idempotent.
    """
    global _ordered
    if secret and len(secret) >= _MIN_SECRET_LEN and secret not in _secrets:
        _secrets.add(secret)
        _by_tail.setdefault(secret[-_MIN_SECRET_LEN:], []).append(secret)
        _ordered = ()


def registered_secrets() -> frozenset[str]:
    """The secrets registered so far (for tests and diagnostics; never log this)."""
    return frozenset(_secrets)


def _registered_in_order() -> tuple[str, ...]:
    global _ordered
    if len(_ordered) != len(_secrets):
        _ordered = tuple(sorted(_secrets, key=len, reverse=True))
    return _ordered


def _registered_in(text: str) -> Iterable[str]:
    """The registered secrets to mask in ``text``, longest first."""
    if len(_secrets) <= _INDEX_ABOVE:
        return _registered_in_order()
    k = _MIN_SECRET_LEN
    get = _by_tail.get
    found: set[str] = set()
    for end in range(k, len(text) + 1):
        bucket = get(text[end - k : end])
        if bucket:
            found.update(s for s in bucket if len(s) <= end and text.startswith(s, end - len(s)))
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every known credential replaced by ``***``.

    Masks the process-wide registered secrets, the extra ``secrets`` given, and
    credential-shaped fragments (see the module docstring). Cheap when there is nothing
    to mask: one substring test per secret plus four regex scans.
    """
    if not text:
        return text
    extra = sorted((s for s in secrets if s and len(s) >= _MIN_SECRET_LEN), key=len, reverse=True)
    for group in (extra, _registered_in(text)):
        for secret in group:
            if secret in text:
                text = text.replace(secret, MASK)
    if "=" in text:
        text = _QUERY_RE.sub(rf"\1{MASK}", text)
    if "@" in text:
        text = _USERINFO_RE.sub(rf"\1{MASK}@", text)
    text = _BEARER_RE.sub(rf"\1\2{MASK}", text)
    if '"' in text:
        text = _JSON_RE.sub(rf"\1{MASK}", text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, BaseException):
        return redact(str(value))
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    return value


def redact_event(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact every string value (and exception text) of an event."""
    for key, value in event_dict.items():
        event_dict[key] = _redact_value(value)
    return event_dict


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """A structlog logger, optionally named (``get_logger("imgsync.http")``)."""
    if name is None:
        return cast(FilteringBoundLogger, structlog.get_logger())
    return cast(FilteringBoundLogger, structlog.get_logger(name))


# ---- configuration (once per process) ---------------------------------------------------

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


def configure(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    """Set structlog up once: a human console renderer on a TTY, JSON lines otherwise.

    Log lines go to stderr (stdout carries command output such as ``--json`` summaries).
    Every event passes :func:`redact_event` just before it is rendered.
    """
    import sys

    out = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, 20)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
