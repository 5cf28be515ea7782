"""Benchmark: fleet mode, N `imgsync migrate` workers on one PostgreSQL state.

A Gyazo emulator seeded with ``--images`` images migrates to a Guizhan emulator, every
worker a separate process with its own empty SQLite state (separate machines, as far as
imgsync can tell) and one throwaway PostgreSQL cluster (initdb in a temp folder, as
``tests/pgserver.py`` does). Prints, per scenario:

* limited: the destination enforces ``--rate`` (and every worker's ``[limits]`` says the
  same): uploads vs distinct checksums, throttled replies, the fleet's achieved rate as a
  ratio of the limit (target >= 0.9, and never ~3x);
* unlimited: ``--workers`` workers vs 1 worker, wall time ratio (target >= 2x).

Usage: python bench/bench_fleet.py [--images 3000] [--workers 3] [--rate 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pgserver import PgServer, pg_bindir

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.guizhan import GuizhanFake
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.testing import serve_emulator

GY, GZ = "bench-gyazo-token", "bench-guizhan-token"


async def stats(url: str) -> dict[str, int]:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(url + "/_fakehost/stats") as r:
        data: dict[str, int] = await r.json()
        return data


async def scenario(
    pg: PgServer, work: Path, images: int, workers: int, rate: int | None
) -> dict[str, float]:
    gz_rate = f"{rate}/second" if rate else "none"
    async with (
        serve_emulator(GyazoFake(Knobs(token=GY, seed=images))) as gyazo,
        serve_emulator(GuizhanFake(Knobs(token=GZ, rate=gz_rate))) as gz,
    ):
        limits = f'[limits."{gz.authority}"]\nrate = "{rate}/second"\n' if rate else ""
        cfg = work / f"cfg-{workers}-{rate}.toml"
        cfg.write_text(
            limits + f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{gyazo.url}"\n'
            f'token_env = "GY"\n[remotes.gz]\ntype = "guizhan"\nbase_url = "{gz.url}"\n'
            'token_env = "GZ"\n'
        )
        url = pg.new_database()
        procs = []
        start = time.perf_counter()
        for w in range(workers):
            env = {
                **os.environ,
                "GY": GY,
                "GZ": GZ,
                "IMGSYNC_STATE": str(work / f"s-{workers}-{rate}-{w}" / "state.db"),
                "IMGSYNC_STATE_URL": url,
            }
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "imgsync",
                    "--config",
                    str(cfg),
                    "migrate",
                    "gy:",
                    "gz:",
                    "--json",
                    "--map",
                    str(work / f"map-{workers}-{rate}-{w}.csv"),
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        outs = [await p.communicate() for p in procs]
        elapsed = time.perf_counter() - start
        for p, (_out, err) in zip(procs, outs, strict=True):
            if p.returncode != 0:
                sys.exit(f"a worker failed ({p.returncode}): {err.decode()[-2000:]}")
        maps = [json.loads(out)["map_rows"] for out, _ in outs]
        src, dst = await stats(gyazo.url), await stats(gz.url)
    return {
        "elapsed": elapsed,
        "uploads": dst["uploads"],
        "distinct": src["distinct_checksums"],
        "throttled": dst["throttled"],
        "map_rows_min": min(maps),
        "achieved": dst["uploads"] / elapsed,
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--rate", type=int, default=30)
    args = ap.parse_args()
    bindir = pg_bindir()
    if bindir is None:
        sys.exit("PostgreSQL is not installed (initdb not found)")
    root = Path(tempfile.mkdtemp(prefix="imgsync-pg-", dir="/tmp"))
    os.chmod(root, 0o755)
    pg = PgServer(root, bindir)
    pg.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            n, w = args.images, args.workers
            lim = await scenario(pg, work, n, w, args.rate)
            print(
                f"limited {args.rate}/s, {w} workers, {n} images: uploads {lim['uploads']} "
                f"(distinct {lim['distinct']}), throttled {lim['throttled']}, map rows "
                f">= {lim['map_rows_min']} of {2 * n}, {lim['elapsed']:.1f}s, achieved "
                f"{lim['achieved']:.1f}/s = {lim['achieved'] / args.rate:.2f}x the limit"
            )
            one = await scenario(pg, work, n, 1, None)
            many = await scenario(pg, work, n, w, None)
            print(
                f"unlimited, {n} images: 1 worker {one['elapsed']:.1f}s, {w} workers "
                f"{many['elapsed']:.1f}s (uploads {many['uploads']} of {many['distinct']}): "
                f"{one['elapsed'] / many['elapsed']:.2f}x"
            )
    finally:
        pg.stop()


if __name__ == "__main__":
    asyncio.run(main())
