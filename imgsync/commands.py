"""The verbs that move data: ``copy``, ``backup`` and ``ls``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from imgsync.config import Config, RemoteConfig
from imgsync.errors import EXIT_OK, EXIT_REMOTE_FAILURE, ProviderError, UsageError
from imgsync.localfs import display
from imgsync.pipeline.plan import LocalPlan, plan_local
from imgsync.pipeline.progress import Progress
from imgsync.pipeline.summary import CopyOptions, Summary
from imgsync.runtime import resolve_spec
from imgsync.state.db import open_sync

if TYPE_CHECKING:
    from imgsync.pipeline.copy import CopyRun
    from imgsync.providers.base import Provider
    from imgsync.state.store import StateStore


def setup_logging(cfg: Config, args: argparse.Namespace) -> None:
    """Configure structlog (only on paths that do async work: it costs start-up time)."""
    from imgsync.log import configure

    configure("debug" if args.verbose else cfg.log_level, cfg.log_format)


def _options(cfg: Config, args: argparse.Namespace) -> CopyOptions:
    transfers = args.transfers if args.transfers is not None else cfg.transfers
    if not 1 <= transfers <= 64:
        raise UsageError("--transfers must be between 1 and 64")
    return CopyOptions(
        job=f"{args.verb}:{args.src}->{args.dst}",
        verb=args.verb,
        dry_run=args.dry_run or args.verb == "check",
        transfers=transfers,
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        sidecars=args.verb == "backup",
        max_delete=getattr(args, "max_delete", 100),
        include_non_images=getattr(args, "include_non_images", False),
    )


def run_copy(cfg: Config, args: argparse.Namespace) -> int:
    """``imgsync copy SRC DST`` and ``imgsync backup SRC DIR``."""
    src_cfg, src_key = resolve_spec(cfg, args.src)
    dst_cfg, dst_key = resolve_spec(cfg, args.dst)
    if src_key == dst_key:
        raise UsageError("source and destination are the same")
    if args.verb == "migrate" and src_cfg.type == "local":
        raise UsageError("migrate needs a host as its source (local files have no URLs to map)")
    if args.verb == "sync" and src_cfg.type != "local":
        raise UsageError("sync needs a folder as its source for now; use copy from a host")
    if args.verb == "backup" and dst_cfg.type != "local":
        raise UsageError("backup writes to a local folder; use copy between hosts")
    if dst_cfg.type == "local" and src_cfg.type == "local":
        assert src_cfg.path is not None and dst_cfg.path is not None
        if dst_cfg.path.is_relative_to(src_cfg.path) or src_cfg.path.is_relative_to(dst_cfg.path):
            raise UsageError("source and destination folders must not contain each other")
    opts = _options(cfg, args)
    progress = Progress(enabled=args.progress if args.progress is not None else sys.stderr.isatty())
    if getattr(args, "verify_dest", False) and dst_cfg.type != "local":
        import asyncio

        setup_logging(cfg, args)
        gone = asyncio.run(forget_gone_from_host(cfg, dst_cfg, dst_key))
        if gone:
            print(
                f"imgsync: {gone} items recorded at {args.dst} are gone from it; "
                "they will be copied again",
                file=sys.stderr,
            )

    plan: LocalPlan | None = None
    if src_cfg.type == "local":
        assert src_cfg.path is not None
        started = time.monotonic()
        conn = open_sync(cfg.state_path)
        assert conn is not None
        try:
            dest_root = dst_cfg.path if dst_cfg.type == "local" else None
            plan = plan_local(
                conn, src_cfg.path, dst_key, opts.include, opts.exclude, dest_root=dest_root
            )
            if (
                plan.empty
                and not plan.problems
                and not _sync_pending(conn, plan, opts, dst_cfg, src_key, dst_key)
            ):
                if not opts.dry_run:
                    _mark_done(conn, plan, dst_key)
                summary = Summary(
                    opts.verb,
                    src_key,
                    dst_key,
                    dry_run=opts.dry_run,
                    checked=plan.scanned,
                    present=plan.present,
                    non_images=plan.non_images,
                    elapsed=time.monotonic() - started,
                )
                return _report(summary, args.json)
        finally:
            conn.close()

    import asyncio

    setup_logging(cfg, args)
    summary = asyncio.run(copy_async(cfg, src_cfg, src_key, dst_cfg, dst_key, opts, progress, plan))
    if args.verb == "migrate" and not opts.dry_run:
        write_url_map(cfg, src_key, dst_key, args.map, summary)
    return _report(summary, args.json)


def write_url_map(cfg: Config, src_key: str, dst_key: str, path: Path, summary: Summary) -> None:
    """Write the migration's old-URL -> new-URL map from what state knows (all runs)."""
    from imgsync.urlmap import build_map, write_map

    conn = open_sync(cfg.state_path)
    assert conn is not None
    try:
        rows = build_map(conn, src_key, dst_key)
    finally:
        conn.close()
    try:
        write_map(path, rows)
    except OSError as exc:
        raise UsageError(f"cannot write map {path}: {exc.strerror}") from None
    summary.map_rows = len(rows)
    summary.map_path = str(path)


async def copy_async(
    cfg: Config,
    src_cfg: RemoteConfig,
    src_key: str,
    dst_cfg: RemoteConfig,
    dst_key: str,
    opts: CopyOptions,
    progress: Progress,
    plan: LocalPlan | None,
) -> Summary:
    from imgsync.pipeline.copy import CopyRun
    from imgsync.runtime import Runtime
    from imgsync.state import queries
    from imgsync.state.store import StateStore

    if dst_cfg.type == "local" and dst_cfg.path is not None and not opts.dry_run:
        try:
            dst_cfg.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create {dst_cfg.path}: {exc.strerror}") from None
    async with StateStore(cfg.state_path) as store, Runtime(cfg) as rt:
        src = await rt.open(src_cfg)
        dst = await rt.open(dst_cfg)
        if plan is None and not src.features.can_list:
            raise UsageError(
                f"{src_cfg.name} ({src_cfg.type}) cannot be listed, so it can only be a destination"
            )
        run: CopyRun = CopyRun(store, src, src_key, dst, dst_key, opts, progress)
        run_id = await queries.start_run(store, opts.job, opts.verb)
        try:
            if plan is not None:
                summary = await run.run_local(plan)
            else:
                conn = open_sync(cfg.state_path)
                try:
                    summary = await run.run_remote(conn)
                finally:
                    if conn is not None:
                        conn.close()
        finally:
            progress.close()
            await run.finish()
        clean = not opts.dry_run and not summary.failed and not summary.remote_failure
        if opts.verb == "sync" and plan is not None:
            await _sync_deletes(cfg, store, dst, src_key, dst_key, str(plan.root), opts, summary)
        if plan is not None and clean and not summary.deleted:
            await queries.save_scan_mark(
                store, str(plan.root), dst_key, plan.fingerprint, plan.dest_state()
            )
        await queries.finish_run(store, run_id, summary.to_json())
    return summary


async def _sync_deletes(
    cfg: Config,
    store: StateStore,
    dst: Provider,
    src_key: str,
    dst_key: str,
    root: str,
    opts: CopyOptions,
    summary: Summary,
) -> None:
    """``sync``: after a clean copy, delete what the source dropped (guarded)."""
    from imgsync.state import queries
    from imgsync.syncdelete import DeletePlan, plan_deletes, run_deletes

    if opts.dry_run or summary.failed or summary.remote_failure:
        summary.delete_note = "nothing deleted: " + (
            "dry run" if opts.dry_run else "the copy had errors"
        )
        return
    import anyio.to_thread

    def plan_now() -> DeletePlan:
        conn = open_sync(cfg.state_path)
        assert conn is not None
        try:
            return plan_deletes(
                conn, root, src_key, dst_key, dst.features.is_local, opts.max_delete
            )
        finally:
            conn.close()

    await store.flush()
    plan = await anyio.to_thread.run_sync(plan_now)
    if plan.refused:
        summary.delete_note = plan.refused
        summary.fail("sync", plan.refused)
        return
    deleted, failures = await run_deletes(dst, plan)
    for remote_id, _sha in deleted:
        await queries.forget_location(store, dst_key, remote_id)
    for item, message in failures:
        summary.fail(item, message)
    summary.deleted = len(deleted)


def _sync_pending(
    conn: sqlite3.Connection,
    plan: LocalPlan,
    opts: CopyOptions,
    dst_cfg: RemoteConfig,
    src_key: str,
    dst_key: str,
) -> bool:
    """``sync`` with nothing to copy may still have something to delete."""
    if opts.verb != "sync":
        return False
    from imgsync.syncdelete import plan_deletes

    found = plan_deletes(conn, str(plan.root), src_key, dst_key, dst_cfg.type == "local", 0)
    return bool(found.candidates)


async def forget_gone_from_host(cfg: Config, dst_cfg: RemoteConfig, dst_key: str) -> int:
    """``--verify-dest``: list a host destination and drop what state records there but
    the host no longer has (deleted on its website), so the copy uploads it again."""
    import anyio.to_thread

    from imgsync.runtime import Runtime
    from imgsync.state import queries

    seen: set[str] = set()
    async with Runtime(cfg) as rt:
        dst = await rt.open(dst_cfg)
        if not dst.features.can_list:
            raise UsageError(
                f"{dst_cfg.name} ({dst_cfg.type}) cannot be listed, so --verify-dest cannot "
                "check it"
            )
        async for page, _cursor in dst.iter_all(None):
            for item in page.items:  # ids and names: some hosts id uploads by name
                seen.update((item.remote_id, item.name))

    def forget() -> int:
        conn = open_sync(cfg.state_path)
        assert conn is not None
        try:
            gone = [rid for rid in queries.items_at(conn, dst_key) if rid not in seen]
            conn.executemany(
                "DELETE FROM locations WHERE remote = ? AND remote_id = ?",
                [(dst_key, rid) for rid in gone],
            )
            return len(gone)
        finally:
            conn.close()

    return await anyio.to_thread.run_sync(forget)


def _mark_done(conn: sqlite3.Connection, plan: LocalPlan, dst_key: str) -> None:
    from imgsync.state import queries

    mark, count, latest, saved_state = queries.scan_mark(conn, str(plan.root), dst_key)
    generation = queries.dest_generation(conn, dst_key)
    if mark != plan.fingerprint or (count, latest) != generation or saved_state == "":
        with contextlib.suppress(sqlite3.Error):  # only a speed-up for the next run
            queries.save_scan_mark_sync(
                conn, str(plan.root), dst_key, plan.fingerprint, plan.dest_state()
            )


def _report(summary: Summary, as_json: bool) -> int:
    if summary.verb == "check":
        return _report_check(summary, as_json)
    if as_json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        print(summary.line())
        for item, err in summary.failures[:20]:
            print(f"  failed: {item}: {err}", file=sys.stderr)
        if len(summary.failures) > 20:
            print(
                f"  ... and {summary.failed - 20} more (imgsync status lists them)", file=sys.stderr
            )
    return summary.exit_code


def _report_check(summary: Summary, as_json: bool) -> int:
    """``check``: what the destination lacks; exit 0 when nothing, 1 when something."""
    if as_json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        for item in summary.would_copy:
            print(f"missing: {item}")
        if summary.copied > len(summary.would_copy):
            print(f"... and {summary.copied - len(summary.would_copy)} more")
        print(
            f"check {summary.source} -> {summary.dest}: {summary.checked} checked, "
            f"{summary.copied} missing at the destination, {summary.present} present, "
            f"{summary.failed} could not be checked"
        )
    for item, err in summary.failures[:20]:
        print(f"  failed: {item}: {err}", file=sys.stderr)
    if summary.remote_failure:
        return summary.exit_code
    return 1 if summary.copied or summary.failed else 0


def run_ls(cfg: Config, args: argparse.Namespace) -> int:
    """``imgsync ls REMOTE``: every item, one per line (``--json``: JSON lines)."""
    import asyncio

    remote, _key = resolve_spec(cfg, args.remote)
    setup_logging(cfg, args)

    async def go() -> None:
        from imgsync.runtime import Runtime

        async with Runtime(cfg) as rt:
            provider = await rt.open(remote)
            if not provider.features.can_list:
                raise UsageError(f"{remote.name} ({remote.type}) cannot be listed")
            async for page, _cursor in provider.iter_all(None):
                for item in page.items:
                    if args.json:
                        print(
                            json.dumps(
                                {
                                    "id": item.remote_id,
                                    "name": item.name,
                                    "size": item.size,
                                    "url": item.url,
                                    "is_image": item.is_image,
                                    "metadata": item.meta.to_json(),
                                },
                                ensure_ascii=False,
                            )
                        )
                    else:
                        size = "-" if item.size is None else str(item.size)
                        print(f"{size:>10}  {display(item.name)}  {item.url or ''}".rstrip())

    try:
        asyncio.run(go())
    except ProviderError as exc:  # a listing is all or nothing: any failure is remote-wide
        from imgsync.log import redact

        print(f"imgsync: {redact(str(exc))}", file=sys.stderr)
        return EXIT_REMOTE_FAILURE
    return EXIT_OK
