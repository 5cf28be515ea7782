"""The copy engine: sources -> transfer workers -> the one recorder.

::

    source ──batches──▶ N workers: fetch+hash ─▶ dedupe+lease ─▶ upload/write ─▶ record
    (folder plan or      (bounded anyio stream: a slow destination pushes back on the source;
     listing pages)       a stop signal makes the source stop handing out items)

One task group per run. A folder source is read and hashed in batches per thread hop (a
hop per file costs more than hashing it); a host source streams item by item through
:mod:`imgsync.pipeline.transfer` (a bounded buffer, spooled to disk when large). A folder
destination (``features.batch_writes``) takes whole batches: staged, one flush, renamed
(folder-to-folder copies take :mod:`imgsync.pipeline.folders`, the faster path end to end).

The run (:class:`CopyRun`, here) holds what the parts share (options, state store, the
summary and progress, what is known at the destination, the failures) and drives the
workers; each part is a small class holding the run:

* :mod:`imgsync.pipeline.sources` -- the listing (page by page, or the fleet's shared
  listing), a listed page's candidates, a host item streamed in, a local batch read;
* :mod:`imgsync.pipeline.delivery` -- to a host: leases, deferred items, the uploads,
  the search for an upload whose reply was lost, refusals checked before sending;
* :mod:`imgsync.pipeline.writing` -- to a folder: a group leased, written, sidecars;
* :mod:`imgsync.pipeline.records` -- what is recorded in state, and the journal;
* :mod:`imgsync.pipeline.candidate` -- one item on its way, and the batch sizes.

What the run promises (DESIGN.md "State"):

* every checksum is leased for the destination before its upload starts; the lease is
  re-checked against what is recorded there, so two workers, jobs or processes never
  upload the same bytes to the same place;
* an upload or a written file is recorded (location, owner, journal) and *committed*
  before the item counts as done: a kill loses at most the items in flight;
* bytes that are not an image are never written or recorded;
* what this source wrote (or relies on) at the destination is recorded as its own, so
  ``sync`` deletes only that.

Item failures are recorded and the run goes on; a remote-wide failure (bad credentials,
a paused host) stops work for that destination only.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from imgsync.errors import ImgsyncError, LinkSkipped, ProviderTimeout, StateError
from imgsync.hashing import Digest
from imgsync.localfs import (
    TMP_PREFIX,
    StagedFile,
    Unit,
    display,
    key_path,
    path_key,
    safe_name,
    write_sidecars,
)
from imgsync.log import get_logger
from imgsync.models import RemoteItem, is_image_name
from imgsync.pipeline.candidate import BATCH_BYTES, BATCH_FILES, Candidate
from imgsync.pipeline.committer import Committer
from imgsync.pipeline.delivery import Delivery
from imgsync.pipeline.fleetlist import SharedListing
from imgsync.pipeline.ledger import PageLedger
from imgsync.pipeline.plan import LocalPlan
from imgsync.pipeline.progress import Progress
from imgsync.pipeline.records import Recorder, Written
from imgsync.pipeline.sources import Sources
from imgsync.pipeline.summary import CopyOptions, StopSignal, Summary
from imgsync.pipeline.transfer import Body
from imgsync.pipeline.writing import FolderWriter
from imgsync.providers.base import Provider
from imgsync.retry import RetryPolicy
from imgsync.state import queries
from imgsync.state.fleet import pages as fleet_pages
from imgsync.state.reader import StateReader
from imgsync.state.store import StateStore

log = get_logger("imgsync.pipeline")


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
        stop: StopSignal | None = None,
    ) -> None:
        self.store = store
        self.src, self.src_key = src, src_key
        self.dst, self.dst_key = dst, dst_key
        self.opts = opts
        self.progress = progress
        self.stop = stop
        self.summary = Summary(opts.verb, src_key, dst_key, dry_run=opts.dry_run)
        self.dest_shas: set[str] = set()
        # dest path -> sha256 imgsync wrote there from the same source path; such a file may
        # be replaced by a newer version (local sources only: host items never change)
        self.replaceable: dict[str, str] = {}
        # folder -> folder: every source path gets its file (see first_missing)
        self.paths_kept = src.folder is not None and dst.folder is not None
        self.taken: set[str] = set()  # checksums leased or done in this run
        # backup: sha256 -> file of this source's images whose sidecar was deleted by hand,
        # and those the listing found (item, sha256, file): their sidecars are written again
        self.bare_sidecars: dict[str, str] = {}
        self.sidecars_due: list[tuple[RemoteItem, str, str]] = []
        self.ledger = PageLedger()
        self.known_remote: dict[str, str] = {}  # source remote id -> sha256, from state
        self.stored_remote: dict[str, str] = {}  # ... -> sha256 served, if it converted
        self.start_cursor: str | None = None
        self.failed_items: list[tuple[Candidate, str]] = []
        self.failed_ids: set[str] = set()
        self.listing_complete = False  # the listing reached its end
        self.last_cursor: str | None = None  # the cursor of the listing's last page
        # where large downloads bound for a host wait (a folder destination's own root
        # otherwise, so they can be renamed into place); None: the system's temp folder
        self.spool_dir: Path | None = None
        self.halted = False  # a remote failed as a whole: workers take no more items
        # the state failed (PostgreSQL dropped this worker): uploads in flight finish and
        # are recorded in this machine's state, then the run stops with this error
        self.state_error: StateError | None = None
        self._committer: Committer | None = None  # host -> folder: the group writer
        # fleet mode: the listing is split page by page between the workers
        self.shared: SharedListing | None = None
        self.relied: list[str] = []  # checksums found already there (this source relies on)
        self.include_non_images = opts.include_non_images or bool(
            src.config.option("include_non_images", False)
        )
        # downloads whose body broke off are fetched this many times in all
        self.cut_short_retry = RetryPolicy(attempts=4, base=0.25, cap=4.0)
        # bound once per run: each call through the module's lazy proxy binds anew (a
        # filtered-out debug line cost ~10 us per item that way, ~1 us bound)
        self._log = log.bind()
        # MD5 (2.3x the CPU of SHA-256) is taken only where it is used: a host that reports
        # one (Chevereto compares it with what it stored) and sidecars. A host that reports
        # none (Gyazo, Guizhan, Discord Images) never sees it: the one use there, Gyazo's
        # image_id as an MD5 hint in the lost-reply search, takes it then (Delivery)
        self.with_md5 = bool(dst.features.checksums & {"md5"}) or opts.sidecars
        # the run's parts (each holds this run, which keeps what they share)
        self.sources = Sources(self)
        # a filtered listing keeps its own place: a later run without the filter (or
        # with another) lists again the items this one left out
        globs = fleet_pages.filter_text(opts.include, opts.exclude, False)
        self.list_scope = f"list {globs}" if globs else "list"
        self.delivery = Delivery(self)
        self.writer = FolderWriter(self)
        self.records = Recorder(self)

    @property
    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    # ---- the entry points ----------------------------------------------------------

    async def run_local(self, plan: LocalPlan) -> Summary:
        """Copy what ``plan`` found missing at the destination."""
        started = time.monotonic()
        self.dest_shas = plan.dest_shas
        self.replaceable = plan.dest_items
        s = self.summary
        s.checked, s.present, s.non_images = plan.scanned, plan.present, plan.non_images
        s.filtered = plan.filtered
        s.altered = plan.altered
        for p in plan.problems:
            s.fail(display(p.rel), p.message)
        s.links_skipped = [(display(p.rel), p.message) for p in plan.links]
        self.progress.total = plan.scanned
        self.progress.tick(done=plan.present)
        if plan.vanished and not self.opts.dry_run:
            await queries.forget_local_files(self.store, str(plan.root), plan.vanished)
        if self.dst.features.batch_writes and not self.opts.dry_run:
            from imgsync.pipeline.folders import copy_folders

            # the scanned files as they are (no candidate per file: the folder path
            # stages from the scan and keeps its own per-file record)
            await copy_folders(self, [*plan.to_hash, *(e for e, _k in plan.to_send)])
            await self.records.record_relied()
            s.elapsed = time.monotonic() - started
            return s
        cands = [Candidate(path_key(e.rel), e.rel, scan=e) for e in plan.to_hash]
        cands += [
            Candidate(path_key(e.rel), e.rel, scan=e, known=k, sha256=k.sha256)
            for e, k in plan.to_send
        ]

        async def batches() -> AsyncIterator[list[Candidate]]:
            cur: list[Candidate] = []
            size = 0
            for c in cands:
                cur.append(c)
                size += c.scan.size if c.scan else 0
                if len(cur) >= BATCH_FILES or size >= BATCH_BYTES:
                    yield cur
                    cur, size = [], 0
            if cur:
                yield cur

        await self._drive(self.sources.read_ahead(batches()), read_ahead=True)
        s.elapsed = time.monotonic() - started
        return s

    async def run_remote(self, reader: StateReader | None) -> Summary:
        """Copy from a listable remote, page by page, resuming from the saved cursor."""
        started = time.monotonic()
        saved, done = None, False
        fleet = self.store.fleet
        if fleet is not None and not self.opts.dry_run:
            # what the other workers found and uploaded counts as known here
            await queries.import_fleet_locations(self.store, self.src_key)
            await queries.import_fleet_locations(self.store, self.dst_key)
            filters = fleet_pages.filter_text(
                self.opts.include, self.opts.exclude, self.include_non_images
            )
            self.shared = SharedListing(
                fleet,
                self.src,
                self.src_key,
                self.dst_key,
                sleep=self.opts.sleep or anyio.sleep,
                filters=filters,
            )
            await self.shared.begin()  # a worker listing with other filters stops here
        relist = False  # something of this source's went missing: list it all again
        bare: dict[str, str] = {}  # sha256 -> file whose sidecar the user deleted
        if reader is not None:
            if self.dst.features.batch_writes:  # files (or sidecars) deleted there by hand
                known = await anyio.to_thread.run_sync(reader.items_at, self.dst_key)
                check_sidecars = self.opts.sidecars and not self.opts.dry_run
                sides = (
                    await anyio.to_thread.run_sync(reader.sidecars_at, self.dst_key)
                    if check_sidecars
                    else None
                )
                gone, no_sidecar = await self.dst.missing_and_bare(
                    known, sidecars=check_sidecars, recorded=sides
                )
                bare = {known[k]: k for k in no_sidecar}
                if gone:
                    await queries.forget_locations(self.store, self.dst_key, gone)
                    await self.store.flush()
                    relist = True

            def load() -> tuple[str | None, bool]:  # big reads: off the event loop
                self.dest_shas = reader.shas_at(self.dst_key)
                self.known_remote = reader.items_at(self.src_key)
                if self.src.features.reencodes_uploads:
                    self.stored_remote = reader.stored_at(self.src_key)
                return reader.cursor_of(self.src_key, self.list_scope)

            saved, done = await anyio.to_thread.run_sync(load)
            if bare:  # only this source's items can get their sidecar back from its listing
                mine = set(self.known_remote.values())
                self.bare_sidecars = {sha: rel for sha, rel in bare.items() if sha in mine}
                relist = relist or bool(self.bare_sidecars)
        resume = not done or self.src.features.listing_appends
        self.start_cursor = saved if resume and not relist else None
        try:
            await self._drive(
                self.sources.listing() if self.shared is None else self.sources.shared_listing()
            )
        finally:
            if self.shared is not None:
                await self.shared.release()  # pages left unfinished: for another worker
            await self.records.record_relied()
        if self.sidecars_due:
            await self._sidecars_again()
        self.summary.elapsed = time.monotonic() - started
        return self.summary

    async def _sidecars_again(self) -> None:
        """Write again the sidecars the user deleted, for images this listing found already
        backed up: from the listed item and the file itself (read once to check it still
        holds those bytes, and for its MD5); nothing is downloaded."""
        from imgsync.hashing import digest_bytes
        from imgsync.pipeline.transfer import Body

        root = self.dst.folder
        assert root is not None
        due, self.sidecars_due = self.sidecars_due, []

        def write() -> tuple[list[tuple[Candidate, ImgsyncError]], list[tuple[str, str]]]:
            files, cands = [], []
            for item, sha, rel in due:
                try:
                    with open(root / key_path(rel), "rb") as fh:
                        digest = digest_bytes(fh.read(), True)
                except OSError:
                    continue  # gone since: the next run copies it again
                if digest.sha256 != sha:
                    continue  # changed by hand: not this image's sidecar to write
                c = Candidate(item.remote_id, key_path(rel), remote=item, body=Body(digest))
                side = self.writer.sidecar(c)
                files.append(StagedFile(key_path(rel), sidecar=side, approved=True))
                files[-1].final = key_path(rel)
                cands.append(c)
            unit = Unit("", files, staged=files)
            write_sidecars(str(root), unit)
            failed = [(c, f.error) for c, f in zip(cands, files, strict=True) if f.error]
            made = [
                (path_key(f.final), f.sidecar_final)
                for f in files
                if f.error is None and f.final is not None and f.sidecar_final is not None
            ]
            return failed, made

        failed, made = await anyio.to_thread.run_sync(write)
        for c, err in failed:
            self.item_failed(c, err)
        if made:
            await queries.record_sidecars(self.store, self.dst_key, made)
            await self.store.flush()
            self.summary.sidecars_restored += len(made)

    # ---- the engine ----------------------------------------------------------------

    async def _drive(
        self, source: AsyncIterator[list[Candidate]], *, read_ahead: bool = False
    ) -> None:
        # batches read ahead (their bytes in memory) are handed over only to a free worker
        send, recv = anyio.create_memory_object_stream[list[Candidate]](
            max_buffer_size=0 if read_ahead else self.opts.transfers
        )
        if self.dst.features.batch_writes and not self.opts.dry_run:
            self._committer = Committer(self)
        async with anyio.create_task_group() as outer:
            if self._committer is not None:
                outer.start_soon(self._committer.run)
            try:
                async with anyio.create_task_group() as tg:
                    for _ in range(self.opts.transfers):
                        tg.start_soon(self._worker, recv.clone())
                    recv.close()
                    async with send:
                        try:
                            await self._feed(source, send)
                        except StateError as exc:
                            self.state_failed(exc)
                        except ImgsyncError as exc:
                            self.remote_failed(exc, listing=True)
            finally:
                if self._committer is not None:
                    self._committer.close()  # it writes what is left, then returns
        self._committer = None  # what is fetched again below is written directly
        if self.state_error is not None:
            raise self.state_error
        await self.delivery.settle_deferred()
        if (
            self.listing_complete
            and self.ledger.settled  # every page's items are done (failed ones keep theirs)
            and not self.summary.remote_failure
            and not self.opts.dry_run
            and not self.stopping
            and self.shared is None
        ):
            await queries.save_cursor(
                self.store, self.src_key, self.list_scope, self.last_cursor, done=True
            )

    async def _feed(
        self, source: AsyncIterator[list[Candidate]], send: MemoryObjectSendStream[list[Candidate]]
    ) -> None:
        async for batch in source:
            if self.stopping:
                self.summary.not_attempted += len(batch)
                break
            await send.send(batch)

    async def _worker(self, recv: MemoryObjectReceiveStream[list[Candidate]]) -> None:
        async with recv:
            async for batch in recv:
                if self.halted or self.stopping:
                    self.summary.not_attempted += len(batch)
                    continue
                try:
                    await self.process(batch)
                    await self._settle([c for c in batch if not c.handed])
                except StateError as exc:  # the other workers' uploads in flight finish
                    self.state_failed(exc)

    async def _settle(self, done: list[Candidate]) -> None:
        """Listed items that are finished (copied, failed or given up): their pages."""
        if done and done[0].page >= 0:
            for c in done:
                self.ledger.finish(c.page, ok=c.source_id not in self.failed_ids)
            await self.sources.page_progress()
            if self.shared is not None and not (self.halted or self.stopping):
                await self.shared.finished(c.page for c in done)

    async def process(self, batch: list[Candidate]) -> None:
        if batch[0].scan is not None:  # read ahead already, or taken again (deferred)
            read = all(c.body is not None for c in batch)
            ready = batch if read else await self.sources.read_batch(batch)
            if ready:
                await self.records.record_sources(ready)
                await self.delivery.deliver_group(ready)
            return
        # host items stream one by one; what is fetched is handed on in groups (one lease
        # transaction per group, one flush per folder batch) bounded by the bytes held
        group: list[Candidate] = []
        held = 0
        for i, c in enumerate(batch):
            if self.halted or self.stopping:
                self.give_up(batch[i:])
                break
            if not await self.sources.fetch_item(c):
                continue
            if self._committer is not None:  # written (and recorded) in groups
                await self._committer.put(c)
                continue
            await self.records.record_sources([c])
            group.append(c)
            held += c.body.in_memory if c.body else 0
            if held >= BATCH_BYTES:
                await self._hand_on(group)
                group, held = [], 0
        if group:
            await self._hand_on(group)

    async def commit_group(self, group: list[Candidate]) -> None:
        """The committer's step: record where the items came from, write them into the
        folder destination (one flush), then finish their pages."""
        try:
            if self.halted:  # the destination failed as a whole
                self.give_up(group)
            else:  # a stop signal: what was fetched is still written and recorded
                await self.records.record_sources(group)
                await self.writer.write_group(group)
        finally:
            for c in group:
                if c.body is not None:
                    c.body.discard()
        await self._settle(group)

    async def _hand_on(self, group: list[Candidate]) -> None:
        if self.dst.features.batch_writes:
            await self.writer.write_group(group)
        else:
            await self.delivery.deliver_group(group)

    def give_up(self, rest: Sequence[Candidate]) -> None:
        for c in rest:
            if c.body is not None:
                c.body.discard()
        self.summary.not_attempted += len(rest)

    # ---- what the parts share: counting, dedupe, failures ---------------------------

    def timeout(self, doing: str) -> ProviderTimeout:
        return ProviderTimeout(
            f"gave up {doing} after the per-item deadline of {self.opts.item_timeout:g} s",
            remote=self.src.name,
        )

    def would_copy(self, c: Candidate) -> None:
        assert c.digest is not None
        self.summary.copied += 1
        self.summary.bytes += c.digest.size
        if len(self.summary.would_copy) < 1000:
            name = display(key_path(c.source_id))
            if c.remote is not None:  # a host item: its name, and where it is
                name = f"{display(c.rel)} {c.remote.url or c.remote.remote_id}"
            self.summary.would_copy.append(name)
        self.progress.tick(done=1, copied=1)

    def present(self, shas: Sequence[str]) -> None:
        """Counted as already there (another worker, job or process has it)."""
        n = max(1, len(shas))
        self.summary.present += n
        self.progress.tick(done=n)

    def first_missing(self, sha256: str, rel: str | None = None) -> bool:
        """True the first time these bytes turn up missing at the destination in this run;
        otherwise they are counted as already there.

        ``rel``: a folder source's file. Into a folder, each source path gets its file (as
        rclone copy and a mirror do): its bytes count as there only when the destination
        holds them under that path, so a file renamed or copied in the source is written
        under its new name too (from the bytes staged while it was hashed: no second
        read). A host gets each image once."""
        if rel is not None and self.paths_kept:
            if self.replaceable.get(path_key(rel)) == sha256:
                self.summary.present += 1
                self.progress.tick(done=1)
                self.relied.append(sha256)
                return False
            self.taken.add(sha256)
            return True
        if sha256 in self.dest_shas or sha256 in self.taken:
            self.summary.present += 1
            self.progress.tick(done=1)
            if sha256 in self.dest_shas:
                self.relied.append(sha256)
            return False
        self.taken.add(sha256)
        return True

    def missing_of(self, items: list[Candidate]) -> list[Candidate]:
        """The fetched items whose bytes are still missing at the destination
        (:meth:`first_missing`); the bodies of the others are let go."""
        todo: list[Candidate] = []
        for c in items:
            assert c.body is not None
            if self.first_missing(c.body.digest.sha256, c.rel if c.scan is not None else None):
                todo.append(c)
            else:
                c.body.discard()
        return todo

    async def record_hashed(self, files: Iterable[StagedFile]) -> None:
        """The folder path's (:class:`~imgsync.pipeline.folders.FolderRun`) door to
        :meth:`Recorder.record_hashed`."""
        await self.records.record_hashed(files)

    async def record_written(self, done: Sequence[Written]) -> None:
        """The folder path's door to :meth:`Recorder.record_written`."""
        await self.records.record_written(done)

    def file_failed(self, rel: str, err: ImgsyncError, sha256: str | None) -> None:
        """Record a per-file failure of a local source file."""
        c = Candidate(path_key(rel), rel)
        if sha256 is not None:
            c.body = Body(Digest(sha256, None, 0))
        self.item_failed(c, err)

    def item_failed(self, c: Candidate, exc: ImgsyncError) -> None:
        from imgsync.log import redact

        if isinstance(exc, LinkSkipped):  # a source file swapped for a link since the scan
            self.summary.link_skipped(display(key_path(c.source_id)), str(exc), at_read=True)
            self.progress.tick(done=1)
            return
        message = redact(str(exc))  # it is printed, stored and shown by `status`
        self.failed_ids.add(c.source_id)
        self.summary.fail(display(key_path(c.source_id)), message)
        self.progress.tick(done=1, failed=1)
        if not self.opts.dry_run:
            self.failed_items.append((c, message))

    def remote_failed(self, exc: ImgsyncError, *, listing: bool = False) -> None:
        if self.summary.remote_failure is None:
            from imgsync.log import redact

            where = "listing the source" if listing else "destination"
            self.summary.remote_failure = redact(f"{where}: {exc}")
        if not listing:  # items already listed are still worth fetching after a listing failure
            self.halted = True

    def state_failed(self, exc: StateError) -> None:
        """The state cannot be written (PostgreSQL dropped this worker): take no more
        items; what is in flight finishes (and is recorded in this machine's state, which
        the next run shares), then the run stops with ``exc``."""
        if self.state_error is None:
            self.state_error = exc
        self.halted = True

    async def finish(self) -> None:
        """Write the failures of this run to the journal and flush state."""
        for c, msg in self.failed_items:
            await self.records.journal(c, "failed", error=msg, attempt=True)
        self.failed_items.clear()
        await self.records.record_relied()
        await self.store.flush()


__all__ = [
    "TMP_PREFIX",
    "Candidate",
    "CopyOptions",
    "CopyRun",
    "Summary",
    "is_image_name",
    "safe_name",
]
