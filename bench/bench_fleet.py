"""Benchmark: fleet mode, N `imgsync migrate` workers on one PostgreSQL state (issue 18).

A Gyazo emulator seeded with ``--images`` images migrates to a Guizhan emulator (each
emulator ``imgsync fakehost`` in its own process), every worker a separate process with
its own empty SQLite state (separate machines, as far as imgsync can tell), on one
throwaway PostgreSQL cluster (``tests/pgserver.py``). Printed, per scenario:

* limited: the destination enforces ``--rate`` per second (a fixed window, as Laravel
  counts) and every worker's ``[limits]`` says the same. One worker is SIGKILLed once a
  third of the images are uploaded; the others finish the job. Uploads vs distinct
  checksums (nothing lost: distinct = images; extra uploads = what the killed worker had
  in flight), map completeness of every surviving worker, throttled replies, and the
  fleet's achieved rate over the uploads' span as a ratio of the limit (target >= 0.9,
  and never above 1);
* unlimited: ``--workers`` workers vs 1 worker, wall time ratio (target >= 2x), with
  the CPU seconds the workers, the emulators and PostgreSQL used, against what the
  machine's cores could give in that time (so "what bounds it" is a measurement); and,
  as the machine's own ceiling, ``--workers`` runs that share nothing at all (SQLite
  only, each its own pair of emulators and ``images / workers`` images) against one such
  run of all the images: the most any coordination could get here.

* recovery (``--only recovery``, or with the others): the limited run again, one worker
  SIGKILLed once a third is uploaded, measuring the fleet's upload rate from the kill
  over the next ``--window`` seconds (the survivors taking over its pages and leases, each
  taken-over lease searched for at the destination before it is sent again) against the
  limit, and the destination's requests that were not uploads in that window (listing
  pages read by the searches). With ``--pythonpath OLD_CHECKOUT`` the same is run first
  with the workers on that checkout (old vs new, same machine, same load).

Usage: python bench/bench_fleet.py [--images 3000] [--workers 3] [--rate 30] [--no-kill]
       [--only limited|unlimited|recovery] [--pythonpath OLD_CHECKOUT] [--window 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pgserver import PgServer, pg_bindir

GY, GZ = "bench-gyazo-token", "bench-guizhan-token"
PY = sys.executable
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_of(pids: list[int], *, reaped: bool = False) -> float:
    """CPU seconds (user + system) the processes used so far (``reaped``: with their
    children that ended, such as PostgreSQL's backends of closed connections)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks = int(fields[11]) + int(fields[12])
        if reaped:
            ticks += int(fields[13]) + int(fields[14])
        total += ticks / TICK
    return total


def postgres_cpu(pg: PgServer) -> float:
    pids = postgres_pids(pg)
    return cpu_of(pids[:1], reaped=True) + cpu_of(pids[1:])


def postgres_pids(pg: PgServer) -> list[int]:
    """The cluster's postmaster and its backends."""
    try:
        master = int((pg.data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError):
        return []
    pids = [master]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == master:
            pids.append(int(stat.parent.name))
    return pids


class Emulator:
    """``imgsync fakehost KIND`` in its own process."""

    def __init__(self, kind: str, token: str, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.authority = f"127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [PY, "-m", "imgsync", "fakehost", kind, "--port", str(self.port), "--token", token,
             *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(1200):  # seeding many images takes a while
            try:
                self.stats()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        sys.exit(f"the {kind} emulator did not start")

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(self.url + "/_fakehost/stats", timeout=5) as r:
            data: dict[str, int] = json.loads(r.read())
            return data

    def cpu(self) -> float:
        return cpu_of([self.proc.pid])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


@dataclass
class Result:
    elapsed: float = 0.0
    uploads: int = 0
    distinct: int = 0
    throttled: int = 0
    maps: list[int] = field(default_factory=list)
    span: float = 0.0  # first to last upload, as sampled
    spanned: int = 0  # uploads within the span
    killed_at: int | None = None
    cpu_workers: float = 0.0
    cpu_emulators: float = 0.0
    cpu_postgres: float = 0.0
    source_requests: int = 0
    # (seconds since start, destination uploads, destination requests), sampled
    samples: list[tuple[float, int, int]] = field(default_factory=list)
    killed_t: float | None = None  # when the kill was sent (seconds since start)


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


async def independent(work: Path, images: int, runs: int) -> float:
    """Wall time of ``runs`` SQLite-only migrations sharing nothing, all at once, of
    ``images / runs`` images each (each its own emulators, started beforehand)."""
    each = images // runs
    emus = []
    for _ in range(runs):
        emus.append(Emulator("gyazo", GY, "--seed", str(each), "--rate", "1000000/second"))
        emus.append(Emulator("guizhan", GZ, "--rate", "1000000/second"))
    try:
        procs = []
        start = time.perf_counter()
        for i in range(runs):
            gy, gz = emus[2 * i], emus[2 * i + 1]
            cfg = work / f"alone-{runs}-{i}.toml"
            cfg.write_text(
                f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{gy.url}"\ntoken_env = "GY"\n'
                f'[remotes.gz]\ntype = "guizhan"\nbase_url = "{gz.url}"\ntoken_env = "GZ"\n'
                f'[limits."{gz.authority}"]\nrate = "none"\n'
            )
            env = {
                **os.environ,
                "GY": GY,
                "GZ": GZ,
                "IMGSYNC_STATE": str(work / f"alone-{runs}-{i}" / "state.db"),
            }
            env.pop("IMGSYNC_STATE_URL", None)
            args = ["--config", str(cfg), "migrate", "gy:", "gz:", "--map",
                    str(work / f"alone-{runs}-{i}.csv")]  # fmt: skip
            procs.append(
                await asyncio.create_subprocess_exec(
                    PY,
                    "-m",
                    "imgsync",
                    *args,
                    env=env,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )
        codes = [await p.wait() for p in procs]
        if any(codes):
            sys.exit(f"an independent run failed: {codes}")
        return time.perf_counter() - start
    finally:
        for e in emus:
            e.stop()


async def scenario(
    pg: PgServer,
    work: Path,
    images: int,
    workers: int,
    rate: int | None,
    kill: bool,
    pythonpath: Path | None = None,
) -> Result:
    tag = f"{workers}-{rate}-{'old' if pythonpath else 'new'}"
    gz_rate = f"{rate}/second" if rate else "1000000/second"
    gyazo = Emulator("gyazo", GY, "--seed", str(images), "--rate", "1000000/second")
    guizhan = Emulator("guizhan", GZ, "--rate", gz_rate)
    res = Result()
    try:
        # no limit: rate = "none" lifts Guizhan's default 60/minute too
        limit = f"{rate}/second" if rate else "none"
        limits = f'[limits."{guizhan.authority}"]\nrate = "{limit}"\n'
        cfg = work / f"cfg-{tag}.toml"
        cfg.write_text(
            limits + f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{gyazo.url}"\n'
            f'token_env = "GY"\n[remotes.gz]\ntype = "guizhan"\nbase_url = "{guizhan.url}"\n'
            'token_env = "GZ"\n'
        )
        url = pg.new_database()
        pg_before = postgres_cpu(pg)
        em_before = gyazo.cpu() + guizhan.cpu()
        kids_before = children_cpu()
        procs = []
        start = time.perf_counter()
        for w in range(workers):
            env = {
                **os.environ,
                "GY": GY,
                "GZ": GZ,
                "IMGSYNC_STATE": str(work / f"s-{tag}-{w}" / "state.db"),
                "IMGSYNC_STATE_URL": url,
            }
            if pythonpath is not None:  # ``python -m`` looks in the current folder first
                env["PYTHONPATH"] = str(pythonpath)
            args = ["--config", str(cfg), "migrate", "gy:", "gz:", "--json",
                    "--map", str(work / f"map-{tag}-{w}.csv")]  # fmt: skip
            procs.append(
                await asyncio.create_subprocess_exec(
                    PY,
                    "-m",
                    "imgsync",
                    *args,
                    env=env,
                    cwd=str(pythonpath) if pythonpath is not None else None,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        waiters = [asyncio.ensure_future(p.communicate()) for p in procs]
        samples: list[tuple[float, int]] = []
        while not all(w.done() for w in waiters):
            seen = guizhan.stats()
            up = seen["uploads"]
            samples.append((time.perf_counter(), up))
            res.samples.append((time.perf_counter() - start, up, seen["requests"]))
            if kill and res.killed_at is None and up >= images // 3:
                procs[0].send_signal(signal.SIGKILL)
                res.killed_at = up
                res.killed_t = time.perf_counter() - start
            await asyncio.sleep(0.25)
        res.elapsed = time.perf_counter() - start
        outs = [w.result() for w in waiters]
        for i, (p, (out, err)) in enumerate(zip(procs, outs, strict=True)):
            if kill and i == 0:
                continue
            if p.returncode != 0:
                sys.exit(f"worker {i} failed ({p.returncode}): {err.decode()[-2000:]}")
            res.maps.append(json.loads(out)["map_rows"])
        res.cpu_workers = children_cpu() - kids_before
        res.cpu_emulators = gyazo.cpu() + guizhan.cpu() - em_before
        res.cpu_postgres = postgres_cpu(pg) - pg_before
        src, dst = gyazo.stats(), guizhan.stats()
        res.uploads, res.distinct = dst["uploads"], dst["distinct_checksums"]
        res.throttled, res.source_requests = dst["throttled"], src["requests"]
        final = samples[-1][1] if samples else 0
        moving = [(t, n) for t, n in samples if n > 0]
        if moving:
            first = moving[0]
            last = next((t, n) for t, n in samples if n >= res.uploads) if final else first
            res.span, res.spanned = last[0] - first[0], last[1] - first[1]
    finally:
        gyazo.stop()
        guizhan.stop()
    return res


def recovery(r: Result, window: float) -> tuple[float, int, float]:
    """(uploads per second from the kill over ``window`` seconds, the destination's other
    requests then, the seconds actually covered)."""
    if r.killed_t is None or not r.samples:
        return 0.0, 0, 0.0
    at = next(s for s in r.samples if s[0] >= r.killed_t)
    end = [s for s in r.samples if s[0] <= at[0] + window][-1]
    if math.isinf(window):  # to the last upload (not the workers' wind-down after it)
        end = next(s for s in r.samples if s[1] >= r.samples[-1][1])
    span = end[0] - at[0]
    ups = end[1] - at[1]
    others = (end[2] - at[2]) - ups
    return (ups / span if span > 0 else 0.0), others, span


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_line(r: Result) -> str:
    cores = os.cpu_count() or 1
    used = r.cpu_workers + r.cpu_emulators + r.cpu_postgres
    return (
        f"CPU s: workers {r.cpu_workers:.1f}, emulators {r.cpu_emulators:.1f}, "
        f"postgres {r.cpu_postgres:.1f} = {used:.1f} of {cores * r.elapsed:.1f} "
        f"({cores} cores x {r.elapsed:.1f}s: {used / (cores * r.elapsed):.0%})"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--rate", type=int, default=30)
    ap.add_argument("--no-kill", action="store_true", help="no SIGKILL in the limited run")
    ap.add_argument("--only", choices=("limited", "unlimited", "recovery"))
    ap.add_argument("--pythonpath", type=Path, help="an old checkout: recovery old vs new")
    ap.add_argument("--window", type=float, default=20.0, help="recovery window, seconds")
    args = ap.parse_args()
    bindir = pg_bindir()
    if bindir is None:
        sys.exit("PostgreSQL is not installed (initdb not found)")
    root = Path(tempfile.mkdtemp(prefix="imgsync-pg-", dir="/tmp"))
    os.chmod(root, 0o755)
    pg = PgServer(root, bindir)
    pg.start()
    n, w = args.images, args.workers
    print(f"bench_fleet: {n} images, {w} workers, {os.cpu_count()} cores; {load()}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            if args.only in (None, "limited"):
                kill = not args.no_kill
                lim = await scenario(pg, work, n, w, args.rate, kill)
                rate = lim.spanned / lim.span if lim.span else 0.0
                print(
                    f"limited {args.rate}/s: uploads {lim.uploads}, distinct checksums "
                    f"{lim.distinct} of {n} images ({lim.uploads - lim.distinct} extra), "
                    f"throttled {lim.throttled}, maps {lim.maps} rows of {2 * n}"
                )
                print(
                    f"  achieved {rate:.2f}/s over the uploads' {lim.span:.1f}s = "
                    f"{rate / args.rate:.3f}x the limit; end to end {lim.elapsed:.1f}s "
                    f"({lim.uploads / lim.elapsed / args.rate:.3f}x, start-up and the "
                    f"last pages included); source requests {lim.source_requests}"
                )
                if kill:
                    lost = n - lim.distinct
                    print(
                        f"  SIGKILL of worker 0 at {lim.killed_at} uploads: {lost} images "
                        f"lost, {lim.uploads - lim.distinct} uploaded twice (its uploads in "
                        f"flight); survivors' maps complete: "
                        f"{all(m == 2 * n for m in lim.maps)}"
                    )
                print("  " + cpu_line(lim) + f"; {load()}")
            if args.only in (None, "recovery"):
                runs: list[tuple[str, Path | None]] = [("new", None)]
                if args.pythonpath is not None:
                    runs.insert(0, ("old", args.pythonpath.resolve()))
                for name, path in runs:
                    rec = await scenario(pg, work, n, w, args.rate, True, path)
                    speed, others, span = recovery(rec, args.window)
                    rest, others_all, rest_span = recovery(rec, math.inf)
                    print(
                        f"recovery ({name}): from the SIGKILL to the end {rest:.2f} uploads/s = "
                        f"{rest / args.rate:.3f}x the limit over {rest_span:.1f}s, "
                        f"{others_all} other destination requests"
                    )
                    print(
                        f"recovery ({name}): {speed:.2f} uploads/s over the {span:.1f}s after "
                        f"the SIGKILL = {speed / args.rate:.3f}x the limit; {others} other "
                        f"destination requests then (searches' listing pages, downloads); "
                        f"uploads {rec.uploads} of {rec.distinct} distinct "
                        f"({rec.uploads - rec.distinct} extra); throttled {rec.throttled}; {load()}"
                    )
            if args.only in (None, "unlimited"):
                one = await scenario(pg, work, n, 1, None, False)
                many = await scenario(pg, work, n, w, None, False)
                print(
                    f"unlimited: 1 worker {one.elapsed:.1f}s, {w} workers {many.elapsed:.1f}s "
                    f"(uploads {many.uploads} of {many.distinct}): "
                    f"{one.elapsed / many.elapsed:.2f}x"
                )
                print("  1 worker:  " + cpu_line(one))
                print(f"  {w} workers: " + cpu_line(many) + f"; {load()}")
                alone1 = await independent(work, n, 1)
                alone = await independent(work, n, w)
                print(
                    f"  the machine's ceiling: {w} runs sharing nothing (SQLite, own emulators, "
                    f"{n // w} images each) {alone:.1f}s vs one run of {n} {alone1:.1f}s: "
                    f"{alone1 / alone:.2f}x; the fleet got "
                    f"{(one.elapsed / many.elapsed) / (alone1 / alone):.0%} of that; {load()}"
                )
    finally:
        pg.stop()


if __name__ == "__main__":
    asyncio.run(main())
