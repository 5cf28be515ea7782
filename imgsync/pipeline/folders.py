"""Folder-to-folder copies: the async driver over :mod:`imgsync.localfs.stage`.

Workers stage one source folder each in a thread; the engine dedupes what they hashed;
staged files are committed (one flush, then renames) every ``COMMIT_FILES`` and at the end.
"""

from __future__ import annotations

import gc
import os
from typing import TYPE_CHECKING, Protocol

from imgsync.errors import LinkSkipped
from imgsync.localfs import ScanEntry, Unit, display, make_units, path_key

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from anyio.streams.memory import MemoryObjectReceiveStream

    from imgsync.errors import ImgsyncError
    from imgsync.localfs import StagedFile
    from imgsync.pipeline.progress import Progress
    from imgsync.pipeline.records import Written
    from imgsync.pipeline.summary import CopyOptions, Summary
    from imgsync.providers.base import Provider


class FolderRun(Protocol):
    """What the folder path needs of the run it works for (the copy engine's run)."""

    src: Provider
    dst: Provider
    opts: CopyOptions
    summary: Summary
    replaceable: dict[str, str]
    progress: Progress

    @property
    def stopping(self) -> bool: ...

    def first_missing(self, sha256: str, rel: str | None = None) -> bool: ...

    def file_failed(self, rel: str, err: ImgsyncError, sha256: str | None) -> None: ...

    async def record_hashed(self, files: Iterable[StagedFile]) -> None: ...

    async def record_written(self, done: Sequence[Written]) -> None: ...


# ---- the async driver ---------------------------------------------------------------

COMMIT_FILES = 4096  # staged files per commit (bounds what a crash leaves in staging)


async def copy_folders(run: FolderRun, entries: list[ScanEntry]) -> None:
    """Copy the scanned source files ``entries`` into a local folder.

    Workers stage one source folder each (at most one per CPU: more threads only queue on
    the GIL and on folder locks); the engine dedupes what they hashed; staged
    files are committed every ``COMMIT_FILES`` and at the end.
    """
    import anyio

    src_root = run.src.folder
    assert src_root is not None
    with_md5 = bool(run.dst.features.checksums & {"md5"})
    pending: list[Unit] = []
    counts = {"staged": 0, "scheduled": 0}
    commit_lock = anyio.Lock()

    async def commit() -> None:
        async with commit_lock:
            units = list(pending)
            pending.clear()
            counts["staged"] = counts["scheduled"] = 0
            if not units:
                return
            await run.dst.commit(units)
            # the source files hashed since the last commit, recorded in one go: per-folder
            # writes while staging runs cost about 15% of a big copy (GIL and thread hops)
            await run.record_hashed([f for unit in units for f in unit.staged])
            done = []
            for unit in units:
                for f in unit.staged:
                    if not f.approved:
                        continue
                    assert f.digest is not None
                    if f.error is not None:
                        run.file_failed(f.rel, f.error, f.digest.sha256)
                        continue
                    assert f.final is not None
                    done.append((f.digest.sha256, f.final, f.digest.size, f.already_there, f.stamp))
            await run.record_written(done)

    async def worker(recv: MemoryObjectReceiveStream[Unit]) -> None:
        async with recv:
            async for unit in recv:
                if unit.files:  # the progress line names what is being copied now
                    run.progress.current = unit.files[0].rel
                await run.dst.stage_copy(
                    src_root, unit, with_md5, run.opts.max_item_bytes, run.opts.follow_links
                )
                for f in unit.files:
                    if isinstance(f.error, LinkSkipped):  # swapped for a link since the scan
                        run.summary.link_skipped(display(f.rel), str(f.error), at_read=True)
                        run.progress.tick(done=1)
                    elif f.error is not None and f not in unit.staged:
                        run.file_failed(f.rel, f.error, None)
                wanted = [
                    f for f in unit.staged if f.digest and run.first_missing(f.digest.sha256, f.rel)
                ]
                # No SQLite claim here: a folder destination needs none. A file only becomes
                # visible by an atomic rename, and a commit that finds the same bytes at
                # the target drops its copy, so two processes copying the same files
                # cannot both write them (and 2 x 20,000 claim rows cost a third of a
                # second on a big copy).
                for f in wanted:
                    f.approved = True
                    f.ours = run.replaceable.get(path_key(f.rel))
                pending.append(unit)
                counts["staged"] += len(unit.staged)
                if counts["staged"] >= COMMIT_FILES and not counts["scheduled"]:
                    if commit_lock.locked():  # the last commit is still running: wait
                        await commit()
                    else:  # committed by a task of its own: this worker stages on meanwhile
                        counts["scheduled"] = 1
                        tg.start_soon(commit)

    send, recv = anyio.create_memory_object_stream[Unit](max_buffer_size=4)
    workers = max(1, min(run.opts.transfers, os.cpu_count() or 1))
    # A few objects per file, none in a cycle: the cyclic collector would walk the whole
    # heap again and again (three full passes on 20,000 files, each holding the GIL and
    # so every staging thread: about a tenth of a fresh copy's CPU). It waits until the
    # copy is over (as during the scan); plain reference counting frees what it can.
    collecting = gc.isenabled()
    gc.disable()
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker, recv.clone())
            recv.close()
            async with send:
                for unit in make_units(entries):
                    if run.stopping:  # the stop signal: hand out nothing more
                        break
                    await send.send(unit)
        await commit()
    finally:
        if collecting:
            gc.enable()
