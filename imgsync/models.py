"""Small frozen value types passed between providers, the pipeline and state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# re-exported: the extensions live in a module of their own (the scan reads only that)
from imgsync.imagetypes import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS  # noqa: PLC0414
from imgsync.imagetypes import is_image_name as is_image_name  # noqa: PLC0414

_MIME = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".avif": "image/avif",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".heic": "image/heic",
    ".svg": "image/svg+xml",
}


def guess_mime(name: str) -> str:
    """The MIME type for a file name, ``application/octet-stream`` when unknown."""
    dot = name.rfind(".")
    if dot >= 0 and (mime := _MIME.get(name[dot:].lower())):
        return mime
    import mimetypes

    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def parse_timestamp(value: Any) -> float | None:
    """Unix seconds from a host's date: ISO-8601 with ``Z``, ``+0900`` or ``+09:00``, a
    space or ``T`` before the time, any fraction, a trailing `` UTC`` (a naive time is
    UTC), or a number of unix seconds (milliseconds when implausibly large).
    ``None`` when unreadable -- never an exception: a date is metadata, not a reason to fail.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.replace(".", "", 1).isdigit():
            seconds = float(text)
        else:
            from datetime import UTC, datetime

            if text.endswith(" UTC"):
                text = text[:-4] + "+00:00"
            try:
                when = datetime.fromisoformat(text)
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                return when.timestamp()
            except (ValueError, OverflowError, OSError):
                return None
    else:
        return None
    import math

    if not math.isfinite(seconds):
        return None
    return seconds / 1000 if seconds > 1e11 else seconds


def signed_expiry(url: str | None) -> float | None:
    """When a Discord-style signed URL expires (its ``ex`` parameter, hex unix seconds,
    next to an ``hm`` signature), or None for a URL that is not signed that way."""
    from urllib.parse import parse_qs, urlsplit

    if not url or "?" not in url:
        return None
    query = parse_qs(urlsplit(url).query)
    ex, hm = query.get("ex"), query.get("hm")
    if not ex or not hm:
        return None
    try:
        return float(int(ex[0], 16))
    except ValueError:
        return None


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


def image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's first bytes (PNG, GIF, JPEG, BMP, WebP), or None
    when the format is another or the bytes end before the size is given. A JPEG's size
    comes after its metadata segments: pass up to 64 KB."""
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24 and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if head.startswith(b"BM") and len(head) >= 26:
        width = int.from_bytes(head[18:22], "little", signed=True)
        height = int.from_bytes(head[22:26], "little", signed=True)
        return abs(width), abs(height)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(
                head[27:30], "little"
            )
        if kind == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if kind == b"VP8 ":
            return (
                int.from_bytes(head[26:28], "little") & 0x3FFF,
                int.from_bytes(head[28:30], "little") & 0x3FFF,
            )
        return None
    if head.startswith(b"\xff\xd8"):
        at = 2
        while at + 9 <= len(head):
            if head[at] != 0xFF:
                return None
            marker = head[at + 1]
            if marker == 0xFF:  # fill byte
                at += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
                at += 2
                continue
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height = int.from_bytes(head[at + 5 : at + 7], "big")
                return int.from_bytes(head[at + 7 : at + 9], "big"), height
            at += 2 + int.from_bytes(head[at + 2 : at + 4], "big")
    return None


def sniff_image(data: bytes) -> str | None:
    """The MIME type the first bytes announce, or None when they are not an image."""
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp" and data[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1"):
        return "image/avif" if data[8:11] == b"avi" else "image/heic"
    head = data[:512].lstrip()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "image/svg+xml"
    return None


@dataclass(frozen=True, slots=True)
class ItemMeta:
    """Descriptive metadata carried between hosts (whatever each host keeps of it)."""

    title: str | None = None
    description: str | None = None
    source_url: str | None = None
    app: str | None = None
    created_at: float | None = None  # unix seconds, UTC
    tags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_json` reads back."""
        return {
            "title": self.title,
            "description": self.description,
            "source_url": self.source_url,
            "app": self.app,
            "created_at": self.created_at,
            "tags": list(self.tags),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ItemMeta:
        """Read what :meth:`to_json` wrote; unknown keys are ignored."""
        if not data:
            return cls()
        created = data.get("created_at")
        return cls(
            title=data.get("title"),
            description=data.get("description"),
            source_url=data.get("source_url"),
            app=data.get("app"),
            created_at=float(created) if created is not None else None,
            tags=tuple(data.get("tags") or ()),
        )


@dataclass(frozen=True, slots=True)
class RemoteItem:
    """One image as a provider knows it.

    ``remote_id`` is the provider's stable key for the item (a relative path for local
    folders, an image id for hosts). ``md5`` is only set when the host itself reported
    it (Chevereto); ``md5_hint`` is a guess such as Gyazo's image id that must be verified.
    ``delete_url`` is a secret: it is excluded from ``repr``.
    """

    remote_id: str
    name: str
    size: int | None = None
    url: str | None = None  # the image file itself
    page_url: str | None = None  # the host's page for it (Gyazo permalink, Chevereto viewer)
    mime: str | None = None
    md5: str | None = None
    md5_hint: str | None = None
    sha256: str | None = None
    mtime: float | None = None
    meta: ItemMeta = field(default_factory=ItemMeta)
    delete_url: str | None = field(default=None, repr=False)
    is_image: bool = True


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; ``next_cursor`` is None on the last page."""

    items: list[RemoteItem]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class UploadSource:
    """Bytes to upload, re-readable so a retried request can send them again.

    Exactly one of ``path`` and ``data`` is set.
    """

    name: str
    size: int
    sha256: str
    md5: str | None
    mime: str
    path: Path | None = None
    data: bytes | None = field(default=None, repr=False)
    # told the size of each piece read from ``path`` as an upload sends it (from a worker
    # thread: it must only count); the progress line shows how far a long upload is
    on_read: Callable[[int], None] | None = field(default=None, repr=False, compare=False)
    # the file's (size, mtime, ctime, inode) when it was hashed: a file streamed from
    # ``path`` that no longer matches was written again since, and is not sent
    stamp: tuple[int, int, int, int] | None = field(default=None, compare=False)

    async def read(self) -> bytes:
        """The whole body. Called once per attempt, so each retry sends complete bytes."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        import anyio

        return await anyio.Path(self.path).read_bytes()

    async def head(self, size: int = 512) -> bytes:
        """The first ``size`` bytes (enough to tell the format and dimensions)."""
        if self.data is not None:
            return self.data[:size]
        assert self.path is not None
        import anyio

        async with await anyio.open_file(self.path, "rb") as fh:
            return await fh.read(size)
