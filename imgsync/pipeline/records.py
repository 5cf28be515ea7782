"""What a copy run records in state: where the items came from, what was uploaded or
written (committed before it counts as done), what this source relies on, the journal,
and the one log line per transferred item."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from imgsync.hashing import Digest
from imgsync.localfs import StagedFile, display, path_key
from imgsync.models import RemoteItem, guess_mime
from imgsync.pipeline.candidate import Candidate
from imgsync.state import queries
from imgsync.state.queries import KnownFile

if TYPE_CHECKING:
    from imgsync.pipeline.copy import CopyRun

_DEBUG = 10  # logging.DEBUG (the logging module is not imported for it)


# a file committed at a folder destination: (sha256, final rel, size, already there, its
# (mtime, ctime, inode) when imgsync wrote it)
Written = tuple[str, str, int, bool, tuple[int, int, int] | None]


class Recorder:
    """Records a run's items in state and the journal (one per run; see the module)."""

    def __init__(self, run: CopyRun) -> None:
        self.run = run

    async def record_sources(self, ready: list[Candidate]) -> None:
        if self.run.opts.dry_run:
            return
        rows = []
        local_rows = []
        for c in ready:
            assert c.body is not None
            d = c.body.digest
            rows.append((d.sha256, d.size, d.md5, guess_mime(c.rel)))
            if c.scan is not None:
                local_rows.append(
                    (
                        c.source_id,
                        KnownFile(
                            c.scan.size,
                            c.scan.mtime_ns,
                            c.scan.inode,
                            d.sha256,
                            d.md5,
                            c.scan.ctime_ns,
                        ),
                    )
                )
        await queries.record_objects(self.run.store, rows)
        if local_rows:
            assert self.run.src.folder is not None
            await queries.record_local_files(self.run.store, str(self.run.src.folder), local_rows)
        else:
            await queries.record_locations(
                self.run.store,
                self.run.src_key,
                [(c.body.digest.sha256, c.remote) for c in ready if c.body and c.remote],
                converts=self.run.src.features.reencodes_uploads,
                later=True,  # fleet mode: shared with the next release or finished page
            )

    async def record_upload(
        self, c: Candidate, d: Digest, item: RemoteItem, duplicate_note: str | None
    ) -> None:
        """The upload is committed to state (then its lease released) before the item
        counts as done."""
        # "verified" when the host reported a checksum the provider compared (Chevereto's
        # md5) of the bytes it stores; a host that re-encodes uploads stores other bytes
        features = self.run.dst.features
        stage = "verified" if features.checksums and not features.reencodes_uploads else "uploaded"
        fleet = self.run.store.fleet
        # fleet mode: the whole record reaches this machine's state before the shared state
        # is spoken to (lost there mid-record, the location was kept but not the journal)
        with fleet.held() if fleet is not None else contextlib.nullcontext():
            await queries.record_locations(
                self.run.store, self.run.dst_key, [(d.sha256, item)], later=True
            )
            await queries.record_owners(
                self.run.store, self.run.dst_key, self.run.src_key, [d.sha256], wrote=True
            )
            await self.journal(c, stage, error=duplicate_note, attempt=True)
        # committed with its lease's end: one transaction (and one thread hop) per upload
        await self.run.store.commit_and_release(self.run.dst_key, [d.sha256])
        self.run.summary.copied += 1
        self.run.summary.bytes += d.size
        self.run.progress.tick(done=1, copied=1, nbytes=d.size)
        self.log_item(c.rel, item.url or item.remote_id, d.size)

    def logs_items(self) -> bool:
        """Whether :meth:`log_item` writes a line (``--log-items``, or debug logging):
        when not, a caller need not build its arguments."""
        return self.run.opts.log_items or self.run._log.is_enabled_for(logging.DEBUG)

    def log_item(self, name: str, where: str, size: int) -> None:
        """One line per transferred item, with where it is now (its new URL)."""
        emit = self.run._log.info if self.run.opts.log_items else self.run._log.debug
        emit(
            "transferred",
            job=self.run.opts.job,
            item=display(name),
            dest=self.run.dst.name,
            url=where,
            bytes=size,
        )

    async def record_hashed(self, files: Iterable[StagedFile]) -> None:
        """Objects and ``local_files`` rows for source files just hashed."""
        root = self.run.src.folder
        assert root is not None
        rows, local_rows = [], []
        for f in files:
            d, scan = f.digest, f.scan
            assert d is not None and scan is not None
            rows.append((d.sha256, d.size, d.md5, guess_mime(f.rel)))
            local_rows.append(
                (
                    path_key(f.rel),
                    KnownFile(scan.size, scan.mtime_ns, scan.inode, d.sha256, d.md5, scan.ctime_ns),
                )
            )
        await queries.record_objects(self.run.store, rows)
        await queries.record_local_files(self.run.store, str(root), local_rows)

    async def record_written(self, done: Sequence[Written]) -> None:
        """Locations for (sha256, final rel, size, already there, stamp) just committed at
        a local destination; committed to state before they count as done."""
        await queries.record_locations(
            self.run.store,
            self.run.dst_key,
            [
                (sha, RemoteItem(remote_id=path_key(rel), name=rel, size=size))
                for sha, rel, size, _already, _stamp in done
            ],
            stamps=[d[4] for d in done],
        )
        await queries.record_owners(
            self.run.store,
            self.run.dst_key,
            self.run.src_key,
            [d[0] for d in done if not d[3]],
            wrote=True,
        )
        self.run.relied.extend(d[0] for d in done if d[3])
        await self.run.store.flush()
        summary = self.run.summary
        copied = [(rel, size) for _sha, rel, size, already, _stamp in done if not already]
        nbytes = sum(size for _rel, size in copied)
        summary.present += len(done) - len(copied)
        summary.copied += len(copied)
        summary.bytes += nbytes
        self.run.progress.tick(done=len(done), copied=len(copied), nbytes=nbytes)
        # a line per file only when it is shown (a daemon job's item log, or -v): its
        # printable name and path cost more than the rest of its bookkeeping
        if self.run.opts.log_items or self.run._log.is_enabled_for(_DEBUG):
            folder = str(self.run.dst.folder)
            for rel, size in copied:
                self.log_item(rel, os.path.join(folder, rel), size)

    async def record_relied(self) -> None:
        """This source relies on bytes it found already at the destination."""
        if self.run.relied and not self.run.opts.dry_run:
            await queries.record_owners(
                self.run.store,
                self.run.dst_key,
                self.run.src_key,
                set(self.run.relied),
                wrote=False,
            )
            self.run.relied.clear()

    async def journal_batch(self, stage: str, items: list[tuple[str, str | None]]) -> None:
        await queries.journal_many(
            self.run.store, self.run.opts.job, self.run.src_key, self.run.dst_key, stage, items
        )

    async def journal(
        self, c: Candidate, stage: str, *, error: str | None = None, attempt: bool = False
    ) -> None:
        await queries.journal(
            self.run.store,
            self.run.opts.job,
            self.run.src_key,
            c.source_id,
            self.run.dst_key,
            stage,
            sha256=c.digest.sha256 if c.digest else None,
            error=error,
            attempt=attempt,
        )
