"""Start-up figures: what a process costs before (and after) its work, per verb.

Whole processes, wall and CPU seconds (user + system, steadier than wall on a shared
machine), median (min-max) of ``--repeat`` runs, the commands alternating:

* ``python -c pass``            the interpreter alone (the floor no change can go under);
* ``imgsync --version``         the command line's own imports;
* ``imgsync backup --help``     the parser of one verb;
* ``imgsync backup gy: DIR``    a 1-image backup from the Gyazo emulator: start-up, the
  HTTP stack, state, one download and sidecar, the gallery, exit;
* ``imgsync copy ./one chv:``   a 1-image upload to the Chevereto emulator.

With ``--pythonpath OLD_CHECKOUT`` every imgsync command also runs from that checkout in
the same rounds, and the ratio new/old of the CPU medians is printed (A/B on a loaded
machine: both sides see the same load). The emulators run in their own processes, as in
``bench_net.py``. Run through ``bench/run_all.py --only startup`` or alone::

    python bench/bench_startup.py [--repeat 15] [--pythonpath OLD_CHECKOUT] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bench_copy
import bench_net

PY = sys.executable


def measure(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """Wall and CPU seconds of one whole process (it must exit 0)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"command failed: {' '.join(cmd)}\n{err.decode()[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime


def fig(xs: list[float]) -> str:
    ms = [x * 1000 for x in xs]
    med = statistics.median(ms)
    if len(ms) == 1:
        return f"{med:6.0f} ms"
    return f"{med:6.0f} ms ({min(ms):.0f}-{max(ms):.0f})"


def run(work: Path, repeat: int, old: Path | None = None) -> dict[str, float]:
    """Measure every command ``repeat`` times (and the old checkout's, if given); print;
    return the median CPU seconds per label."""
    work.mkdir(parents=True, exist_ok=True)
    env = bench_net.env_base(work)
    one = work / "one-image"
    if not one.exists():
        from imgsync.fakehosts.images import make_png

        one.mkdir()
        (one / "one.png").write_bytes(make_png(64, 64, 7))
    gy = bench_net.Emulator("gyazo", env, "--seed", "1")
    chv = bench_net.Emulator("chevereto", env)
    try:
        gy_cfg = bench_net.config(work, gy, "gyazo")
        chv_cfg = bench_net.config(work, chv, "chevereto")
        sides: list[tuple[str, Path | None]] = [("", None)]
        if old is not None:
            sides.append((" (old)", old.resolve()))
        steps: list[tuple[str, Callable[[], tuple[float, float]]]] = []

        def add(label: str, make: Callable[[], list[str]], imgsync: bool = True) -> None:
            for tag, where in sides if imgsync else sides[:1]:
                side_env = dict(env)
                if where is not None:  # ``python -m imgsync`` looks in the current folder first
                    side_env["PYTHONPATH"] = str(where)

                def step(
                    make: Callable[[], list[str]] = make,
                    side_env: dict[str, str] = side_env,
                    where: Path | None = where,
                ) -> tuple[float, float]:
                    state = work / "state" / f"s-{time.monotonic_ns()}.db"
                    return measure(make(), {**side_env, "IMGSYNC_STATE": str(state)}, where)

                steps.append((label + tag, step))

        add("python -c pass", lambda: [PY, "-c", "pass"], imgsync=False)
        add("imgsync --version", lambda: [PY, "-m", "imgsync", "--version"])
        add("imgsync backup --help", lambda: [PY, "-m", "imgsync", "backup", "--help"])
        add(
            "backup of 1 image",
            lambda: [*bench_net.imgsync(gy_cfg), "backup", "gy:",
                     str(work / "out" / f"b-{time.monotonic_ns()}"), "--no-progress"],
        )  # fmt: skip
        add(
            "upload of 1 image",
            lambda: [*bench_net.imgsync(chv_cfg), "copy", str(one), "chv:", "--no-progress"],
        )
        walls: dict[str, list[float]] = {label: [] for label, _ in steps}
        cpus: dict[str, list[float]] = {label: [] for label, _ in steps}
        for _label, step in steps:  # warm-up: page cache, emulator
            step()
        for rep in range(repeat):
            for label, step in steps if rep % 2 == 0 else steps[::-1]:
                wall, cpu = step()
                walls[label].append(wall)
                cpus[label].append(cpu)
    finally:
        gy.stop()
        chv.stop()
    for label, _ in steps:
        print(f"  {label:<30}wall {fig(walls[label])}   CPU {fig(cpus[label])}")
    med = {label: statistics.median(xs) for label, xs in cpus.items()}
    if old is not None:
        for label, was in med.items():
            if label.endswith(" (old)"):
                new = label.removesuffix(" (old)")
                print(f"  -> {new}: CPU {med[new] / was:.2f}x of the old checkout's")
    floor = med["python -c pass"]
    for label in ("backup of 1 image", "upload of 1 image"):
        print(f"  -> {label}: {(med[label] - floor) * 1000:.0f} ms CPU beyond the interpreter's")
    print(f"  [{bench_net.load()}]", flush=True)
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=9, help="rounds (default 9)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder")
    ap.add_argument("--pythonpath", type=Path, default=None, help="also run this checkout")
    args = ap.parse_args()
    work = (args.work or Path(tempfile.mkdtemp(prefix="imgsync-bench-startup-"))).resolve()
    print(bench_copy.compile_imgsync())
    if args.pythonpath is not None:
        import compileall

        compileall.compile_dir(args.pythonpath / "imgsync", quiet=1)
    print(f"start-up figures in {work}, {os.cpu_count()} cores, {bench_net.load()}")
    run(work, args.repeat, args.pythonpath)


if __name__ == "__main__":
    main()
