"""A write that fails for lack of space leaves no staging litter behind, in the same run.

The failure is real: the writer runs in a child process whose file-size limit
(RLIMIT_FSIZE) is below what it writes, so ``write`` fails with EFBIG as it would with
ENOSPC on a full disk.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json, resource, signal, sys
    from imgsync.localfs import StagedFile, Unit, commit_units, stage_blobs, write_sidecars

    root, blob_size, side_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
    files = [
        StagedFile("small.png", sidecar={"note": "x" * side_size}, approved=True),
        StagedFile("big.png", sidecar={"note": "y"}, approved=True),
    ]
    unit = Unit("", files)
    stage_blobs(root, unit, [b"s" * 100, b"b" * blob_size])
    commit_units(root, [unit])
    write_sidecars(root, unit)
    print(json.dumps([[f.rel, f.final, str(f.error) if f.error else None] for f in files]))
    """
)


def test_failed_writes_leave_no_temp_files(tmp_path: Path) -> None:
    """An image too big for the space left fails alone; a sidecar that cannot be written
    fails its item; neither leaves a ``.imgsync-tmp-*`` file or folder."""
    root = tmp_path / "backup"
    root.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(root), "20000", "20000"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    (_, final_small, err_small), (_, final_big, err_big) = json.loads(proc.stdout)
    assert err_big is not None and final_big is None  # the image itself did not fit
    assert final_small == "small.png" and err_small is not None  # its sidecar did not fit
    assert sorted(p.name for p in root.iterdir()) == ["small.png"]


SPOOL_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, resource, signal, sys
    from pathlib import Path
    from imgsync.config import RemoteConfig
    from imgsync.fakehosts.images import make_png
    from imgsync.pipeline.transfer import fetch
    from imgsync.providers.base import ProviderContext
    from imgsync.providers.memory import MemoryProvider, store

    spool = Path(sys.argv[1])
    data = make_png(300, 300, 7)
    item = store("b").put("big.png", data)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(data) // 2, len(data) // 2))

    async def main():
        cfg = RemoteConfig(name="m", type="memory", options={"bucket": "b"})
        async with MemoryProvider(cfg, ProviderContext()) as p:
            try:
                await fetch(p, item, spool_dir=spool, spool_threshold=4096)
            except Exception as exc:
                print(type(exc).__name__)
    asyncio.run(main())
    """
)


def test_a_download_spool_that_fills_the_disk_fails_the_item_cleanly(tmp_path: Path) -> None:
    """A large download spooled to disk that runs out of space is the item's
    LocalIOError (the run goes on; it used to escape as a bare OSError and end the run
    as an internal error), and the spool file is gone."""
    proc = subprocess.run(
        [sys.executable, "-c", SPOOL_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "LocalIOError"
    assert list(tmp_path.iterdir()) == []
