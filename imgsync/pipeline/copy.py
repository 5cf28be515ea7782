"""The copy engine behind ``copy``, ``backup`` and ``migrate``.

::

    source ──batches──▶ N workers: fetch+hash ─▶ dedupe+claim ─▶ upload/write ─▶ record
    (plan or pages)     (bounded anyio stream: a slow destination pushes back on the source)

One task group per run. Files are read and hashed in batches per thread hop (a thread
hop per file costs more than hashing it). A local destination never sees a half-written
file: writes are staged in hidden folders, flushed once, then renamed
(:mod:`imgsync.pipeline.folders`; folder-to-folder copies take that module's faster path
end to end). Every checksum is claimed for the destination in SQLite before its upload
starts. Item failures are recorded and the run goes on; a remote-wide failure (bad
credentials, a paused host) stops work for that destination only.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream

from imgsync.errors import (
    Duplicate,
    ImgsyncError,
    LocalIOError,
    Rejected,
)
from imgsync.hashing import Digest, digest_bytes, md5_hex
from imgsync.localfs import ScanEntry, StagedFile, Unit, display, key_path, path_key, safe_name
from imgsync.models import (
    ItemMeta,
    RemoteItem,
    UploadSource,
    guess_mime,
    is_image_name,
    sniff_image,
)
from imgsync.pipeline.plan import LocalPlan
from imgsync.pipeline.progress import Progress
from imgsync.pipeline.summary import CopyOptions, Summary
from imgsync.providers.base import Provider
from imgsync.state import queries
from imgsync.state.queries import KnownFile
from imgsync.state.store import StateStore

BATCH_FILES = 256
BATCH_BYTES = 8 * 1024 * 1024  # a larger file travels alone


@dataclass(slots=True)
class Candidate:
    """One source item on its way through the pipeline."""

    source_id: str  # path key (local) or remote id
    rel: str  # relative path at a local destination; the base name is the upload name
    scan: ScanEntry | None = None
    known: KnownFile | None = None
    remote: RemoteItem | None = None
    sha256: str | None = None
    data: bytes | None = None
    digest: Digest | None = None
    page: int = -1


class CopyRun:
    """One run copying ``src`` into ``dst``. Use :meth:`run_local` or :meth:`run_remote`."""

    def __init__(
        self,
        store: StateStore,
        src: Provider,
        src_key: str,
        dst: Provider,
        dst_key: str,
        opts: CopyOptions,
        progress: Progress,
    ) -> None:
        self.store = store
        self.src, self.src_key = src, src_key
        self.dst, self.dst_key = dst, dst_key
        self.opts = opts
        self.progress = progress
        self.summary = Summary(opts.verb, src_key, dst_key, dry_run=opts.dry_run)
        self.dest_shas: set[str] = set()
        # dest path -> sha256 imgsync wrote there from the same source path; such a file may
        # be replaced by a newer version (local sources only: host items never change)
        self.replaceable: dict[str, str] = {}
        self.taken: set[str] = set()  # checksums claimed or done in this run
        self.pages: list[list[Any]] = []  # [cursor_to_save, remaining items, index]
        self.known_remote: dict[str, str] = {}  # source remote id -> sha256, from state
        self.start_cursor: str | None = None
        self.failed_items: list[tuple[Candidate, str]] = []
        self.failed_ids: set[str] = set()
        self.listing_complete = False  # the listing reached its end
        self.last_cursor: str | None = None  # the cursor of the listing's last page
        self.include_non_images = opts.include_non_images or bool(
            src.config.option("include_non_images", False)
        )

    # ---- sources -------------------------------------------------------------------

    async def run_local(self, plan: LocalPlan) -> Summary:
        """Copy what ``plan`` found missing at the destination."""
        started = time.monotonic()
        self.dest_shas = plan.dest_shas
        self.replaceable = plan.dest_items
        s = self.summary
        s.checked, s.present, s.non_images = plan.scanned, plan.present, plan.non_images
        for p in plan.problems:
            s.fail(display(p.rel), p.message)
        self.progress.total = plan.scanned
        self.progress.tick(done=plan.present)
        if plan.vanished and not self.opts.dry_run:
            await queries.forget_local_files(self.store, str(plan.root), plan.vanished)
        cands = [Candidate(path_key(e.rel), e.rel, scan=e) for e in plan.to_hash]
        cands += [
            Candidate(path_key(e.rel), e.rel, scan=e, known=k, sha256=k.sha256)
            for e, k in plan.to_send
        ]
        if self.dst.features.batch_writes and not self.opts.dry_run:
            from imgsync.pipeline.folders import copy_folders

            await copy_folders(self, [c.scan for c in cands if c.scan])
            s.elapsed = time.monotonic() - started
            return s
        batches: list[list[Candidate]] = []
        cur: list[Candidate] = []
        size = 0
        for c in cands:
            cur.append(c)
            size += c.scan.size if c.scan else 0
            if len(cur) >= BATCH_FILES or size >= BATCH_BYTES:
                batches.append(cur)
                cur, size = [], 0
        if cur:
            batches.append(cur)
        await self._drive(batches_source=batches)
        s.elapsed = time.monotonic() - started
        return s

    async def run_remote(self, conn: sqlite3.Connection | None) -> Summary:
        """Copy from a listable remote, page by page, resuming from the saved cursor."""
        started = time.monotonic()
        saved, done = None, False
        if conn is not None:
            if self.dst.features.batch_writes:  # files deleted there by hand
                known = await anyio.to_thread.run_sync(queries.items_at, conn, self.dst_key)
                gone = await self.dst.missing(known)
                if gone:
                    await queries.forget_locations(self.store, self.dst_key, gone)
                    await self.store.flush()

            def load() -> tuple[str | None, bool]:  # big reads: off the event loop
                self.dest_shas = queries.shas_at(conn, self.dst_key)
                self.known_remote = queries.items_at(conn, self.src_key)
                return queries.cursor_of(conn, self.src_key, "list")

            saved, done = await anyio.to_thread.run_sync(load)
        self.start_cursor = saved if (not done or self.src.features.listing_appends) else None
        await self._drive(batches_source=None)
        self.summary.elapsed = time.monotonic() - started
        return self.summary

    async def _list_pages(self, send: Any) -> None:
        last_cursor: str | None = self.start_cursor
        index = 0
        async for page, cursor in self.src.iter_all(self.start_cursor):
            last_cursor = cursor
            batch: list[Candidate] = []
            for item in page.items:
                self.summary.checked += 1
                if not item.is_image and not self.include_non_images:
                    self.summary.non_images += 1
                    continue
                sha = self.known_remote.get(item.remote_id)
                if sha is not None and sha in self.dest_shas:
                    self.summary.present += 1
                    self.progress.tick(done=1)
                    continue
                batch.append(
                    Candidate(
                        item.remote_id, safe_name(item.name), remote=item, sha256=sha, page=index
                    )
                )
            if batch and not self.opts.dry_run:
                await self._journal_batch("listed", [(c.source_id, c.sha256) for c in batch])
            resume = page.next_cursor if page.next_cursor is not None else cursor
            self.pages.append([resume, len(batch), index])
            index += 1
            if batch:
                await send.send(batch)
            else:
                await self._page_progress()
        self.listing_complete, self.last_cursor = True, last_cursor

    async def _page_progress(self) -> None:
        """Save the cursor of every leading page whose items are all done."""
        resume = None
        while self.pages and self.pages[0][1] <= 0:
            resume = self.pages.pop(0)[0]
        if resume is not None and not self.opts.dry_run:
            await queries.save_cursor(self.store, self.src_key, "list", resume, done=False)

    # ---- the engine ----------------------------------------------------------------

    async def _drive(self, batches_source: list[list[Candidate]] | None) -> None:
        send, recv = anyio.create_memory_object_stream[list[Candidate]](
            max_buffer_size=2 * self.opts.transfers
        )
        async with anyio.create_task_group() as tg:
            for _ in range(self.opts.transfers):
                tg.start_soon(self._worker, recv.clone())
            recv.close()
            async with send:
                if batches_source is not None:
                    for b in batches_source:
                        await send.send(b)
                else:
                    try:
                        await self._list_pages(send)
                    except ImgsyncError as exc:
                        self._remote_failed(exc, listing=True)
        if (
            batches_source is None
            and self.listing_complete
            and not self.pages  # every page's items are done (failed ones keep their page)
            and not self.summary.remote_failure
            and not self.opts.dry_run
        ):
            await queries.save_cursor(self.store, self.src_key, "list", self.last_cursor, done=True)

    async def _worker(self, recv: MemoryObjectReceiveStream[list[Candidate]]) -> None:
        async with recv:
            async for batch in recv:
                if self.summary.remote_failure:
                    self.summary.not_attempted += len(batch)
                    continue
                await self._process(batch)
                if batch and batch[0].page >= 0:
                    for c in batch:
                        if c.source_id in self.failed_ids:
                            continue  # its page stays unfinished: the next run lists it again
                        for p in self.pages:
                            if p[2] == c.page:
                                p[1] -= 1
                    await self._page_progress()

    async def _process(self, batch: list[Candidate]) -> None:
        ready = await self._fetch(batch)
        if not ready:
            return
        await self._record_sources(ready)
        if not self.opts.dry_run and not self.dst.features.batch_writes:
            await self._journal_batch(
                "fetched", [(c.source_id, c.digest.sha256) for c in ready if c.digest]
            )
        todo = [c for c in ready if c.digest and self.first_missing(c.digest.sha256)]
        if not todo:
            return
        if self.opts.dry_run:
            for c in todo:
                self.summary.copied += 1
                self.summary.bytes += len(c.data or b"")
                if len(self.summary.would_copy) < 1000:
                    self.summary.would_copy.append(display(key_path(c.source_id)))
                self.progress.tick(done=1, copied=1)
                c.data = None
            return
        owned = await self.store.claim(self.dst_key, [c.digest.sha256 for c in todo if c.digest])
        mine = [c for c in todo if c.digest and c.digest.sha256 in owned]
        self.summary.present += len(todo) - len(mine)  # another worker or job has it
        if self.dst.features.batch_writes:
            await self._write_local(mine)
        else:
            for i, c in enumerate(mine):
                if self.summary.remote_failure:
                    self.summary.not_attempted += len(mine) - i
                    await self.store.release(
                        self.dst_key, [m.digest.sha256 for m in mine[i:] if m.digest]
                    )
                    break
                await self._upload(c)

    async def _fetch(self, batch: list[Candidate]) -> list[Candidate]:
        """Read/download and hash every item of the batch; failures are recorded."""
        if batch[0].scan is not None:
            root = self.src.folder
            assert root is not None
            results = await anyio.to_thread.run_sync(
                _read_and_hash, root, batch, not self.dst.features.is_local
            )
        else:
            results = [await self._download(c) for c in batch]
        ready = []
        for c, err in zip(batch, results, strict=True):
            if err is None:
                ready.append(c)
            else:
                self._item_failed(c, err)
        return ready

    async def _download(self, c: Candidate) -> ImgsyncError | None:
        assert c.remote is not None
        try:
            chunks = [chunk async for chunk in self.src.open(c.remote)]
        except ImgsyncError as exc:
            if exc.scope == "remote":
                self._remote_failed(exc)
            return exc
        data = b"".join(chunks)
        c.data = data
        c.digest = await anyio.to_thread.run_sync(digest_bytes, data)
        return None

    async def _record_sources(self, ready: list[Candidate]) -> None:
        if self.opts.dry_run:
            return
        rows = []
        local_rows = []
        for c in ready:
            d = c.digest
            assert d is not None
            rows.append((d.sha256, d.size, d.md5, guess_mime(c.rel)))
            if c.scan is not None:
                local_rows.append(
                    (
                        c.source_id,
                        KnownFile(c.scan.size, c.scan.mtime_ns, c.scan.inode, d.sha256, d.md5),
                    )
                )
        await queries.record_objects(self.store, rows)
        if local_rows:
            assert self.src.folder is not None
            await queries.record_local_files(self.store, str(self.src.folder), local_rows)
        else:
            await queries.record_locations(
                self.store,
                self.src_key,
                [(c.digest.sha256, c.remote) for c in ready if c.digest and c.remote],
            )

    async def _write_local(self, items: list[Candidate]) -> None:
        """Write downloaded items into a local folder (staged, flushed, renamed)."""
        if not items:
            return
        files = []
        for c in items:
            meta = c.remote.meta if c.remote else ItemMeta()
            side = self._sidecar(c) if self.opts.sidecars else None
            files.append(StagedFile(c.rel, mtime=meta.created_at, sidecar=side, approved=True))
        unit = Unit("", files)
        await self.dst.write_batch(unit, [c.data or b"" for c in items])
        done: list[tuple[str, RemoteItem]] = []
        for c, f in zip(items, files, strict=True):
            c.data = None
            assert c.digest is not None
            if f.error is not None or f.final is None:
                self._item_failed(c, f.error or LocalIOError("not written", path=c.rel))
                continue
            meta = c.remote.meta if c.remote else ItemMeta()
            item = RemoteItem(
                remote_id=path_key(f.final), name=f.final, size=c.digest.size, meta=meta
            )
            done.append((c.digest.sha256, item))
            if f.already_there:  # the folder held these bytes under that name already
                self.summary.present += 1
                self.progress.tick(done=1)
                continue
            self.summary.copied += 1
            self.summary.bytes += c.digest.size
            self.progress.tick(done=1, copied=1, nbytes=c.digest.size)
        await queries.record_locations(self.store, self.dst_key, done)
        await self.store.release(self.dst_key, [c.digest.sha256 for c in items if c.digest])

    def _sidecar(self, c: Candidate) -> dict[str, Any]:
        """The JSON metadata written beside a backed-up image."""
        assert c.digest is not None
        item = c.remote
        return {
            "source": self.src_key,
            "remote_id": item.remote_id if item else c.source_id,
            "name": item.name if item else c.rel,
            "url": item.url if item else None,
            "sha256": c.digest.sha256,
            "md5": c.digest.md5 or md5_hex(c.data or b""),
            "size": c.digest.size,
            "metadata": (item.meta if item else ItemMeta()).to_json(),
        }

    async def _upload(self, c: Candidate) -> None:
        d = c.digest
        assert d is not None and c.data is not None
        refusal = self._refusal(c.data, c.rel)
        if refusal is not None:
            await self.store.release(self.dst_key, [d.sha256])
            self._item_failed(c, Rejected(refusal, remote=self.dst.name))
            c.data = None
            return
        src = UploadSource(
            name=c.rel.rsplit("/", 1)[-1],
            size=d.size,
            sha256=d.sha256,
            md5=d.md5 or md5_hex(c.data),
            mime=guess_mime(c.rel),
            data=c.data,
        )
        meta = (
            c.remote.meta
            if c.remote
            else ItemMeta(
                title=Path(c.rel).stem, created_at=c.scan.mtime_ns / 1e9 if c.scan else None
            )
        )
        try:
            item = await self.dst.upload(src, meta, rel_path=c.rel)
        except Duplicate:
            await self._journal(c, "skipped", error="host reports a duplicate upload")
            self.summary.present += 1
            self.progress.tick(done=1)
            await self.store.release(self.dst_key, [d.sha256])
            return
        except ImgsyncError as exc:
            await self.store.release(self.dst_key, [d.sha256])
            self.taken.discard(d.sha256)
            if exc.scope == "remote" or exc.scope == "run":
                self._remote_failed(exc)
            self._item_failed(c, exc)
            return
        finally:
            c.data = None
        await queries.record_locations(self.store, self.dst_key, [(d.sha256, item)])
        # "verified" when the host reported a checksum the provider compared (Chevereto's
        # md5); otherwise the upload was accepted but cannot be checked
        stage = "verified" if self.dst.features.checksums else "uploaded"
        await self._journal(c, stage, attempt=True)
        await self.store.release(self.dst_key, [d.sha256])
        self.summary.copied += 1
        self.summary.bytes += d.size
        self.progress.tick(done=1, copied=1, nbytes=d.size)

    def _refusal(self, data: bytes, rel: str) -> str | None:
        """Why the destination would refuse these bytes, checked before sending them."""
        limit = self.dst.features.max_upload_bytes
        if limit is not None and len(data) > limit:
            return f"{len(data)} bytes is over the host's upload limit of {limit} bytes"
        if sniff_image(data) is None:
            return "not an image (the content is not a known image format)"
        allowed = self.dst.features.accepted_extensions
        ext = rel.rsplit(".", 1)[-1].lower() if "." in rel else ""
        if allowed is not None and ext not in allowed and f".{ext}" not in allowed:
            return f"the host does not accept .{ext} files"
        return None

    # ---- used by the folder-to-folder path (pipeline/folders.py) -----------------

    def first_missing(self, sha256: str) -> bool:
        """True the first time these bytes turn up missing at the destination in this run;
        otherwise they are counted as already there."""
        if sha256 in self.dest_shas or sha256 in self.taken:
            self.summary.present += 1
            self.progress.tick(done=1)
            return False
        self.taken.add(sha256)
        return True

    def file_failed(self, rel: str, err: ImgsyncError, sha256: str | None) -> None:
        """Record a per-file failure of a local source file."""
        c = Candidate(path_key(rel), rel)
        if sha256 is not None:
            c.digest = Digest(sha256, None, 0)
        self._item_failed(c, err)

    async def record_hashed(self, files: Sequence[Any]) -> None:
        """Objects and ``local_files`` rows for source files just hashed."""
        root = self.src.folder
        assert root is not None
        rows, local_rows = [], []
        for f in files:
            d = f.digest
            rows.append((d.sha256, d.size, d.md5, guess_mime(f.rel)))
            scan = f.scan
            local_rows.append(
                (path_key(f.rel), KnownFile(scan.size, scan.mtime_ns, scan.inode, d.sha256, d.md5))
            )
        await queries.record_objects(self.store, rows)
        await queries.record_local_files(self.store, str(root), local_rows)

    async def record_written(self, done: Sequence[tuple[str, str, int, bool]]) -> None:
        """Locations for (sha256, final rel, size, already there) just committed at a local
        destination."""
        await queries.record_locations(
            self.store,
            self.dst_key,
            [
                (sha, RemoteItem(remote_id=path_key(rel), name=rel, size=size))
                for sha, rel, size, _already in done
            ],
        )
        for _sha, _rel, size, already in done:
            if already:
                self.summary.present += 1
                self.progress.tick(done=1)
                continue
            self.summary.copied += 1
            self.summary.bytes += size
            self.progress.tick(done=1, copied=1, nbytes=size)

    async def _journal_batch(self, stage: str, items: list[tuple[str, str | None]]) -> None:
        await queries.journal_many(
            self.store, self.opts.job, self.src_key, self.dst_key, stage, items
        )

    async def _journal(
        self, c: Candidate, stage: str, *, error: str | None = None, attempt: bool = False
    ) -> None:
        await queries.journal(
            self.store,
            self.opts.job,
            self.src_key,
            c.source_id,
            self.dst_key,
            stage,
            sha256=c.digest.sha256 if c.digest else None,
            error=error,
            attempt=attempt,
        )

    # ---- failures ------------------------------------------------------------------

    def _item_failed(self, c: Candidate, exc: ImgsyncError) -> None:
        from imgsync.log import redact

        message = redact(str(exc))  # it is printed, stored and shown by `status`
        self.failed_ids.add(c.source_id)
        self.summary.fail(display(key_path(c.source_id)), message)
        self.progress.tick(done=1, failed=1)
        if not self.opts.dry_run:
            self.failed_items.append((c, message))

    def _remote_failed(self, exc: ImgsyncError, *, listing: bool = False) -> None:
        if self.summary.remote_failure is None:
            from imgsync.log import redact

            where = "listing the source" if listing else "destination"
            self.summary.remote_failure = redact(f"{where}: {exc}")

    async def finish(self) -> None:
        """Write the failures of this run to the journal and flush state."""
        for c, msg in self.failed_items:
            await self._journal(c, "failed", error=msg, attempt=True)
        self.failed_items.clear()
        await self.store.flush()


# ---- thread-side helpers (run in worker threads, one call per batch) -------------------


def _read_and_hash(
    root: Path, batch: Sequence[Candidate], with_md5: bool
) -> list[ImgsyncError | None]:
    out: list[ImgsyncError | None] = []
    for c in batch:
        path = root / c.rel
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            out.append(LocalIOError("file vanished before it could be read", path=str(path)))
            continue
        except OSError as exc:
            out.append(LocalIOError(f"cannot read: {exc.strerror}", path=str(path)))
            continue
        c.data = data
        c.digest = digest_bytes(data, with_md5)
        out.append(None)
    return out


__all__ = ["CopyOptions", "CopyRun", "Summary", "is_image_name", "safe_name"]
