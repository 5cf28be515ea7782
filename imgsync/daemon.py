"""``imgsync run``: the daemon running the jobs of the config until stopped.

* ``watch`` jobs copy a folder to their destinations at start (the reconciliation scan,
  which also catches what changed while the daemon was down), after file changes, and on
  a periodic full rescan, because watchers can drop events. Only complete files are sent:
  hidden and temporary names are ignored and a file must have been quiet for
  ``debounce`` seconds (:mod:`imgsync.watch`); a file still being written is looked at
  again when it would be quiet, not only on its next change.
* ``mirror``, ``backup`` and ``migrate`` jobs run at start and then every ``interval``;
  so do ``verify`` jobs: they check the recorded copies of ``source`` (all, or a rotating
  ``sample``) and with ``repair_to`` re-host what died and rewrite the ``rewrite``
  documents (:mod:`imgsync.pipeline.verify`).
* A run that failed (items, a host outage, a missing folder) is retried after ``retry``
  seconds, doubling up to ``retry_max``, without waiting for a change or the rescan.

Jobs run concurrently, one task each; each job's runs are sequential. SIGTERM or SIGINT
stops handing out new items at once; transfers in flight finish and are recorded (for at
most ``shutdown_grace`` seconds, then they are cancelled), and the daemon exits 0.
SIGHUP reloads the config: jobs added, removed or changed are started, stopped or
restarted, the others keep running; a config with errors is logged and the old one stays.

``[daemon] listen`` serves ``/healthz`` and ``/metrics`` (:mod:`imgsync.metrics`). A lock
and ``daemon.json`` beside the state database tell ``imgsync status`` that a daemon runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from imgsync.config import Config, JobConfig, load_config
from imgsync.errors import EXIT_OK, ConfigError, ImgsyncError, UsageError
from imgsync.log import get_logger, redact
from imgsync.metrics import DaemonStats, JobHealth
from imgsync.pidfile import StateLock
from imgsync.pipeline.plan import LocalPlan
from imgsync.pipeline.summary import CopyOptions, StopSignal, Summary
from imgsync.runtime import limiter_statistics, reload_limits, resolve_spec
from imgsync.state.reader import open_reader
from imgsync.watch import Clock, Settler, SystemClock, backoff, ignored

log = get_logger("imgsync.daemon")

Admit = Callable[[LocalPlan], LocalPlan]


async def run_job_once(
    cfg: Config,
    job: JobConfig,
    stop: StopSignal | None = None,
    admit: Admit | None = None,
) -> list[tuple[str, Summary]]:
    """One run of ``job``: :func:`~imgsync.pipeline.run.run_job` per destination.

    ``stop`` (the daemon's shutdown) makes a run stop handing out new items; ``admit``
    filters a folder source's plan (the watch job's complete-files rule)."""
    from imgsync.pipeline.run import JobSpec, run_job

    if job.kind == "verify":
        await verify_job_once(cfg, job, stop)
        return []
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
            log_items=True,
            lease_wait=cfg.daemon.lease_wait,
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
        summary = await run_job(cfg, spec, stop=stop, admit=admit)
        log.info("job_run", job=job.name, dest=dest, summary=summary.line())
        summaries.append((dest, summary))
        if stop is not None and stop.is_set():
            break
    return summaries


async def verify_job_once(cfg: Config, job: JobConfig, stop: StopSignal | None = None) -> Any:
    """One run of a ``kind = "verify"`` job: check ``source``, and repair onto
    ``repair_to`` and rewrite the ``rewrite`` documents when configured. Its figures are
    in state (``imgsync status``, ``/metrics``)."""
    from imgsync.pipeline.verify import VerifyOptions
    from imgsync.verifycmd import verify_once

    opts = VerifyOptions(
        full=job.full,
        sample=job.sample,
        transfers=cfg.transfers,
        repair_to=job.repair_to,
        ignore_unreachable_dest=job.ignore_unreachable_dest,
    )
    outcome = await verify_once(cfg, [job.source], opts, list(job.rewrite), job.map_path, stop)
    for r in outcome.report.remotes:
        log.info("verify_run", job=job.name, remote=r.name, checked=r.checked, **r.counts)
    repairs: dict[str, int] = {}
    for rep in outcome.report.repairs:
        repairs[rep.action] = repairs.get(rep.action, 0) + 1
    if repairs or outcome.links_replaced:
        log.info("verify_repaired", job=job.name, links_replaced=outcome.links_replaced, **repairs)
    return outcome


def verify_figures(cfg: Config) -> dict[str, dict[str, Any]]:
    """remote name -> the last verify verdict counts and check time, read from state."""
    from imgsync.pipeline.verify import known_remotes

    reader = open_reader(cfg.state_path, create=False)
    if reader is None:
        return {}
    with reader:
        found = reader.status()["verify"]
    names = {key: remote.name for key, remote in known_remotes(cfg).items()}
    return {names.get(key, key): v for key, v in found.items()}


def fleet_figures(cfg: Config) -> dict[str, dict[str, int]]:
    """Fleet mode: job -> stage -> items, counted over every worker (read at scrape time;
    empty when the shared state cannot be read now: the scrape still answers)."""
    if not cfg.state_url:
        return {}
    from imgsync.state.fleet.report import job_totals

    try:
        return job_totals(cfg.state_url)
    except ImgsyncError:
        return {}


class JobRun(Protocol):
    def __call__(
        self,
        cfg: Config,
        job: JobConfig,
        stop: StopSignal | None = None,
        admit: Admit | None = None,
    ) -> Awaitable[list[tuple[str, Summary]]]: ...


class JobLoop:
    """One job: when to run it (start, events, quiet files, retries, rescans) and its health.

    ``clock`` drives every wait (tests pass a virtual one); ``watch_events`` starts the
    file watcher of a watch job (tests may call :meth:`notify` instead).
    """

    def __init__(
        self,
        cfg: Config,
        job: JobConfig,
        health: JobHealth,
        *,
        clock: Clock | None = None,
        watch_events: bool = True,
        run: JobRun = run_job_once,
    ) -> None:
        self.cfg, self.job, self.health = cfg, job, health
        self.clock = clock or SystemClock()
        self.watch_events = watch_events and job.kind == "watch"
        self.run = run
        self.stopping = asyncio.Event()
        self.wake = asyncio.Event()
        d = cfg.daemon
        self.settler = Settler(self.clock, d.debounce, d.ignore) if job.kind == "watch" else None
        self.folder: Path | None = None
        self.folder_real = ""
        if job.kind == "watch":
            src_cfg, _ = resolve_spec(cfg, job.source)
            self.folder = src_cfg.path
            self.folder_real = os.path.realpath(str(self.folder))
        self.period = d.rescan_interval if job.kind == "watch" else job.interval
        self.event_due: float | None = None
        self.retry_due: float | None = None
        self.rescan_due: float | None = None
        self.failures = 0
        self.watcher: asyncio.Task[None] | None = None
        self.watched: tuple[int, int] | None = None  # the folder the watcher watches
        self.watch_starts = 0
        # symbolic links the runs skipped, warned about once: path -> (why, link target)
        self.links_warned: dict[str, tuple[str, str]] = {}
        self.source_folder: Path | None = None
        if job.kind != "verify":
            try:
                source = resolve_spec(cfg, job.source)[0]
            except ImgsyncError:  # the run says what is wrong with it
                source = None
            if source is not None and source.type == "local":
                self.source_folder = source.path

    def stop(self) -> None:
        """Start no new run and hand out no new item; what is in flight finishes."""
        self.stopping.set()
        self.wake.set()

    def notify(self, paths: list[str]) -> None:
        """File events: run soon, unless they only concern files already waiting to be
        quiet (those are looked at again when they would be)."""
        assert self.folder is not None and self.settler is not None
        d = self.cfg.daemon
        for p in paths:
            rel = os.path.relpath(p, self.folder).replace(os.sep, "/")
            if ignored(rel, d.ignore) or os.path.basename(p).startswith(".imgsync-tmp-"):
                continue
            if rel not in self.settler.seen:
                self.event_due = self.clock.monotonic()
                self.wake.set()
                return

    def due(self) -> float | None:
        times = [self.event_due, self.retry_due, self.rescan_due]
        if self.settler is not None:
            times.append(self.settler.due)
        known = [t for t in times if t is not None]
        return min(known) if known else None

    async def loop(self, after: asyncio.Task[Any] | None = None) -> None:
        """Run until stopped. ``after``: a previous loop of this job still draining."""
        if after is not None:
            await asyncio.gather(after, return_exceptions=True)
        if self.watch_events:
            self._start_watcher()
        self.event_due = self.clock.monotonic()  # the reconciliation run at start
        try:
            while not self.stopping.is_set():
                due = self.due()
                now = self.clock.monotonic()
                if due is None or due > now:
                    wait = (due - now) if due is not None else self.period
                    await self.clock.wait(self.wake, wait)
                    self.wake.clear()
                    continue
                await self.run_once()
                if self.watch_events:
                    self._check_watcher()
        finally:
            if self.watcher is not None:
                self.watcher.cancel()
                await asyncio.gather(self.watcher, return_exceptions=True)
            self.health.state = "stopped" if self.health.state != "failing" else "failing"

    async def run_once(self) -> bool:
        """One run now; schedules the next ones. True when it was healthy."""
        self.event_due = None
        admit = None
        if self.settler is not None:
            self.settler.begin()
            admit = self.settler.admit
        error = None
        summaries: list[tuple[str, Summary]] = []
        try:
            summaries = await self.run(self.cfg, self.job, self.stopping, admit)
        except ImgsyncError as exc:
            error = redact(str(exc))
            log.error("job_failed", job=self.job.name, error=error)
        self._warn_links(summaries)
        now = self.clock.monotonic()
        stopped = self.stopping.is_set()
        healthy = self.health.record(summaries, error, self.clock.time(), stopped=stopped)
        if self.settler is not None:
            self.health.pending = self.settler.deferred
            if self.settler.deferred:
                log.info("files_not_quiet_yet", job=self.job.name, files=self.settler.deferred)
        if healthy or stopped:
            self.failures, self.retry_due, self.health.next_retry = 0, None, None
        else:
            d = self.cfg.daemon
            wait = min(backoff(self.failures, d.retry, d.retry_max), self.period)
            self.failures += 1
            self.retry_due = now + wait
            self.health.next_retry = self.clock.time() + wait
            log.warning("job_retry_scheduled", job=self.job.name, seconds=round(wait, 1))
        self.rescan_due = now + self.period
        return healthy

    def _warn_links(self, summaries: list[tuple[str, Summary]]) -> None:
        """One ``symlink_skipped`` warning per link for the life of this job, not one per
        run (a rescan finds the same link every hour), and one per link whatever the
        number of destinations; a link given another target, or one that went and came
        back, is warned about again."""
        now: dict[str, tuple[str, str]] = {}
        for _dest, summary in summaries:
            for rel, why in summary.links_skipped:
                now.setdefault(rel, (why, self._link_target(rel)))
        for rel, seen in now.items():
            if self.links_warned.get(rel) != seen:
                log.warning("symlink_skipped", job=self.job.name, path=rel, reason=seen[0])
        if summaries:  # a run that failed as a whole saw nothing: keep what was warned
            self.links_warned = now

    def _link_target(self, rel: str) -> str:
        if self.source_folder is None:
            return ""
        try:
            return os.readlink(os.path.join(self.source_folder, rel))
        except OSError:
            return ""

    def _folder_ident(self) -> tuple[int, int] | None:
        assert self.folder is not None
        try:
            st = os.stat(self.folder)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _start_watcher(self) -> None:
        self.watched = self._folder_ident()
        self.watcher = asyncio.create_task(self._watch(), name=f"watch-{self.job.name}")

    def _check_watcher(self) -> None:
        """A folder deleted and made again (or remounted) is a new folder: a watch on the
        old one would never report anything again, so watch the new one."""
        ident = self._folder_ident()
        if ident is not None and ident != self.watched and self.watcher is not None:
            log.info("watch_restarted", job=self.job.name, folder=str(self.folder))
            self.watcher.cancel()
            self._start_watcher()
            # what arrives before the new watch is in place is found by one more scan
            self.event_due = self.clock.monotonic() + 1.0

    async def _watch(self) -> None:
        """Feed file events to :meth:`notify`; a folder that cannot be watched (missing,
        unmounted) is tried again on the retry schedule, then scanned."""
        import watchfiles

        assert self.folder is not None
        d = self.cfg.daemon
        attempt = 0
        roots = {str(self.folder), self.folder_real}
        root = str(self.folder)
        while not self.stopping.is_set():
            self.watched = self._folder_ident()
            self.watch_starts += 1
            try:
                async for changes in watchfiles.awatch(
                    self.folder,
                    stop_event=self.stopping,
                    debounce=1000,
                    step=100,
                    rust_timeout=1000,
                    watch_filter=lambda _c, p: not ignored(os.path.relpath(p, root), d.ignore),
                ):
                    attempt = 0
                    self.notify([p for _c, p in changes])
                    if any(
                        c == watchfiles.Change.deleted and p in roots for c, p in changes
                    ):  # the folder itself went: this watch will never report again
                        log.warning(
                            "watched_folder_gone", job=self.job.name, folder=str(self.folder)
                        )
                        break
            except (OSError, RuntimeError) as exc:
                log.error(
                    "watch_failed", job=self.job.name, folder=str(self.folder), error=str(exc)
                )
            if self.stopping.is_set():
                return
            await self.clock.wait(self.stopping, backoff(attempt, d.retry, d.retry_max))
            attempt += 1
            self.event_due = self.clock.monotonic()  # scan what the watcher may have missed
            self.wake.set()


def _changed(old: Config, new: Config, oj: JobConfig, nj: JobConfig) -> bool:
    """Whether a job must restart to follow a new config."""
    if oj != nj or old.transfers != new.transfers:
        return True
    od, nd = old.daemon, new.daemon
    if (od.debounce, od.rescan_interval, od.retry, od.retry_max, od.ignore, od.lease_wait) != (
        nd.debounce,
        nd.rescan_interval,
        nd.retry,
        nd.retry_max,
        nd.ignore,
        nd.lease_wait,
    ):
        return True
    for spec in (nj.source, *nj.destinations):
        name = spec[:-1] if spec.endswith(":") else None
        if name is not None and old.remotes.get(name) != new.remotes.get(name):
            return True
    return False


def check_jobs(cfg: Config) -> None:
    """Refuse what the daemon cannot run (``UsageError``)."""
    if not cfg.jobs:
        raise UsageError("no [[jobs]] in the config: nothing to run (see config.example.toml)")
    for job in cfg.jobs:
        if job.kind == "watch":
            src_cfg, _ = resolve_spec(cfg, job.source)
            if src_cfg.type != "local":
                raise UsageError(f"job {job.name}: a watch job's source must be a folder")
        if cfg.state_url and (job.kind == "verify" or job.delete):
            # fleet mode shares what copying needs; deleting needs every worker's delete
            # URLs and verdicts, which stay on the worker that has them
            what = "verify" if job.kind == "verify" else "delete = true"
            raise UsageError(
                f"job {job.name} ({what}) does not work with a shared state ([state] url or "
                "IMGSYNC_STATE_URL) yet; the daemon runs watch, mirror, migrate and backup "
                "jobs without delete there"
            )


# ---- the daemon ---------------------------------------------------------------------------


class Daemon:
    """Runs the config's jobs; :meth:`request_stop` and :meth:`reload` are what SIGTERM
    and SIGHUP call."""

    def __init__(
        self,
        cfg: Config,
        *,
        clock: Clock | None = None,
        watch_events: bool = True,
        signals: bool = True,
        run: JobRun = run_job_once,
    ) -> None:
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.watch_events = watch_events
        self.signals = signals
        self.job_run = run
        self.stats = DaemonStats(
            started=self.clock.time(),
            hosts=lambda: limiter_statistics(self.cfg.state_path),
            verify=lambda: verify_figures(self.cfg),
            fleet=lambda: self._fleet_figures,
        )
        # fleet mode: the fleet's totals, read (in a thread) when /metrics is asked
        self._fleet_figures: dict[str, dict[str, int]] = {}
        self.loops: dict[str, JobLoop] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.draining: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._lock = StateLock(cfg.state_path)
        self._close_server: Callable[[], Awaitable[None]] | None = None
        self.port: int | None = None  # where /healthz and /metrics are served
        self.ready = asyncio.Event()
        self._reloading = asyncio.Lock()
        self._reloads: set[asyncio.Task[bool]] = set()

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("daemon_stopping", grace=self.cfg.daemon.shutdown_grace)
        self._stop.set()
        for lp in self.loops.values():
            lp.stop()

    def _start(
        self,
        cfg: Config,
        job: JobConfig,
        after: asyncio.Task[None] | None,
        warned: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        """Start ``job``'s loop (after ``after``, the loop it replaces, has drained);
        ``warned``: the links the replaced loop warned about, not warned about again."""
        health = self.stats.jobs.get(job.name)
        if health is None or health.kind != job.kind:
            health = JobHealth(job.name, job.kind)
            self.stats.jobs[job.name] = health
        lp = JobLoop(
            cfg, job, health, clock=self.clock, watch_events=self.watch_events, run=self.job_run
        )
        if warned:
            lp.links_warned = dict(warned)
        self.loops[job.name] = lp
        if self._stop.is_set():  # asked to stop while starting: start nothing new
            lp.stop()
        self.tasks[job.name] = asyncio.create_task(lp.loop(after), name=f"job-{job.name}")

    def _retire(self, name: str) -> asyncio.Task[None]:
        self.loops.pop(name).stop()
        task = self.tasks.pop(name)
        self.draining.add(task)
        task.add_done_callback(self.draining.discard)
        return task

    async def reload(self) -> bool:
        """Read the config again and apply it; False (old config kept) when it is bad.
        Reloads run one at a time; none is applied once the daemon is stopping."""
        async with self._reloading:
            if self._stop.is_set():
                return False
            return await self._reload()

    def _on_hup(self) -> None:
        task = asyncio.create_task(self.reload(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self) -> bool:
        from imgsync import sdnotify

        sdnotify.notify("RELOADING=1")
        try:
            new = await asyncio.to_thread(load_config, self.cfg.path, explicit=True)
            check_jobs(new)
            if new.state_path != self.cfg.state_path:
                raise UsageError("state.path cannot change while the daemon runs; restart it")
            if new.state_url != self.cfg.state_url:
                raise UsageError("state.url cannot change while the daemon runs; restart it")
            # last: the shared limiter takes the new [limits] (its counts and pauses kept)
            limits = reload_limits(new) if new.limits != self.cfg.limits else []
        except ImgsyncError as exc:
            problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
            log.error("reload_failed", problems=[redact(p) for p in problems], kept="old config")
            self.stats.failed_reloads += 1
            sdnotify.notify("READY=1")
            return False
        old, self.cfg = self.cfg, new
        now_jobs = {j.name: j for j in new.jobs}
        removed = [n for n in self.loops if n not in now_jobs]
        changed = [
            n
            for n, j in now_jobs.items()
            if n in self.loops and _changed(old, new, self.loops[n].job, j)
        ]
        added = [n for n in now_jobs if n not in self.loops]
        for name in removed:
            self._retire(name)
            self.stats.jobs.pop(name, None)
        for name in changed:
            before = self.loops[name]
            # the links of the same source folder were told already: not again
            warned = before.links_warned if before.job.source == now_jobs[name].source else None
            self._start(new, now_jobs[name], after=self._retire(name), warned=warned)
        for name in added:
            self._start(new, now_jobs[name], after=None)
        if old.daemon.listen != new.daemon.listen:
            try:
                await self._serve()
            except UsageError as exc:  # the jobs run on; only the endpoints are missing
                log.error("listen_failed", error=str(exc))
        self.stats.reloads += 1
        self._lock.write(self._info())
        log.info("reloaded", added=added, removed=removed, changed=changed, limits=limits)
        sdnotify.notify("READY=1")
        return True

    def _info(self) -> dict[str, Any]:
        listen = self.cfg.daemon.listen
        return {
            "pid": os.getpid(),
            "since": self.stats.started,
            "config": str(self.cfg.path) if self.cfg.path else None,
            "jobs": [j.name for j in self.cfg.jobs],
            "listen": f"{listen[0]}:{self.port}" if listen and self.port is not None else None,
        }

    async def _serve(self) -> None:
        if self._close_server is not None:
            await self._close_server()
            self._close_server, self.port = None, None
        listen = self.cfg.daemon.listen
        if listen is None:
            return
        from imgsync.http import serve_endpoints

        async def healthz() -> tuple[int, str, bytes]:
            status, body = self.stats.health_bytes()
            return status, "application/json", body

        async def metrics() -> tuple[int, str, bytes]:
            if self.cfg.state_url:  # a slow or lost database never holds up the daemon
                self._fleet_figures = await asyncio.to_thread(fleet_figures, self.cfg)
            ctype, body = self.stats.metrics_text()
            return 200, ctype, body

        try:
            self.port, self._close_server = await serve_endpoints(
                listen[0], listen[1], {"/healthz": healthz, "/metrics": metrics}
            )
        except OSError as exc:
            raise UsageError(
                f"daemon.listen: cannot listen on {listen[0]}:{listen[1]}: {exc.strerror}"
            ) from None
        log.info("serving", address=f"{listen[0]}:{self.port}", paths=["/healthz", "/metrics"])

    async def _watchdog(self, every: float) -> None:
        from imgsync import sdnotify

        while not self._stop.is_set():
            sdnotify.notify("WATCHDOG=1")
            await self.clock.wait(self._stop, every)

    async def run(self) -> int:
        """Run every job until stopped; returns the exit code."""
        from imgsync import sdnotify

        check_jobs(self.cfg)
        self._lock.acquire({"pid": os.getpid(), "since": self.stats.started})
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        watchdog = None
        try:
            if self.signals:  # first: a `docker stop` during start-up is a clean stop too
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.add_signal_handler(sig, self.request_stop)
                    installed.append(sig)
                loop.add_signal_handler(signal.SIGHUP, self._on_hup)
                installed.append(signal.SIGHUP)
            # the database is created (or found unwritable) now, not on the first change
            reader = await asyncio.to_thread(open_reader, self.cfg.state_path)
            if reader is not None:
                reader.close()
            await self._serve()
            for job in self.cfg.jobs:
                self._start(self.cfg, job, after=None)
            self._lock.write(self._info())
            every = sdnotify.watchdog_interval()
            if every is not None:
                watchdog = asyncio.create_task(self._watchdog(every))
            sdnotify.notify(
                f"READY=1\nSTATUS=running {len(self.cfg.jobs)} jobs\nMAINPID={os.getpid()}"
            )
            log.info("daemon_started", jobs=[j.name for j in self.cfg.jobs], pid=os.getpid())
            self.ready.set()
            await self._stop.wait()
            sdnotify.notify("STOPPING=1")
            await self._drain()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            if watchdog is not None:
                watchdog.cancel()
            if self._close_server is not None:
                await self._close_server()
            self._lock.release()
        log.info("daemon_stopped")
        return EXIT_OK

    async def _drain(self) -> None:
        """Let in-flight work finish for up to ``shutdown_grace``, then cancel it."""
        tasks = [*self.tasks.values(), *self.draining]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=self.cfg.daemon.shutdown_grace)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("daemon_cancelled_in_flight", jobs=len(pending))
        await asyncio.gather(*pending, return_exceptions=True)


async def run_daemon(cfg: Config) -> int:
    """``imgsync run``: every configured job until SIGTERM/SIGINT; returns the exit code."""
    return await Daemon(cfg).run()
