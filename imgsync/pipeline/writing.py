"""Writing fetched host items into a folder destination: a group leased, staged,
flushed and renamed in one write (with its sidecars), then recorded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgsync.errors import LocalIOError
from imgsync.localfs import StagedFile, Unit, path_key
from imgsync.models import ItemMeta, RemoteItem
from imgsync.pipeline.candidate import Candidate
from imgsync.state import queries

if TYPE_CHECKING:
    from imgsync.pipeline.copy import CopyRun


class FolderWriter:
    """Writes fetched host items into a folder destination (one per run; see the module)."""

    def __init__(self, run: CopyRun) -> None:
        self.run = run

    async def write_group(self, items: list[Candidate]) -> None:
        """Write fetched host items into a folder destination (staged, flushed, renamed)."""
        todo = self.run.missing_of(items)
        if self.run.opts.dry_run:
            for c in todo:
                self.run.would_copy(c)
                assert c.body is not None
                c.body.discard()
            return
        if not todo:
            return
        ours, held = await self.run.delivery.lease_group(todo)
        self.run.delivery.defer(held)
        if not ours:
            return
        try:
            await self._write_local(ours)
        finally:
            for c in ours:
                if c.body is not None:
                    c.body.discard()
            await self.run.store.release(
                self.run.dst_key, [c.digest.sha256 for c in ours if c.digest]
            )

    async def _write_local(self, items: list[Candidate]) -> None:
        files = []
        for c in items:
            meta = c.remote.meta if c.remote else ItemMeta()
            side = self.sidecar(c) if self.run.opts.sidecars else None
            files.append(StagedFile(c.rel, mtime=meta.created_at, sidecar=side, approved=True))
        unit = Unit("", files)
        bodies: list[bytes | Path] = []
        for c in items:
            assert c.body is not None
            if c.body.path is not None and c.body.owned:
                bodies.append(c.body.path)
                c.body.owned = False  # moved into staging by the write
            else:
                bodies.append(c.body.data or b"")
        await self.run.dst.write_batch(unit, bodies)
        done: list[tuple[str, RemoteItem]] = []
        stamps: list[tuple[int, int, int] | None] = []
        sidecars: list[str | None] = []
        counts: list[tuple[Candidate, StagedFile]] = []
        for c, f in zip(items, files, strict=True):
            assert c.digest is not None
            if f.error is not None or f.final is None:
                self.run.item_failed(c, f.error or LocalIOError("not written", path=c.rel))
                continue
            meta = c.remote.meta if c.remote else ItemMeta()
            item = RemoteItem(
                remote_id=path_key(f.final), name=f.final, size=c.digest.size, meta=meta
            )
            done.append((c.digest.sha256, item))
            stamps.append(f.stamp)
            sidecars.append(f.sidecar_final)
            counts.append((c, f))
        await queries.record_locations(
            self.run.store, self.run.dst_key, done, later=True, stamps=stamps, sidecars=sidecars
        )  # see release
        await queries.record_owners(
            self.run.store, self.run.dst_key, self.run.src_key, [s for s, _ in done], wrote=True
        )
        await self.run.store.flush()  # written and recorded before they count as done
        for c, f in counts:
            assert c.digest is not None
            if f.already_there:  # the folder held these bytes under that name already
                self.run.present([c.digest.sha256])
                continue
            self.run.summary.copied += 1
            self.run.summary.bytes += c.digest.size
            self.run.progress.tick(done=1, copied=1, nbytes=c.digest.size)
            final = f.final or c.rel
            self.run.records.log_item(
                final, os.path.join(str(self.run.dst.folder), final), c.digest.size
            )

    def sidecar(self, c: Candidate) -> dict[str, Any]:
        """The JSON metadata written beside a backed-up image."""
        assert c.digest is not None
        item = c.remote
        return {
            "source": self.run.src.name,
            "remote_id": item.remote_id if item else c.source_id,
            "name": item.name if item else c.rel,
            "url": item.url if item else None,
            "sha256": c.digest.sha256,
            "md5": c.digest.md5,
            "size": c.digest.size,
            "metadata": (item.meta if item else ItemMeta()).to_json(),
        }
