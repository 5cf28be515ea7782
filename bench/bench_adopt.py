"""Benchmark: ``imgsync copy`` into a folder that already holds the files, unrecorded.

The case: a destination another tool filled (``cp -a``, rclone, a restored backup), and
imgsync run on it for the first time (a fresh state). Every file is already there; imgsync
must notice that and write nothing. Also timed: the same copy into an empty folder, so the
figure reads as a ratio (adopting should cost well under a fresh copy: it writes nothing).

Prints, whole processes, wall time, best of ``--repeat``:

* fresh copy of N files (~20 KB each, ~100 folders) into an empty folder
* the same copy into a folder holding the same files, unrecorded ("adopt")
* the same into a folder holding files of the same names but other sizes ("clash":
  each is written beside as ``name (1).ext``)

Usage: python bench/bench_adopt.py [--files 20000] [--repeat 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_copy


def _fresh_state(env: dict[str, str], work: Path, tag: str) -> None:
    state = work / f"state-{tag}.db"
    for p in (state, Path(f"{state}-wal"), Path(f"{state}-shm")):
        if p.exists():
            p.unlink()
    env["IMGSYNC_STATE"] = str(state)


def _clash_tree(src: Path, dst: Path) -> None:
    """``dst``: every file of ``src`` under its name, one byte longer (another file)."""
    for folder, _dirs, files in os.walk(src):
        rel = Path(folder).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            (dst / rel / name).write_bytes((Path(folder) / name).read_bytes() + b"!")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="imgsync-bench-adopt-"))
    work.mkdir(parents=True, exist_ok=True)
    trash = work / "trash"
    trash.mkdir(exist_ok=True)
    imgsync = [sys.executable, "-m", "imgsync"]
    print(bench_copy.compile_imgsync())
    env = dict(os.environ)
    env.pop("IMGSYNC_CONFIG", None)
    src = work / "src"
    if not src.exists():
        print(f"generating {args.files} files in {src} ...", flush=True)
        bench_copy.make_tree(src, args.files)
    held = work / "held"  # the same files, put there by another tool
    if not held.exists():
        shutil.copytree(src, held)
    clash = work / "clash"
    if not clash.exists():
        _clash_tree(src, clash)

    def aside(path: Path) -> None:
        if path.exists():
            path.rename(trash / f"{path.name}-{time.monotonic_ns()}")

    times: dict[str, list[float]] = {"fresh": [], "adopt": [], "clash": []}
    for rep in range(args.repeat):
        dst = work / "dst"
        aside(dst)
        _fresh_state(env, work, f"fresh-{rep}")
        times["fresh"].append(bench_copy.run([*imgsync, "copy", str(src), str(dst)], env)[0])
        _fresh_state(env, work, f"adopt-{rep}")
        times["adopt"].append(bench_copy.run([*imgsync, "copy", str(src), str(held)], env)[0])
        extra = sorted(p for p in held.rglob("*") if p.is_file() and " (" in p.name)
        if extra:
            sys.exit(f"adopting wrote {len(extra)} files (e.g. {extra[0]}): it must write none")
        copy = work / f"clash-{rep}"
        aside(copy)
        shutil.copytree(clash, copy)
        _fresh_state(env, work, f"clash-{rep}")
        times["clash"].append(bench_copy.run([*imgsync, "copy", str(src), str(copy)], env)[0])
        aside(copy)
    aside(work / "dst")

    fresh, adopt, other = min(times["fresh"]), min(times["adopt"]), min(times["clash"])
    print(f"\n== {args.files} files, best of {args.repeat} (whole processes) ==")
    print(f"fresh copy into an empty folder        {fresh:7.3f} s")
    print(
        f"into a folder holding the same files   {adopt:7.3f} s   ratio adopt/fresh = "
        f"{adopt / fresh:.2f}"
    )
    print(
        f"into a folder of same names, other sizes {other:5.3f} s   ratio clash/fresh = "
        f"{other / fresh:.2f}"
    )
    shutil.rmtree(trash, ignore_errors=True)


if __name__ == "__main__":
    main()
