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
