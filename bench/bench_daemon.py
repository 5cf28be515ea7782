"""Benchmark: the idle daemon's memory, and how long SIGTERM takes during uploads (issue 12).

Starts ``imgsync fakehost gyazo`` in its own process, then ``imgsync run`` with a watch job
from a folder of ``--files`` images to the emulator (paced at ``--rate`` uploads a second)
and ``[daemon] listen`` on:

* idle RSS: once every image is uploaded and the daemon is idle, ``VmRSS`` of the daemon
  (target: <= 50 MB);
* stop: a second daemon on a fresh state, SIGTERM once some uploads happened; prints how
  long until exit, its exit code, and uploads started after the signal (target: exit 0,
  well inside docker's 10 s, at most ``transfers`` uploads after the signal).

Usage: python bench/bench_daemon.py [--files 40] [--rate 4] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TOKEN = "bench-daemon-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url + "/_fakehost/stats", timeout=5) as r:
        data: dict[str, int] = json.load(r)
        return data


def wait(predicate: object, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("bench_daemon: timed out")
        time.sleep(0.05)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--rate", type=float, default=4.0)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    from imgsync.fakehosts.images import make_png

    port = free_port()
    fake = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imgsync",
            "fakehost",
            "gyazo",
            "--port",
            str(port),
            "--token",
            TOKEN,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: _answers(url))
        results = {}
        for run in ("idle", "stop"):
            folder = work / run / "shots"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(args.files):
                p = folder / f"{run}{i:03d}.png"
                p.write_bytes(make_png(32, 32, hash(run) % 1000 * 1000 + i))
                os.utime(p, (time.time() - 3600,) * 2)
            listen = free_port()
            cfg = work / run / "config.toml"
            cfg.write_text(
                f"""
[state]
path = "{work / run / "state" / "state.db"}"
[daemon]
listen = "127.0.0.1:{listen}"
shutdown_grace = "8s"
[remotes.gy]
type = "gyazo"
base_url = "{url}"
token_env = "BENCH_GY"
[limits."127.0.0.1:{port}"]
rate = "{args.rate}/second"
[[jobs]]
name = "shots"
kind = "watch"
source = "{folder}"
destinations = ["gy:"]
"""
            )
            before = stats(url)["uploads"]
            proc = subprocess.Popen(
                [sys.executable, "-m", "imgsync", "--config", str(cfg), "run"],
                env={**os.environ, "BENCH_GY": TOKEN},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                if run == "idle":
                    wait(lambda b=before: stats(url)["uploads"] - b >= args.files, 600)
                    wait(lambda lp=listen: _healthy(lp))
                    time.sleep(2)  # let the run finish recording and the loop go idle
                    results["idle_rss_mb"] = round(rss_mb(proc.pid), 1)
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
                else:
                    wait(lambda b=before: stats(url)["uploads"] - b >= 3)
                    at_signal = stats(url)["uploads"]
                    t0 = time.monotonic()
                    proc.send_signal(signal.SIGTERM)
                    code = proc.wait(60)
                    results["stop_seconds"] = round(time.monotonic() - t0, 2)
                    results["stop_exit_code"] = code
                    results["uploads_after_sigterm"] = stats(url)["uploads"] - at_signal
                    results["uploads_total"] = stats(url)["uploads"] - before
            finally:
                if proc.poll() is None:
                    proc.kill()
        print(json.dumps({"files": args.files, "rate_per_s": args.rate, **results}))
        print(
            f"idle RSS {results['idle_rss_mb']} MB (target <= 50); SIGTERM -> exit "
            f"{results['stop_exit_code']} in {results['stop_seconds']} s, "
            f"{results['uploads_after_sigterm']} uploads after the signal, "
            f"{results['uploads_total']}/{args.files} sent; ratio stop/10 s docker limit "
            f"{results['stop_seconds'] / 10:.2f}"
        )
    finally:
        fake.terminate()
        fake.wait(10)


def _answers(url: str) -> bool:
    try:
        stats(url)
    except OSError:
        return False
    return True


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()
