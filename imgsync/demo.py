"""``imgsync demo``: try imgsync without an account.

Generates a folder of sample screenshots, starts the Gyazo emulator on 127.0.0.1, and runs
the main jobs against it with the real engine: copy the folder to the host, copy it again
(nothing to do), then back the host up to a local folder with metadata sidecars. Every
file and the state database stay in the demo folder, so the user's own state is untouched.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from imgsync.config import parse_config
from imgsync.fakehosts.images import seed_image
from imgsync.pipeline.summary import CopyOptions, Summary

DEMO_TOKEN = "demo-token-0123456789"


def make_samples(folder: Path, count: int = 12) -> None:
    """Write ``count`` small sample images into ``folder`` (kept if already there)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        data, ext = seed_image(1000 + i)
        path = folder / f"screenshot-{i + 1:02d}.{ext}"
        if not path.exists():
            path.write_bytes(data)


async def _run(base: Path) -> list[Summary]:
    from imgsync.pipeline.run import JobSpec, run_job
    from imgsync.testing import serve_emulator

    summaries = []
    async with serve_emulator("gyazo", token=DEMO_TOKEN) as emulator:
        print(f"demo: Gyazo emulator at {emulator.url}; working folder {base}")
        gyazo = {"type": "gyazo", "base_url": emulator.url, "token": DEMO_TOKEN}
        state = str(_state(base))
        cfg = parse_config({"state": {"path": state}, "remotes": {"gyazo": gyazo}})
        shots, backup = base / "screenshots", base / "backup"
        steps = [
            ("copy", str(shots), "gyazo:"),
            ("copy", str(shots), "gyazo:"),
            ("backup", "gyazo:", str(backup)),
        ]
        for verb, src, dst in steps:
            opts = CopyOptions(job=f"demo-{verb}", verb=verb, sidecars=verb == "backup")
            spec = JobSpec(verb, src, dst, opts, gallery=verb == "backup")
            summary = await run_job(cfg, spec)
            print(summary.line())
            summaries.append(summary)
    return summaries


def _state(base: Path) -> Path:
    """The demo's state database: in a folder of its own (it holds delete URLs, so imgsync
    keeps its folder private; the demo folder itself is the user's to share)."""
    return base / "state" / "state.db"


def run_demo(folder: Path) -> int:
    """Run the demo in ``folder``; returns the worst exit code of its steps."""
    base = folder.expanduser().resolve()
    make_samples(base / "screenshots")
    # the emulator starts empty every time, so the demo's state starts empty too (state
    # from an earlier demo would say the images are already on a host that is gone)
    for suffix in ("", "-wal", "-shm"):
        _state(base).with_name(f"state.db{suffix}").unlink(missing_ok=True)
    summaries = asyncio.run(_run(base))
    print(
        f"demo: done. Open {base / 'backup' / 'index.html'} in a browser (the backup's "
        "gallery: images + .json sidecars); "
        f"`IMGSYNC_STATE={_state(base)} imgsync status` shows the state."
    )
    return max(s.exit_code for s in summaries)
