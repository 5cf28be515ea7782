"""Filesystem mechanics, below every provider and the engine.

* :mod:`~imgsync.localfs.paths`: path keys (names that are not valid UTF-8 survive
  SQLite and JSON), printable names, ``io_error``, ``missing``.
* :mod:`~imgsync.localfs.scan`: walking a tree (symlinked folders once, temp files skipped).
* :mod:`~imgsync.localfs.stage`: staging, one flush, rename; sweeping what a crash left.

Imports nothing from providers, the pipeline or state (floor 3 in DESIGN.md).
"""

from imgsync.localfs.paths import (
    TMP_PREFIX,
    display,
    io_error,
    key_path,
    missing,
    path_key,
    safe_name,
)
from imgsync.localfs.scan import ScanEntry, ScanProblem, matches, scan_tree
from imgsync.localfs.stage import (
    StagedFile,
    Unit,
    commit_units,
    file_sha256,
    make_units,
    stage_blobs,
    stage_unit,
    sweep_stale,
    sync_filesystem,
    write_sidecars,
)

__all__ = [
    "TMP_PREFIX",
    "ScanEntry",
    "ScanProblem",
    "StagedFile",
    "Unit",
    "commit_units",
    "display",
    "file_sha256",
    "io_error",
    "key_path",
    "make_units",
    "matches",
    "missing",
    "path_key",
    "safe_name",
    "scan_tree",
    "stage_blobs",
    "stage_unit",
    "sweep_stale",
    "sync_filesystem",
    "write_sidecars",
]
