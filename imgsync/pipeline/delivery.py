"""Delivering fetched items to a host destination: dedupe and one lease per group,
items another live imgsync holds (deferred, checked again at the end), the uploads
within the run's transfer slots, a lost reply searched for before sending again, and
what the host would refuse, checked before sending."""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from imgsync.errors import Duplicate, ImgsyncError, Rejected, ReplyLost, StateError
from imgsync.localfs import display, key_path
from imgsync.models import ItemMeta, RemoteItem, UploadSource, guess_mime, sniff_image
from imgsync.pipeline.candidate import HOST_BATCH, Candidate
from imgsync.pipeline.takeover import SharedSearch
from imgsync.pipeline.transfer import Body, source_md5

if TYPE_CHECKING:
    from imgsync.pipeline.copy import CopyRun


class Delivery:
    """Delivers fetched items to a host destination (one per run; see the module)."""

    def __init__(self, run: CopyRun) -> None:
        self.run = run
        self._slots = anyio.Semaphore(max(1, run.opts.transfers))  # uploads in flight, run-wide
        # items another live imgsync (or fleet worker) held a lease on when this run got
        # there: their bodies dropped, checked again once the source is drained
        self.deferred: list[Candidate] = []
        # the destination's listing read once for every lease this run takes over from a
        # holder that may have sent it (not once per lease): see ``pipeline.takeover``
        self.search = SharedSearch(run.dst, functools.partial(run.store.located, run.dst_key))

    async def deliver_group(self, items: list[Candidate]) -> None:
        """Upload fetched items to a host destination: dedupe, one lease for the group,
        then the uploads, up to ``--transfers`` at once in the whole run (each recorded
        and committed before it counts). Items another live imgsync holds are waited for."""
        try:
            todo = self.run.missing_of(items)
            if self.run.opts.dry_run:
                for c in todo:
                    self.run.would_copy(c)
                return
            if not todo:
                return
            ours, held = await self.lease_group(todo)
            self.defer(held)
            await self.upload_all(ours)
        finally:
            for c in items:
                if c.body is not None:
                    c.body.discard()

    async def lease_group(self, todo: list[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
        """Lease ``todo`` at the destination: (leased to this run, held by another live
        imgsync). What is recorded there meanwhile is counted as already there."""
        shas = [c.digest.sha256 for c in todo if c.digest]
        leased = await self.run.store.lease(self.run.dst_key, shas)
        mine, present = leased
        ours, held = [], []
        for c in todo:
            assert c.body is not None
            sha = c.body.digest.sha256
            if sha in mine:
                if sha in leased.taken_over:  # else as it was: a deferred item taken over
                    c.taken_over = True  # by settle_deferred's lease is leased again here
                    c.search_since = leased.since.get(sha)
                    c.taken_at = self.search.taken(c.search_since)
                ours.append(c)
            elif sha in present:  # recorded there meanwhile
                self.run.present([sha])
                self.run.relied.append(sha)
                c.body.discard()
            else:  # leased by another live process: not there (yet)
                held.append(c)
        return ours, held

    def _clock(self) -> float:
        return (self.run.opts.clock or time.monotonic)()

    def defer(self, held: list[Candidate]) -> None:
        """Items another live imgsync holds: not there (yet); checked again at the end."""
        for c in held:
            assert c.body is not None
            c.sha256 = c.body.digest.sha256
            c.body.discard()
            c.body = None
            self.run.taken.discard(c.sha256)
            self.run.failed_ids.add(c.source_id)  # a listing's cursor stays before it
            self.deferred.append(c)

    async def settle_deferred(self) -> None:
        """Wait (up to ``lease_wait``, re-checking every ``lease_poll``) for the leases
        others held: recorded meanwhile -> already there; released, expired or its owner
        dead -> read or fetched again and sent. What is still held is reported as not
        done, naming the holder."""
        if not self.deferred:
            return
        deadline = self._clock() + self.run.opts.lease_wait
        sleep = self.run.opts.sleep or anyio.sleep
        while self.deferred and not (self.run.halted or self.run.stopping):
            now = self._clock()
            if now >= deadline:
                break
            await sleep(min(self.run.opts.lease_poll, deadline - now))
            waiting, self.deferred = self.deferred, []
            shas = [c.sha256 for c in waiting if c.sha256]
            leased = await self.run.store.lease(self.run.dst_key, shas)
            mine, present = leased
            again: list[Candidate] = []
            for c in waiting:
                assert c.sha256 is not None
                if c.sha256 in present:  # the other run recorded it
                    self.run.present([c.sha256])
                    self.run.relied.append(c.sha256)
                elif c.sha256 in mine:  # released, expired or its owner died: ours now
                    self.run.failed_ids.discard(c.source_id)
                    c.taken_over = c.sha256 in leased.taken_over
                    c.search_since = leased.since.get(c.sha256)
                    if c.taken_over:
                        c.taken_at = self.search.taken(c.search_since)
                    again.append(c)
                else:
                    self.deferred.append(c)
            for start in range(0, len(again), HOST_BATCH):
                await self.run.process(again[start : start + HOST_BATCH])
        if not self.deferred:
            return
        from imgsync.state.db import describe_owner

        holders = await self.run.store.holders(
            self.run.dst_key, [c.sha256 for c in self.deferred if c.sha256]
        )
        for c in self.deferred:
            owner = holders.get(c.sha256 or "")
            self.run.summary.held_by.add(describe_owner(owner) if owner else "owner unknown")
            self.run.summary.held += 1
            self.run.progress.tick(done=1)
        self.deferred.clear()

    async def upload_all(self, ours: list[Candidate]) -> None:
        """Upload leased items, each in its own task, within the run's transfer slots."""
        if not ours:
            return
        begun: set[str] = set()  # checksums whose upload was started

        async def one(c: Candidate) -> None:
            body = c.body
            assert body is not None
            sha = body.digest.sha256
            try:
                async with self._slots:
                    if self.run.halted or self.run.stopping:
                        await self.run.store.release(self.run.dst_key, [sha])
                        self.run.give_up([c])
                        return
                    begun.add(sha)
                    try:
                        with anyio.fail_after(self.run.opts.item_timeout):
                            sent = await self._upload(c, body)
                    except TimeoutError:
                        await self.run.store.release(self.run.dst_key, [sha])
                        self.run.taken.discard(sha)
                        self.run.item_failed(c, self.run.timeout("uploading"))
                        return
                    # recorded within the slot (a kill redoes at most --transfers uploads)
                    # but outside the deadline: a sent upload never counts as failed
                    if sent is not None:
                        await self.run.records.record_upload(c, body.digest, *sent)
            except StateError as exc:
                # not the siblings' cancellation: their uploads may be at the host already,
                # so they finish and are recorded here (this machine's state) first
                self.run.state_failed(exc)
            finally:
                body.discard()

        try:
            try:
                async with anyio.create_task_group() as tg:
                    for c in ours:
                        tg.start_soon(one, c)
            except BaseException:
                await self._release_unsent(ours, begun)
                raise
        except BaseExceptionGroup as group:  # one failure: raise it as it is
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _release_unsent(self, ours: list[Candidate], begun: set[str]) -> None:
        """The uploads were cut short (Ctrl-C cancels the run): the leases of the items
        whose upload never started are given back, so the next run takes them as plain
        work, not as leases of a run that may have sent them (searched for, then sent
        and reported as possible duplicates). Best effort, bounded: a state that fails
        now leaves them to expire, as before."""
        unsent = [
            c.body.digest.sha256
            for c in ours
            if c.body is not None and c.body.digest.sha256 not in begun
        ]
        if not unsent:
            return
        with anyio.move_on_after(5, shield=True), contextlib.suppress(Exception):
            await self.run.store.release(self.run.dst_key, unsent)

    async def _upload(self, c: Candidate, body: Body) -> tuple[RemoteItem, str | None] | None:
        """Send one leased item: what the host answered (and the note to journal when it
        may have left a duplicate), or None when it was not uploaded (recorded as such)."""
        self.run.progress.current = c.rel
        d = body.digest
        if body.data is not None:  # nothing to read: no thread hop
            refusal = self._refusal(body, c.rel)
        else:
            refusal = await anyio.to_thread.run_sync(self._refusal, body, c.rel)
        if refusal is not None:
            await self.run.store.release(self.run.dst_key, [d.sha256])
            self.run.item_failed(c, Rejected(refusal, remote=self.run.dst.name))
            return None
        src = body.upload_source(
            c.rel.rsplit("/", 1)[-1],
            guess_mime(c.rel),
            functools.partial(self.run.progress.sent, c.rel),
        )
        meta = (
            c.remote.meta
            if c.remote
            else ItemMeta(title=_stem(c.rel), created_at=c.scan.mtime_ns / 1e9 if c.scan else None)
        )
        try:
            item, duplicate_note = await self._send(c, src, meta)
        except Duplicate:
            await self.run.records.journal(c, "skipped", error="host reports a duplicate upload")
            await self.run.store.release(self.run.dst_key, [d.sha256])
            self.run.present([d.sha256])
            return None
        except ImgsyncError as exc:
            await self.run.store.release(self.run.dst_key, [d.sha256])
            self.run.taken.discard(d.sha256)
            if exc.scope == "remote" or exc.scope == "run":
                if self.run.summary.remote_failure is not None:  # already stopped: left, not failed
                    self.run.summary.not_attempted += 1
                    self.run.progress.tick(done=1)
                    return None
                self.run.remote_failed(exc)
            self.run.item_failed(c, exc)
            return None
        return item, duplicate_note

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
            found, src = await self._find_sent(c, src, c.search_since, shared=True)
            if found is not None:
                self.run._log.info(
                    "found at the destination",
                    item=display(c.rel),
                    dest=self.run.dst.name,
                    why="its lease was taken over from a run that did not finish",
                )
                return found, None
        sent_at = time.time()
        shown = display(key_path(c.source_id))
        try:
            item = await self.run.dst.upload(src, meta, rel_path=c.rel)
        except ReplyLost as lost:
            first = lost
        else:
            if not (c.taken_over and not self.run.dst.features.can_list):
                return item, None
            # a holder that did not finish may have sent it, and the host cannot be searched
            note = (
                f"possible duplicate: the lease of {shown} was taken over from a run that did "
                f"not finish, and {self.run.dst.name} cannot be searched (its API cannot list "
                f"images), so it was sent; {self.run.dst.name} may hold an extra copy imgsync "
                "has no delete link for"
            )
            self.run.summary.possible_duplicates.append((shown, note))
            return item, note
        found, src = await self._find_sent(c, src, sent_at)
        if found is not None:
            return found, None
        try:
            item = await self.run.dst.upload(src, meta, rel_path=c.rel)
        except ReplyLost as again:
            note = (
                f"possible duplicate: the replies to both uploads of {shown} broke off; "
                f"{self.run.dst.name} may hold up to two copies imgsync has no delete link for"
            )
            self.run.summary.possible_duplicates.append((shown, note))
            raise ReplyLost(f"{note} ({again.detail})", remote=self.run.dst.name) from None
        note = (
            f"possible duplicate: the reply to the first upload of {shown} broke off "
            f"({first.detail}), so it was sent once more; {self.run.dst.name} may hold an "
            "extra copy imgsync has no delete link for"
        )
        self.run.summary.possible_duplicates.append((shown, note))
        return item, note

    async def _find_sent(
        self, c: Candidate, src: UploadSource, since: float | None, *, shared: bool = False
    ) -> tuple[RemoteItem | None, UploadSource]:
        """The item an earlier upload of ``src`` made at the destination, when it can be
        listed (None: not found, or it cannot be listed); and ``src``, with its MD5 (taken
        now when the run did not need it before: Gyazo's image ids look like the MD5 of the
        bytes, so the search matches on it). ``since``: when that upload was first sent
        (the search goes back to then), if known. ``shared``: a lease taken over, looked
        for in the run's one copy of the listing (:class:`SharedSearch`)."""
        if not self.run.dst.features.can_list:
            return None, src
        if src.md5 is None:
            md5 = await anyio.to_thread.run_sync(source_md5, src)
            if md5 is not None:
                src = replace(src, md5=md5)
        try:
            if shared and since is not None:
                found = await self.search.find(
                    src, rel_path=c.rel, since=since, taken_at=c.taken_at
                )
                return found, src
            return await self.run.dst.find_upload(src, rel_path=c.rel, since=since), src
        except ImgsyncError as exc:
            if exc.scope != "item":
                raise
            return None, src

    def _refusal(self, body: Body, rel: str) -> str | None:
        """Why the destination would refuse these bytes, checked before sending them."""
        size = body.digest.size
        limit = self.run.dst.features.max_upload_bytes
        if limit is not None and size > limit:
            return f"{size} bytes is over the host's upload limit of {limit} bytes"
        try:
            head = body.head()
        except OSError as exc:
            return f"cannot read: {exc.strerror}"
        if sniff_image(head) is None:
            return "not an image (the content is not a known image format)"
        allowed = self.run.dst.features.accepted_extensions
        ext = rel.rsplit(".", 1)[-1].lower() if "." in rel else ""
        if allowed is not None and ext not in allowed and f".{ext}" not in allowed:
            return f"the host does not accept .{ext} files"
        return None


def _stem(rel: str) -> str:
    """The file name of ``rel`` without its last extension (``Path(rel).stem``, without
    building a path per upload)."""
    name = rel.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    return name[:dot] if 0 < dot < len(name) - 1 else name
