"""Moving one item's bytes: source -> hash -> destination, through a bounded buffer.

* A download is hashed as it streams. Up to ``spool_threshold`` bytes stay in memory;
  past that, everything goes to a temporary file (named like imgsync's other temp files,
  so a crash leaves nothing a later run does not sweep), and uploads stream from disk.
* ``max_item_bytes`` caps one item: a longer body is abandoned as soon as it passes the cap.
* The first bytes are checked to be an image before anything is kept: a host answering
  an image URL with an HTML or JSON page (an error page with status 200) fails the item
  (retryable, nothing recorded, nothing written), so the next run fetches it again.
* A local file is read and hashed in a worker thread; a large one is hashed in chunks and
  uploaded straight from where it is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import anyio.to_thread

from imgsync.errors import LinkSkipped, LocalIOError, Rejected, TransientError
from imgsync.hashing import Digest, digest_bytes, digest_file, md5_hex
from imgsync.localfs import TMP_PREFIX, ScanEntry, file_stamp, io_error, open_source
from imgsync.models import RemoteItem, UploadSource, sniff_image
from imgsync.providers.base import Provider

SPOOL_THRESHOLD = 8 * 1024 * 1024
MAX_ITEM_BYTES = 2 * 1024**3  # above every host's own upload limit
_SNIFF = 512


class Body:
    """One item's bytes: in memory, or in a file (a spool file this run owns, or the
    source file itself).

    Bytes in memory may come without their digest (``digest=None``, see ``fetch``'s
    ``defer_hash``): it is taken from them when first asked for, or beforehand, for a
    whole group in a worker thread, by :meth:`hash_now` (hashing lets the interpreter
    lock go, so the event loop goes on meanwhile).
    """

    __slots__ = ("_digest", "_with_md5", "data", "owned", "path", "stamp")

    def __init__(
        self,
        digest: Digest | None,
        data: bytes | None = None,
        path: Path | None = None,
        owned: bool = False,  # a spool file: moved into place or deleted by discard()
        *,
        with_md5: bool = True,
        stamp: tuple[int, int, int, int] | None = None,  # a source file's, when hashed
    ) -> None:
        if digest is None and data is None:
            raise ValueError("a body without its digest needs its bytes")
        self._digest = digest
        self._with_md5 = with_md5
        self.data = data
        self.path = path
        self.owned = owned
        self.stamp = stamp

    def __repr__(self) -> str:
        where = f"{self.in_memory} bytes in memory" if self.data is not None else self.path
        return f"<Body {where}, {self._digest}>"

    @property
    def digest(self) -> Digest:
        if self._digest is None:
            self.hash_now()
        assert self._digest is not None
        return self._digest

    @digest.setter
    def digest(self, value: Digest) -> None:
        self._digest = value

    @property
    def hashed(self) -> bool:
        return self._digest is not None

    def hash_now(self) -> None:
        """Take the digest of the bytes in memory, if not taken yet (any thread)."""
        if self._digest is None:
            assert self.data is not None
            self._digest = digest_bytes(self.data, self._with_md5)

    @property
    def in_memory(self) -> int:
        return len(self.data) if self.data is not None else 0

    def upload_source(
        self, name: str, mime: str, on_read: Callable[[int], None] | None = None
    ) -> UploadSource:
        return UploadSource(
            name=name,
            size=self.digest.size,
            sha256=self.digest.sha256,
            md5=self.digest.md5,
            mime=mime,
            path=self.path,
            data=self.data,
            on_read=on_read,
            stamp=self.stamp,
        )

    def head(self) -> bytes:
        """The first bytes (enough to tell an image format)."""
        if self.data is not None:
            return self.data[:_SNIFF]
        assert self.path is not None
        with os.fdopen(open_source(self.path), "rb") as fh:
            return fh.read(_SNIFF)

    def discard(self) -> None:
        """Drop the bytes (the digest is kept: taken first if it was not yet); a spool file
        not moved into place is deleted."""
        if self._digest is None and self.data is not None:
            self.hash_now()
        self.data = None
        if self.owned and self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.path = None


def _not_an_image(head: bytes, remote: str) -> TransientError:
    shown = head[:40].decode("ascii", "replace")
    shown = "".join(ch if ch.isprintable() else "." for ch in shown)
    return TransientError(
        f"the host sent something that is not an image (it starts {shown!r}); "
        "nothing was kept, the next run fetches it again",
        remote=remote,
    )


def _absorb(fh: BinaryIO, chunk: bytes, sha: Any, md5: Any) -> None:
    sha.update(chunk)
    if md5 is not None:
        md5.update(chunk)
    fh.write(chunk)


async def fetch(
    src: Provider,
    item: RemoteItem,
    *,
    spool_dir: Path | None,
    spool_threshold: int = SPOOL_THRESHOLD,
    max_item_bytes: int = MAX_ITEM_BYTES,
    with_md5: bool = True,
    check_image: bool = True,
    on_chunk: Callable[[int], None] | None = None,
    defer_hash: bool = False,
) -> Body:
    """Stream ``item`` from ``src``: hashed, checked, in memory or spooled to a file
    (``on_chunk(n)`` is told the size of each piece as it arrives). With ``defer_hash``,
    a body that stays in memory is returned without its digest (see :class:`Body`); a
    spooled one is hashed as it streams, as always.

    Raises what ``src.open`` raises, ``TransientError`` for bytes that are not an image,
    ``Rejected`` past ``max_item_bytes``, ``LocalIOError`` when the spool cannot be written.
    """
    sha = hashlib.sha256()
    md5 = hashlib.md5() if with_md5 else None
    buf = bytearray()
    size = 0
    checked = not check_image
    fh: BinaryIO | None = None
    path: Path | None = None
    try:
        async for chunk in src.open(item):
            size += len(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk))
            if size > max_item_bytes:
                raise Rejected(
                    f"larger than the per-item size cap of {max_item_bytes} bytes",
                    remote=src.name,
                )
            if fh is not None:
                await _spool_io(path, _absorb, fh, chunk, sha, md5)
                continue
            if not defer_hash:
                sha.update(chunk)
                if md5 is not None:
                    md5.update(chunk)
            buf += chunk
            if not checked and len(buf) >= _SNIFF:
                if sniff_image(bytes(buf[:_SNIFF])) is None:
                    raise _not_an_image(bytes(buf), src.name)
                checked = True
            if len(buf) > spool_threshold:
                if defer_hash:  # from here on it is hashed as it streams
                    defer_hash = False
                    sha.update(buf)
                    if md5 is not None:
                        md5.update(buf)
                spool, path = await anyio.to_thread.run_sync(_open_spool, spool_dir)
                fh = spool
                await _spool_io(path, spool.write, bytes(buf))
                buf = bytearray()
        if not checked and sniff_image(bytes(buf)) is None:
            raise _not_an_image(bytes(buf), src.name)
        if fh is not None:
            await _spool_io(path, fh.close)
            fh = None
    except BaseException:
        if fh is not None:
            with contextlib.suppress(OSError):  # a full disk fails the close too
                fh.close()
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)
        raise
    if defer_hash:
        return Body(None, data=bytes(buf), with_md5=with_md5)
    digest = Digest(sha.hexdigest(), md5.hexdigest() if md5 is not None else None, size)
    if path is not None:
        return Body(digest, path=path, owned=True)
    return Body(digest, data=bytes(buf))


async def _spool_io(path: Path | None, fn: Any, *args: Any) -> Any:
    """Run a spool file operation in a thread; a failure (a full disk) is the item's
    ``LocalIOError``, not a crash of the run."""
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except OSError as exc:
        raise io_error(exc, path or "spool file") from None


def _open_spool(spool_dir: Path | None) -> tuple[BinaryIO, Path]:
    """A new spool file (beside the destination when it is a folder, so it can be
    renamed into place; else in the system's temp folder)."""
    folder = str(spool_dir) if spool_dir is not None else None
    try:
        if folder is not None:
            os.makedirs(folder, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-spool-", dir=folder)
    except OSError as exc:
        raise LocalIOError(
            f"cannot write a spool file in {folder or tempfile.gettempdir()}: {exc.strerror}",
            path=folder or "",
        ) from None
    return os.fdopen(fd, "wb"), Path(name)


def changed_since_scan(
    path: Path, scan: ScanEntry, size_read: int, stamp: tuple[int, int, int, int] | None = None
) -> LocalIOError | None:
    """An error when the file is not what the plan saw (it grew, shrank or was written
    again since the scan, so it is probably still being written, or the file read, by its
    ``stamp``, is another one: a folder above it swapped for a link); else None."""
    if stamp is not None and (stamp[0], stamp[1], stamp[3]) != (
        scan.size,
        scan.mtime_ns,
        scan.inode,
    ):
        return LocalIOError("file changed while it was read; tried again later", path=str(path))
    try:
        st = os.stat(path)
    except OSError:
        return LocalIOError("file vanished while it was read", path=str(path))
    if size_read != scan.size or st.st_size != scan.size or st.st_mtime_ns != scan.mtime_ns:
        return LocalIOError("file changed while it was read; tried again later", path=str(path))
    return None


def read_local(
    path: Path,
    size_hint: int,
    with_md5: bool,
    spool_threshold: int,
    follow_root: str | None = None,
) -> Body:
    """Read and hash a local file (in a worker thread). A file above ``spool_threshold`` is
    hashed in pieces and left where it is (uploads stream it from there).

    Never read through a symbolic link (a file swapped for one since the scan raises
    ``LinkSkipped``) unless ``follow_root`` (``--copy-links``: the source folder's real
    path) and it stays inside; a large file is then left under its real path.
    Raises ``LocalIOError`` for a vanished or unreadable file.
    """
    try:
        with os.fdopen(open_source(path, follow_root), "rb", buffering=0) as fh:
            if size_hint <= spool_threshold:
                data = fh.readall()
                stamp = file_stamp(os.fstat(fh.fileno()))
                return Body(digest_bytes(data, with_md5), data=data, stamp=stamp)
            digest = digest_file(fh, with_md5)
            stamp = file_stamp(os.fstat(fh.fileno()))
    except FileNotFoundError:
        raise LocalIOError("file vanished before it could be read", path=str(path)) from None
    except OSError as exc:
        raise LocalIOError(f"cannot read: {exc.strerror}", path=str(path)) from None
    if follow_root is not None and os.path.islink(path):  # a followed link, checked above:
        path = Path(os.path.realpath(path))  # uploads open it without following links
    return Body(digest, path=path, owned=False, stamp=stamp)


def source_md5(src: UploadSource) -> str | None:
    """MD5 of an upload's bytes, in memory or read from its file in pieces (in a worker
    thread); None when the file cannot be read."""
    if src.data is not None:
        return md5_hex(src.data)
    assert src.path is not None
    try:
        with os.fdopen(open_source(src.path), "rb", buffering=0) as fh:
            return digest_file(fh, sha256=False).md5
    except (OSError, LinkSkipped):
        return None
