"""The synchronous side of the shared state: ``imgsync status`` on a state URL, and the
host pauses a worker saves and loads outside its run's connection.

``shared_status`` answers in the shape of the SQLite state's status (objects, remotes,
jobs, failures, runs, pauses, cursors), counted over every worker, plus what only a
fleet has (uploads in flight, live workers, requests per limited host).
"""

from __future__ import annotations

import json
import time
from typing import Any

from imgsync.state import queries
from imgsync.state.fleet import schema
from imgsync.state.fleet.common import describe, driver, redact

_DB_NOW = "EXTRACT(EPOCH FROM clock_timestamp())"


def _connect(url: str) -> Any:
    psycopg = driver()
    try:
        return psycopg.connect(url, connect_timeout=10, autocommit=True)
    except (psycopg.Error, OSError) as exc:
        raise describe(url, exc) from None


def shared_status(url: str) -> dict[str, Any]:
    """What the shared state at ``url`` holds (``exists`` False before any worker ran)."""
    psycopg = driver()
    now = time.time()
    conn = _connect(url)
    try:
        with conn:
            version = schema.version_sync(conn)
            if not version:
                return {"state": redact(url), "exists": False}
            if version < schema.SCHEMA_VERSION:  # as the next worker to connect would
                schema.migrate_sync(conn)
            return {"state": redact(url), "exists": True, **_status(conn, now)}
    except psycopg.Error as exc:
        raise describe(url, exc) from None


def _status(conn: Any, now: float) -> dict[str, Any]:
    objects, total = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM fleet_objects"
    ).fetchone()
    remotes = {
        r: {"items": int(n)}
        for r, n in conn.execute(
            "SELECT remote, COUNT(*) FROM fleet_locations GROUP BY remote ORDER BY remote"
        )
    }
    jobs, failures, duplicates = queries.journal_overview(conn, "fleet_journal")
    runs = [
        {
            "job": r[0],
            "verb": r[1],
            "started": r[2],
            "finished": r[3],
            "summary": json.loads(r[4]) if r[4] else None,
            "worker": r[5],
        }
        for r in conn.execute(
            "SELECT job, verb, started, finished, summary, owner FROM fleet_runs "
            "ORDER BY id DESC LIMIT 5"
        )
    ]
    pauses = {
        a: {"until": float(u), "reason": why}
        for a, u, why in conn.execute(
            "SELECT authority, until, reason FROM fleet_pauses WHERE until > %s ORDER BY 1",
            (now,),
        )
    }
    cursors = {
        f"{r[0]}/{r[1]}": {"cursor": r[2], "done": bool(r[3])}
        for r in conn.execute("SELECT remote, scope, cursor, done FROM fleet_cursors ORDER BY 1, 2")
    }
    leases, workers = conn.execute(  # lease expiries are on the database's clock
        f"SELECT COUNT(*), COUNT(DISTINCT owner) FROM fleet_claims WHERE expires >= {_DB_NOW}"
    ).fetchone()
    hosts = {
        a: int(n)
        for a, n in conn.execute(
            "SELECT authority, COUNT(*) FROM fleet_rate_log WHERE stamp > "
            "EXTRACT(EPOCH FROM clock_timestamp()) - 60 GROUP BY authority ORDER BY 1"
        )
    }
    listings = {}
    if schema.version_sync(conn) >= 4:
        for src, dst, rnd, pages, done, held, last in conn.execute(
            "SELECT p.src, p.dst, p.round, COUNT(*), "
            "COUNT(*) FILTER (WHERE p.state = 'done'), "
            "COUNT(*) FILTER (WHERE p.state <> 'done' AND p.owner IS NOT NULL "
            f"AND p.expires >= {_DB_NOW}), BOOL_OR(p.last) FROM fleet_pages p "
            "WHERE p.round = (SELECT MAX(q.round) FROM fleet_pages q "
            "WHERE q.src = p.src AND q.dst = p.dst) GROUP BY p.src, p.dst, p.round ORDER BY 1, 2"
        ):
            listings[f"{src} -> {dst}"] = {
                "source": src,
                "dest": dst,
                "round": int(rnd),
                "pages": int(pages),
                "done": int(done),
                "held": int(held),
                "complete": bool(last) and int(done) == int(pages),
            }
    return {
        "objects": int(objects),
        "bytes": int(total),
        "remotes": remotes,
        "jobs": jobs,
        "recent_failures": failures,
        "possible_duplicates": duplicates,
        "recent_runs": runs,
        "paused_hosts": pauses,
        "cursors": cursors,
        "verify": {},
        "fleet": {
            "leases": int(leases),
            "workers": int(workers),
            "hosts": hosts,
            "listings": listings,
        },
    }


def job_totals(url: str) -> dict[str, dict[str, int]]:
    """job -> stage -> items in the fleet's journal (``/metrics``)."""
    psycopg = driver()
    conn = _connect(url)
    out: dict[str, dict[str, int]] = {}
    try:
        with conn:
            if schema.version_sync(conn) < 3:
                return out
            for job, stage, n in conn.execute(
                "SELECT job, stage, COUNT(*) FROM fleet_journal GROUP BY job, stage"
            ):
                out.setdefault(job, {})[stage] = int(n)
    except psycopg.Error as exc:
        raise describe(url, exc) from None
    return out


def save_pause(url: str, authority: str, until: float, reason: str) -> None:
    """Store a host pause for every worker (a later end wins over an earlier one)."""
    psycopg = driver()
    conn = _connect(url)
    try:
        with conn:
            if schema.version_sync(conn) < schema.SCHEMA_VERSION:
                schema.migrate_sync(conn)
            conn.execute(schema.PAUSE_UPSERT, (authority, until, reason))
    except psycopg.Error as exc:
        raise describe(url, exc) from None


def load_pauses(url: str) -> dict[str, tuple[float, str]]:
    """Host pauses in force for the fleet: authority -> (until, reason)."""
    psycopg = driver()
    conn = _connect(url)
    try:
        with conn:
            if schema.version_sync(conn) < 3:
                return {}
            rows = conn.execute(
                "SELECT authority, until, reason FROM fleet_pauses WHERE until > %s",
                (time.time(),),
            ).fetchall()
    except psycopg.Error as exc:
        raise describe(url, exc) from None
    return {a: (float(u), str(why)) for a, u, why in rows}
