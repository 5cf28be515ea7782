"""Benchmark: ``imgsync copy`` between folders beside ``rclone copy`` on the same tree.

Prints, in one run (whole processes, wall time, best of ``--repeat``):

* fresh copy of N files (~20 KB each, ~100 folders): imgsync vs ``rclone copy --checksum``
* no-op re-run: imgsync vs a plain ``rclone copy`` no-op
* imgsync's peak RSS (from ``wait4``)
* a no-op re-run over a 100,000-file tree

Targets (issue 2): fresh <= 0.7x rclone, no-op <= 0.6x rclone, 100k no-op <= 0.5 s,
RSS <= 100 MB. Old outputs are moved aside and deleted at the end (writing right after
deleting a large tree is slow on this disk), and the tool that runs first alternates.

Usage: python bench/bench_copy.py [--files 20000] [--big 100000] [--repeat 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def make_tree(root: Path, files: int, folders: int = 100, size: int = 20_000) -> None:
    rng = random.Random(42)
    for i in range(files):
        d = root / f"dir{i % folders:03d}"
        d.mkdir(parents=True, exist_ok=True)
        body = rng.randbytes(size - 512 + rng.randrange(1024))
        (d / f"img{i:06d}.png").write_bytes(body)


def compile_imgsync() -> str:
    """Byte-compile the imgsync being measured, as ``pip install`` does.

    An editable checkout has no ``__pycache__`` until Python writes one, and with
    ``PYTHONDONTWRITEBYTECODE=1`` (set on the team's machine) it never does: every timed
    process would compile imgsync's modules from source again (about 30 ms of a no-op
    re-run's 0.17 s) -- a cost an installed imgsync never pays. Returns a note to print.
    """
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("imgsync")
    if spec is None or not spec.submodule_search_locations:
        return "imgsync not importable here: not byte-compiled"
    folder = next(iter(spec.submodule_search_locations))
    ok = compileall.compile_dir(folder, quiet=1)
    return f"imgsync byte-compiled in {folder} (as an install does){'' if ok else ' (some failed)'}"


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KB) of one whole process.

    Dirty pages of earlier runs are flushed first, so no run pays for another's writeback.
    """
    elapsed, usage = run_usage(cmd, env)
    return elapsed, usage.ru_maxrss


def run_usage(cmd: list[str], env: dict[str, str]) -> tuple[float, Any]:
    """Wall seconds and the ``rusage`` (CPU seconds, peak RSS) of one whole process, after
    a flush of earlier runs' dirty pages. CPU seconds hold still on a shared machine where
    wall time follows the load."""
    os.sync()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    return elapsed, usage


def timed_sync() -> float:
    start = time.perf_counter()
    os.sync()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="imgsync-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    trash = work / "trash"
    trash.mkdir(exist_ok=True)
    imgsync = [sys.executable, "-m", "imgsync"]
    print(compile_imgsync())
    rclone = shutil.which("rclone")
    env = dict(os.environ)
    env.pop("IMGSYNC_CONFIG", None)

    src = work / "src"
    if not src.exists():
        print(f"generating {args.files} files in {src} ...", flush=True)
        make_tree(src, args.files)

    def aside(path: Path) -> None:
        if path.exists():
            path.rename(trash / f"{path.name}-{time.monotonic_ns()}")

    fresh: dict[str, list[float]] = {"imgsync": [], "rclone": []}
    # the same runs timed until their bytes are on disk (imgsync flushes before it
    # renames; rclone leaves the flush to the kernel): run time + a `sync` right after
    durable: dict[str, list[float]] = {"imgsync": [], "rclone": []}
    noop: dict[str, list[float]] = {"imgsync": [], "rclone": []}
    rss = 0
    for rep in range(args.repeat):
        order = ["imgsync", "rclone"] if rep % 2 == 0 else ["rclone", "imgsync"]
        for tool in order:
            if tool == "rclone" and not rclone:
                continue
            dst = work / f"dst-{tool}"
            aside(dst)
            state = work / f"state-{rep}.db"
            for p in (state, Path(f"{state}-wal"), Path(f"{state}-shm")):
                if p.exists():
                    p.unlink()
            env["IMGSYNC_STATE"] = str(state)
            if tool == "imgsync":
                cmd = [*imgsync, "copy", str(src), str(dst), "--no-progress"]
                t, r = run(cmd, env)
                rss = max(rss, r)
                fresh["imgsync"].append(t)
                durable["imgsync"].append(t + timed_sync())
                t, r = run(cmd, env)
                rss = max(rss, r)
                noop["imgsync"].append(t)
            else:
                assert rclone
                t, _ = run([rclone, "copy", "--checksum", str(src), str(dst)], env)
                fresh["rclone"].append(t)
                durable["rclone"].append(t + timed_sync())
                t, _ = run([rclone, "copy", str(src), str(dst)], env)
                noop["rclone"].append(t)

    print(f"\n== {args.files} files, best of {args.repeat} (whole processes) ==")
    fi, ni = min(fresh["imgsync"]), min(noop["imgsync"])
    print(f"imgsync fresh copy      {fi:7.3f} s")
    print(f"imgsync no-op re-run    {ni:7.3f} s")
    if fresh["rclone"]:
        fr, nr = min(fresh["rclone"]), min(noop["rclone"])
        print(
            f"rclone copy --checksum  {fr:7.3f} s   ratio imgsync/rclone = {fi / fr:.2f} "
            f"(target <= 0.70)"
        )
        di, dr = min(durable["imgsync"]), min(durable["rclone"])
        print(f"until on disk (+sync)   imgsync {di:.3f} s, rclone {dr:.3f} s, ratio {di / dr:.2f}")
        print(
            f"rclone copy no-op       {nr:7.3f} s   ratio imgsync/rclone = {ni / nr:.2f} "
            f"(target <= 0.60)"
        )
    else:
        print("rclone not installed (apt-get install rclone): no ratios")
    print(f"imgsync peak RSS        {rss / 1024:7.1f} MB (target <= 100)")

    if args.big:
        big = work / f"src-{args.big}"
        if not big.exists():
            print(f"\ngenerating {args.big} small files ...", flush=True)
            make_tree(big, args.big, folders=500, size=600)
        dst = work / "dst-big"
        aside(dst)
        env["IMGSYNC_STATE"] = str(work / "state-big.db")
        cmd = [*imgsync, "copy", str(big), str(dst), "--no-progress"]
        run(cmd, env)
        times = [run(cmd, env)[0] for _ in range(args.repeat)]
        start = time.perf_counter()
        run([sys.executable, "-c", "pass"], env)
        bare = time.perf_counter() - start
        print(f"\n== {args.big} files no-op ==")
        print(
            f"imgsync no-op re-run    {min(times):7.3f} s (python start-up alone {bare:.3f} s; "
            f"work {min(times) - bare:.3f} s, target <= 0.5)"
        )
    shutil.rmtree(trash, ignore_errors=True)


if __name__ == "__main__":
    main()
