"""Who runs on a state database: the daemon's lock and ``daemon.json`` beside it.

The daemon holds an exclusive ``flock`` on ``<state>.daemon.lock`` while it runs (so a
second daemon on the same state refuses to start) and keeps its pid, start time, jobs
and address in ``<state>.daemon.json``. ``imgsync status`` tests the lock without
taking it for more than an instant, and so never reports a daemon that died.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from imgsync.errors import StateError

# ---- who runs on this state -------------------------------------------------------------


def _lock_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".daemon.lock")


def _info_path(state_path: Path) -> Path:
    return state_path.with_name(state_path.name + ".daemon.json")


def running_daemon(state_path: Path) -> dict[str, Any] | None:
    """What ``daemon.json`` says of the daemon running on this state, or None if none."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    try:
        fd = os.open(_lock_path(state_path), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: a daemon runs
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
    finally:
        os.close(fd)
    try:
        info: dict[str, Any] = json.loads(_info_path(state_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    return info


class StateLock:
    """The daemon's claim on a state database: one daemon per state."""

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        self.fd: int | None = None

    def acquire(self, info: dict[str, Any]) -> None:
        import fcntl

        folder = self.state_path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(_lock_path(self.state_path), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(
                f"cannot write the state folder {folder}: {exc.strerror} "
                "(it must be writable by the user running imgsync)"
            ) from None
        for _ in range(20):  # `imgsync status` may hold it shared for a moment
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.05)
        else:
            os.close(fd)
            other = running_daemon(self.state_path) or {}
            raise StateError(
                f"another imgsync daemon (pid {other.get('pid', '?')}) runs on "
                f"{self.state_path}; stop it first"
            )
        self.fd = fd
        self.write(info)

    def write(self, info: dict[str, Any]) -> None:
        tmp = _info_path(self.state_path).with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(info), encoding="utf-8")
            os.replace(tmp, _info_path(self.state_path))

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                _info_path(self.state_path).unlink()
            os.close(self.fd)  # closing drops the lock
            self.fd = None
