"""The copy run's sources: a host's listing (page by page, or the fleet's shared
listing), the candidates a listed page still needs, a host item streamed in, and a
batch of local files read and hashed in one thread hop."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from imgsync.errors import CutShort, ImgsyncError, LocalIOError, Rejected
from imgsync.localfs import safe_name
from imgsync.localfs.scan import matches
from imgsync.models import Page
from imgsync.pipeline.candidate import HOST_BATCH, Candidate
from imgsync.pipeline.transfer import changed_since_scan, fetch, read_local
from imgsync.state import queries

if TYPE_CHECKING:
    from imgsync.pipeline.copy import CopyRun


class Sources:
    """Where a run's items come from (one per run; the run holds what the parts share)."""

    def __init__(self, run: CopyRun) -> None:
        self.run = run

    async def listing(self) -> AsyncIterator[list[Candidate]]:
        """The source's pages as batches of candidates; stops on the stop signal."""
        last_cursor: str | None = self.run.start_cursor
        async for page, cursor in self.run.src.iter_all(self.run.start_cursor):
            last_cursor = cursor
            batch = await self.page_candidates(page)
            resume = page.next_cursor if page.next_cursor is not None else cursor
            index = self.run.ledger.add(resume, len(batch))
            for c in batch:
                c.page = index
            if not batch:
                await self.page_progress()
            for start in range(0, len(batch), HOST_BATCH):
                yield batch[start : start + HOST_BATCH]
            if self.run.stopping:
                return
        self.run.listing_complete, self.run.last_cursor = True, last_cursor

    async def page_candidates(self, page: Page) -> list[Candidate]:
        """A listed page's items still to copy (the rest counted as there or skipped)."""
        batch: list[Candidate] = []
        include, exclude = self.run.opts.include, self.run.opts.exclude
        filtered = bool(include or exclude)
        for item in page.items:
            name = None
            if filtered:
                # --include/--exclude: the name the item gets in a folder, matched as a
                # folder scan matches a file's (one outside the filter is not looked at:
                # neither counted nor recorded, so a run without the filter takes it)
                name = safe_name(item.name)
                if not matches(name, include, exclude):
                    self.run.summary.filtered += 1  # "skipped by filter: N"
                    continue
            self.run.summary.checked += 1
            if not item.is_image and not self.run.include_non_images:
                self.run.summary.non_images += 1
                continue
            sha = self.run.known_remote.get(item.remote_id)
            # a converting host's item is there if what was sent or what it serves is
            stored = self.run.stored_remote.get(item.remote_id)
            held = sha if sha in self.run.dest_shas else stored
            if sha is not None and held in self.run.dest_shas:
                self.run.summary.present += 1
                self.run.progress.tick(done=1)
                self.run.relied.append(held)
                if sha in self.run.bare_sidecars:  # its sidecar was deleted by hand
                    self.run.sidecars_due.append((item, sha, self.run.bare_sidecars.pop(sha)))
                continue
            rel = name if name is not None else safe_name(item.name)
            batch.append(Candidate(item.remote_id, rel, remote=item))
        if batch and not self.run.opts.dry_run:
            await self.run.records.journal_batch("listed", [(c.source_id, c.sha256) for c in batch])
        return batch

    async def shared_listing(self) -> AsyncIterator[list[Candidate]]:
        """Fleet mode: the pages this worker claims, until the fleet's round is complete."""
        shared = self.run.shared
        assert shared is not None
        while (
            got := await shared.next_page(lambda: self.run.stopping or self.run.halted)
        ) is not None:
            claim, page = got
            batch = await self.page_candidates(page)
            index = self.run.ledger.add(None, len(batch))
            for c in batch:
                c.page = index
            await shared.track(index, claim, len(batch))
            for start in range(0, len(batch), HOST_BATCH):
                yield batch[start : start + HOST_BATCH]
            if self.run.stopping:
                return
        self.run.listing_complete = shared.complete

    async def page_progress(self) -> None:
        """Save the cursor after every leading page whose items are all done."""
        if self.run.shared is not None:  # the fleet keeps the listing's place (fleet_pages)
            return
        resume = self.run.ledger.advance()
        if resume is not None and not self.run.opts.dry_run:
            await queries.save_cursor(
                self.run.store, self.run.src_key, self.run.list_scope, resume, done=False
            )

    async def read_ahead(
        self, batches: AsyncIterator[list[Candidate]]
    ) -> AsyncIterator[list[Candidate]]:
        """Local batches read and hashed one at a time, in order, ahead of the uploads:
        the next batch is read while the workers send the ones before it (also with
        ``--transfers 1``), and a large file is hashed alone, so the first one goes out
        as soon as it is hashed rather than when every worker's file is. The copy run
        takes a batch from here only when a worker is free, so at most one read batch
        waits (memory stays flat). What is read after a stop or a failed destination is
        handed on unread (counted as not attempted there)."""
        async for batch in batches:
            if self.run.stopping or self.run.halted:
                yield batch
                continue
            ready = await self.read_batch(batch)
            if ready:
                yield ready

    async def read_batch(self, batch: list[Candidate]) -> list[Candidate]:
        """Read and hash a batch of local files in one thread hop; failures are recorded."""
        root = self.run.src.folder
        assert root is not None
        threshold = self.run.opts.spool_threshold
        follow_links = self.run.opts.follow_links
        cap = self.run.opts.max_item_bytes  # --max-item-size: a larger file fails unread

        def read_all() -> list[ImgsyncError | None]:
            # -L: a link is read only if it stays inside the folder (as the scan followed it)
            follow_root = os.path.realpath(root) if follow_links else None
            out: list[ImgsyncError | None] = []
            for c in batch:
                assert c.scan is not None
                if c.scan.size > cap:
                    out.append(_too_large(cap))
                    continue
                try:
                    c.body = read_local(
                        root / c.rel, c.scan.size, self.run.with_md5, threshold, follow_root
                    )
                except LocalIOError as exc:
                    out.append(exc)
                    continue
                if c.body.digest.size > cap:  # grew past the cap since the scan
                    c.body.discard()
                    out.append(_too_large(cap))
                    continue
                out.append(None)
            return out

        def read_all_unchanged() -> list[ImgsyncError | None]:
            out = read_all()
            for i, c in enumerate(batch):
                if out[i] is None and c.body is not None and c.scan is not None:
                    problem = changed_since_scan(
                        root / c.rel, c.scan, c.body.digest.size, c.body.stamp
                    )
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
                self.run.item_failed(c, err)
        return ready

    async def fetch_item(self, c: Candidate) -> bool:
        """Stream one host item (within the per-item deadline); False when it failed."""
        assert c.remote is not None
        self.run.progress.current = c.rel
        spool = self.run.dst.folder if self.run.dst.features.batch_writes else self.run.spool_dir
        policy = self.run.cut_short_retry
        # the deadline as a bare cancel scope (what anyio.fail_after wraps in two generator
        # context managers: a few microseconds per item)
        deadline = anyio.current_time() + self.run.opts.item_timeout
        try:
            with anyio.CancelScope(deadline=deadline) as scope:
                # a body cut off mid-way is fetched again from the start, a few times,
                # within this run (opening it is retried by the HTTP client)
                for attempt in range(1, policy.attempts + 1):
                    try:
                        c.body = await fetch(
                            self.run.src,
                            c.remote,
                            spool_dir=spool,
                            spool_threshold=self.run.opts.spool_threshold,
                            max_item_bytes=self.run.opts.max_item_bytes,
                            with_md5=self.run.with_md5,
                            check_image=c.remote.is_image,
                            on_chunk=functools.partial(self.run.progress.received, c.rel),
                            # written to a folder: hashed by the committer, a group at a
                            # time in a worker thread (see Body)
                            defer_hash=self.run.dst.features.batch_writes,
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
            if scope.cancelled_caught:  # only its deadline cancels this scope
                raise TimeoutError
        except TimeoutError:
            self.run.item_failed(c, self.run.timeout("downloading"))
            return False
        except ImgsyncError as exc:
            if exc.scope == "remote":
                self.run.remote_failed(exc)
            self.run.item_failed(c, exc)
            return False
        if not self.run.opts.dry_run and not self.run.dst.features.batch_writes:
            await self.run.records.journal(c, "fetched")
        return True


def _too_large(cap: int) -> Rejected:
    """``--max-item-size``: the one-line failure of a local file larger than ``cap``."""
    return Rejected(f"larger than the per-item size cap of {cap} bytes")
