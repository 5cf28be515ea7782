"""The whole imgsync exception tree.

Every failure imgsync reports is one of these classes. Two class attributes carry the
classification, so nothing downstream ever matches on message text:

* ``retryable``: may the same request be sent again (after a pause)?
* ``scope``: how much work the failure spoils -- ``"item"`` (this one image), ``"remote"``
  (every item of that remote for the rest of the run), or ``"run"`` (stop the run).

::

    ImgsyncError                 retryable=False scope="run"   exit 1
    ├── UsageError               bad command line                  exit 2
    ├── ConfigError              bad or missing config             exit 78 (EX_CONFIG)
    ├── StateError               SQLite open/migrate/lock failure  exit 75 (EX_TEMPFAIL)
    ├── LocalIOError             scope="item": unreadable file, vanished file, full disk
    │   └── LinkSkipped          a source file that is a symbolic link when read: a warning
    └── ProviderError            .remote .host .status .detail; scope="item"
        ├── TransientError       retryable: 5xx, reset, truncated body
        │   ├── RateLimited      .retry_after (429 or the host's own "too fast" code)
        │   ├── ProviderTimeout  also a TimeoutError
        │   └── CutShort         a body that broke off after it began: fetch it again
        ├── RemotePaused         scope="remote": the host is paused (daily budget spent) until .until
        ├── AuthError            scope="remote": bad or missing credentials
        ├── RemoteMisconfigured  scope="remote": e.g. a wrong base_url (a 301 on an upload)
        ├── RemoteUnavailable    scope="remote": the host failed every request for too long
        ├── ReplyLost            the host got a request (an upload) but its reply broke off
        ├── NotFound             also a LookupError; callers decide if it matters
        ├── Rejected             the host refused this file (size, type, policy); permanent
        ├── Duplicate            the host says it already has these bytes
        ├── Unsupported          capability declared absent was used (a bug if it happens)
        └── ResponseError        undecodable or unexpected reply; never retried

Exception texts never contain credentials: callers pass already-redacted detail, and
:func:`imgsync.log.redact` is applied to every message built from host replies.
"""

from __future__ import annotations

from typing import ClassVar, Literal

Scope = Literal["item", "remote", "run"]

__all__ = [
    "AuthError",
    "ConfigError",
    "CutShort",
    "Duplicate",
    "ImgsyncError",
    "LinkSkipped",
    "LocalIOError",
    "NotFound",
    "ProviderError",
    "ProviderTimeout",
    "RateLimited",
    "Rejected",
    "RemoteMisconfigured",
    "RemotePaused",
    "RemoteUnavailable",
    "ReplyLost",
    "ResponseError",
    "Scope",
    "StateError",
    "TransientError",
    "Unsupported",
    "UsageError",
]

EXIT_OK = 0
EXIT_ITEM_FAILURES = 1
EXIT_USAGE = 2
EXIT_REMOTE_FAILURE = 3
EXIT_INTERRUPTED = 130
EXIT_STATE = 75
EXIT_CONFIG = 78


class ImgsyncError(Exception):
    """Base of every error imgsync raises on purpose."""

    retryable: ClassVar[bool] = False
    scope: ClassVar[Scope] = "run"
    exit_code: ClassVar[int] = EXIT_ITEM_FAILURES


class UsageError(ImgsyncError):
    """The command line does not make sense (unknown remote, missing argument)."""

    exit_code = EXIT_USAGE


class ConfigError(ImgsyncError):
    """The configuration is invalid. ``problems`` lists every problem found, one per line."""

    exit_code = EXIT_CONFIG

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class StateError(ImgsyncError):
    """The state database cannot be opened, migrated, or is locked or corrupt."""

    exit_code = EXIT_STATE


class LocalIOError(ImgsyncError):
    """A local file could not be read or written (permission, vanished, disk full)."""

    scope: ClassVar[Scope] = "item"

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class LinkSkipped(LocalIOError):
    """A source file turned out to be a symbolic link when it was opened (it was swapped
    for one after the scan): it is left alone with the scan's one-line warning, not
    counted as a failure."""


class ProviderError(ImgsyncError):
    """A host answered with an error, or could not be reached."""

    scope: ClassVar[Scope] = "item"

    def __init__(
        self,
        detail: str,
        *,
        remote: str = "",
        host: str = "",
        status: int | None = None,
        code: int | str | None = None,
    ) -> None:
        self.detail = detail
        self.remote = remote
        self.host = host
        self.status = status
        self.code = code
        where = remote or host
        prefix = f"{where}: " if where else ""
        suffix = f" (HTTP {status})" if status is not None else ""
        super().__init__(f"{prefix}{detail}{suffix}")


class TransientError(ProviderError):
    """Worth retrying: server errors, resets, truncated bodies."""

    retryable = True


class CutShort(TransientError):
    """A reply body that ended or broke before its announced end, after it had begun.

    Opening a download is retried by the HTTP client; a body cut off mid-way can only be
    fetched again from the start, which is the caller's to do (the engine does it within
    the run)."""


class RateLimited(TransientError):
    """The host asked us to slow down. ``retry_after`` is in seconds when the host said."""

    def __init__(
        self,
        detail: str = "rate limited",
        *,
        retry_after: float | None = None,
        remote: str = "",
        host: str = "",
        status: int | None = None,
        code: int | str | None = None,
    ) -> None:
        super().__init__(detail, remote=remote, host=host, status=status, code=code)
        self.retry_after = retry_after


class ProviderTimeout(TransientError, TimeoutError):
    """The host did not answer in time."""


class RemotePaused(ProviderError):
    """The remote's host is paused (a spent daily budget) until ``until`` (unix seconds)."""

    scope: ClassVar[Scope] = "remote"

    def __init__(
        self,
        detail: str,
        *,
        until: float,
        remote: str = "",
        host: str = "",
        status: int | None = None,
    ) -> None:
        super().__init__(detail, remote=remote, host=host, status=status)
        self.until = until


class AuthError(ProviderError):
    """Missing, wrong or revoked credentials; every item of that remote would fail the same."""

    scope: ClassVar[Scope] = "remote"


class RemoteMisconfigured(ProviderError):
    """The remote's settings are wrong (a base_url that redirects uploads, say)."""

    scope: ClassVar[Scope] = "remote"


class RemoteUnavailable(ProviderError):
    """The host failed every request (no connection, resets, 5xx) for longer than the outage
    budget: its circuit breaker is open, and work for that remote stops for this run."""

    scope: ClassVar[Scope] = "remote"


class ReplyLost(ProviderError):
    """A request that is not safe to repeat (an upload) reached the host, whose reply then
    broke off: the host may have acted on it. Sending it again blindly could store a second
    copy, so the caller decides (look for it first, or send once more and report it)."""


class NotFound(ProviderError, LookupError):
    """The item does not exist (any more)."""


class Rejected(ProviderError):
    """The host refused this file for good (too big, wrong type, policy)."""


class Duplicate(ProviderError):
    """The host refused the upload because it already holds these bytes."""


class Unsupported(ProviderError):
    """A capability the provider declared absent was used."""

    scope: ClassVar[Scope] = "run"


class ResponseError(ProviderError):
    """The host's reply could not be understood (bad JSON, missing fields)."""
