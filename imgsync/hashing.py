"""Content hashing: SHA-256 (the identity imgsync keys on) and MD5 (what some hosts report).

Everything here is synchronous and meant to run in a worker thread; callers batch many
small files into one call, because a thread hop per file costs more than hashing it.
hashlib releases the GIL while it hashes a piece larger than 2 KiB, so a file hashed in
a worker thread does not hold up the event loop (nor an upload going out beside it).
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Protocol

CHUNK = 1 << 20


class Readable(Protocol):
    """A file opened for reading in binary mode (``open(path, "rb", buffering=0)``)."""

    def readinto(self, buffer: bytearray, /) -> int | None: ...


class Digest(NamedTuple):
    sha256: str
    md5: str | None  # only computed where a host reports or verifies MD5
    size: int


def digest_bytes(data: bytes, with_md5: bool = True) -> Digest:
    """SHA-256, size and (unless ``with_md5`` is False) MD5 of ``data``."""
    md5 = hashlib.md5(data).hexdigest() if with_md5 else None
    return Digest(hashlib.sha256(data).hexdigest(), md5, len(data))


def digest_file(fh: Readable, with_md5: bool = True, *, sha256: bool = True) -> Digest:
    """SHA-256 (unless ``sha256`` is False: then ``""``), size and (with ``with_md5``) MD5
    of what is left of the open file ``fh``, read in 1 MiB pieces into one reused buffer
    (no new bytes object per piece, no copy of it)."""
    sha = hashlib.sha256() if sha256 else None
    md5 = hashlib.md5() if with_md5 else None
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    size = 0
    while n := fh.readinto(buf):
        piece = view[:n] if n < CHUNK else view
        if sha is not None:
            sha.update(piece)
        if md5 is not None:
            md5.update(piece)
        size += n
    return Digest(
        sha.hexdigest() if sha is not None else "",
        md5.hexdigest() if md5 is not None else None,
        size,
    )


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()
