"""What the daemon knows about itself: per-job health, ``/healthz`` and ``/metrics``.

Counters live in plain objects the job loops update after each run; the Prometheus text
is rendered from them at scrape time (``prometheus-client``'s own exposition code), with
the per-host request and throttle counts read from the process's limiter registry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from imgsync.pipeline.summary import Summary

OUTCOMES = ("copied", "present", "failed", "not_attempted")


@dataclass
class JobHealth:
    """One job as the daemon sees it."""

    name: str
    kind: str
    state: str = "starting"  # starting | ok | failing | stopped
    runs: int = 0
    failed_runs: int = 0
    last_run: float | None = None  # unix time a run ended
    last_success: float | None = None  # unix time of the last run without any failure
    last_error: str | None = None
    pending: int = 0  # watched files waiting to be quiet
    failed_items: int = 0  # items the last run could not transfer (retried on a schedule)
    next_retry: float | None = None  # unix time of the scheduled retry
    items: dict[tuple[str, str], int] = field(default_factory=dict)  # (dest, outcome) -> n
    bytes: dict[str, int] = field(default_factory=dict)  # dest -> bytes transferred

    def record(
        self,
        summaries: list[tuple[str, Summary]],
        error: str | None,
        now: float,
        *,
        stopped: bool = False,
    ) -> bool:
        """Count a finished run; True when it was healthy (no failure of any kind). Items a
        stopped run left alone are not failures."""
        self.runs += 1
        self.last_run = now
        failed = 0
        problems = [error] if error else []
        for dest, s in summaries:
            for outcome, n in zip(
                OUTCOMES, (s.copied, s.present, s.failed, s.not_attempted), strict=True
            ):
                if n:
                    self.items[(dest, outcome)] = self.items.get((dest, outcome), 0) + n
            self.bytes[dest] = self.bytes.get(dest, 0) + s.bytes
            failed += s.failed + (s.not_attempted if not stopped else 0)
            if s.remote_failure and not stopped:
                problems.append(f"{dest}: {s.remote_failure}")
            elif s.failed:
                first = s.failures[0] if s.failures else ("?", "?")
                problems.append(f"{dest}: {s.failed} failed (first: {first[0]}: {first[1]})")
        self.failed_items = failed
        healthy = not problems
        if healthy:
            self.state, self.last_success, self.last_error = "ok", now, None
        else:
            self.failed_runs += 1
            self.state, self.last_error = "failing", "; ".join(problems)[:500]
        return healthy

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "state": self.state,
            "runs": self.runs,
            "last_run": self.last_run,
            "last_success": self.last_success,
            "last_error": self.last_error,
            "pending_files": self.pending,
            "failed_items": self.failed_items,
            "next_retry": self.next_retry,
        }


@dataclass
class DaemonStats:
    """Everything ``/healthz`` and ``/metrics`` show."""

    started: float
    jobs: dict[str, JobHealth] = field(default_factory=dict)
    reloads: int = 0
    failed_reloads: int = 0
    # authority -> HostLimiter.statistics(); read at scrape time
    hosts: Callable[[], Mapping[str, Mapping[str, Any]]] = dict
    # remote -> the last link-rot verdict counts and check time (imgsync verify); at scrape time
    verify: Callable[[], Mapping[str, Mapping[str, Any]]] = dict
    # fleet mode: job -> stage -> items in the shared journal (every worker); at scrape time
    fleet: Callable[[], Mapping[str, Mapping[str, int]]] = dict

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, body): 200 when no job is failing, else 503."""
        bad = [n for n, j in self.jobs.items() if j.state == "failing"]
        body = {
            "status": "failing" if bad else "ok",
            "pid": os.getpid(),
            "since": self.started,
            "jobs": {n: j.to_json() for n, j in sorted(self.jobs.items())},
        }
        return (503 if bad else 200), body

    def health_bytes(self) -> tuple[int, bytes]:
        status, body = self.health()
        return status, (json.dumps(body, indent=2) + "\n").encode()

    def metrics_text(self) -> tuple[str, bytes]:
        """(content type, Prometheus text exposition)."""
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST
        from prometheus_client.process_collector import ProcessCollector

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        ProcessCollector(registry=registry)
        return CONTENT_TYPE_LATEST, generate_latest(registry)


class _Collector:
    def __init__(self, stats: DaemonStats) -> None:
        self.stats = stats

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.stats
        items = CounterMetricFamily(
            "imgsync_items",
            "Items handled, by job, destination and outcome",
            labels=["job", "destination", "outcome"],
        )
        nbytes = CounterMetricFamily(
            "imgsync_transferred_bytes", "Bytes transferred", labels=["job", "destination"]
        )
        runs = CounterMetricFamily("imgsync_job_runs", "Job runs", labels=["job", "result"])
        last_ok = GaugeMetricFamily(
            "imgsync_job_last_success_timestamp_seconds",
            "Unix time of the job's last run without failures",
            labels=["job"],
        )
        healthy = GaugeMetricFamily("imgsync_job_healthy", "1 unless failing", labels=["job"])
        queue = GaugeMetricFamily(
            "imgsync_queue_depth",
            "Items waiting: watched files not yet quiet plus failed items awaiting a retry",
            labels=["job"],
        )
        for name, j in sorted(s.jobs.items()):
            for (dest, outcome), n in sorted(j.items.items()):
                items.add_metric([name, dest, outcome], n)
            for dest, n in sorted(j.bytes.items()):
                nbytes.add_metric([name, dest], n)
            runs.add_metric([name, "ok"], j.runs - j.failed_runs)
            runs.add_metric([name, "failed"], j.failed_runs)
            if j.last_success is not None:
                last_ok.add_metric([name], j.last_success)
            healthy.add_metric([name], 0 if j.state == "failing" else 1)
            queue.add_metric([name], j.pending + j.failed_items)
        yield from (items, nbytes, runs, last_ok, healthy, queue)

        requests = CounterMetricFamily(
            "imgsync_host_requests", "Requests sent to a host", labels=["host"]
        )
        throttles = CounterMetricFamily(
            "imgsync_host_throttled", "Replies from a host saying slow down", labels=["host"]
        )
        paused = GaugeMetricFamily(
            "imgsync_host_paused", "1 while a host is paused (quota spent, outage)", labels=["host"]
        )
        in_flight = GaugeMetricFamily(
            "imgsync_host_in_flight", "Requests in flight to a host", labels=["host"]
        )
        for host, st in sorted(s.hosts().items()):
            requests.add_metric([host], float(st.get("acquired", 0)))
            throttles.add_metric([host], float(st.get("throttled", 0)))
            paused.add_metric([host], 1.0 if st.get("paused_until") else 0.0)
            in_flight.add_metric([host], float(st.get("in_flight", 0)))
        yield from (requests, throttles, paused, in_flight)

        checked = GaugeMetricFamily(
            "imgsync_verify_locations",
            "Recorded copies by their last link-rot verdict (alive, gone, altered, unreachable; "
            "repaired: dead ones already re-hosted)",
            labels=["remote", "status"],
        )
        last_check = GaugeMetricFamily(
            "imgsync_verify_last_check_timestamp_seconds",
            "Unix time of the last link-rot check of a remote",
            labels=["remote"],
        )
        for remote, v in sorted(s.verify().items()):
            for status in ("alive", "gone", "altered", "unreachable", "repaired"):
                checked.add_metric([remote, status], float(v.get(status, 0)))
            last_check.add_metric([remote], float(v.get("last_check", 0)))
        yield from (checked, last_check)

        fleet = GaugeMetricFamily(
            "imgsync_fleet_items",
            "Fleet mode: the job's items by stage in the shared journal, all workers together",
            labels=["job", "stage"],
        )
        for job, stages in sorted(s.fleet().items()):
            for stage, n in sorted(stages.items()):
                fleet.add_metric([job, stage], float(n))
        yield fleet

        up = GaugeMetricFamily("imgsync_daemon_start_time_seconds", "Unix time the daemon started")
        up.add_metric([], s.started)
        reloads = CounterMetricFamily(
            "imgsync_config_reloads", "SIGHUP config reloads", labels=["result"]
        )
        reloads.add_metric(["ok"], s.reloads)
        reloads.add_metric(["failed"], s.failed_reloads)
        yield from (up, reloads)
