"""Every performance figure of issue 15, each beside its reference, measured in one run.

Usage::

    apt-get install -y rclone        # once; without it only the cp-based floor is printed
    python bench/run_all.py          # full sizes (about 10 minutes on a calm 2-core machine)
    python bench/run_all.py --quick  # small sizes, one pass (about a minute): a smoke check
    python bench/run_all.py --only copy,upload --repeat 5

Sections (``--only`` takes their names):

* ``copy``     fresh local copy of N x ~20 KB in 10 folders: imgsync vs ``rclone copy --checksum``
  (raw and followed by ``sync``) and vs ``cp -r`` + ``sync`` (the kernel's floor); the no-op
  re-run vs ``rclone copy``; a 100,000-file no-op (time beyond Python's start-up). Outputs
  go into a ``chattr +T`` folder and each round waits for a calm disk (see ``bench_copy.py``:
  a recent big delete anywhere makes every new file cost more, for every tool alike).
* ``check``    ``imgsync check SRC DST`` over the 20,000- and 100,000-file trees, beside a
  no-op copy of the same tree and ``rclone check --size-only`` (``bench_copy.py``).
* ``upload``   N x ~20 KB from a folder into the Chevereto emulator, 8 transfers, vs a bare
  aiohttp loop sending the same multipart uploads to a second emulator instance.
* ``download`` ``imgsync backup`` of N images from the Gyazo emulator (sidecars included), vs a
  bare loop that lists, GETs, writes each image and a JSON sidecar, then ``sync``s.
* ``large``    5 large images uploaded to the Gyazo emulator, MB/s vs a raw streamed upload.
  These three come from ``bench_net.py`` (each side its own emulator process, a warm-up
  run each, rounds alternating; the ratio per round and of the medians, CPU seconds).
* ``memory``   peak RSS: one 300 MB image up and down (``bench_stream.py``), an idle daemon.
* ``scale``    a migration at 1,000 and 20,000 items: per-item cost and peak RSS
  (``bench_scale.py``).
* ``fleet``    issue 18: 3 workers on one PostgreSQL state, 3,000 images at 30/second with a
  SIGKILL, and 3 vs 1 worker without a limit (``bench_fleet.py``; needs PostgreSQL).
* ``startup``  start-up cost per verb: ``python -c pass``, ``imgsync --version``,
  ``imgsync backup --help``, a 1-image backup and a 1-image upload, wall and CPU
  (``bench_startup.py``; it also runs an old checkout beside, for an A/B).

Every timed figure is a whole process (start-up included, as a user sees it), the median of
``--repeat`` runs with its spread (min-max), tools alternating order; the load average is
printed because the machine may be shared. Never run by pytest; no assertions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bench_copy
import bench_net
import bench_startup

HERE = Path(__file__).resolve().parent
PY = sys.executable
CHV_TOKEN = "bench-chv-token"
GY_TOKEN = "bench-gy-token"
TRANSFERS = 8


# ---- printing ------------------------------------------------------------------------


def fig(xs: list[float], unit: str = "s", digits: int = 3) -> str:
    """``median unit (min-max, n=N)``."""
    med = statistics.median(xs)
    if len(xs) == 1:
        return f"{med:.{digits}f} {unit}"
    return f"{med:.{digits}f} {unit} ({min(xs):.{digits}f}-{max(xs):.{digits}f}, n={len(xs)})"


def ratio(name: str, mine: list[float], ref: list[float], target: str, ok: bool | None) -> None:
    r = statistics.median(mine) / statistics.median(ref)
    verdict = "" if ok is None else ("  MET" if ok else "  MISSED")
    print(f"  -> {name}: {r:.2f}x (target {target}){verdict}")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def header(title: str) -> None:
    print(f"\n== {title} == [{load()}]", flush=True)


# ---- processes -----------------------------------------------------------------------


def env_base() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("IMGSYNC_CONFIG", None)
    env["BENCH_CHV"] = CHV_TOKEN
    env["BENCH_GY"] = GY_TOKEN
    return env


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one whole process (bench_copy.run: flushes first)."""
    t, rss_kb = bench_copy.run(cmd, env)
    return t, rss_kb / 1024


def timed_sync() -> float:
    return bench_copy.timed_sync()


def fresh_state(env: dict[str, str], work: Path, tag: str) -> None:
    folder = work / "state"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{tag}-{time.monotonic_ns()}.db"
    env["IMGSYNC_STATE"] = str(path)


def imgsync(cfg: Path | None = None) -> list[str]:
    return [PY, "-m", "imgsync", *(["--config", str(cfg)] if cfg else [])]


# ---- sections ------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.quick: bool = args.quick
        self.repeat: int = args.repeat
        self.work: Path = args.work
        self.trash = self.work / "trash"
        self.trash.mkdir(parents=True, exist_ok=True)
        self.rclone = shutil.which("rclone")
        self.out = self.work / "out"  # timed outputs (see bench_copy.spread_folder)
        self.spread_note = bench_copy.spread_folder(self.out)

    def aside(self, path: Path) -> None:
        """Move old outputs aside (deleting a big tree slows this disk for minutes)."""
        if path.exists():
            path.rename(self.trash / f"{path.name}-{time.monotonic_ns()}")

    def tree(self, name: str, files: int, folders: int, size: int, png: bool = False) -> Path:
        """bench_copy's tree of random files; ``png``: each starts as a PNG (hosts check)."""
        src = self.work / f"{name}-{files}"
        if not src.exists():
            print(f"  generating {files} files in {src} ...", flush=True)
            part = src.with_name(src.name + ".part")
            shutil.rmtree(part, ignore_errors=True)
            bench_copy.make_tree(part, files, folders=folders, size=size)
            if png:
                from imgsync.fakehosts.images import make_png

                head = make_png(64, 64, 7)[:33]
                for path in part.rglob("*.png"):
                    with open(path, "r+b") as fh:
                        fh.write(head)
            part.rename(src)
        return src

    def alternate(self, rep: int, steps: list[Callable[[], None]]) -> None:
        for step in steps if rep % 2 == 0 else steps[::-1]:
            step()

    def copy(self) -> None:
        n = 2_000 if self.quick else 20_000
        header(f"fresh local copy, {n} x ~20 KB in 10 folders")
        print(f"  {self.spread_note}")
        src = self.tree("src", n, 10, 20_000)
        env = env_base()
        res: dict[str, list[float]] = {
            k: []
            for k in ("fresh", "durable", "noop", "rc", "rc_durable", "rc_noop", "cp_durable",
                      "cpu", "rc_cpu", "noop_cpu", "rc_noop_cpu")
        }  # fmt: skip
        rss: list[float] = []

        def cpu_run(cmd: list[str], key: str) -> float:
            t, usage = bench_copy.run_usage(cmd, env)
            res[key].append(usage.ru_utime + usage.ru_stime)
            if key == "cpu":
                rss.append(usage.ru_maxrss / 1024)
            return t

        def mine() -> None:
            dst = self.out / "dst-imgsync"
            self.aside(dst)
            fresh_state(env, self.work, "copy")
            cmd = [*imgsync(), "copy", str(src), str(dst), "--no-progress"]
            t = cpu_run(cmd, "cpu")
            res["fresh"].append(t)
            res["durable"].append(t + timed_sync())
            res["noop"].append(cpu_run(cmd, "noop_cpu"))

        def rclone() -> None:
            assert self.rclone
            dst = self.out / "dst-rclone"
            self.aside(dst)
            t = cpu_run([self.rclone, "copy", "--checksum", str(src), str(dst)], "rc_cpu")
            res["rc"].append(t)
            res["rc_durable"].append(t + timed_sync())
            res["rc_noop"].append(cpu_run([self.rclone, "copy", str(src), str(dst)], "rc_noop_cpu"))

        def cp() -> None:
            dst = self.out / "dst-cp"
            self.aside(dst)
            t, _ = timed(["cp", "-r", str(src), str(dst)], env)
            res["cp_durable"].append(t + timed_sync())

        steps = [mine, cp] + ([rclone] if self.rclone else [])
        costs = []
        for rep in range(self.repeat):
            costs.append(bench_copy.settle(self.out))  # waits out a recent big delete
            self.alternate(rep, steps)
        print(f"  disk: {fig(costs, 'us', 0)} CPU to make a file before each round (calm ~20)")
        print(f"  imgsync copy              {fig(res['fresh'])}")
        print(f"  imgsync copy + sync       {fig(res['durable'])}")
        print(f"  cp -r + sync              {fig(res['cp_durable'])}")
        if self.rclone:
            print(f"  rclone copy --checksum    {fig(res['rc'])}")
            print(f"  rclone ... + sync         {fig(res['rc_durable'])}")
            r = statistics.median(res["durable"]) / statistics.median(res["rc_durable"])
            ratio("durable vs rclone+sync", res["durable"], res["rc_durable"], "<= 0.70", r <= 0.7)
            print(
                bench_copy.ratio_line(
                    "  the same, round by round", res["durable"], res["rc_durable"]
                )
            )
            ratio("raw vs raw rclone", res["fresh"], res["rc"], "none", None)
            print(f"  CPU seconds, imgsync      {fig(res['cpu'])}")
            print(f"  CPU seconds, rclone       {fig(res['rc_cpu'])}")
            ratio("CPU vs rclone (steady under load)", res["cpu"], res["rc_cpu"], "none", None)
        else:
            print("  rclone not installed (apt-get install -y rclone): cp-based floor only")
        r = statistics.median(res["durable"]) / statistics.median(res["cp_durable"])
        ratio("durable vs cp -r + sync", res["durable"], res["cp_durable"], "aim <= 1.5", r <= 1.5)
        print(f"  imgsync no-op re-run      {fig(res['noop'])}")
        if self.rclone:
            print(f"  rclone copy no-op         {fig(res['rc_noop'])}")
            r = statistics.median(res["noop"]) / statistics.median(res["rc_noop"])
            ratio("no-op vs rclone", res["noop"], res["rc_noop"], "<= 0.60", r <= 0.6)
            ratio("no-op CPU vs rclone's", res["noop_cpu"], res["rc_noop_cpu"], "none", None)
        print(f"  imgsync peak RSS          {fig(rss, 'MB', 1)}")

        big_n = 10_000 if self.quick else 100_000
        header(f"no-op re-run over {big_n} small files")
        big = self.tree("small", big_n, 500, 600)
        dst = self.out / "dst-small"
        self.aside(dst)
        fresh_state(env, self.work, "big")
        cmd = [*imgsync(), "copy", str(big), str(dst), "--no-progress"]
        timed(cmd, env)
        runs, starts, cpu = [], [], []
        for _ in range(self.repeat):
            t, used = bench_copy.run_usage(cmd, env)
            t0, used0 = bench_copy.run_usage([*imgsync(), "--version"], env)
            runs.append(t)
            starts.append(t0)
            cpu.append(sum((used.ru_utime, used.ru_stime, -used0.ru_utime, -used0.ru_stime)))
        work = [a - b for a, b in zip(runs, starts, strict=True)]
        print(f"  imgsync no-op             {fig(runs)}")
        print(f"  imgsync --version         {fig(starts)} (start-up alone)")
        ok = statistics.median(work) <= 0.5
        print(
            f"  -> work beyond start-up: {fig(work)} (target <= 0.5 s)  {'MET' if ok else 'MISSED'}"
        )
        print(f"     its CPU seconds: {fig(cpu)} (steady under load)")

    def check(self) -> None:
        n, big_n = (2_000, 10_000) if self.quick else (20_000, 100_000)
        copies = bench_copy.Bench(self.work, self.repeat, None)
        header(f"check over {n} x ~20 KB")
        copies.check(self.tree("src", n, 10, 20_000), f"{n} x ~20 KB", title=False)
        header(f"check over {big_n} small files")
        copies.check(self.tree("small", big_n, 500, 600), f"{big_n} small files", title=False)

    def upload(self) -> None:
        n = 300 if self.quick else 2_000
        header(f"uploads, {n} x ~20 KB into the Chevereto emulator, {TRANSFERS} transfers")
        bench_net.upload(self.work, bench_net.tree(self.work, n), n, self.repeat)

    def download(self) -> None:
        n = 300 if self.quick else 2_000
        header(f"downloads, backup of {n} images from the Gyazo emulator, {TRANSFERS} transfers")
        bench_net.download(self.work, n, self.repeat)

    def large(self) -> None:
        count, mb = (5, 20) if self.quick else (5, 200)
        header(f"large files, {count} x {mb} MB uploaded to the Gyazo emulator")
        bench_net.large(self.work, count, mb, self.repeat)

    def memory(self) -> None:
        size = 50 if self.quick else 300
        header(f"peak RSS: one {size} MB image up and down (bench_stream.py)")
        subprocess.run([PY, str(HERE / "bench_stream.py"), "--size", str(size),
                        "--work", str(self.work / "stream")], check=True)  # fmt: skip
        header("peak RSS: an idle daemon (imgsync run, one watch job)")
        env = env_base()
        watched = self.work / "watched"
        watched.mkdir(exist_ok=True)
        cfg = self.work / "daemon.toml"
        cfg.write_text(
            f'[[jobs]]\nname = "idle"\nkind = "watch"\nsource = "{watched}"\n'
            f'destinations = ["{self.work / "watched-copy"}"]\n'
        )
        fresh_state(env, self.work, "daemon")
        proc = subprocess.Popen([*imgsync(cfg), "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        time.sleep(5)
        status = Path(f"/proc/{proc.pid}/status").read_text() if proc.poll() is None else ""
        proc.terminate()
        _, err = proc.communicate()
        fields = dict(line.split(":", 1) for line in status.splitlines() if line.startswith("Vm"))
        if not fields:
            print(f"  the daemon exited early: {err.decode()[-500:]}")
            return
        hwm = int(fields["VmHWM"].split()[0]) / 1024
        now = int(fields["VmRSS"].split()[0]) / 1024
        ok = hwm <= 50
        print(f"  idle daemon RSS {now:.1f} MB, peak {hwm:.1f} MB (target <= 50)  "
              f"{'MET' if ok else 'MISSED'}")  # fmt: skip

    def scale(self) -> None:
        sizes = "200,2000" if self.quick else "1000,20000"
        header(f"migration at {sizes} items (bench_scale.py, one run each)")
        subprocess.run([PY, str(HERE / "bench_scale.py"), "--sizes", sizes,
                        "--work", str(self.work / "scale")], check=True)  # fmt: skip

    def fleet(self) -> None:
        images = "300" if self.quick else "3000"
        header(f"fleet mode, 3 workers, {images} images (bench_fleet.py, one run)")
        if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and not shutil.which(
            "initdb"
        ):
            print("  skipped: PostgreSQL is not installed (apt-get install -y postgresql)")
            return
        subprocess.run([PY, str(HERE / "bench_fleet.py"), "--images", images], check=True)

    def startup(self) -> None:
        repeat = max(5, 3 * self.repeat)  # short runs: more of them
        header(f"start-up per verb, whole processes, {repeat} rounds (bench_startup.py)")
        bench_startup.run(self.work / "startup", repeat)


SECTIONS = ("copy", "check", "upload", "download", "large", "memory", "scale", "fleet", "startup")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--bare":
        bench_net.run_bare(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one pass")
    ap.add_argument("--repeat", type=int, default=None, help="runs per figure (default 3)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (kept for reuse)")
    args = ap.parse_args()
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.work is None:
        args.work = Path(tempfile.mkdtemp(prefix="imgsync-bench-"))
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        sys.exit(f"unknown section(s): {', '.join(unknown)} (choose from {', '.join(SECTIONS)})")
    bench = Bench(args)
    print(f"imgsync benchmarks in {args.work}, {os.cpu_count()} cores, {load()}")
    print(bench_copy.compile_imgsync())
    print(f"rclone: {bench.rclone or 'not installed (apt-get install -y rclone)'}")
    for name in SECTIONS:
        if name in chosen:
            getattr(bench, name)()
    shutil.rmtree(bench.trash, ignore_errors=True)
    shutil.rmtree(bench.out, ignore_errors=True)


if __name__ == "__main__":
    main()
