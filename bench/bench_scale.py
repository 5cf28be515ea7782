"""Benchmark: a whole migration at two sizes, Gyazo emulator -> Chevereto emulator.

For each ``--sizes`` N: fresh emulators (each in its own process, Gyazo seeded with N
images, no rate limits) and a fresh state database; then one whole
``imgsync migrate gy: chv: --map map.csv`` process, timed, with its peak RSS from
``wait4``. Prints seconds per item at each size and their ratio.

Targets (issue 11): peak RSS <= 120 MB at 20,000 items; per-item cost at 20,000 within
1.3x of that at 1,000. ``--pythonpath DIR`` runs another checkout (e.g. the old code).

Usage: python bench/bench_scale.py [--sizes 1000,20000] [--transfers 4] [--pythonpath DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(
    kind: str, port: int, token: str, env: dict[str, str], *extra: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgsync", "fakehost", kind, "--port", str(port),
         "--token", token, "--rate", "1000000/second", *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/_fakehost/stats"
    for _ in range(1200):  # seeding many images takes a while
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"the {kind} emulator did not start")


def one(
    size: int, work: Path, env: dict[str, str], transfers: int
) -> tuple[float, float, float, dict]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = {**env, "IMGSYNC_STATE": str(work / "state" / "state.db")}
    env.update(BENCH_GY="gy-bench-token", BENCH_CHV="chv-bench-token")
    gp, cp = free_port(), free_port()
    gy = start("gyazo", gp, env["BENCH_GY"], env, "--seed", str(size))
    chv = start("chevereto", cp, env["BENCH_CHV"], env, "--max-upload-mb", "50")
    try:
        cfg = work / "cfg.toml"
        cfg.write_text(
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "http://127.0.0.1:{gp}"\n'
            'token_env = "BENCH_GY"\n'
            f'[remotes.chv]\ntype = "chevereto"\nbase_url = "http://127.0.0.1:{cp}"\n'
            'token_env = "BENCH_CHV"\n'
        )
        cmd = [
            sys.executable, "-m", "imgsync", "--config", str(cfg), "migrate", "gy:", "chv:",
            "--map", str(work / "map.csv"), "--transfers", str(transfers), "--no-progress",
        ]  # fmt: skip
        start_t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start_t
        code = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if code != 0:
            sys.exit(f"migrate of {size} items failed ({code}):\n{err[-2000:]}")
        stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{cp}/_fakehost/stats").read())
    finally:
        gy.terminate()
        chv.terminate()
        gy.wait()
        chv.wait()
    return elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,20000")
    ap.add_argument("--transfers", type=int, default=4)
    ap.add_argument("--pythonpath", default=None)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    base = Path(args.work or tempfile.mkdtemp(prefix="imgsync-scale-")).resolve()
    env = dict(os.environ)
    env.pop("IMGSYNC_CONFIG", None)
    if args.pythonpath:
        env["PYTHONPATH"] = str(Path(args.pythonpath).resolve())
        # ``python -m imgsync`` looks in the current folder before PYTHONPATH: started
        # from a checkout, it would run that checkout's imgsync instead
        os.chdir(args.pythonpath)
    else:
        from bench_copy import compile_imgsync

        print(compile_imgsync())
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        print(f"migrating {size} items ...", flush=True)
        elapsed, rss, cpu, stats = one(size, base / f"n{size}", env, args.transfers)
        results.append((size, elapsed, rss, cpu, stats))
    which = args.pythonpath or "this checkout"
    print(f"\n== migrate gy: -> chv: (emulators), --transfers {args.transfers} ({which}) ==")
    for size, elapsed, rss, cpu, stats in results:
        print(
            f"{size:>7} items  {elapsed:8.2f} s  {1000 * elapsed / size:6.2f} ms/item wall  "
            f"{1000 * cpu / size:6.2f} ms/item imgsync CPU  peak RSS {rss:6.1f} MB  "
            f"uploads {stats['uploads']}"
        )
    if len(results) >= 2:
        (n0, t0, _, c0, _), (n1, t1, r1, c1, _) = results[0], results[-1]
        ratio = (t1 / n1) / (t0 / n0)
        print(
            f"per-item cost {n1} vs {n0}: wall {ratio:.2f}x (the emulators share the 2 cores), "
            f"imgsync CPU {(c1 / n1) / (c0 / n0):.2f}x (target <= 1.30)"
        )
        print(f"peak RSS at {n1}: {r1:.1f} MB (target <= 120)")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
