"""The provider interface: a small required core plus declared ``Features``.

A provider turns one host's wire protocol into :class:`~imgsync.models.RemoteItem` values
and :mod:`imgsync.errors` exceptions. It never sleeps, retries, or touches SQLite: the
HTTP client (``imgsync.http``) paces and retries, and the pipeline records.

Callers read ``provider.features`` to plan (never ``hasattr``). Using an ability declared
absent raises :class:`~imgsync.errors.Unsupported`.

Each provider class also declares its facts once, in a :class:`ProviderInfo` (``info``):
its remote type, a description, a typed options dataclass (fields built with
:func:`option`: default, help text, range, choices), whether it needs a token and a
``base_url``, the default rate limits of its public hosts and the name of its emulator
in :mod:`imgsync.fakehosts`. Config validation, ``config check``, ``imgsync remotes``,
the docs and the registry meta-tests all read that one declaration.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from imgsync.errors import ConfigError, ProviderError, Unsupported
from imgsync.models import ItemMeta, Page, RemoteItem, UploadSource

if TYPE_CHECKING:
    from collections.abc import Iterable

    from imgsync.config import RemoteConfig
    from imgsync.http import ApiClient, ApiResponse, ErrorMapper
    from imgsync.localfs import Unit

__all__ = [
    "Features",
    "NoOptions",
    "OptionSpec",
    "Provider",
    "ProviderContext",
    "ProviderInfo",
    "option",
    "option_specs",
]

Need = Literal["required", "optional", "none"]


def option(
    default: Any,
    *,
    doc: str,
    range: tuple[int, int] | None = None,
    choices: tuple[str, ...] | None = None,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """A field of a provider's options dataclass: its default and what a valid value is.

    ``doc`` is the one-line help shown by ``imgsync remotes --types``; ``range`` bounds an
    integer (inclusive); ``choices`` lists the accepted strings; ``check(value)`` returns
    what is wrong with a value of the right type, or ``None``.
    """
    meta = {"doc": doc, "range": range, "choices": choices, "check": check}
    return field(default=default, metadata=meta)


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One declared option, read from the options dataclass."""

    name: str
    types: tuple[type, ...]  # what TOML may give (bool is never an int here)
    default: Any
    doc: str
    range: tuple[int, int] | None = None
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], str | None] | None = None

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this option, or ``None``."""
        wrong_type = not isinstance(value, self.types) or (
            isinstance(value, bool) and bool not in self.types
        )
        if wrong_type:
            wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in self.types)
            return f"must be {wanted} (got {_TYPE_NAMES.get(type(value), type(value).__name__)})"
        if self.range is not None and isinstance(value, int) and not isinstance(value, bool):
            low, high = self.range
            if not low <= value <= high:
                return f"must be from {low} to {high}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        return self.check(value) if self.check is not None else None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for ``imgsync remotes --types``."""
        return {
            "name": self.name,
            "type": " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in self.types),
            "default": self.default,
            "range": list(self.range) if self.range else None,
            "choices": list(self.choices) if self.choices else None,
            "doc": self.doc,
        }


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}


def _allowed_types(hint: Any) -> tuple[type, ...]:
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    allowed = tuple(t for t in args if t is not type(None))
    if not allowed or not all(t in _TYPE_NAMES for t in allowed):
        raise TypeError(f"an option must be str, int, bool or float (or a union): {hint!r}")
    return allowed


def option_specs(options: type) -> tuple[OptionSpec, ...]:
    """The declared options of an options dataclass, in declaration order."""
    hints = typing.get_type_hints(options)
    specs = []
    for f in dataclasses.fields(options):
        if f.default is dataclasses.MISSING:
            raise TypeError(f"{options.__name__}.{f.name}: an option needs a default")
        specs.append(
            OptionSpec(
                name=f.name,
                types=_allowed_types(hints[f.name]),
                default=f.default,
                doc=str(f.metadata.get("doc") or ""),
                range=f.metadata.get("range"),
                choices=f.metadata.get("choices"),
                check=f.metadata.get("check"),
            )
        )
    return tuple(specs)


@dataclass(frozen=True, slots=True)
class NoOptions:
    """For a provider without options of its own."""


FIND_UPLOAD_ITEMS = 100  # the newest items searched for an upload whose reply was lost
FIND_UPLOAD_PAGES = 5  # ... in at most this many listing pages
# With a time bound (``find_upload(..., since=)``) the search goes back until items are
# older than the bound less FIND_SINCE_SLACK seconds (the host's clock may differ from the
# one the bound was read on), in at most FIND_SINCE_PAGES pages.
FIND_SINCE_SLACK = 15.0
FIND_SINCE_PAGES = 500


def item_time(item: RemoteItem) -> float | None:
    """When the host says ``item`` was stored (unix seconds), if it says."""
    return item.meta.created_at if item.meta.created_at is not None else item.mtime


def older_than(item: RemoteItem, since: float | None, *, slack: float = FIND_SINCE_SLACK) -> bool:
    """Whether ``item`` was stored before ``since`` (less ``slack`` seconds, by default
    :data:`FIND_SINCE_SLACK`): a newest-first search bound by ``since`` stops there. An
    item without a time is not."""
    when = item_time(item)
    return since is not None and when is not None and when < since - slack


MAX_FILE_HOPS = 5  # redirects followed by a file GET that carries the account's credential


class FileHop(ProviderError):
    """A redirect answered to a file GET that carried the credential (followed by hand)."""

    def __init__(self, location: str) -> None:
        super().__init__("redirected")
        self.location = location


def file_hop(resp: ApiResponse) -> ProviderError | None:
    """An error mapper: a redirect (with a ``Location``) becomes :class:`FileHop`."""
    location = resp.headers.get("Location")
    if resp.status in (301, 302, 303, 307, 308) and location:
        return FileHop(location)
    return None


def _with_hops(map_error: ErrorMapper | None) -> ErrorMapper:
    def mapper(resp: ApiResponse) -> ProviderError | None:
        return file_hop(resp) or (map_error(resp) if map_error is not None else None)

    return mapper


OWN_HOST = ""
"""A ``default_limits`` key: the host the remote's ``base_url`` names (self-hosted sites);
``"/path"`` keys name a part of it."""


@dataclass(frozen=True)
class ProviderInfo:
    """Everything imgsync needs to know about a remote type, declared in its module.

    Attributes:
        kind: the remote ``type`` in the config.
        description: one line for ``imgsync remotes``.
        options: a frozen dataclass whose fields are built with :func:`option`.
        token: ``required`` / ``optional`` / ``none``: whether the remote takes a
            credential (``token``, ``token_env``, ``token_file``).
        base_url: ``required`` (self-hosted sites), ``optional`` (a public default
            exists) or ``none`` (not an HTTP host).
        default_base_url: the public host, when there is one.
        default_limits: authority -> rate (``"60/minute"``) installed unless the config's
            ``[limits]`` says otherwise. The key :data:`OWN_HOST` (``""``) stands for the
            authority of the remote's own ``base_url`` (a self-hosted site's default), and a
            key starting with ``/`` for that path below it (``"/api/v1"``: a site whose
            API is throttled but whose files are not).
        shared_limits: authority -> authority whose budget it draws from (Gyazo's upload
            host counts against its API host's day).
        path: the remote is a local folder and needs ``path``.
        emulator: the emulator's name in :mod:`imgsync.fakehosts` (a name, not an import:
            emulators share no code with providers); ``None`` for non-HTTP remotes.
        emulator_options: options the emulator needs to offer everything ``full_options``
            turn on (e.g. Discord Images' inferred paging route).
        full_options: remote options that switch every ability on and make pages small;
            the conformance suite tests the provider with them.
    """

    kind: str
    description: str
    options: type = NoOptions
    token: Need = "required"
    base_url: Need = "optional"
    default_base_url: str | None = None
    default_limits: Mapping[str, str] = field(default_factory=dict)
    shared_limits: Mapping[str, str] = field(default_factory=dict)
    path: bool = False
    emulator: str | None = None
    emulator_options: Mapping[str, Any] = field(default_factory=dict)
    full_options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def option_specs(self) -> tuple[OptionSpec, ...]:
        """The declared options, in declaration order."""
        return option_specs(self.options)

    def option_problem(self, key: str, value: Any) -> str | None:
        """What is wrong with option ``key = value`` for this remote type, or ``None``."""
        for spec in self.option_specs:
            if spec.name == key:
                return spec.problem(value)
        return f"unknown key for a {self.kind} remote"

    def read_options(self, given: Mapping[str, Any], *, remote: str = "?") -> Any:
        """The typed options instance for ``given`` (defaults filled in).

        Raises ``ConfigError`` listing every bad key (config validation has normally
        caught them already; this guards remotes built in code).
        """
        problems = [
            f"remotes.{remote}.{key}: {problem}"
            for key, value in given.items()
            if (problem := self.option_problem(key, value)) is not None
        ]
        if problems:
            raise ConfigError(problems)
        return self.options(**given)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for ``imgsync remotes --types``."""
        return {
            "type": self.kind,
            "description": self.description,
            "token": self.token,
            "base_url": self.base_url,
            "default_base_url": self.default_base_url,
            "default_limits": {
                (k if k and k[0] != "/" else f"(the base_url's host){k}"): v
                for k, v in self.default_limits.items()
            },
            "path": self.path,
            "options": [spec.describe() for spec in self.option_specs],
        }


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
    ``features`` on the class is everything the type can do; an instance may switch
    abilities off from its options (never on).
    """

    info: ClassVar[ProviderInfo]
    kind: ClassVar[str]
    description: ClassVar[str] = ""
    default_base_url: ClassVar[str | None] = None
    features: Features
    # how far before a search's ``since`` an item may be dated by the host's clock and still
    # be the upload searched for (see :func:`older_than`)
    search_slack: ClassVar[float] = FIND_SINCE_SLACK

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        info = cls.__dict__.get("info")
        if isinstance(info, ProviderInfo):  # the declaration is the one source of these
            cls.kind = info.kind
            cls.description = info.description
            cls.default_base_url = info.default_base_url

    def __init__(self, config: RemoteConfig, ctx: ProviderContext) -> None:
        self.config = config
        self.name = config.name
        self.ctx = ctx
        self.options: Any = self.info.read_options(config.options, remote=config.name)
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

    @classmethod
    def site_url(cls, base_url: str) -> str:
        """The URL that says which site a ``base_url`` points at (it keys the destination in
        state). A host whose ``base_url`` may be written with its API path trims it."""
        return base_url

    @classmethod
    def where(cls, remote: RemoteConfig) -> str | None:
        """What ``remote`` stores into, as a URL (with the account, it keys the remote in
        state): by default the site its ``base_url`` points at."""
        return cls.site_url(remote.base_url or cls.default_base_url or "") or None

    @property
    def base_url(self) -> str:
        """The configured ``base_url`` or the provider's public default."""
        url = self.config.base_url or self.default_base_url
        if not url:
            raise Unsupported("no base_url configured", remote=self.name)
        return url.rstrip("/")

    # --- the account's credential on image files ----------------------------------------

    def auth_headers(self) -> dict[str, str]:
        """The header(s) that carry this remote's credential ({} when it has none)."""
        return {}

    def credentials_for(self, url: str) -> dict[str, str]:
        """The credential headers for a GET of ``url`` (an image file): only when ``url``
        is on the remote's own site (same scheme, host and port as its ``base_url``), so a
        token never goes to a CDN or a storage on another origin. The caller follows
        redirects itself and asks again for each hop."""
        from yarl import URL

        headers = self.auth_headers()
        if not headers:
            return {}
        try:
            base = self.base_url
            cached = self.__dict__.get("_own_origin")
            if cached is None or cached[0] != base:
                cached = self.__dict__["_own_origin"] = (base, URL(base).origin())
            own = cached[1]
            # the usual case, a file on the remote's own site, told without parsing it
            if url.startswith(f"{own}/"):
                return headers
            there = URL(url).origin()
        except (ValueError, TypeError, Unsupported):
            return {}
        return headers if own == there else {}

    async def open_file(
        self, url: str, *, map_error: ErrorMapper | None = None
    ) -> AsyncIterator[bytes]:
        """Stream an image file: GET ``url`` with the remote's credential when ``url`` is
        on its own origin (:meth:`credentials_for`; a host that serves private images to
        their owner only). Redirects are then followed here, hop by hop, asking again for
        each, so the credential never reaches another origin (aiohttp would forward a
        custom header such as ``X-API-Key`` or ``token`` to any origin it is sent to)."""
        from urllib.parse import urljoin

        from imgsync.errors import ResponseError

        for _ in range(MAX_FILE_HOPS + 1):
            headers = self.credentials_for(url)
            if not headers:
                async with self.http.stream(url, remote=self.name, map_error=map_error) as body:
                    async for chunk in body:
                        yield chunk
                return
            try:
                async with self.http.stream(
                    url,
                    remote=self.name,
                    headers=headers,
                    allow_redirects=False,
                    map_error=_with_hops(map_error),
                ) as body:
                    async for chunk in body:
                        yield chunk
                return
            except FileHop as hop:
                url = urljoin(url, hop.location)
        raise ResponseError(f"more than {MAX_FILE_HOPS} redirects", remote=self.name)

    async def refresh_url(self, url: str, *, control: str | None = None) -> str | None:
        """A fresh URL for an image URL whose signature expired (Discord-style ``ex``/``hm``
        URLs), or None when the host gives none. ``control``: another image URL of this
        remote, last seen alive, to ask about in the same request; when the host renews
        that one but not ``url``, it has said it no longer has ``url``: ``NotFound`` is
        raised. Raises ``ProviderError``."""
        return None

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

    async def find_upload(
        self, src: UploadSource, *, rel_path: str, since: float | None = None
    ) -> RemoteItem | None:
        """The item an upload of ``src`` made, if the host has one (``None``: not found).

        Asked after an upload's reply broke off, or when a lease is taken over from a
        holder that may have sent it, before sending again. ``since``: the earliest time
        (unix seconds) that upload can have been sent; the search then goes back through
        the listing until items are older than that (less :data:`FIND_SINCE_SLACK`), however
        many uploads came since. Without it, the newest :data:`FIND_UPLOAD_ITEMS` items are
        searched (at most :data:`FIND_UPLOAD_PAGES` pages). Reads :meth:`newest_pages` and
        asks :meth:`match_upload` page by page. Raises ``Unsupported`` when the host cannot
        be listed.
        """
        if not self.features.can_list:
            raise Unsupported("this remote cannot be listed", remote=self.name)
        looked = 0
        pages = FIND_SINCE_PAGES if since is not None else FIND_UPLOAD_PAGES
        async for items in self.newest_pages(pages):
            found = await self.match_upload(src, items, rel_path=rel_path, since=since)
            if found is not None:
                return found
            looked += len(items)
            if since is None and looked >= FIND_UPLOAD_ITEMS:
                break
            if items and older_than(items[-1], since, slack=self.search_slack):
                break
        return None

    async def newest_pages(self, limit: int = FIND_SINCE_PAGES) -> AsyncIterator[list[RemoteItem]]:
        """The listing newest first, a page at a time (at most ``limit`` pages): what the
        searches for an earlier upload read (:meth:`find_upload`, and the engine's one
        listing shared by every takeover of a run). The default reads :meth:`list_page`
        when it lists the newest first; a listing that shows the oldest first (and no
        other order) yields nothing. Raises ``Unsupported`` when the host cannot be listed.
        """
        if not self.features.can_list:
            raise Unsupported("this remote cannot be listed", remote=self.name)
        if self.features.listing_appends:  # oldest first: the newest are on the last page
            return
        cursor: str | None = None
        for _ in range(limit):
            page = await self.list_page(cursor)
            yield page.items
            if page.next_cursor in (None, cursor):
                return
            cursor = page.next_cursor

    async def match_upload(
        self,
        src: UploadSource,
        items: Sequence[RemoteItem],
        *,
        rel_path: str,
        since: float | None = None,
    ) -> RemoteItem | None:
        """The item of ``items`` (read by :meth:`newest_pages`, newest first) that an
        upload of ``src`` made, if one is: the default takes one with the same checksum
        (when the host reports one) or the same name and size."""
        stem = PurePosixPath(rel_path).stem
        for item in items:
            if item.sha256 is not None and item.sha256 == src.sha256:
                return item
            if src.md5 and src.md5 in (item.md5, item.md5_hint):
                return item
            if item.size == src.size and PurePosixPath(item.name).stem == stem:
                return item
        return None

    async def delete(self, item: RemoteItem) -> None:
        """Remove the item. ``NotFound`` means already gone. ``Unsupported`` if absent."""
        raise Unsupported("this remote cannot delete", remote=self.name)

    # --- the batch-write capability (``features.batch_writes``) ------------------------

    async def write_batch(self, unit: Unit, bodies: list[bytes | Path]) -> None:
        """Write a batch of files at once (staged, one flush, renamed; sidecars after).
        Per-file outcomes are set on ``unit.files``. ``Unsupported`` if not declared."""
        raise Unsupported("this remote has no batch writes", remote=self.name)

    async def stage_copy(
        self,
        src_root: Path,
        unit: Unit,
        with_md5: bool,
        max_item_bytes: int | None = None,
        follow_links: bool = False,
    ) -> None:
        """Read, hash and stage ``unit``'s files from the folder ``src_root`` (one larger
        than ``max_item_bytes`` fails with ``Rejected``; one that is a symbolic link by
        now gets ``LinkSkipped`` unless ``follow_links`` and it stays inside)."""
        raise Unsupported("this remote has no batch writes", remote=self.name)

    async def commit(self, units: list[Unit]) -> None:
        """Make every approved staged file of ``units`` visible (one flush first)."""
        raise Unsupported("this remote has no batch writes", remote=self.name)

    async def missing(self, remote_ids: Iterable[str]) -> list[str]:
        """Which of ``remote_ids`` are gone (cheap for a folder; hosts do not say)."""
        raise Unsupported("this remote cannot cheaply tell what is missing", remote=self.name)

    async def missing_and_bare(
        self,
        remote_ids: Iterable[str],
        *,
        sidecars: bool = False,
        recorded: Mapping[str, str | None] | None = None,
    ) -> tuple[list[str], list[str]]:
        """:meth:`missing`, and (``sidecars``) which of the others have lost their JSON
        sidecar (a folder holding a backup; ``recorded``: remote id -> the name its sidecar
        was written under, when known); hosts keep no sidecars."""
        return await self.missing(remote_ids), []

    async def iter_all(self, cursor: str | None = None) -> AsyncIterator[tuple[Page, str | None]]:
        """Every page from ``cursor`` on, each with the cursor that produced it."""
        while True:
            page = await self.list_page(cursor)
            yield page, cursor
            if page.next_cursor is None or page.next_cursor == cursor:
                return
            cursor = page.next_cursor
