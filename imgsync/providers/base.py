"""The provider interface: a small required core plus declared ``Features``.

A provider turns one host's wire protocol into :class:`~imgsync.models.RemoteItem` values
and :mod:`imgsync.errors` exceptions. It never sleeps, retries, or touches SQLite: the
HTTP client (``imgsync.http``) paces and retries, and the pipeline records.

Callers read ``provider.features`` to plan (never ``hasattr``). Using an ability declared
absent raises :class:`~imgsync.errors.Unsupported`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from imgsync.errors import Unsupported
from imgsync.models import ItemMeta, Page, RemoteItem, UploadSource

if TYPE_CHECKING:
    from collections.abc import Iterable

    from imgsync.config import RemoteConfig
    from imgsync.http import ApiClient
    from imgsync.localfs import Unit

__all__ = ["Features", "Provider", "ProviderContext"]


@dataclass(frozen=True, slots=True)
class Features:
    """What a provider can do and what its host reports. Declared, never probed."""

    can_list: bool = False
    can_delete: bool = False
    can_get: bool = False
    checksums: frozenset[str] = frozenset()  # hashes the host reports, e.g. {"md5"}
    reencodes_uploads: bool = False
    max_upload_bytes: int | None = None
    accepted_extensions: frozenset[str] | None = None  # None: anything
    page_size: tuple[int, int] | None = None  # (min, max) items per listing page
    # New items appear at the end of the listing order, so a finished listing can be
    # resumed from its last cursor to find them (Guizhan by upload_time ASC). When False
    # (newest first), a finished listing restarts from the beginning; known items are
    # recognised from state without downloading them.
    listing_appends: bool = False
    default_rate: str | None = None  # for the public host, e.g. "60/minute"
    keeps_paths: bool = False  # a local folder keeps relative paths
    is_local: bool = False
    # The batch-write capability: ``write_batch``/``stage_copy``/``commit``/``missing``
    # (a folder: one flush per batch, sources staged straight from disk).
    batch_writes: bool = False

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for ``imgsync remotes``."""
        return {
            "list": self.can_list,
            "delete": self.can_delete,
            "get": self.can_get,
            "checksums": sorted(self.checksums),
            "reencodes_uploads": self.reencodes_uploads,
            "max_upload_bytes": self.max_upload_bytes,
            "accepted_extensions": sorted(self.accepted_extensions)
            if self.accepted_extensions is not None
            else None,
            "page_size": list(self.page_size) if self.page_size else None,
            "default_rate": self.default_rate,
            "batch_writes": self.batch_writes,
        }


@dataclass(slots=True)
class ProviderContext:
    """What a provider is given at construction: shared, already-open resources."""

    http: ApiClient | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Provider(ABC):
    """One configured remote. An async resource: ``async with provider: ...``.

    The constructor does no I/O. ``name`` is the remote's name in the config.
    """

    kind: ClassVar[str]
    description: ClassVar[str] = ""
    default_base_url: ClassVar[str | None] = None
    features: Features

    def __init__(self, config: RemoteConfig, ctx: ProviderContext) -> None:
        self.config = config
        self.name = config.name
        self.ctx = ctx
        if ctx.http is not None and config.token:
            ctx.http.add_secret(config.token)  # redacted from every log line and error

    @property
    def http(self) -> ApiClient:
        """The shared HTTP client. Raises ``Unsupported`` when none was given."""
        if self.ctx.http is None:
            raise Unsupported("no HTTP client was given to this remote", remote=self.name)
        return self.ctx.http

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what the provider opened. Idempotent."""

    @property
    def folder(self) -> Path | None:
        """The folder this remote is, for a local one (``None`` for a host)."""
        return None

    @property
    def base_url(self) -> str:
        """The configured ``base_url`` or the provider's public default."""
        url = self.config.base_url or self.default_base_url
        if not url:
            raise Unsupported("no base_url configured", remote=self.name)
        return url.rstrip("/")

    # --- the required core -------------------------------------------------------------

    async def list_page(self, cursor: str | None) -> Page:
        """One page of the listing starting at ``cursor`` (None: the beginning).

        Raises ``Unsupported`` when ``features.can_list`` is False; ``AuthError``,
        ``TransientError``, ``ResponseError`` on host failures.
        """
        raise Unsupported("this remote cannot be listed", remote=self.name)

    async def get(self, remote_id: str) -> RemoteItem:
        """One item by id. Raises ``NotFound``; ``Unsupported`` if ``can_get`` is False."""
        raise Unsupported("this remote cannot fetch single items", remote=self.name)

    @abstractmethod
    def open(self, item: RemoteItem) -> AsyncIterator[bytes]:
        """Stream the item's bytes. Raises ``NotFound`` if it is gone."""

    @abstractmethod
    async def upload(self, src: UploadSource, meta: ItemMeta, *, rel_path: str) -> RemoteItem:
        """Store ``src``; returns the new item (with ``delete_url`` when the host gives one).

        ``rel_path`` is the item's path relative to its source root (local destinations
        keep it; hosts use only its base name). Raises ``Rejected``, ``Duplicate``,
        ``AuthError``, ``TransientError`` (after the client's own retries).
        """

    async def delete(self, item: RemoteItem) -> None:
        """Remove the item. ``NotFound`` means already gone. ``Unsupported`` if absent."""
        raise Unsupported("this remote cannot delete", remote=self.name)

    # --- the batch-write capability (``features.batch_writes``) ------------------------

    async def write_batch(self, unit: Unit, bodies: list[bytes | Path]) -> None:
        """Write a batch of files at once (staged, one flush, renamed; sidecars after).
        Per-file outcomes are set on ``unit.files``. ``Unsupported`` if not declared."""
        raise Unsupported("this remote has no batch writes", remote=self.name)

    async def stage_copy(self, src_root: Path, unit: Unit, with_md5: bool) -> None:
        """Read, hash and stage ``unit``'s files from the folder ``src_root``."""
        raise Unsupported("this remote has no batch writes", remote=self.name)

    async def commit(self, units: list[Unit]) -> None:
        """Make every approved staged file of ``units`` visible (one flush first)."""
        raise Unsupported("this remote has no batch writes", remote=self.name)

    async def missing(self, remote_ids: Iterable[str]) -> list[str]:
        """Which of ``remote_ids`` are gone (cheap for a folder; hosts do not say)."""
        raise Unsupported("this remote cannot cheaply tell what is missing", remote=self.name)

    async def iter_all(self, cursor: str | None = None) -> AsyncIterator[tuple[Page, str | None]]:
        """Every page from ``cursor`` on, each with the cursor that produced it."""
        while True:
            page = await self.list_page(cursor)
            yield page, cursor
            if page.next_cursor is None or page.next_cursor == cursor:
                return
            cursor = page.next_cursor
