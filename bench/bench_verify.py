"""Benchmark: ``imgsync verify`` over a Chevereto emulator holding N images.

Prints ratios (the machine is shared, so absolute times are only indicative):

* requests per location of a full pass (one GET each: 1.00 is the floor)
* a pass stopped half-way then resumed: locations checked in all / N (1.00: none twice)
* a ``--sample N/10`` run's time / a full pass's time (about 0.1 when pacing is per image)
* of 5 % deleted, 3 % altered and 2 % turned into placeholders: found / broken (1.00)
* locations checked per second on this machine

Usage: python bench/bench_verify.py [--images 2000] [--transfers 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path


async def main(images: int, transfers: int) -> None:
    import aiohttp
    import anyio

    from imgsync.config import parse_config
    from imgsync.fakehosts.chevereto import CheveretoFake
    from imgsync.fakehosts.common import Knobs
    from imgsync.models import RemoteItem
    from imgsync.pipeline.verify import VerifyOptions, run_verify
    from imgsync.state import queries
    from imgsync.state.store import StateStore
    from imgsync.testing import serve_emulator

    host = CheveretoFake(Knobs(token="bench-token", seed=images))
    async with serve_emulator(host) as emu:
        cfg = parse_config(
            {"remotes": {"chv": {"type": "chevereto", "base_url": emu.url, "token": "bench-token"}}}
        )
        key = f"chevereto:{emu.url}/"
        stored = host.images()
        async with StateStore(cfg.state_path) as store:
            await queries.record_objects(
                store, [(i.sha256, len(i.data), i.md5, "image/png") for i in stored]
            )
            await queries.record_locations(
                store,
                key,
                [
                    (
                        i.sha256,
                        RemoteItem(remote_id=i.id_encoded, name=i.title, url=emu.url + i.path()),
                    )
                    for i in stored
                ],
            )
        opts = VerifyOptions(transfers=transfers)

        async def requests() -> int:
            return (await emu.stats())["requests"]

        r0, t0 = await requests(), time.perf_counter()
        full = await run_verify(cfg, None, opts)
        t_full = time.perf_counter() - t0
        per_location = (await requests() - r0) / images
        assert full.remotes[0].counts["alive"] == images

        stop = anyio.Event()
        seen = 0

        def halfway(_remote: str, _v: object) -> None:
            nonlocal seen
            seen += 1
            if seen >= images // 2:
                stop.set()

        # a new pass: the previous one is finished
        r0 = await requests()
        await run_verify(cfg, None, opts, stop=stop, on_verdict=halfway)
        resumed = await run_verify(cfg, None, opts)
        assert resumed.remotes[0].resumed and resumed.remotes[0].checked == images
        resume_ratio = (await requests() - r0) / images

        t0 = time.perf_counter()
        await run_verify(cfg, None, VerifyOptions(transfers=transfers, sample=images // 10))
        sample_ratio = (time.perf_counter() - t0) / t_full

        deleted, altered, held = (
            stored[: images // 20],
            stored[images // 20 : images // 20 + images * 3 // 100],
            stored[images * 8 // 100 : images // 10],
        )
        async with aiohttp.ClientSession() as s:
            for group, how in ((deleted, "delete"), (altered, "alter"), (held, "placeholder")):
                for img in group:
                    async with s.post(
                        f"{emu.url}/_fakehost/break", json={"url": emu.url + img.path(), "how": how}
                    ) as r:
                        assert r.status == 200
        found = await run_verify(cfg, None, opts)
        counts = found.remotes[0].counts
        broken = len(deleted) + len(altered) + len(held)
        found_ratio = (counts["gone"] + counts["altered"]) / broken
        assert counts["altered"] == len(altered), counts

    print(f"verify over {images} images on the Chevereto emulator, {transfers} at once")
    print(f"  requests per location (full pass):          {per_location:.2f}  (floor 1.00)")
    print(f"  locations checked / N (stopped + resumed):  {resume_ratio:.2f}  (1.00: none twice)")
    print(f"  --sample N/10 time / full pass time:        {sample_ratio:.2f}")
    print(f"  found / broken (gone+altered):              {found_ratio:.2f}  ({counts})")
    print(f"  locations per second:                       {images / t_full:.0f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--transfers", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IMGSYNC_STATE"] = str(Path(tmp) / "state.db")
        from imgsync.log import configure

        configure("warning", "auto")
        asyncio.run(main(args.images, args.transfers))
    sys.exit(0)
