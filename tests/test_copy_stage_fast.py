"""The fresh folder copy's lean paths: files staged through bare descriptors, the cyclic
collector paused for the copy, per-file log lines built only when they are shown.
Real files, real SQLite, the real engine in-process."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import pytest
from helpers import run_cli

from imgsync.config import load_config
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions


def _tree(root: Path, n: int = 30) -> dict[str, bytes]:
    files = {}
    for i in range(n):
        rel = f"{'sub/' if i % 3 else ''}p{i:02d}.png"
        data = os.urandom(3_000 + 97 * i)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        files[rel] = data
    return files


async def _copy(src: Path, dst: Path) -> int:
    summary = await run_job(load_config(None), JobSpec("copy", str(src), str(dst), CopyOptions()))
    assert summary.exit_code == 0, summary
    return summary.copied


async def test_staged_files_keep_bytes_time_and_the_usual_mode(tmp_path: Path) -> None:
    """Each file is written under its name with its bytes, the source's mtime to the
    nanosecond, and the mode a plain ``open(..., "wb")`` gives (0666 less the umask)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = _tree(src)
    for i, rel in enumerate(files):
        ns = 1_600_000_000_123_456_789 + i * 1_000_000_007
        os.utime(src / rel, ns=(ns, ns))
    umask = os.umask(0o022)
    try:
        assert await _copy(src, dst) == len(files)
    finally:
        os.umask(umask)
    for rel, data in files.items():
        target = dst / rel
        assert target.read_bytes() == data
        assert target.stat().st_mtime_ns == (src / rel).stat().st_mtime_ns
        assert target.stat().st_mode & 0o777 == 0o644
    assert not list(dst.rglob(".imgsync-tmp-*"))


@pytest.mark.parametrize("enabled", [True, False])
async def test_a_folder_copy_leaves_the_collector_as_it_found_it(
    tmp_path: Path, enabled: bool
) -> None:
    """The cyclic collector is paused while files are staged and committed, and given
    back as it was: on, or still off when the caller had it off."""
    src = tmp_path / "src"
    _tree(src)
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        assert await _copy(src, tmp_path / "dst") == 30
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


async def test_the_collector_comes_back_when_a_copy_fails(tmp_path: Path) -> None:
    """A copy that ends in an error (its state database cannot be written) still gives
    the collector back."""
    src = tmp_path / "src"
    _tree(src)
    from imgsync.state.store import StateStore

    real_flush = StateStore.flush
    calls = {"n": 0}

    async def failing_flush(self: StateStore) -> None:
        calls["n"] += 1
        raise RuntimeError("state gone")

    assert gc.isenabled()
    StateStore.flush = failing_flush  # type: ignore[method-assign]
    try:
        with pytest.raises(RuntimeError, match="state gone"):
            await _copy(src, tmp_path / "dst")
    finally:
        StateStore.flush = real_flush  # type: ignore[method-assign]
    assert calls["n"] >= 1
    assert gc.isenabled()


@pytest.mark.parametrize("verbose", [True, False])
def test_each_copied_file_is_logged_with_verbose_only(tmp_path: Path, verbose: bool) -> None:
    """``-v`` (debug logging) names every file written ("transferred", with its path at
    the destination); without it no such line is built or printed."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = _tree(src, 12)
    proc = run_cli(*(["-v"] if verbose else []), "copy", str(src), str(dst), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(ln) for ln in proc.stderr.splitlines() if ln.startswith("{")]
    sent = [e for e in events if e.get("event") == "transferred"]
    if not verbose:
        assert sent == []
        return
    assert sorted(e["item"] for e in sent) == sorted(files)
    for e in sent:
        assert e["url"] == os.path.join(str(dst), e["item"])
        assert e["bytes"] == len(files[e["item"]])
