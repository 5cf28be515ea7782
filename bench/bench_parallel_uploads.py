"""Benchmark: a folder -> host copy with slow uploads, at several ``--transfers``.

16 images go to a Chevereto emulator on 127.0.0.1 that answers every upload after
``--slow`` seconds (its ``slow`` fault). Prints, per setting, the wall time, the most
uploads the emulator saw in flight at once (``max_concurrent_uploads``) and the speed-up
over ``--transfers 1``. The host's connection cap (``[limits."host"] concurrency``, 4 by
default) bounds what ``--transfers`` can do.

Usage: python bench/bench_parallel_uploads.py [--files 16] [--slow 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from imgsync.config import load_config
from imgsync.fakehosts.chevereto import CheveretoFake
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.images import seed_image
from imgsync.log import configure
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions
from imgsync.testing import serve_emulator


async def one(files: int, slow: float, transfers: int, cap: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "src").mkdir()
        for i in range(files):
            data, ext = seed_image(i)
            (tmp / "src" / f"p{i:03d}.{ext}").write_bytes(data)
        host = CheveretoFake(Knobs(token="t", faults={"slow": 1.0}, slow_seconds=slow))
        async with serve_emulator(host) as emu:
            (tmp / "cfg.toml").write_text(
                f'[state]\npath = "{tmp / "state.db"}"\n'
                f'[remotes.chv]\ntype = "chevereto"\nbase_url = "{emu.url}"\ntoken = "t"\n'
                f'[limits."{emu.authority}"]\nconcurrency = {cap}\n'
            )
            cfg = load_config(tmp / "cfg.toml")
            started = time.monotonic()
            summary = await run_job(
                cfg, JobSpec("copy", str(tmp / "src"), "chv:", CopyOptions(transfers=transfers))
            )
            elapsed = time.monotonic() - started
            stats = await emu.stats()
        assert summary.copied == files, summary.line()
        return elapsed, stats.get("max_concurrent_uploads", -1)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--slow", type=float, default=0.5)
    args = ap.parse_args()
    configure("warning", "console")
    base, _ = await one(args.files, args.slow, 1, 4)
    print(f"{args.files} files, every upload answered after {args.slow:g} s")
    print(f"  --transfers 1 (host cap 4): {base:.2f} s")
    for transfers, cap in ((4, 4), (8, 4), (8, 8)):
        elapsed, peak = await one(args.files, args.slow, transfers, cap)
        print(
            f"  --transfers {transfers} (host cap {cap}): {elapsed:.2f} s, "
            f"{peak} in flight at most, {base / elapsed:.1f}x faster than --transfers 1"
        )


if __name__ == "__main__":
    asyncio.run(main())
