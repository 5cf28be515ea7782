"""An image host that lives in this process's memory: for tests and dry experiments.

``type = "memory"`` behaves like a small, fully capable host (list, get, open, upload,
delete) without HTTP, files or time. Remotes naming the same ``bucket`` share one
:class:`MemoryStore`, so a test can seed a source, run the real engine against it and
look at what arrived::

    from imgsync.providers.memory import store

    src = store("photos")
    src.put("cat.png", png_bytes)
    ...  # [remotes.src] type = "memory", bucket = "photos"
    assert [i.name for i in store("backup").items()] == ["cat.png"]

Everything vanishes when the process ends (``reset()`` empties every bucket earlier).

Behaviour, chosen to resemble a careful host:

* Items get ids ``m1``, ``m2`` ... in upload order; the listing is oldest first, so new
  items appear at the end (``listing_appends``). A cursor is the last id a page returned:
  deleting items never shifts what a cursor points at.
* Identical bytes may be stored twice under two ids (most hosts allow it).
* ``md5`` and ``sha256`` of the stored bytes are reported, as a host that hashes would.
* :meth:`MemoryStore.fail_next` makes the next calls of an operation raise a given error,
  to test how callers handle a failing host.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from imgsync.errors import NotFound, ProviderError
from imgsync.models import ItemMeta, Page, RemoteItem, UploadSource, guess_mime, is_image_name
from imgsync.providers.base import Features, Provider, ProviderInfo, option

if TYPE_CHECKING:
    from imgsync.config import RemoteConfig
    from imgsync.providers.base import ProviderContext

__all__ = ["MemoryOptions", "MemoryProvider", "MemoryStore", "reset", "store"]

Operation = Literal["list", "get", "open", "upload", "delete"]
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class _Stored:
    seq: int
    item: RemoteItem
    data: bytes


class MemoryStore:
    """One bucket: the items, their bytes, and counters of the calls made."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._items: dict[str, _Stored] = {}
        self._seq = 0
        self._failures: list[tuple[Operation, ProviderError]] = []
        self.calls: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"<MemoryStore {self.name!r}: {len(self._items)} items>"

    def put(self, name: str, data: bytes, meta: ItemMeta | None = None) -> RemoteItem:
        """Store ``data`` as a new item called ``name``; return it."""
        self._seq += 1
        remote_id = f"m{self._seq}"
        item = RemoteItem(
            remote_id=remote_id,
            name=name,
            size=len(data),
            url=f"memory://{self.name}/{remote_id}/{name}",
            mime=guess_mime(name),
            md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            sha256=hashlib.sha256(data).hexdigest(),
            meta=meta or ItemMeta(),
            is_image=is_image_name(name),
        )
        self._items[remote_id] = _Stored(self._seq, item, bytes(data))
        return item

    def items(self) -> list[RemoteItem]:
        """Every stored item, oldest first."""
        return [s.item for s in self._items.values()]

    def data(self, remote_id: str) -> bytes:
        """The stored bytes of an item. Raises ``KeyError``."""
        return self._items[remote_id].data

    def remove(self, remote_id: str) -> None:
        """Drop an item behind the provider's back (as a user deleting it on the site)."""
        del self._items[remote_id]

    def clear(self) -> None:
        """Forget every item, counter and pending failure."""
        self._items.clear()
        self._failures.clear()
        self.calls.clear()

    def fail_next(self, operation: Operation, error: ProviderError, times: int = 1) -> None:
        """Make the next ``times`` calls of ``operation`` raise ``error``."""
        self._failures.extend([(operation, error)] * times)

    def _enter(self, operation: Operation) -> None:
        self.calls[operation] += 1
        for i, (op, error) in enumerate(self._failures):
            if op == operation:
                del self._failures[i]
                raise error

    def _get(self, remote_id: str, remote: str) -> _Stored:
        stored = self._items.get(remote_id)
        if stored is None:
            raise NotFound(f"{remote_id}: no such item in bucket {self.name!r}", remote=remote)
        return stored

    def _after(self, cursor: str | None) -> list[_Stored]:
        start = 0
        if cursor and cursor.startswith("m") and cursor[1:].isdigit():
            start = int(cursor[1:])
        return [s for s in self._items.values() if s.seq > start]


_STORES: dict[str, MemoryStore] = {}
_PROCESS = f"{os.getpid()}-{secrets.token_hex(4)}"


def store(bucket: str = "default") -> MemoryStore:
    """The process's store called ``bucket`` (created empty on first use)."""
    found = _STORES.get(bucket)
    if found is None:
        found = _STORES[bucket] = MemoryStore(bucket)
    return found


def reset() -> None:
    """Empty every bucket (tests call this between cases)."""
    for s in _STORES.values():
        s.clear()
    _STORES.clear()


@dataclass(frozen=True, slots=True)
class MemoryOptions:
    """``[remotes.NAME]`` keys of a memory remote."""

    bucket: str = option("default", doc="remotes naming the same bucket share its items")
    page_size: int = option(50, doc="items per listing page", range=(1, 1000))


class MemoryProvider(Provider):
    """A bucket of :class:`MemoryStore`, as a host that can do everything."""

    info = ProviderInfo(
        kind="memory",
        description="an in-process store for tests and experiments (gone at exit)",
        options=MemoryOptions,
        token="none",
        base_url="none",
        full_options={"page_size": 3},
    )
    features = Features(
        can_list=True,
        can_get=True,
        can_delete=True,
        checksums=frozenset({"md5", "sha256"}),
        page_size=(1, 1000),
        listing_appends=True,
    )
    options: MemoryOptions

    def __init__(self, config: RemoteConfig, ctx: ProviderContext) -> None:
        super().__init__(config, ctx)
        self.bucket = self.options.bucket
        self.page_size = self.options.page_size

    @classmethod
    def where(cls, remote: RemoteConfig) -> str | None:
        """The bucket, in this process only: state written by an earlier process (whose
        memory is gone) never makes this one think its items are already here."""
        bucket = remote.options.get("bucket", "default")
        return f"memory://{_PROCESS}/{bucket}"

    @property
    def store(self) -> MemoryStore:
        """This remote's bucket (looked up on use: ``reset()`` may have replaced it)."""
        return store(self.bucket)

    async def list_page(self, cursor: str | None) -> Page:
        s = self.store
        s._enter("list")
        rest = s._after(cursor)
        page = rest[: self.page_size]
        more = len(rest) > self.page_size
        return Page(
            items=[p.item for p in page],
            next_cursor=page[-1].item.remote_id if more else None,
        )

    async def get(self, remote_id: str) -> RemoteItem:
        s = self.store
        s._enter("get")
        return s._get(remote_id, self.name).item

    async def open(self, item: RemoteItem) -> AsyncIterator[bytes]:
        s = self.store
        s._enter("open")
        data = s._get(item.remote_id, self.name).data
        for start in range(0, len(data), _CHUNK):
            yield data[start : start + _CHUNK]

    async def upload(self, src: UploadSource, meta: ItemMeta, *, rel_path: str) -> RemoteItem:
        s = self.store
        s._enter("upload")
        data = await src.read()
        name = rel_path.rsplit("/", 1)[-1] or src.name
        return s.put(name, data, meta)

    async def delete(self, item: RemoteItem) -> None:
        s = self.store
        s._enter("delete")
        s._get(item.remote_id, self.name)
        s.remove(item.remote_id)
