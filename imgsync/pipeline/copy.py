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

import functools
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from imgsync.errors import (
    CutShort,
    Duplicate,
    ImgsyncError,
    LocalIOError,
    ProviderTimeout,
    Rejected,
    ReplyLost,
)
from imgsync.hashing import Digest
from imgsync.localfs import (
    TMP_PREFIX,
    ScanEntry,
    StagedFile,
    Unit,
    display,
    key_path,
    path_key,
    safe_name,
)
from imgsync.log import get_logger
from imgsync.models import (
    ItemMeta,
    Page,
    RemoteItem,
    UploadSource,
    guess_mime,
    is_image_name,
    sniff_image,
)
from imgsync.pipeline.committer import Committer
from imgsync.pipeline.fleetlist import SharedListing
from imgsync.pipeline.ledger import PageLedger
from imgsync.pipeline.plan import LocalPlan
from imgsync.pipeline.progress import Progress
from imgsync.pipeline.summary import CopyOptions, StopSignal, Summary
from imgsync.pipeline.transfer import Body, changed_since_scan, fetch, file_md5, read_local
from imgsync.providers.base import Provider
from imgsync.retry import RetryPolicy
from imgsync.state import queries
from imgsync.state.queries import KnownFile
from imgsync.state.reader import StateReader
from imgsync.state.store import StateStore

log = get_logger("imgsync.pipeline")

BATCH_FILES = 256
BATCH_BYTES = 8 * 1024 * 1024  # a larger file travels alone
HOST_BATCH = 16  # host items handed to a worker at once (each streamed on its own)


@dataclass(slots=True)
class Candidate:
    """One source item on its way through the pipeline."""

    source_id: str  # path key (local) or remote id
    rel: str  # relative path at a local destination; the base name is the upload name
    scan: ScanEntry | None = None
    known: KnownFile | None = None
    remote: RemoteItem | None = None
    sha256: str | None = None
    body: Body | None = None
    page: int = -1
    handed: bool = False  # given to the committer, which finishes it
    md5_done: anyio.Event | None = None  # set once a late MD5 (see _md5_late) is known
    taken_over: bool = False  # its lease was taken from a holder that did not finish

    @property
    def digest(self) -> Digest | None:
        return self.body.digest if self.body is not None else None


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
        self.taken: set[str] = set()  # checksums leased or done in this run
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
        self._committer: Committer | None = None  # host -> folder: the group writer
        # fleet mode: the listing is split page by page between the workers
        self.shared: SharedListing | None = None
        self._slots = anyio.Semaphore(max(1, opts.transfers))  # uploads in flight, run-wide
        self.relied: list[str] = []  # checksums found already there (this source relies on)
        # items another live imgsync (or fleet worker) held a lease on when this run got
        # there: their bodies dropped, checked again once the source is drained
        self.deferred: list[Candidate] = []
        self.include_non_images = opts.include_non_images or bool(
            src.config.option("include_non_images", False)
        )
        # downloads whose body broke off are fetched this many times in all
        self.cut_short_retry = RetryPolicy(attempts=4, base=0.25, cap=4.0)
        # bound once per run: each call through the module's lazy proxy binds anew (a
        # filtered-out debug line cost ~10 us per item that way, ~1 us bound)
        self._log = log.bind()
        self.with_md5 = (
            bool(dst.features.checksums & {"md5"}) or opts.sidecars or (not dst.features.is_local)
        )
        # a large local file bound for a host that does not compare MD5 before it answers:
        # only its SHA-256 (fast) is taken before the upload (the lease needs it); its MD5
        # (three times slower) is taken beside the upload, not before it
        self.md5_late = self.with_md5 and not (
            dst.features.checksums & {"md5"} or opts.sidecars or dst.features.is_local
        )

    @property
    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()

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
        s.links_skipped = [(display(p.rel), p.message) for p in plan.links]
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
            await self._record_relied()
            s.elapsed = time.monotonic() - started
            return s

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

        await self._drive(batches())
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
            self.shared = SharedListing(
                fleet, self.src, self.src_key, self.dst_key, sleep=self.opts.sleep or anyio.sleep
            )
        if reader is not None:
            if self.dst.features.batch_writes:  # files deleted there by hand
                known = await anyio.to_thread.run_sync(reader.items_at, self.dst_key)
                gone = await self.dst.missing(known)
                if gone:
                    await queries.forget_locations(self.store, self.dst_key, gone)
                    await self.store.flush()

            def load() -> tuple[str | None, bool]:  # big reads: off the event loop
                self.dest_shas = reader.shas_at(self.dst_key)
                self.known_remote = reader.items_at(self.src_key)
                if self.src.features.reencodes_uploads:
                    self.stored_remote = reader.stored_at(self.src_key)
                return reader.cursor_of(self.src_key, "list")

            saved, done = await anyio.to_thread.run_sync(load)
        self.start_cursor = saved if (not done or self.src.features.listing_appends) else None
        try:
            await self._drive(self._listing() if self.shared is None else self._shared_listing())
        finally:
            if self.shared is not None:
                await self.shared.release()  # pages left unfinished: for another worker
            await self._record_relied()
        self.summary.elapsed = time.monotonic() - started
        return self.summary

    async def _listing(self) -> AsyncIterator[list[Candidate]]:
        """The source's pages as batches of candidates; stops on the stop signal."""
        last_cursor: str | None = self.start_cursor
        async for page, cursor in self.src.iter_all(self.start_cursor):
            last_cursor = cursor
            batch = await self._page_candidates(page)
            resume = page.next_cursor if page.next_cursor is not None else cursor
            index = self.ledger.add(resume, len(batch))
            for c in batch:
                c.page = index
            if not batch:
                await self._page_progress()
            for start in range(0, len(batch), HOST_BATCH):
                yield batch[start : start + HOST_BATCH]
            if self.stopping:
                return
        self.listing_complete, self.last_cursor = True, last_cursor

    async def _page_candidates(self, page: Page) -> list[Candidate]:
        """A listed page's items still to copy (the rest counted as there or skipped)."""
        batch: list[Candidate] = []
        for item in page.items:
            self.summary.checked += 1
            if not item.is_image and not self.include_non_images:
                self.summary.non_images += 1
                continue
            sha = self.known_remote.get(item.remote_id)
            # a converting host's item is there if what was sent or what it serves is
            stored = self.stored_remote.get(item.remote_id)
            held = sha if sha in self.dest_shas else stored
            if sha is not None and held in self.dest_shas:
                self.summary.present += 1
                self.progress.tick(done=1)
                self.relied.append(held)
                continue
            batch.append(Candidate(item.remote_id, safe_name(item.name), remote=item))
        if batch and not self.opts.dry_run:
            await self._journal_batch("listed", [(c.source_id, c.sha256) for c in batch])
        return batch

    async def _shared_listing(self) -> AsyncIterator[list[Candidate]]:
        """Fleet mode: the pages this worker claims, until the fleet's round is complete."""
        shared = self.shared
        assert shared is not None
        while (got := await shared.next_page(lambda: self.stopping or self.halted)) is not None:
            claim, page = got
            batch = await self._page_candidates(page)
            index = self.ledger.add(None, len(batch))
            for c in batch:
                c.page = index
            await shared.track(index, claim, len(batch))
            for start in range(0, len(batch), HOST_BATCH):
                yield batch[start : start + HOST_BATCH]
            if self.stopping:
                return
        self.listing_complete = shared.complete

    async def _page_progress(self) -> None:
        """Save the cursor after every leading page whose items are all done."""
        if self.shared is not None:  # the fleet keeps the listing's place (fleet_pages)
            return
        resume = self.ledger.advance()
        if resume is not None and not self.opts.dry_run:
            await queries.save_cursor(self.store, self.src_key, "list", resume, done=False)

    # ---- the engine ----------------------------------------------------------------

    async def _drive(self, source: AsyncIterator[list[Candidate]]) -> None:
        send, recv = anyio.create_memory_object_stream[list[Candidate]](
            max_buffer_size=self.opts.transfers
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
                        except ImgsyncError as exc:
                            self._remote_failed(exc, listing=True)
            finally:
                if self._committer is not None:
                    self._committer.close()  # it writes what is left, then returns
        self._committer = None  # what is fetched again below is written directly
        await self._settle_deferred()
        if (
            self.listing_complete
            and self.ledger.settled  # every page's items are done (failed ones keep theirs)
            and not self.summary.remote_failure
            and not self.opts.dry_run
            and not self.stopping
            and self.shared is None
        ):
            await queries.save_cursor(self.store, self.src_key, "list", self.last_cursor, done=True)

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
                await self._process(batch)
                await self._settle([c for c in batch if not c.handed])

    async def _settle(self, done: list[Candidate]) -> None:
        """Listed items that are finished (copied, failed or given up): their pages."""
        if done and done[0].page >= 0:
            for c in done:
                self.ledger.finish(c.page, ok=c.source_id not in self.failed_ids)
            await self._page_progress()
            if self.shared is not None and not (self.halted or self.stopping):
                await self.shared.finished(c.page for c in done)

    async def _process(self, batch: list[Candidate]) -> None:
        if batch[0].scan is not None:
            ready = await self._read_batch(batch)
            if ready:  # those whose MD5 comes late are recorded once it is known
                await self._record_sources([c for c in ready if not self._md5_pending(c)])
                await self._deliver_group(ready)
            return
        # host items stream one by one; what is fetched is handed on in groups (one lease
        # transaction per group, one flush per folder batch) bounded by the bytes held
        group: list[Candidate] = []
        held = 0
        for i, c in enumerate(batch):
            if self.halted or self.stopping:
                self._give_up(batch[i:])
                break
            if not await self._fetch(c):
                continue
            if self._committer is not None:  # written (and recorded) in groups
                await self._committer.put(c)
                continue
            await self._record_sources([c])
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
                self._give_up(group)
            else:  # a stop signal: what was fetched is still written and recorded
                await self._record_sources(group)
                await self._write_group(group)
        finally:
            for c in group:
                if c.body is not None:
                    c.body.discard()
        await self._settle(group)

    async def _hand_on(self, group: list[Candidate]) -> None:
        if self.dst.features.batch_writes:
            await self._write_group(group)
        else:
            await self._deliver_group(group)

    def _give_up(self, rest: Sequence[Candidate]) -> None:
        for c in rest:
            if c.body is not None:
                c.body.discard()
        self.summary.not_attempted += len(rest)

    # ---- fetching ------------------------------------------------------------------

    async def _read_batch(self, batch: list[Candidate]) -> list[Candidate]:
        """Read and hash a batch of local files in one thread hop; failures are recorded."""
        root = self.src.folder
        assert root is not None
        threshold = self.opts.spool_threshold

        def read_all() -> list[ImgsyncError | None]:
            out: list[ImgsyncError | None] = []
            for c in batch:
                assert c.scan is not None
                try:
                    late = self.md5_late and c.scan.size > threshold
                    c.body = read_local(
                        root / c.rel, c.scan.size, self.with_md5 and not late, threshold
                    )
                except LocalIOError as exc:
                    out.append(exc)
                    continue
                out.append(None)
            return out

        def read_all_unchanged() -> list[ImgsyncError | None]:
            out = read_all()
            for i, c in enumerate(batch):
                if out[i] is None and c.body is not None and c.scan is not None:
                    problem = changed_since_scan(root / c.rel, c.scan, c.body.digest.size)
                    if problem is not None:  # still being written: never send it truncated
                        c.body.discard()
                        out[i] = problem
            return out

        results = await anyio.to_thread.run_sync(read_all_unchanged)
        ready = []
        for c, err in zip(batch, results, strict=True):
            if err is None:
                ready.append(c)
            else:
                self._item_failed(c, err)
        return ready

    async def _fetch(self, c: Candidate) -> bool:
        """Stream one host item (within the per-item deadline); False when it failed."""
        assert c.remote is not None
        self.progress.current = c.rel
        spool = self.dst.folder if self.dst.features.batch_writes else self.spool_dir
        policy = self.cut_short_retry
        try:
            with anyio.fail_after(self.opts.item_timeout):
                # a body cut off mid-way is fetched again from the start, a few times,
                # within this run (opening it is retried by the HTTP client)
                for attempt in range(1, policy.attempts + 1):
                    try:
                        c.body = await fetch(
                            self.src,
                            c.remote,
                            spool_dir=spool,
                            spool_threshold=self.opts.spool_threshold,
                            max_item_bytes=self.opts.max_item_bytes,
                            with_md5=self.with_md5,
                            check_image=c.remote.is_image,
                            on_chunk=functools.partial(self.progress.received, c.rel),
                        )
                        break
                    except CutShort as exc:
                        if attempt == policy.attempts:
                            raise CutShort(
                                f"{exc.detail}; gave up after {attempt} attempts",
                                remote=exc.remote,
                                host=exc.host,
                                status=exc.status,
                            ) from None
                        await policy.sleep(policy.backoff(attempt))
        except TimeoutError:
            self._item_failed(c, self._timeout("downloading"))
            return False
        except ImgsyncError as exc:
            if exc.scope == "remote":
                self._remote_failed(exc)
            self._item_failed(c, exc)
            return False
        if not self.opts.dry_run and not self.dst.features.batch_writes:
            await self._journal(c, "fetched")
        return True

    def _timeout(self, doing: str) -> ProviderTimeout:
        return ProviderTimeout(
            f"gave up {doing} after the per-item deadline of {self.opts.item_timeout:g} s",
            remote=self.src.name,
        )

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
                converts=self.src.features.reencodes_uploads,
                later=True,  # fleet mode: shared with the next release or finished page
            )

    # ---- delivering ----------------------------------------------------------------

    async def _deliver_group(self, items: list[Candidate]) -> None:
        """Upload fetched items to a host destination: dedupe, one lease for the group,
        then the uploads, up to ``--transfers`` at once in the whole run (each recorded
        and committed before it counts). Items another live imgsync holds are waited for."""
        todo: list[Candidate] = []
        try:
            for c in items:
                assert c.body is not None
                if self.first_missing(c.body.digest.sha256):
                    todo.append(c)
                else:
                    c.body.discard()
            if self.opts.dry_run:
                for c in todo:
                    self._would_copy(c)
                return
            if not todo:
                return
            ours, held = await self._lease_group(todo)
            self._defer(held)
            await self._upload_all(ours)
        finally:
            for c in items:
                if c.body is not None:
                    c.body.discard()

    async def _lease_group(self, todo: list[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
        """Lease ``todo`` at the destination: (leased to this run, held by another live
        imgsync). What is recorded there meanwhile is counted as already there."""
        shas = [c.digest.sha256 for c in todo if c.digest]
        leased = await self.store.lease(self.dst_key, shas)
        mine, present = leased
        ours, held = [], []
        for c in todo:
            assert c.body is not None
            sha = c.body.digest.sha256
            if sha in mine:
                c.taken_over = sha in leased.taken_over
                ours.append(c)
            elif sha in present:  # recorded there meanwhile
                self._present([sha])
                self.relied.append(sha)
                c.body.discard()
            else:  # leased by another live process: not there (yet)
                held.append(c)
        return ours, held

    def _clock(self) -> float:
        return (self.opts.clock or time.monotonic)()

    def _defer(self, held: list[Candidate]) -> None:
        """Items another live imgsync holds: not there (yet); checked again at the end."""
        for c in held:
            assert c.body is not None
            c.sha256 = c.body.digest.sha256
            c.body.discard()
            c.body = None
            self.taken.discard(c.sha256)
            self.failed_ids.add(c.source_id)  # a listing's cursor stays before it
            self.deferred.append(c)

    async def _settle_deferred(self) -> None:
        """Wait (up to ``lease_wait``, re-checking every ``lease_poll``) for the leases
        others held: recorded meanwhile -> already there; released, expired or its owner
        dead -> read or fetched again and sent. What is still held is reported as not
        done, naming the holder."""
        if not self.deferred:
            return
        deadline = self._clock() + self.opts.lease_wait
        sleep = self.opts.sleep or anyio.sleep
        while self.deferred and not (self.halted or self.stopping):
            now = self._clock()
            if now >= deadline:
                break
            await sleep(min(self.opts.lease_poll, deadline - now))
            waiting, self.deferred = self.deferred, []
            shas = [c.sha256 for c in waiting if c.sha256]
            leased = await self.store.lease(self.dst_key, shas)
            mine, present = leased
            again: list[Candidate] = []
            for c in waiting:
                assert c.sha256 is not None
                if c.sha256 in present:  # the other run recorded it
                    self._present([c.sha256])
                    self.relied.append(c.sha256)
                elif c.sha256 in mine:  # released, expired or its owner died: ours now
                    self.failed_ids.discard(c.source_id)
                    c.taken_over = c.sha256 in leased.taken_over
                    again.append(c)
                else:
                    self.deferred.append(c)
            for start in range(0, len(again), HOST_BATCH):
                await self._process(again[start : start + HOST_BATCH])
        if not self.deferred:
            return
        from imgsync.state.db import describe_owner

        holders = await self.store.holders(
            self.dst_key, [c.sha256 for c in self.deferred if c.sha256]
        )
        for c in self.deferred:
            owner = holders.get(c.sha256 or "")
            self.summary.held_by.add(describe_owner(owner) if owner else "owner unknown")
            self.summary.held += 1
            self.progress.tick(done=1)
        self.deferred.clear()

    async def _upload_all(self, ours: list[Candidate]) -> None:
        """Upload leased items, each in its own task, within the run's transfer slots."""
        if not ours:
            return

        async def one(c: Candidate) -> None:
            body = c.body
            assert body is not None
            sha = body.digest.sha256
            try:
                async with self._slots:
                    if self.halted or self.stopping:
                        await self.store.release(self.dst_key, [sha])
                        self._give_up([c])
                        return
                    try:
                        with anyio.fail_after(self.opts.item_timeout):
                            sent = await self._upload(c, body)
                    except TimeoutError:
                        await self.store.release(self.dst_key, [sha])
                        self.taken.discard(sha)
                        self._item_failed(c, self._timeout("uploading"))
                        return
                    # recorded within the slot (a kill redoes at most --transfers uploads)
                    # but outside the deadline: a sent upload never counts as failed
                    if sent is not None:
                        await self._record_upload(c, body.digest, *sent)
            finally:
                body.discard()

        try:
            async with anyio.create_task_group() as tg:
                for c in ours:
                    tg.start_soon(one, c)
        except BaseExceptionGroup as group:  # one failure: raise it as it is
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    def _would_copy(self, c: Candidate) -> None:
        assert c.digest is not None
        self.summary.copied += 1
        self.summary.bytes += c.digest.size
        if len(self.summary.would_copy) < 1000:
            name = display(key_path(c.source_id))
            if c.remote is not None:  # a host item: its name, and where it is
                name = f"{display(c.rel)} {c.remote.url or c.remote.remote_id}"
            self.summary.would_copy.append(name)
        self.progress.tick(done=1, copied=1)

    def _present(self, shas: Sequence[str]) -> None:
        """Counted as already there (another worker, job or process has it)."""
        n = max(1, len(shas))
        self.summary.present += n
        self.progress.tick(done=n)

    def _md5_pending(self, c: Candidate) -> bool:
        """A local file whose MD5 is taken beside its upload (see ``md5_late``)."""
        body = c.body
        return (
            self.md5_late
            and body is not None
            and body.path is not None
            and body.digest.md5 is None
            and c.scan is not None
        )

    async def _upload(self, c: Candidate, body: Body) -> tuple[RemoteItem, str | None] | None:
        """Send one leased item: what the host answered (and the note to journal when it
        may have left a duplicate), or None when it was not uploaded (recorded as such).

        A large file's MD5, when it is not needed before sending, is taken in a thread
        while the upload goes out (a second read of a file the upload just read into the
        page cache, on the other core), then the file is recorded with it."""
        if not self._md5_pending(c):
            return await self._upload_now(c, body)
        assert body.path is not None
        done = c.md5_done = anyio.Event()
        path = body.path

        async def late_md5() -> None:
            try:
                md5 = await anyio.to_thread.run_sync(file_md5, path)
                if md5 is not None:
                    body.digest = body.digest._replace(md5=md5)
            finally:
                done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(late_md5)
            try:
                sent = await self._upload_now(c, body)
            finally:
                with anyio.CancelScope(shield=True):
                    await done.wait()
                    if not self.opts.dry_run:
                        await self._record_sources([c])
        return sent

    async def _upload_now(self, c: Candidate, body: Body) -> tuple[RemoteItem, str | None] | None:
        self.progress.current = c.rel
        d = body.digest
        if body.data is not None:  # nothing to read: no thread hop
            refusal = self._refusal(body, c.rel)
        else:
            refusal = await anyio.to_thread.run_sync(self._refusal, body, c.rel)
        if refusal is not None:
            await self.store.release(self.dst_key, [d.sha256])
            self._item_failed(c, Rejected(refusal, remote=self.dst.name))
            return None
        src = body.upload_source(
            c.rel.rsplit("/", 1)[-1],
            guess_mime(c.rel),
            functools.partial(self.progress.sent, c.rel),
        )
        meta = (
            c.remote.meta
            if c.remote
            else ItemMeta(
                title=Path(c.rel).stem, created_at=c.scan.mtime_ns / 1e9 if c.scan else None
            )
        )
        try:
            item, duplicate_note = await self._send(c, src, meta)
        except Duplicate:
            await self._journal(c, "skipped", error="host reports a duplicate upload")
            await self.store.release(self.dst_key, [d.sha256])
            self._present([d.sha256])
            return None
        except ImgsyncError as exc:
            await self.store.release(self.dst_key, [d.sha256])
            self.taken.discard(d.sha256)
            if exc.scope == "remote" or exc.scope == "run":
                if self.summary.remote_failure is not None:  # already stopped: left, not failed
                    self.summary.not_attempted += 1
                    self.progress.tick(done=1)
                    return None
                self._remote_failed(exc)
            self._item_failed(c, exc)
            return None
        return item, duplicate_note

    async def _record_upload(
        self, c: Candidate, d: Digest, item: RemoteItem, duplicate_note: str | None
    ) -> None:
        """The upload is committed to state (then its lease released) before the item
        counts as done."""
        await queries.record_locations(self.store, self.dst_key, [(d.sha256, item)], later=True)
        await queries.record_owners(self.store, self.dst_key, self.src_key, [d.sha256], wrote=True)
        # "verified" when the host reported a checksum the provider compared (Chevereto's
        # md5) of the bytes it stores; a host that re-encodes uploads stores other bytes
        features = self.dst.features
        stage = "verified" if features.checksums and not features.reencodes_uploads else "uploaded"
        await self._journal(c, stage, error=duplicate_note, attempt=True)
        await self.store.flush()
        await self.store.release(self.dst_key, [d.sha256])
        self.summary.copied += 1
        self.summary.bytes += d.size
        self.progress.tick(done=1, copied=1, nbytes=d.size)
        self.log_item(c.rel, item.url or item.remote_id, d.size)

    def log_item(self, name: str, where: str, size: int) -> None:
        """One line per transferred item, with where it is now (its new URL)."""
        emit = self._log.info if self.opts.log_items else self._log.debug
        emit(
            "transferred",
            job=self.opts.job,
            item=display(name),
            dest=self.dst.name,
            url=where,
            bytes=size,
        )

    async def _send(
        self, c: Candidate, src: UploadSource, meta: ItemMeta
    ) -> tuple[RemoteItem, str | None]:
        """Upload ``src``; with the note to journal when it may have left a duplicate.

        An upload whose reply broke off after the host got it is never re-sent blindly: a
        host that can be listed is searched for it first; otherwise (or when it is not
        found) it is sent once more, and the possible extra copy is reported. So is one
        whose lease was taken over from a holder that did not finish (killed, or its
        lease expired): that holder may have sent it already.
        """
        if c.taken_over:
            found, src = await self._find_sent(c, src)
            if found is not None:
                self._log.info(
                    "found at the destination",
                    item=display(c.rel),
                    dest=self.dst.name,
                    why="its lease was taken over from a run that did not finish",
                )
                return found, None
        try:
            return await self.dst.upload(src, meta, rel_path=c.rel), None
        except ReplyLost as lost:
            first = lost
        shown = display(key_path(c.source_id))
        found, src = await self._find_sent(c, src)
        if found is not None:
            return found, None
        try:
            item = await self.dst.upload(src, meta, rel_path=c.rel)
        except ReplyLost as again:
            note = (
                f"possible duplicate: the replies to both uploads of {shown} broke off; "
                f"{self.dst.name} may hold up to two copies imgsync has no delete link for"
            )
            self.summary.possible_duplicates.append((shown, note))
            raise ReplyLost(f"{note} ({again.detail})", remote=self.dst.name) from None
        note = (
            f"possible duplicate: the reply to the first upload of {shown} broke off "
            f"({first.detail}), so it was sent once more; {self.dst.name} may hold an "
            "extra copy imgsync has no delete link for"
        )
        self.summary.possible_duplicates.append((shown, note))
        return item, note

    async def _find_sent(
        self, c: Candidate, src: UploadSource
    ) -> tuple[RemoteItem | None, UploadSource]:
        """The item an earlier upload of ``src`` made at the destination, when it can be
        listed (None: not found, or it cannot be listed); and ``src``, with its MD5 when
        that was being taken late (so it is looked for by its MD5 too)."""
        if not self.dst.features.can_list:
            return None, src
        if src.md5 is None and c.md5_done is not None:
            await c.md5_done.wait()
            if c.body is not None and c.body.digest.md5 is not None:
                src = replace(src, md5=c.body.digest.md5)
        try:
            return await self.dst.find_upload(src, rel_path=c.rel), src
        except ImgsyncError as exc:
            if exc.scope != "item":
                raise
            return None, src

    def _refusal(self, body: Body, rel: str) -> str | None:
        """Why the destination would refuse these bytes, checked before sending them."""
        size = body.digest.size
        limit = self.dst.features.max_upload_bytes
        if limit is not None and size > limit:
            return f"{size} bytes is over the host's upload limit of {limit} bytes"
        try:
            head = body.head()
        except OSError as exc:
            return f"cannot read: {exc.strerror}"
        if sniff_image(head) is None:
            return "not an image (the content is not a known image format)"
        allowed = self.dst.features.accepted_extensions
        ext = rel.rsplit(".", 1)[-1].lower() if "." in rel else ""
        if allowed is not None and ext not in allowed and f".{ext}" not in allowed:
            return f"the host does not accept .{ext} files"
        return None

    async def _write_group(self, items: list[Candidate]) -> None:
        """Write fetched host items into a folder destination (staged, flushed, renamed)."""
        todo = []
        for c in items:
            assert c.body is not None
            if self.first_missing(c.body.digest.sha256):
                todo.append(c)
            else:
                c.body.discard()
        if self.opts.dry_run:
            for c in todo:
                self._would_copy(c)
                assert c.body is not None
                c.body.discard()
            return
        if not todo:
            return
        ours, held = await self._lease_group(todo)
        self._defer(held)
        if not ours:
            return
        try:
            await self._write_local(ours)
        finally:
            for c in ours:
                if c.body is not None:
                    c.body.discard()
            await self.store.release(self.dst_key, [c.digest.sha256 for c in ours if c.digest])

    async def _write_local(self, items: list[Candidate]) -> None:
        files = []
        for c in items:
            meta = c.remote.meta if c.remote else ItemMeta()
            side = self._sidecar(c) if self.opts.sidecars else None
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
        await self.dst.write_batch(unit, bodies)
        done: list[tuple[str, RemoteItem]] = []
        counts: list[tuple[Candidate, StagedFile]] = []
        for c, f in zip(items, files, strict=True):
            assert c.digest is not None
            if f.error is not None or f.final is None:
                self._item_failed(c, f.error or LocalIOError("not written", path=c.rel))
                continue
            meta = c.remote.meta if c.remote else ItemMeta()
            item = RemoteItem(
                remote_id=path_key(f.final), name=f.final, size=c.digest.size, meta=meta
            )
            done.append((c.digest.sha256, item))
            counts.append((c, f))
        await queries.record_locations(self.store, self.dst_key, done, later=True)  # see release
        await queries.record_owners(
            self.store, self.dst_key, self.src_key, [s for s, _ in done], wrote=True
        )
        await self.store.flush()  # written and recorded before they count as done
        for c, f in counts:
            assert c.digest is not None
            if f.already_there:  # the folder held these bytes under that name already
                self._present([c.digest.sha256])
                continue
            self.summary.copied += 1
            self.summary.bytes += c.digest.size
            self.progress.tick(done=1, copied=1, nbytes=c.digest.size)
            final = f.final or c.rel
            self.log_item(final, os.path.join(str(self.dst.folder), final), c.digest.size)

    def _sidecar(self, c: Candidate) -> dict[str, Any]:
        """The JSON metadata written beside a backed-up image."""
        assert c.digest is not None
        item = c.remote
        return {
            "source": self.src.name,
            "remote_id": item.remote_id if item else c.source_id,
            "name": item.name if item else c.rel,
            "url": item.url if item else None,
            "sha256": c.digest.sha256,
            "md5": c.digest.md5,
            "size": c.digest.size,
            "metadata": (item.meta if item else ItemMeta()).to_json(),
        }

    # ---- used by the folder-to-folder path (pipeline/folders.py) -----------------

    def first_missing(self, sha256: str) -> bool:
        """True the first time these bytes turn up missing at the destination in this run;
        otherwise they are counted as already there."""
        if sha256 in self.dest_shas or sha256 in self.taken:
            self.summary.present += 1
            self.progress.tick(done=1)
            if sha256 in self.dest_shas:
                self.relied.append(sha256)
            return False
        self.taken.add(sha256)
        return True

    def file_failed(self, rel: str, err: ImgsyncError, sha256: str | None) -> None:
        """Record a per-file failure of a local source file."""
        c = Candidate(path_key(rel), rel)
        if sha256 is not None:
            c.body = Body(Digest(sha256, None, 0))
        self._item_failed(c, err)

    async def record_hashed(self, files: Iterable[StagedFile]) -> None:
        """Objects and ``local_files`` rows for source files just hashed."""
        root = self.src.folder
        assert root is not None
        rows, local_rows = [], []
        for f in files:
            d, scan = f.digest, f.scan
            assert d is not None and scan is not None
            rows.append((d.sha256, d.size, d.md5, guess_mime(f.rel)))
            local_rows.append(
                (path_key(f.rel), KnownFile(scan.size, scan.mtime_ns, scan.inode, d.sha256, d.md5))
            )
        await queries.record_objects(self.store, rows)
        await queries.record_local_files(self.store, str(root), local_rows)

    async def record_written(self, done: Sequence[tuple[str, str, int, bool]]) -> None:
        """Locations for (sha256, final rel, size, already there) just committed at a local
        destination; committed to state before they count as done."""
        await queries.record_locations(
            self.store,
            self.dst_key,
            [
                (sha, RemoteItem(remote_id=path_key(rel), name=rel, size=size))
                for sha, rel, size, _already in done
            ],
        )
        await queries.record_owners(
            self.store, self.dst_key, self.src_key, [d[0] for d in done if not d[3]], wrote=True
        )
        self.relied.extend(d[0] for d in done if d[3])
        await self.store.flush()
        for _sha, rel, size, already in done:
            if already:
                self.summary.present += 1
                self.progress.tick(done=1)
                continue
            self.summary.copied += 1
            self.summary.bytes += size
            self.progress.tick(done=1, copied=1, nbytes=size)
            self.log_item(rel, os.path.join(str(self.dst.folder), rel), size)

    async def _record_relied(self) -> None:
        """This source relies on bytes it found already at the destination."""
        if self.relied and not self.opts.dry_run:
            await queries.record_owners(
                self.store, self.dst_key, self.src_key, set(self.relied), wrote=False
            )
            self.relied.clear()

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
        if not listing:  # items already listed are still worth fetching after a listing failure
            self.halted = True

    async def finish(self) -> None:
        """Write the failures of this run to the journal and flush state."""
        for c, msg in self.failed_items:
            await self._journal(c, "failed", error=msg, attempt=True)
        self.failed_items.clear()
        await self._record_relied()
        await self.store.flush()


__all__ = ["TMP_PREFIX", "CopyOptions", "CopyRun", "Summary", "is_image_name", "safe_name"]
