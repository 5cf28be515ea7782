"""Benchmark: ``imgsync copy`` and ``imgsync check`` between folders, beside ``rclone``.

Prints, in one run (whole processes, start-up included; the median of ``--repeat`` rounds
with its min-max; the tools alternate their order from round to round):

* fresh durable copy of N files (~20 KB each, 10 folders): imgsync (which flushes before
  it renames) vs ``rclone copy --checksum`` followed by ``sync``; raw vs raw; CPU seconds;
  the ratio of the medians and the median (min-max) of each round's own ratio (both runs
  of a round saw about the same machine);
* the no-op re-run vs a plain ``rclone copy`` no-op; peak RSS;
* ``imgsync check SRC DST`` on that tree and on a 100,000-file one: beside a no-op copy of
  the same tree and ``rclone check --size-only`` (rclone's own check without
  ``--size-only`` reads and hashes every file on both sides: not the same work);
* the 100,000-file no-op (time beyond start-up);
* with ``--pythonpath OLD_CHECKOUT``: every imgsync figure for that checkout too, in the
  same rounds, and new/old ratios.

Disk state. ext4 without a journal (this machine's disk) skips every free inode whose
file was deleted in the last minute (six, while its inode table is not written back)
when it makes a new file, looking each one up: after a big delete, anywhere on the
machine (other developers' test runs), making a file can cost 0.5 ms instead of 20 us.
That cost is the same per file for every tool, so it pulls every ratio towards 1 (this
is how a 0.57x fresh copy read 0.80x another time). So:

* every output goes into one folder marked ``chattr +T`` (ext4's "top of a hierarchy"):
  each folder made in it is placed in a block group of its own with many free inodes,
  as the kernel does for top-level folders, not beside the shared /tmp's churn;
* before each round the CPU cost of making 400 empty files there is measured and
  printed; while it is high (a delete in the last minute), the round waits (up to 90 s);
* old outputs are moved aside, never deleted while timing (deleted at the very end), and
  a ``sync`` comes before every timed run (no run pays for another's writeback).

Usage::

    python bench/bench_copy.py [--files 20000] [--big 100000] [--repeat 3] [--work DIR]
                               [--pythonpath OLD_CHECKOUT] [--only fresh,check,big]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def make_tree(root: Path, files: int, folders: int = 100, size: int = 20_000) -> None:
    rng = random.Random(42)
    for i in range(files):
        d = root / f"dir{i % folders:03d}"
        d.mkdir(parents=True, exist_ok=True)
        body = rng.randbytes(size - 512 + rng.randrange(1024))
        (d / f"img{i:06d}.png").write_bytes(body)


def compile_imgsync(folder: str | None = None) -> str:
    """Byte-compile the imgsync being measured (or the one in ``folder``), as ``pip
    install`` does.

    An editable checkout has no ``__pycache__`` until Python writes one, and with
    ``PYTHONDONTWRITEBYTECODE=1`` (set on the team's machine) it never does: every timed
    process would compile imgsync's modules from source again (about 30 ms of a no-op
    re-run's 0.17 s) -- a cost an installed imgsync never pays. Returns a note to print.
    """
    import compileall
    import importlib.util

    if folder is None:
        spec = importlib.util.find_spec("imgsync")
        if spec is None or not spec.submodule_search_locations:
            return "imgsync not importable here: not byte-compiled"
        folder = next(iter(spec.submodule_search_locations))
    ok = compileall.compile_dir(folder, quiet=1)
    return f"imgsync byte-compiled in {folder} (as an install does){'' if ok else ' (some failed)'}"


def run(cmd: list[str], env: dict[str, str], cwd: str | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KB) of one whole process.

    Dirty pages of earlier runs are flushed first, so no run pays for another's writeback.
    """
    elapsed, usage = run_usage(cmd, env, cwd)
    return elapsed, usage.ru_maxrss


def run_usage(
    cmd: list[str], env: dict[str, str], cwd: str | None = None, ok: tuple[int, ...] = (0,)
) -> tuple[float, Any]:
    """Wall seconds and the ``rusage`` (CPU seconds, peak RSS) of one whole process, after
    a flush of earlier runs' dirty pages. CPU seconds hold still on a shared machine where
    wall time follows the load. ``cwd``: where ``python -m imgsync`` looks first."""
    os.sync()
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode not in ok:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    return elapsed, usage


def cpu_of(usage: Any) -> float:
    return float(usage.ru_utime + usage.ru_stime)


def timed_sync() -> float:
    start = time.perf_counter()
    os.sync()
    return time.perf_counter() - start


# ---- the disk's state -------------------------------------------------------------------


def spread_folder(path: Path) -> str:
    """Make ``path``, the folder every timed output goes into, and mark it ``chattr +T``:
    ext4 then places each folder made in it in a block group of its own with many free
    inodes (as for top-level folders), away from the groups other processes keep filling
    and emptying. Returns a note to print (the mark is left out where it cannot be set)."""
    path.mkdir(parents=True, exist_ok=True)
    chattr = shutil.which("chattr")
    if chattr is None:
        return f"outputs in {path} (no chattr here: folders placed as the kernel likes)"
    done = subprocess.run([chattr, "+T", str(path)], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        return f"outputs in {path} (chattr +T refused: {done.stderr.strip()[:80]})"
    return f"outputs in {path} (chattr +T: each output folder in a block group of its own)"


SLOW_CREATE_US = 80.0  # CPU per empty file made; about 20 on a calm disk here


def create_cost(where: Path, files: int = 400) -> float:
    """CPU microseconds to make one empty file in a new folder in ``where`` (the files are
    left: deleting them would slow the next ones down)."""
    folder = where / f"probe-{time.monotonic_ns()}"
    folder.mkdir()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    start = time.thread_time()
    for i in range(files):
        os.close(os.open(folder / f"f{i}", flags, 0o644))
    return (time.thread_time() - start) * 1e6 / files


def settle(where: Path, patience: float = 90.0) -> float:
    """Flush, then measure :func:`create_cost` until it is low (a recent big delete
    anywhere on the disk has aged), at most ``patience`` seconds; returns the last one."""
    deadline = time.monotonic() + patience
    while True:
        os.sync()
        cost = create_cost(where)
        if cost <= SLOW_CREATE_US or time.monotonic() >= deadline:
            return cost
        time.sleep(10)


# ---- printing ----------------------------------------------------------------------------


def fig(xs: list[float], unit: str = "s", digits: int = 3) -> str:
    """``median unit (min-max, n=N)``."""
    med = statistics.median(xs)
    if len(xs) == 1:
        return f"{med:.{digits}f} {unit}"
    return f"{med:.{digits}f} {unit} ({min(xs):.{digits}f}-{max(xs):.{digits}f}, n={len(xs)})"


def ratio_line(
    name: str, mine: list[float], ref: list[float], target: float | None = None, what: str = ""
) -> str:
    """The ratio of the medians, and each round's own ratio (median, min-max)."""
    medians = statistics.median(mine) / statistics.median(ref)
    rounds = [a / b for a, b in zip(mine, ref, strict=False)]
    text = f"  -> {name}: {medians:.2f}x"
    if len(rounds) > 1:
        text += f" (per round {statistics.median(rounds):.2f}, {min(rounds):.2f}-{max(rounds):.2f})"
    if target is not None:
        verdict = "MET" if medians <= target else "MISSED"
        text += f" (target <= {target:.2f}{what})  {verdict}"
    return text


# ---- the tools ---------------------------------------------------------------------------


class Imgsync:
    """One imgsync checkout: how to start it (``cwd``: ``python -m`` looks there first)."""

    def __init__(self, label: str, env: dict[str, str], pythonpath: Path | None) -> None:
        self.label = label
        self.env = dict(env)
        self.cwd: str | None = None
        if pythonpath is not None:
            self.env["PYTHONPATH"] = str(pythonpath)
            self.cwd = str(pythonpath)
        self.cmd = [sys.executable, "-m", "imgsync"]

    def state(self, path: Path) -> None:
        self.env["IMGSYNC_STATE"] = str(path)

    def __call__(self, *args: str, ok: tuple[int, ...] = (0,)) -> tuple[float, Any]:
        return run_usage([*self.cmd, *args], self.env, self.cwd, ok)


class Bench:
    def __init__(self, work: Path, repeat: int, old: Path | None) -> None:
        self.work = work
        self.repeat = repeat
        self.trash = work / "trash"
        self.trash.mkdir(parents=True, exist_ok=True)
        self.out = work / "out"
        print(spread_folder(self.out))
        self.rclone = shutil.which("rclone")
        env = dict(os.environ)
        env.pop("IMGSYNC_CONFIG", None)
        self.env = env
        self.sides = [Imgsync("imgsync", env, None)]
        if old is not None:
            print(compile_imgsync(str(old / "imgsync")))
            self.sides.append(Imgsync(f"imgsync {old.name}", env, old))

    def aside(self, path: Path) -> None:
        if path.exists():
            path.rename(self.trash / f"{path.name}-{time.monotonic_ns()}")

    def fresh_state(self, side: Imgsync, tag: str) -> None:
        folder = self.work / "state"
        folder.mkdir(mode=0o700, exist_ok=True)
        side.state(folder / f"{tag}-{time.monotonic_ns()}.db")

    def tree(self, name: str, files: int, folders: int, size: int) -> Path:
        src = self.work / f"{name}-{files}"
        if not src.exists():
            print(f"  generating {files} files in {src} ...", flush=True)
            part = src.with_name(src.name + ".part")
            shutil.rmtree(part, ignore_errors=True)
            make_tree(part, files, folders=folders, size=size)
            part.rename(src)
        return src

    def rounds(self, steps: list[Callable[[], None]]) -> list[float]:
        """``repeat`` rounds of ``steps``, rotated each round; the disk's create cost
        before each round."""
        costs = []
        for rep in range(self.repeat):
            costs.append(settle(self.out))
            k = rep % len(steps)
            for step in steps[k:] + steps[:k]:
                step()
        return costs

    # ---- fresh copy and no-op -------------------------------------------------------------

    def fresh(self, n: int) -> None:
        print(f"\n== fresh local copy, {n} x ~20 KB in 10 folders ==", flush=True)
        src = self.tree("src", n, 10, 20_000)
        res: dict[str, dict[str, list[float]]] = {}
        rss: list[float] = []

        def imgsync_step(side: Imgsync) -> Callable[[], None]:
            r = res.setdefault(side.label, {k: [] for k in ("raw", "durable", "cpu", "noop")})

            def step() -> None:
                dst = self.out / f"dst-{side.label.replace(' ', '-')}"
                self.aside(dst)
                self.fresh_state(side, "copy")
                t, usage = side("copy", str(src), str(dst), "--no-progress")
                r["raw"].append(t)
                r["durable"].append(t + timed_sync())
                r["cpu"].append(cpu_of(usage))
                rss.append(usage.ru_maxrss / 1024)
                r["noop"].append(side("copy", str(src), str(dst), "--no-progress")[0])

            return step

        def rclone_step() -> None:
            assert self.rclone
            r = res.setdefault("rclone", {k: [] for k in ("raw", "durable", "cpu", "noop")})
            dst = self.out / "dst-rclone"
            self.aside(dst)
            t, usage = run_usage([self.rclone, "copy", "--checksum", str(src), str(dst)], self.env)
            r["raw"].append(t)
            r["durable"].append(t + timed_sync())
            r["cpu"].append(cpu_of(usage))
            r["noop"].append(run_usage([self.rclone, "copy", str(src), str(dst)], self.env)[0])

        def cp_step() -> None:
            r = res.setdefault("cp -r", {k: [] for k in ("raw", "durable", "cpu")})
            dst = self.out / "dst-cp"
            self.aside(dst)
            t, usage = run_usage(["cp", "-r", str(src), str(dst)], self.env)
            r["raw"].append(t)
            r["durable"].append(t + timed_sync())
            r["cpu"].append(cpu_of(usage))

        steps = [imgsync_step(s) for s in self.sides] + [cp_step]
        steps += [rclone_step] if self.rclone else []
        costs = self.rounds(steps)
        print(f"  disk: {fig(costs, 'us', 0)} CPU to make a file before each round (calm ~20)")
        for label, r in res.items():
            print(
                f"  {label:<22} {fig(r['raw'])}  +sync {fig(r['durable'])}  "
                f"CPU {fig(r['cpu'], 's', 2)}"
            )
        new = res["imgsync"]
        if self.rclone:
            rc = res["rclone"]
            print(ratio_line("durable vs rclone+sync", new["durable"], rc["durable"], 0.7))
            print(ratio_line("raw vs raw rclone", new["raw"], rc["raw"]))
            print(ratio_line("CPU vs rclone's", new["cpu"], rc["cpu"]))
        else:
            print("  rclone not installed (apt-get install -y rclone): no rclone ratios")
        cp = res["cp -r"]
        print(ratio_line("durable vs cp -r + sync", new["durable"], cp["durable"], 1.5, ", aim"))
        for side in self.sides[1:]:
            old = res[side.label]
            print(ratio_line(f"durable, this vs {side.label}", new["durable"], old["durable"]))
            print(ratio_line(f"CPU, this vs {side.label}", new["cpu"], old["cpu"]))
        print(f"\n== no-op re-run, same {n} files ==")
        for label, r in res.items():
            if "noop" in r:
                print(f"  {label:<22} {fig(r['noop'])}")
        if self.rclone:
            print(ratio_line("no-op vs rclone", new["noop"], res["rclone"]["noop"], 0.6))
        for side in self.sides[1:]:
            print(ratio_line(f"no-op, this vs {side.label}", new["noop"], res[side.label]["noop"]))
        print(f"  imgsync peak RSS        {fig(rss, 'MB', 1)} (target <= 100)")

    # ---- check ------------------------------------------------------------------------

    def check(self, src: Path, label: str, title: bool = True) -> None:
        """``imgsync check`` of ``src`` against its copy, beside a no-op copy of it and
        ``rclone check --size-only``; time beyond start-up too."""
        if title:
            print(f"\n== check, {label} ==", flush=True)
        print("  (each imgsync's copy made first, untimed)", flush=True)
        res: dict[str, dict[str, list[float]]] = {}
        dsts: dict[str, Path] = {}
        for side in self.sides:
            dst = self.out / f"checked-{src.name}-{side.label.replace(' ', '-')}"
            self.aside(dst)
            self.fresh_state(side, "check")
            side("copy", str(src), str(dst), "--no-progress")
            dsts[side.label] = dst

        def imgsync_step(side: Imgsync) -> Callable[[], None]:
            r = res.setdefault(side.label, {k: [] for k in ("check", "noop", "start", "cpu")})
            dst = str(dsts[side.label])

            def step() -> None:
                t, usage = side("check", str(src), dst)
                r["check"].append(t)
                r["cpu"].append(cpu_of(usage))
                r["noop"].append(side("copy", str(src), dst, "--no-progress")[0])
                r["start"].append(side("--version")[0])

            return step

        def rclone_step() -> None:
            assert self.rclone
            r = res.setdefault("rclone", {"check": []})
            cmd = [self.rclone, "check", "--size-only", "-q", str(src), str(dsts["imgsync"])]
            r["check"].append(run_usage(cmd, self.env)[0])

        steps = [imgsync_step(s) for s in self.sides]
        steps += [rclone_step] if self.rclone else []
        self.rounds(steps)
        for side in self.sides:
            r = res[side.label]
            work = [a - b for a, b in zip(r["check"], r["start"], strict=True)]
            print(f"  {side.label + ' check':<30} {fig(r['check'])}  CPU {fig(r['cpu'], 's', 2)}")
            print(f"  {'  beyond start-up':<30} {fig(work)}")
            print(f"  {side.label + ' no-op copy':<30} {fig(r['noop'])}")
            print(ratio_line(f"{side.label} check vs its no-op copy", r["check"], r["noop"]))
        new = res["imgsync"]
        if self.rclone:
            print(f"  {'rclone check --size-only':<30} {fig(res['rclone']['check'])}")
            print(
                ratio_line(
                    "check vs rclone check --size-only", new["check"], res["rclone"]["check"]
                )
            )
        for side in self.sides[1:]:
            print(
                ratio_line(f"check, this vs {side.label}", new["check"], res[side.label]["check"])
            )

    # ---- 100,000-file no-op ----------------------------------------------------------

    def big(self, n: int) -> None:
        print(f"\n== no-op re-run over {n} small files ==", flush=True)
        src = self.tree("small", n, 500, 600)
        res: dict[str, dict[str, list[float]]] = {}
        dsts: dict[str, Path] = {}
        for side in self.sides:
            dst = self.out / f"dst-small-{side.label.replace(' ', '-')}"
            self.aside(dst)
            self.fresh_state(side, "big")
            side("copy", str(src), str(dst), "--no-progress")
            dsts[side.label] = dst

        def step_of(side: Imgsync) -> Callable[[], None]:
            r = res.setdefault(side.label, {k: [] for k in ("noop", "start", "cpu")})

            def step() -> None:
                t, usage = side("copy", str(src), str(dsts[side.label]), "--no-progress")
                t0, usage0 = side("--version")
                r["noop"].append(t)
                r["start"].append(t0)
                r["cpu"].append(cpu_of(usage) - cpu_of(usage0))

            return step

        self.rounds([step_of(s) for s in self.sides])
        for side in self.sides:
            r = res[side.label]
            work = [a - b for a, b in zip(r["noop"], r["start"], strict=True)]
            ok = statistics.median(work) <= 0.5
            print(f"  {side.label:<22} no-op {fig(r['noop'])}, start-up {fig(r['start'])}")
            print(
                f"  {'':<22} work beyond start-up {fig(work)} (target <= 0.5 s)  "
                f"{'MET' if ok else 'MISSED'}; its CPU {fig(r['cpu'])}"
            )
        for side in self.sides[1:]:
            print(
                ratio_line(
                    f"100k no-op, this vs {side.label}",
                    res["imgsync"]["noop"],
                    res[side.label]["noop"],
                )
            )


SECTIONS = ("fresh", "check", "big")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (kept for reuse)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    ap.add_argument(
        "--pythonpath", type=Path, default=None, help="also run the imgsync of another checkout"
    )
    args = ap.parse_args()
    chosen = {s.strip() for s in args.only.split(",") if s.strip()}
    work = (args.work or Path(tempfile.mkdtemp(prefix="imgsync-bench-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"imgsync copy benchmarks in {work}, {os.cpu_count()} cores, load {os.getloadavg()}")
    print(compile_imgsync())
    old = args.pythonpath.resolve() if args.pythonpath else None
    bench = Bench(work, args.repeat, old)
    if "fresh" in chosen:
        bench.fresh(args.files)
    if "check" in chosen:
        bench.check(bench.tree("src", args.files, 10, 20_000), f"{args.files} x ~20 KB")
    if "big" in chosen and args.big:
        bench.big(args.big)
        if "check" in chosen:
            bench.check(bench.tree("small", args.big, 500, 600), f"{args.big} small files")
    print(f"\nload {os.getloadavg()}; deleting old outputs ...", flush=True)
    shutil.rmtree(bench.trash, ignore_errors=True)
    shutil.rmtree(bench.out, ignore_errors=True)


if __name__ == "__main__":
    main()
