"""Filesystem mechanics, below every provider and the engine.

* :mod:`~imgsync.localfs.paths`: path keys (names that are not valid UTF-8 survive
  SQLite and JSON), printable names, ``io_error``, ``missing``.
* :mod:`~imgsync.localfs.scan`: walking a tree (symlinked folders once, temp files skipped).
* :mod:`~imgsync.localfs.stage`: staging, one flush, rename; sweeping what a crash left;
  sidecars that never replace a file imgsync did not write as that image's sidecar; no
  write through a symbolic link inside the destination.

Imports nothing from providers, the pipeline or state (floor 3 in DESIGN.md).
"""

from typing import TYPE_CHECKING, Any

from imgsync.localfs.paths import (
    TMP_PREFIX,
    display,
    file_stamp,
    io_error,
    key_path,
    missing,
    missing_and_bare,
    missing_or_changed,
    open_source,
    path_key,
    safe_name,
)
from imgsync.localfs.scan import ScanEntry, ScanProblem, matches, scan_tree

if TYPE_CHECKING:
    from imgsync.localfs.stage import (
        StagedFile,
        Unit,
        commit_units,
        discard_stage,
        file_sha256,
        find_sidecar,
        is_sidecar_of,
        linked_folder,
        make_units,
        sidecar_names,
        stage_blobs,
        stage_unit,
        sweep_stale,
        sync_filesystem,
        write_sidecars,
    )

# The staging half (and hashlib, json, shutil, threading with it) is imported on first
# use: a no-op re-run writes nothing and starts faster without it.
_STAGE_NAMES = frozenset(
    {
        "StagedFile",
        "Unit",
        "commit_units",
        "discard_stage",
        "file_sha256",
        "find_sidecar",
        "is_sidecar_of",
        "linked_folder",
        "make_units",
        "sidecar_names",
        "stage_blobs",
        "stage_unit",
        "sweep_stale",
        "sync_filesystem",
        "write_sidecars",
    }
)


def __getattr__(name: str) -> Any:
    if name in _STAGE_NAMES:
        from imgsync.localfs import stage

        return getattr(stage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TMP_PREFIX",
    "ScanEntry",
    "ScanProblem",
    "StagedFile",
    "Unit",
    "commit_units",
    "discard_stage",
    "display",
    "file_sha256",
    "file_stamp",
    "find_sidecar",
    "io_error",
    "is_sidecar_of",
    "key_path",
    "linked_folder",
    "make_units",
    "matches",
    "missing",
    "missing_and_bare",
    "missing_or_changed",
    "open_source",
    "path_key",
    "safe_name",
    "scan_tree",
    "sidecar_names",
    "stage_blobs",
    "stage_unit",
    "sweep_stale",
    "sync_filesystem",
    "write_sidecars",
]
