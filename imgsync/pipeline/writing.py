"""Writing fetched host items into a folder destination: a group leased, staged,
flushed and renamed in one write (with its sidecars), then recorded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgsync.errors import LocalIOError
from imgsync.hashing import Digest
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
        bodies: list[bytes | Path] = []
        digests: list[Digest] = []
        with_sidecars = self.run.opts.sidecars
        for c in items:
            body = c.body
            assert body is not None
            d = body.digest
            digests.append(d)
            meta = c.remote.meta if c.remote else ItemMeta()
            side = self.sidecar(c, d) if with_sidecars else None
            files.append(StagedFile(c.rel, mtime=meta.created_at, sidecar=side, approved=True))
            if body.path is not None and body.owned:
                bodies.append(body.path)
                body.owned = False  # moved into staging by the write
            else:
                bodies.append(body.data or b"")
        unit = Unit("", files)
        await self.run.dst.write_batch(unit, bodies)
        done: list[tuple[str, RemoteItem]] = []
        stamps: list[tuple[int, int, int] | None] = []
        sidecars: list[str | None] = []
        counts: list[tuple[Candidate, StagedFile, Digest]] = []
        for c, f, d in zip(items, files, digests, strict=True):
            if f.error is not None or f.final is None:
                self.run.item_failed(c, f.error or LocalIOError("not written", path=c.rel))
                continue
            meta = c.remote.meta if c.remote else ItemMeta()
            item = RemoteItem(remote_id=path_key(f.final), name=f.final, size=d.size, meta=meta)
            done.append((d.sha256, item))
            stamps.append(f.stamp)
            sidecars.append(f.sidecar_final)
            counts.append((c, f, d))
        await queries.record_locations(
            self.run.store, self.run.dst_key, done, later=True, stamps=stamps, sidecars=sidecars
        )  # see release
        await queries.record_owners(
            self.run.store, self.run.dst_key, self.run.src_key, [s for s, _ in done], wrote=True
        )
        await self.run.store.flush()  # written and recorded before they count as done
        records = self.run.records
        logged = records.logs_items()
        folder = str(self.run.dst.folder)
        for c, f, d in counts:
            if f.already_there:  # the folder held these bytes under that name already
                self.run.present([d.sha256])
                continue
            self.run.summary.copied += 1
            self.run.summary.bytes += d.size
            self.run.progress.tick(done=1, copied=1, nbytes=d.size)
            if logged:
                final = f.final or c.rel
                records.log_item(final, os.path.join(folder, final), d.size)

    def sidecar(self, c: Candidate, d: Digest | None = None) -> dict[str, Any]:
        """The JSON metadata written beside a backed-up image (``d``: its digest)."""
        if d is None:
            d = c.digest
        assert d is not None
        item = c.remote
        return {
            "source": self.run.src.name,
            "remote_id": item.remote_id if item else c.source_id,
            "name": item.name if item else c.rel,
            "url": item.url if item else None,
            "sha256": d.sha256,
            "md5": d.md5,
            "size": d.size,
            "metadata": (item.meta if item else ItemMeta()).to_json(),
        }
