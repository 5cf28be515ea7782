"""Small helpers shared by tests (imported as ``from helpers import ...``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def tree_files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every regular file under ``root`` (temp files excluded)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".imgsync-tmp-")
    }


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m imgsync ARGS`` as a real process (inherits the test's environment)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "imgsync", *args], capture_output=True, text=True,
        env=full_env, timeout=timeout, check=False,
    )


def run_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    """Run a verb with ``--json`` and parse its summary."""
    proc = run_cli(*args, "--json", env=env)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)
