"""A local folder tree as a provider, over :mod:`imgsync.localfs`.

* Listing is a scan (symlinked folders once, temp files skipped, names that are not
  valid UTF-8 kept as path keys).
* Writes keep relative paths and go the one way every local write goes: staged in a hidden
  folder, flushed once, renamed; never over a file imgsync did not write.
* Batch writes are a declared capability (``features.batch_writes``): the engine hands a
  whole batch to :meth:`LocalProvider.write_batch` (one flush for the batch), and a folder
  source's files are staged straight from disk with :meth:`LocalProvider.stage_copy`.
* ``delete`` removes a file only while it still holds the bytes imgsync wrote there
  (``item.sha256``); a file changed since is kept (``Rejected``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread

from imgsync.errors import LocalIOError, NotFound, Rejected
from imgsync.hashing import CHUNK
from imgsync.localfs import (
    StagedFile,
    Unit,
    commit_units,
    discard_stage,
    display,
    file_sha256,
    key_path,
    missing,
    missing_and_bare,
    open_source,
    path_key,
    scan_tree,
    stage_blobs,
    stage_unit,
    write_sidecars,
)
from imgsync.models import ItemMeta, Page, RemoteItem, UploadSource
from imgsync.providers.base import Features, Provider, ProviderContext, ProviderInfo

if TYPE_CHECKING:
    from imgsync.config import RemoteConfig


class LocalProvider(Provider):
    """A folder on this machine."""

    info = ProviderInfo(
        kind="local",
        description="a local folder tree (keeps relative paths)",
        token="none",
        base_url="none",
        path=True,
    )
    features = Features(
        can_list=True,
        can_delete=True,
        can_get=True,
        keeps_paths=True,
        is_local=True,
        batch_writes=True,
    )

    def __init__(self, config: RemoteConfig, ctx: ProviderContext) -> None:
        super().__init__(config, ctx)
        self._pending_units: dict[int, Unit] = {}  # staged, not yet committed

    @property
    def root(self) -> Path:
        assert self.config.path is not None
        return self.config.path

    @property
    def folder(self) -> Path | None:
        return self.root

    def full(self, rel: str) -> Path:
        """The path of an item; refuses keys that would leave the folder."""
        rel = key_path(rel)
        if rel.startswith("/") or ".." in rel.split("/"):
            raise Rejected(f"path escapes the folder: {display(rel)}", remote=self.name)
        return self.root / rel

    async def list_page(self, cursor: str | None) -> Page:
        entries, _problems, _skipped = await anyio.to_thread.run_sync(scan_tree, self.root)
        items = [
            RemoteItem(
                remote_id=path_key(e.rel),
                name=e.rel.rsplit("/", 1)[-1],
                size=e.size,
                mtime=e.mtime_ns / 1e9,
            )
            for e in entries
        ]
        return Page(items=items, next_cursor=None)

    async def get(self, remote_id: str) -> RemoteItem:
        path = self.full(remote_id)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise NotFound(f"{display(remote_id)} not found", remote=self.name) from None
        return RemoteItem(
            remote_id=remote_id, name=path.name, size=st.st_size, mtime=st.st_mtime_ns / 1e9
        )

    async def open(self, item: RemoteItem) -> AsyncIterator[bytes]:
        import aiofiles

        path = self.full(item.remote_id)
        try:
            async with aiofiles.open(path, "rb", opener=_no_link_opener) as fh:
                while chunk := await fh.read(CHUNK):
                    yield chunk
        except FileNotFoundError:
            raise NotFound(f"{display(item.remote_id)} vanished", remote=self.name) from None
        except OSError as exc:
            raise LocalIOError(
                f"cannot read {display(item.remote_id)}: {exc.strerror}", path=str(path)
            ) from None

    async def upload(self, src: UploadSource, meta: ItemMeta, *, rel_path: str) -> RemoteItem:
        """Write ``src`` at ``rel_path`` (staged, flushed, renamed)."""
        self.full(rel_path)  # refuses paths that leave the folder
        rel = key_path(rel_path)
        staged = StagedFile(rel, mtime=meta.created_at, approved=True)
        unit = Unit(rel.rpartition("/")[0], [staged])
        body: bytes | Path = await src.read() if src.path is None else Path(src.path)
        if isinstance(body, Path):  # never move the caller's file: copy it
            body = await anyio.to_thread.run_sync(_copy_aside, self.root, body)
        await self.write_batch(unit, [body])
        if staged.error is not None:
            raise staged.error
        assert staged.final is not None
        return RemoteItem(
            remote_id=path_key(staged.final),
            name=staged.final.rpartition("/")[2],
            size=src.size,
            sha256=src.sha256,
            md5=src.md5,
            meta=meta,
        )

    # ---- the batch-write capability ------------------------------------------------

    async def write_batch(self, unit: Unit, bodies: list[bytes | Path]) -> None:
        """Stage ``bodies`` (bytes, or spooled files that are moved in) for ``unit``'s files,
        flush once, rename, then write sidecars (flushed too, when any). Sets ``final``/``error``
        per file."""
        root = str(self.root)

        def write() -> None:
            stage_blobs(root, unit, bodies)
            commit_units(root, [unit])
            write_sidecars(root, unit)

        await anyio.to_thread.run_sync(write)

    async def stage_copy(
        self,
        src_root: Path,
        unit: Unit,
        with_md5: bool,
        max_item_bytes: int | None = None,
        follow_links: bool = False,
    ) -> None:
        """Read, hash and stage the files of ``unit`` from the folder ``src_root`` (one
        larger than ``max_item_bytes`` fails; one swapped for a symbolic link since the
        scan is not read through it). Until :meth:`commit` takes it, the staging is this
        provider's to drop on close."""
        self._pending_units[id(unit)] = unit
        await anyio.to_thread.run_sync(
            stage_unit, str(src_root), str(self.root), unit, with_md5, max_item_bytes, follow_links
        )

    async def commit(self, units: list[Unit]) -> None:
        """One flush, then every approved staged file of ``units`` under its final name."""
        await anyio.to_thread.run_sync(commit_units, str(self.root), units)
        for unit in units:
            self._pending_units.pop(id(unit), None)

    async def aclose(self) -> None:
        """Drop the staging of batches never committed (a run cancelled between staging
        and commit): a long-lived process (the daemon) leaves no ``.imgsync-tmp-*``
        behind; ``sweep_stale`` only clears those of processes that are gone."""
        pending, self._pending_units = self._pending_units, {}
        for unit in pending.values():
            discard_stage(unit)

    async def missing(self, remote_ids: Iterable[str]) -> list[str]:
        """Which of ``remote_ids`` are gone from the folder (deleted by hand)."""
        ids = list(remote_ids)
        return await anyio.to_thread.run_sync(missing, self.root, ids)

    async def missing_and_bare(
        self,
        remote_ids: Iterable[str],
        *,
        sidecars: bool = False,
        recorded: Mapping[str, str | None] | None = None,
    ) -> tuple[list[str], list[str]]:
        """Which of ``remote_ids`` are gone from the folder, and (``sidecars``) which of the
        others have no sidecar beside them any more (``recorded``: the name each one's
        sidecar was written under, when known): one listing per folder."""
        ids = list(remote_ids)
        return await anyio.to_thread.run_sync(missing_and_bare, self.root, ids, sidecars, recorded)

    async def delete(self, item: RemoteItem) -> None:
        path = self.full(item.remote_id)
        if item.sha256 is not None:
            held = await anyio.to_thread.run_sync(file_sha256, path)
            if held is None:
                raise NotFound(f"{display(item.remote_id)} already gone", remote=self.name)
            if held != item.sha256:
                raise Rejected(
                    f"{display(item.remote_id)} changed since imgsync wrote it; kept",
                    remote=self.name,
                )
        try:
            path.unlink()
        except FileNotFoundError:
            raise NotFound(f"{display(item.remote_id)} already gone", remote=self.name) from None


def _no_link_opener(path: str, flags: int) -> int:
    """``open()``'s opener for a source file: never through a symbolic link (the listing
    leaves links out; one made since is not read)."""
    return open_source(path)


def _copy_aside(root: Path, path: Path) -> Path:
    """A private copy of ``path`` beside the destination, to be moved into staging."""
    import os
    import shutil

    from imgsync.localfs import TMP_PREFIX

    target = root / f"{TMP_PREFIX}{os.getpid()}-upload-{path.name}"
    root.mkdir(parents=True, exist_ok=True)
    with os.fdopen(open_source(path), "rb") as src, open(target, "wb") as out:
        shutil.copyfileobj(src, out)
    return target
