"""``imgsync run``: the daemon running the jobs of the config until stopped.

* ``watch`` jobs copy a folder to their destinations at start (the reconciliation scan,
  which also catches what changed while the daemon was down), then again after every burst
  of file changes (watchfiles, debounced) and on a periodic full rescan, because watchers
  can drop events. A run whose scan matches the last complete run costs one folder scan.
* ``mirror``, ``backup`` and ``migrate`` jobs run at start and then every ``interval``.

Jobs run concurrently, one task each; each job's runs are sequential. SIGTERM or SIGINT
stops new runs, lets a run in progress finish for up to ``shutdown_grace`` seconds, then
cancels it (what finished is recorded; the next start resumes).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

from imgsync.config import Config, JobConfig
from imgsync.errors import EXIT_OK, ImgsyncError, UsageError
from imgsync.log import get_logger
from imgsync.pipeline.summary import CopyOptions, StopSignal, Summary
from imgsync.runtime import resolve_spec

log = get_logger("imgsync.daemon")


async def run_job_once(
    cfg: Config, job: JobConfig, stop: StopSignal | None = None
) -> list[Summary]:
    """One run of ``job``: :func:`~imgsync.pipeline.run.run_job` per destination.
    ``stop`` (the daemon's shutdown) makes a run stop handing out new items."""
    from imgsync.pipeline.run import JobSpec, run_job

    summaries = []
    for dest in job.destinations:
        src_cfg, _src_key = resolve_spec(cfg, job.source)
        verb = {"backup": "backup", "migrate": "migrate"}.get(job.kind, "copy")
        if job.delete and src_cfg.type == "local" and verb == "copy":
            verb = "sync"  # delete = true: the destination follows the folder's deletions
        opts = CopyOptions(
            job=job.name,
            verb=verb,
            include=job.include,
            exclude=job.exclude,
            transfers=cfg.transfers,
            sidecars=job.kind == "backup",
        )
        spec = JobSpec(
            verb,
            job.source,
            dest,
            opts,
            map_path=job.map_path,
            gallery=job.kind == "backup" and job.gallery,
            report_path=job.report_path,
        )
        summary = await run_job(cfg, spec, stop=stop)
        log.info("job_run", job=job.name, dest=dest, summary=summary.line())
        summaries.append(summary)
        if stop is not None and stop.is_set():
            break
    return summaries


async def _guarded(cfg: Config, job: JobConfig, stop: StopSignal | None = None) -> None:
    try:
        await run_job_once(cfg, job, stop)
    except ImgsyncError as exc:
        log.error("job_failed", job=job.name, error=str(exc))


async def _watch_job(cfg: Config, job: JobConfig, stop: asyncio.Event) -> None:
    """Copy at start, then after every burst of changes and on each periodic rescan.

    A folder that is missing or unwatchable (an unmounted drive) is logged and tried again
    every ``rescan_interval``; the daemon and its other jobs go on.
    """
    src_cfg, _ = resolve_spec(cfg, job.source)
    assert src_cfg.path is not None
    while not stop.is_set():
        await _guarded(cfg, job, stop)  # reconciliation scan (at start and after a watch failure)
        try:
            await _watch(cfg, job, src_cfg.path, stop)
        except OSError as exc:
            log.error("watch_failed", job=job.name, folder=str(src_cfg.path), error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=cfg.daemon.rescan_interval)


async def _watch(cfg: Config, job: JobConfig, folder: Path, stop: asyncio.Event) -> None:
    import watchfiles

    watcher = watchfiles.awatch(
        folder,
        stop_event=stop,
        debounce=int(cfg.daemon.debounce * 1000),
        rust_timeout=int(cfg.daemon.rescan_interval * 1000),
        yield_on_timeout=True,
        watch_filter=lambda _change, path: not Path(path).name.startswith(".imgsync-tmp-"),
    )
    async for changes in watcher:
        if stop.is_set():
            return
        log.info("watch_changes", job=job.name, changes=len(changes) or "rescan")
        await _guarded(cfg, job, stop)


async def _interval_job(cfg: Config, job: JobConfig, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await _guarded(cfg, job, stop)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=job.interval)


async def run_daemon(cfg: Config) -> int:
    """Run every configured job until SIGTERM/SIGINT; returns the exit code."""
    if not cfg.jobs:
        raise UsageError("no [[jobs]] in the config: nothing to run (see config.example.toml)")
    for job in cfg.jobs:
        if job.kind == "watch":
            src_cfg, _ = resolve_spec(cfg, job.source)
            if src_cfg.type != "local":
                raise UsageError(f"job {job.name}: a watch job's source must be a folder")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [
        asyncio.create_task(
            (_watch_job if job.kind == "watch" else _interval_job)(cfg, job, stop),
            name=f"job-{job.name}",
        )
        for job in cfg.jobs
    ]
    log.info("daemon_started", jobs=[j.name for j in cfg.jobs])
    await stop.wait()
    log.info("daemon_stopping", grace=cfg.daemon.shutdown_grace)
    _done, pending = await asyncio.wait(tasks, timeout=cfg.daemon.shutdown_grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    log.info("daemon_stopped")
    return EXIT_OK
