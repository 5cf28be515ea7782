"""One job runner for every verb and every job: ``run_job()``.

``copy``, ``sync``, ``migrate``, ``backup`` and ``check`` on the command line, the daemon's
jobs and the demo all describe what to do as a :class:`JobSpec` and call :func:`run_job`
(or :func:`run_job_blocking`, which first plans a folder source without starting an event
loop, so a no-op re-run stays cheap). The recipe, in order:

1. resolve SRC and DST to remotes and state keys (a destination is keyed by what it is),
   check the pair makes sense, and move state recorded under a remote's old name key;
2. plan a folder source (scan, compare with state) -- or, for a host source, resume its
   listing from the saved cursor;
3. copy (:class:`~imgsync.pipeline.copy.CopyRun`), with a stop signal the daemon sets to
   make the sources stop handing out items;
4. ``sync``: delete what this source wrote and dropped (guarded); ``migrate``: write the
   URL map; remember a clean folder scan; record the run.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from imgsync.config import Config, RemoteConfig
from imgsync.errors import UsageError
from imgsync.pipeline.plan import LocalPlan, plan_local
from imgsync.pipeline.progress import Progress
from imgsync.pipeline.summary import CopyOptions, StopSignal, Summary
from imgsync.runtime import resolve_spec
from imgsync.state.reader import StateReader, must_open

if TYPE_CHECKING:
    from imgsync.pipeline.copy import CopyRun
    from imgsync.providers.base import Provider
    from imgsync.state.store import StateStore

# fleet mode: how long a finishing worker waits for the other workers' uploads in flight
FLEET_SETTLE = 300.0

VERBS = ("copy", "sync", "migrate", "backup", "check")


@dataclass(frozen=True)
class JobSpec:
    """What one run does: ``verb`` SRC -> DST with its options."""

    verb: str
    source: str  # NAME: or a folder
    dest: str
    options: CopyOptions = field(default_factory=CopyOptions)
    map_path: Path | None = None  # migrate: where the old -> new URL map goes
    verify_dest: bool = False  # list a host destination first; forget what is gone there
    gallery: bool = False  # backup: write/update the folder's index.html gallery
    report_path: Path | None = None  # write the run's report page (migrate --report)


@dataclass
class Resolved:
    spec: JobSpec
    src: RemoteConfig
    src_key: str
    dst: RemoteConfig
    dst_key: str

    def named(self, summary: Summary) -> Summary:
        """``summary`` showing the source and destination as the user named them."""
        summary.source_name = _shown(self.spec.source, self.src)
        summary.dest_name = _shown(self.spec.dest, self.dst)
        return summary

    @property
    def opts(self) -> CopyOptions:
        return self.spec.options


def _shown(spec: str, remote: RemoteConfig) -> str:
    """``gy:`` for a configured remote, a folder's full path, as the user reads them."""
    if remote.type == "local" and remote.path is not None and not spec.endswith(":"):
        return str(remote.path)
    return f"{remote.name}:"


def resolve(cfg: Config, spec: JobSpec) -> Resolved:
    """SRC and DST as remotes and state keys; ``UsageError`` for a pair that makes no sense."""
    if spec.verb not in VERBS:
        raise UsageError(f"unknown verb {spec.verb!r}")
    src_cfg, src_key = resolve_spec(cfg, spec.source)
    dst_cfg, dst_key = resolve_spec(cfg, spec.dest)
    if src_key == dst_key:
        raise UsageError("source and destination are the same")
    if spec.verb == "migrate" and src_cfg.type == "local":
        raise UsageError("migrate needs a host as its source (local files have no URLs to map)")
    if spec.verb == "sync" and src_cfg.type != "local":
        raise UsageError("sync needs a folder as its source for now; use copy from a host")
    if spec.verb == "backup" and dst_cfg.type != "local":
        raise UsageError("backup writes to a local folder; use copy between hosts")
    if dst_cfg.type == "local" and src_cfg.type == "local":
        assert src_cfg.path is not None and dst_cfg.path is not None
        if dst_cfg.path.is_relative_to(src_cfg.path) or src_cfg.path.is_relative_to(dst_cfg.path):
            raise UsageError("source and destination folders must not contain each other")
    return Resolved(spec, src_cfg, src_key, dst_cfg, dst_key)


def _adopt_names(db: StateReader, job: Resolved) -> None:
    """State written before destinations were keyed by what they are used the remote's
    name: move it to the new key once, so nothing is uploaded again."""
    for remote, key in ((job.src, job.src_key), (job.dst, job.dst_key)):
        if remote.type != "local":
            db.adopt_key(remote.name, key)


def prepare(cfg: Config, job: Resolved) -> LocalPlan | None:
    """Adopt old keys; plan a folder source. Synchronous (no event loop needed)."""
    with must_open(cfg.state_path) as db:
        _adopt_names(db, job)
        if job.src.type != "local":
            return None
        assert job.src.path is not None
        dest_root = job.dst.path if job.dst.type == "local" else None
        return plan_local(
            db,
            job.src.path,
            job.dst_key,
            job.opts.include,
            job.opts.exclude,
            dest_root=dest_root,
            follow_links=job.opts.follow_links,
            fresh=job.opts.verb == "check",
        )


def nothing_to_do(cfg: Config, job: Resolved, plan: LocalPlan) -> Summary | None:
    """The summary of a run whose plan is empty (and, for sync, nothing to delete); None
    when there is work. Saves the scan mark so the next re-run is cheaper still."""
    if not plan.empty or plan.problems:
        return None
    opts = job.opts
    # a plan that matched the saved scan mark needs no second look (unless sync deletes)
    if opts.verb == "sync" or not (plan.marked or opts.dry_run):
        with must_open(cfg.state_path) as db:
            if opts.verb == "sync":
                from imgsync.syncdelete import plan_deletes

                found = plan_deletes(
                    db, str(plan.root), job.src_key, job.dst_key, job.dst.type == "local", 0
                )
                if found.candidates:
                    return None
            if not opts.dry_run:
                mark, count, gen, saved = db.scan_mark(str(plan.root), job.dst_key)
                generation = db.dest_generation(job.dst_key)
                if mark != plan.fingerprint or (count, gen) != generation or saved == "":
                    state = plan.dest_state(lambda: db.items_at(job.dst_key))
                    if state is not None:
                        db.save_scan_mark(str(plan.root), job.dst_key, plan.fingerprint, state)
    return job.named(
        Summary(
            opts.verb,
            job.src_key,
            job.dst_key,
            dry_run=opts.dry_run,
            checked=plan.scanned,
            present=plan.present,
            non_images=plan.non_images,
            filtered=plan.filtered,
            links_skipped=skipped_links(plan),
            altered=plan.altered,
        )
    )


def skipped_links(plan: LocalPlan) -> list[tuple[str, str]]:
    """The symbolic links a plan left alone, as (printable path, why)."""
    from imgsync.localfs import display

    return [(display(p.rel), p.message) for p in plan.links]


def run_job_blocking(
    cfg: Config,
    spec: JobSpec,
    progress: Progress | None = None,
    before_async: Callable[[], None] | None = None,
) -> Summary:
    """:func:`run_job` for the command line: a folder plan with nothing to do returns
    without starting an event loop or importing the HTTP stack (``before_async`` runs
    only when there is work, e.g. to configure logging)."""
    started = time.monotonic()
    job = resolve(cfg, spec)
    if _verifies(job):
        import asyncio

        if before_async is not None:
            before_async()
            before_async = None
        asyncio.run(_verify_dest(cfg, job))
    plan = prepare(cfg, job)
    if plan is not None:
        quick = nothing_to_do(cfg, job, plan)
        if quick is not None:
            quick.elapsed = time.monotonic() - started
            _pages(cfg, job, quick)
            return quick
    import asyncio

    if before_async is not None:
        before_async()
    return asyncio.run(_run(cfg, job, plan, progress or Progress(), None))


async def run_job(
    cfg: Config,
    spec: JobSpec,
    *,
    progress: Progress | None = None,
    stop: StopSignal | None = None,
    admit: Callable[[LocalPlan], LocalPlan] | None = None,
) -> Summary:
    """Run one job to the end (or until ``stop`` is set: then the sources hand out no new
    items, what is in flight finishes and is recorded, and the next run resumes).
    ``admit`` may drop files from a folder source's plan (the daemon's complete-files rule)."""
    import anyio.to_thread

    job = resolve(cfg, spec)
    if _verifies(job):
        await _verify_dest(cfg, job)
    plan = await anyio.to_thread.run_sync(prepare, cfg, job)
    if plan is not None and admit is not None:
        plan = admit(plan)
    return await _run(cfg, job, plan, progress or Progress(), stop)


def _verifies(job: Resolved) -> bool:
    return job.spec.verify_dest and job.dst.type != "local"


async def _verify_dest(cfg: Config, job: Resolved) -> None:
    gone = await forget_gone_from_host(cfg, job)
    if gone:
        print(
            f"imgsync: {gone} items recorded at {job.spec.dest} are gone from it; "
            "they will be copied again",
            file=sys.stderr,
        )


async def _run(
    cfg: Config,
    job: Resolved,
    plan: LocalPlan | None,
    progress: Progress,
    stop: StopSignal | None,
) -> Summary:
    opts = job.opts
    created: Path | None = None  # the topmost folder this run made for a folder destination
    if job.dst.type == "local" and job.dst.path is not None and not opts.dry_run:
        created = _first_missing(job.dst.path)
        try:
            job.dst.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create {job.dst.path}: {exc.strerror}") from None
    try:
        summary = await _run_in(cfg, job, plan, progress, stop)
    except BaseException:
        _remove_if_unused(created, job.dst.path)
        raise
    if summary.copied == 0:
        _remove_if_unused(created, job.dst.path)
    return summary


def _first_missing(path: Path) -> Path | None:
    """The topmost folder of ``path`` that does not exist yet (None: it all exists)."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


def _remove_if_unused(created: Path | None, dest: Path | None) -> None:
    """A run that made its destination folder and wrote nothing into it takes it away
    again (a backup refused by the host before anything was copied leaves no empty
    folder behind); only empty folders are removed, from ``dest`` up to ``created``."""
    if created is None or dest is None:
        return
    import contextlib
    import os

    folder = dest
    with contextlib.suppress(OSError):
        while True:
            os.rmdir(folder)  # fails (and stops) on a folder that is not empty
            if folder == created:
                break
            folder = folder.parent


async def _run_in(
    cfg: Config,
    job: Resolved,
    plan: LocalPlan | None,
    progress: Progress,
    stop: StopSignal | None,
) -> Summary:
    import anyio.to_thread

    from imgsync.pipeline.copy import CopyRun
    from imgsync.runtime import Runtime
    from imgsync.state import queries
    from imgsync.state.store import StateStore

    opts = job.opts
    async with (
        StateStore(cfg.state_path, cfg.state_url, lease_ttl=cfg.lease_ttl) as store,
        Runtime(cfg) as rt,
    ):
        src = await rt.open(job.src)
        dst = await rt.open(job.dst)
        if plan is None and not src.features.can_list:
            raise UsageError(
                f"{job.src.name} ({job.src.type}) cannot be listed, so it can only be a destination"
            )
        run = CopyRun(store, src, job.src_key, dst, job.dst_key, opts, progress, stop=stop)
        job.named(run.summary)
        run.spool_dir = await anyio.to_thread.run_sync(_spool_dir, cfg)
        run_id = await queries.start_run(store, opts.job, opts.verb)
        if store.fleet is not None:
            progress.fleet = functools.partial(fleet_note, store.fleet.totals, opts.job)
            if not dst.features.can_list and not opts.dry_run:
                _fleet_unsearchable(job.dst.name, job.dst.type)
        # the line moves during one long transfer too (elapsed, the item's own clock)
        redraw = None
        if progress.enabled:
            import asyncio

            redraw = asyncio.ensure_future(progress.redraw())
        try:
            if plan is not None:
                summary = await run.run_local(plan)
            else:
                reader = await anyio.to_thread.run_sync(must_open, cfg.state_path)
                try:
                    summary = await run.run_remote(reader)
                finally:
                    reader.close()
        finally:
            if redraw is not None:
                redraw.cancel()
            progress.close()
            await run.finish()
        stopped = stop is not None and stop.is_set()
        clean = (
            not opts.dry_run
            and not summary.failed
            and not summary.remote_failure
            and not summary.held
            and not summary.links_at_read
        )
        if opts.verb == "sync" and plan is not None:
            if stopped:
                summary.delete_note = "nothing deleted: stopped before the end"
            else:
                await _sync_deletes(cfg, store, dst, job, plan, summary, run)
        if plan is not None and clean and not summary.deleted and not stopped:
            keys: list[str] = []
            if plan.dest_root is not None:  # what the state places at the destination now
                await store.flush()
                rows = await store.fetchall(
                    "SELECT remote_id FROM locations WHERE remote = ?", (job.dst_key,)
                )
                keys = [r[0] for r in rows]
            state = plan.dest_state(lambda: keys)
            if state is not None:
                await queries.save_scan_mark(
                    store, str(plan.root), job.dst_key, plan.fingerprint, state
                )
        if store.fleet is not None and not opts.dry_run and not stopped:
            # fleet mode: wait for the other workers' uploads in flight, then take in what
            # they recorded, so this worker's map and status cover the whole job
            await store.fleet.send_later()  # this worker's last locations, for the others
            await store.fleet.settle(job.dst_key, within=FLEET_SETTLE)
            await queries.import_fleet_locations(store, job.dst_key)
            await queries.import_fleet_locations(store, job.src_key)  # items others listed
        await queries.finish_run(store, run_id, summary.to_json())
    if opts.verb == "migrate" and not opts.dry_run and job.spec.map_path is not None:
        await anyio.to_thread.run_sync(write_url_map, cfg, job, job.spec.map_path, summary)
    await anyio.to_thread.run_sync(_pages, cfg, job, summary)
    return summary


def _fleet_unsearchable(name: str, kind: str) -> None:
    """Say once per run that a destination the fleet cannot search may get a duplicate
    of an upload a killed worker had in flight (counted in the summary if it happens)."""
    from imgsync.log import get_logger

    get_logger("imgsync.fleet").warning(
        "fleet_destination_not_searchable",
        dest=name,
        type=kind,
        note="its API cannot list images: if a worker dies mid-upload, the images it had "
        "in flight (at most --transfers) are sent again by the worker taking them over "
        "and may be stored twice (reported as possible duplicates)",
    )


def fleet_note(totals: dict[str, dict[str, int]], job: str) -> str:
    """The fleet's totals for a progress line: ``fleet: 312 copied, 2 failed of 900``."""
    stages = totals.get(job)
    if not stages:
        return ""
    copied = stages.get("uploaded", 0) + stages.get("verified", 0)
    return f"fleet: {copied} copied, {stages.get('failed', 0)} failed of {sum(stages.values())}"


def _pages(cfg: Config, job: Resolved, summary: Summary) -> None:
    """The pages a run leaves for people: the backup folder's gallery, the report."""
    if job.spec.gallery or job.spec.report_path is not None:
        from imgsync.pages import after_run

        after_run(
            cfg.state_path,
            summary,
            job=job.opts.job,
            dst_path=job.dst.path,
            gallery=job.spec.gallery,
            report=job.spec.report_path,
        )


def _spool_dir(cfg: Config) -> Path | None:
    """A private folder beside the state database for large downloads on their way to a
    host (they may be private images); what a killed run left there is swept."""
    import os

    from imgsync.localfs import sweep_stale

    folder = cfg.state_path.parent / "spool"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None  # the system's temp folder will do
    sweep_stale(str(folder))
    return folder if os.access(folder, os.W_OK) else None


def write_url_map(cfg: Config, job: Resolved, path: Path, summary: Summary) -> None:
    """Write the migration's old-URL -> new-URL map from what state knows (all runs)."""
    from imgsync.urlmap import write_map

    with must_open(cfg.state_path) as db:
        rows = db.url_map(job.src_key, job.dst_key)
    try:
        write_map(path, rows)
    except OSError as exc:
        raise UsageError(f"cannot write map {path}: {exc.strerror}") from None
    summary.map_rows = len(rows)
    summary.map_path = str(path)


async def _sync_deletes(
    cfg: Config,
    store: StateStore,
    dst: Provider,
    job: Resolved,
    local: LocalPlan,
    summary: Summary,
    run: CopyRun,
) -> None:
    """``sync``: after a clean copy, delete what this source wrote and dropped (guarded);
    a dry run lists what it would delete."""
    import anyio.to_thread

    from imgsync.state import queries
    from imgsync.syncdelete import DeletePlan, plan_deletes, run_deletes

    opts = job.opts
    root = str(local.root)
    if opts.dry_run and not summary.failed and not summary.remote_failure:
        await _dry_run_deletes(cfg, dst, job, local, summary, run)
        return
    if opts.dry_run or summary.failed or summary.remote_failure or summary.held:
        summary.delete_note = "nothing deleted: " + (
            "dry run" if opts.dry_run else "the copy had errors"
        )
        return

    def plan_now() -> DeletePlan:
        with must_open(cfg.state_path) as db:
            return plan_deletes(
                db, root, job.src_key, job.dst_key, dst.features.is_local, opts.max_delete
            )

    await store.flush()
    plan = await anyio.to_thread.run_sync(plan_now)
    if plan.refused:
        summary.delete_note = plan.refused
        summary.fail("sync", plan.refused)
        return
    deleted, failures = await run_deletes(dst, plan, store, job.src_key, job.dst_key)
    for item, message in failures:
        summary.fail(item, message)
    summary.deleted = len(deleted)
    await queries.forget_stale_reliance(store, job.dst_key, job.src_key, root)
    await store.flush()


async def _dry_run_deletes(
    cfg: Config, dst: Provider, job: Resolved, local: LocalPlan, summary: Summary, run: CopyRun
) -> None:
    import anyio.to_thread

    from imgsync.localfs import display, key_path, path_key
    from imgsync.syncdelete import DeletePlan, dry_run_deletes

    folder = dst.features.is_local

    def plan_now() -> DeletePlan:
        with must_open(cfg.state_path) as db:
            return dry_run_deletes(
                db,
                str(local.root),
                job.src_key,
                job.dst_key,
                folder,
                vanished=local.vanished,
                rehashed={path_key(e.rel) for e in local.to_hash},
                hashed_shas=set(run.taken) | set(run.relied),
            )

    plan = await anyio.to_thread.run_sync(plan_now)
    summary.would_delete = [
        display(key_path(rid)) if folder else (url or rid) for rid, _sha, _d, url in plan.candidates
    ]
    if len(plan.candidates) > job.opts.max_delete:
        summary.delete_note = (
            f"a real run would delete nothing: {len(plan.candidates)} items are more than "
            f"--max-delete {job.opts.max_delete}"
        )


async def forget_gone_from_host(cfg: Config, job: Resolved) -> int:
    """``--verify-dest``: list a host destination and drop what state records there but
    the host no longer has (deleted on its website), so the copy uploads it again."""
    import anyio.to_thread

    from imgsync.runtime import Runtime
    from imgsync.state import queries
    from imgsync.state.store import StateStore

    seen: set[str] = set()
    async with Runtime(cfg) as rt:
        dst = await rt.open(job.dst)
        if not dst.features.can_list:
            raise UsageError(
                f"{job.dst.name} ({job.dst.type}) cannot be listed, so --verify-dest cannot "
                "check it"
            )
        async for page, _cursor in dst.iter_all(None):
            for item in page.items:  # ids and names: some hosts id uploads by name
                seen.update((item.remote_id, item.name))

    def known() -> dict[str, str]:
        with must_open(cfg.state_path) as db:
            return db.items_at(job.dst_key)

    gone = [rid for rid in await anyio.to_thread.run_sync(known) if rid not in seen]
    if gone:
        async with StateStore(cfg.state_path, cfg.state_url, lease_ttl=cfg.lease_ttl) as store:
            await queries.forget_locations(store, job.dst_key, gone)
    return len(gone)


__all__ = ["JobSpec", "StopSignal", "run_job", "run_job_blocking"]
