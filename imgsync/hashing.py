"""Content hashing: SHA-256 (the identity imgsync keys on) and MD5 (what some hosts report).

Everything here is synchronous and meant to run in a worker thread; callers batch many
small files into one call, because a thread hop per file costs more than hashing it.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

CHUNK = 1 << 20


class Digest(NamedTuple):
    sha256: str
    md5: str | None  # only computed where a host reports or verifies MD5
    size: int


def digest_bytes(data: bytes, with_md5: bool = True) -> Digest:
    """SHA-256, size and (unless ``with_md5`` is False) MD5 of ``data``."""
    md5 = hashlib.md5(data).hexdigest() if with_md5 else None
    return Digest(hashlib.sha256(data).hexdigest(), md5, len(data))


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()
