"""Deterministic sample images for the emulators' ``--seed`` knob, and a small sniffer.

The PNGs are drawn here; the JPEG and GIF are two tiny generated pictures kept as bytes,
made distinct per seed by a comment segment (which every decoder ignores).
"""

from __future__ import annotations

import base64
import struct
import time
import zlib

_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAUDBAQEAwUEBAQFBQUGBwwIBwcHBw8LCwkMEQ8SEhEPERETFhwXExQa"
    "FRERGCEYGh0dHx8fExciJCIeJBweHx7/2wBDAQUFBQcGBw4ICA4eFBEUHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4e"
    "Hh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh7/wAARCABAAGADASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAA"
    "AAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAk"
    "M2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKT"
    "lJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QA"
    "HwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdh"
    "cRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hp"
    "anN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk"
    "5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwCtoelabc6Pfapqmo3dpDbXEFuq21ms7O0qytk7pEAAER7nqKk+"
    "y+Dv+g7r3/gmi/8Akmix/wCSfav/ANhWw/8ARV3XBx6zdySw29rYrcSyG75kuNmBBMI+oXvkduPfrX6TKdpSvJrX"
    "ol5eT6s7r6nefZfB3/Qd17/wTRf/ACTR9l8Hf9B3Xv8AwTRf/JNcDpfiNtQOnTwWIFjfzPFFK02HBVHYkpj1jI6+"
    "9dBV037VXhN2+X+QLXqb32Xwd/0Hde/8E0X/AMk0fZfB3/Qd17/wTRf/ACTWDRWns5fzv8P8h2N77L4O/wCg7r3/"
    "AIJov/kmj7L4O/6Duvf+CaL/AOSawaKPZy/nf4f5BY3vsvg7/oO69/4Jov8A5Jo+y+Dv+g7r3/gmi/8AkmsGij2c"
    "v53+H+QWN77L4O/6Duvf+CaL/wCSaj1zStNttHsdU0vUbu7hubie3ZbmzWBkaJYmyNsjggiUdx0NYtb19/yT7SP+"
    "wrf/APoq0qGpRlH3m7vy7PyALH/kn2r/APYVsP8A0Vd1wkfh2JpLd7q4eXyhdFhGWi3NPKJDyrZAGCMZOc+1d3Y/"
    "8k+1f/sK2H/oq7rBpKlCcpcyvr+kX+grXMO18PRwavFerMoihleWGFEKhSylf723GGPRQTxknvuUUVrTpRppqKtc"
    "aVgooorQYUUUUAFFFFABW9ff8k+0j/sK3/8A6KtKwa3r7/kn2kf9hW//APRVpWVT4oev6MT6BY/8k+1f/sK2H/oq"
    "7rBresf+Sfav/wBhWw/9FXdYNKn8U/X9EC6hRRRWwwooooAKKKKACiiigArevv8Akn2kf9hW/wD/AEVaVg1vX3/J"
    "PtI/7Ct//wCirSsqnxQ9f0Yn0Cx/5J9q/wD2FbD/ANFXdYNbWh6rptto99peqadd3cNzcQXCtbXiwMjRLKuDujcE"
    "ESnsOgqT7V4O/wCgFr3/AIOYv/kaoTlGUvdbu/LsvMDBore+1eDv+gFr3/g5i/8Akaj7V4O/6AWvf+DmL/5Gq/aS"
    "/kf4f5hcwaK3vtXg7/oBa9/4OYv/AJGo+1eDv+gFr3/g5i/+RqPaS/kf4f5hcwaK3vtXg7/oBa9/4OYv/kaj7V4O"
    "/wCgFr3/AIOYv/kaj2kv5H+H+YXMGit77V4O/wCgFr3/AIOYv/kaj7V4O/6AWvf+DmL/AORqPaS/kf4f5hcwa3r7"
    "/kn2kf8AYVv/AP0VaUfavB3/AEAte/8ABzF/8jVHrmq6bc6PY6XpenXdpDbXE9wzXN4s7O0qxLgbY0AAEQ7Hqahu"
    "UpR91qz8uz8wP//Z"
)
_GIF = base64.b64decode(
    "R0lGODlhMAAwAIIAAPp4AO1yAMhgAJNHAFMoACwVAA8HAAcDACH/C05FVFNDQVBFMi4wAwEAAAAh+QQAFAAAACwA"
    "AAAAMAAwAAAIkAABCBxIsKDBgwgTKlzIsKHDhxAjSpxIsaLFixgzatzIseNDAQMCeFwIUmCBkCMdGkhZMACBAgRW"
    "Alg54EABkSwBEBgAoKZAmTJzzsR54KdRoUMFFp15VOjOnkuBIgUgoMBJqUyREhBAtcBUg1Vfcv1KtqzZs2jTql3L"
    "tq3bt3Djyp1Lt67du3jz6t3Lty+AgAAh+QQBFAAIACwAAAAAMAAwAIIAePoAcu0AYMgAR5MAKFMAFSwABw8AAwcI"
    "kAABCBxIsKDBgwgTKlzIsKHDhxAjSpxIsaLFixgzatzIseNDAQMCeFwIUmCBkCMdGkhZMACBAgRWAlg54EABkSwB"
    "EBgAoKZAmTJzzsR54KdRoUMFFp15VOjOnkuBIgUgoMBJqUyREhBAtcBUg1Vfcv1KtqzZs2jTql3Ltq3bt3Djyp1L"
    "t67du3jz6t3Lty+AgAA7"
)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def make_png(width: int, height: int, seed: int) -> bytes:
    """A valid RGB PNG whose pixels depend on ``seed``."""
    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            row += bytes(
                ((x * 7 + seed * 13) & 255, (y * 5 + seed * 31) & 255, (x ^ y ^ seed) & 255)
            )
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
        + _png_chunk(b"IEND", b"")
    )


def make_jpeg(seed: int) -> bytes:
    """A valid 96x64 JPEG, unique per seed (a COM segment after SOI carries the seed)."""
    comment = f"imgsync fakehost seed {seed}".encode()
    segment = b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment
    return _JPEG[:2] + segment + _JPEG[2:]


def make_gif(seed: int) -> bytes:
    """A valid 48x48 animated GIF, unique per seed (a comment extension before the trailer)."""
    comment = f"seed {seed}".encode()
    ext = b"\x21\xfe" + bytes([len(comment)]) + comment + b"\x00"
    return _GIF[:-1] + ext + _GIF[-1:]


def seed_image(index: int) -> tuple[bytes, str]:
    """The ``index``-th seed image and its extension: mostly PNG of varied sizes, some JPEG/GIF."""
    kind = index % 5
    if kind == 3:
        return make_jpeg(index), "jpg"
    if kind == 4:
        return make_gif(index), "gif"
    side = 16 + (index * 37) % 200
    return make_png(side, 8 + (index * 11) % 120, index), "png"


def sniff(data: bytes) -> tuple[str, str, int, int] | None:
    """``(mime, extension, width, height)`` for PNG/JPEG/GIF/WebP/BMP bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return "image/png", "png", w, h
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return "image/gif", "gif", w, h
    if data.startswith(b"\xff\xd8"):
        return _sniff_jpeg(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp", 0, 0
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return "image/bmp", "bmp", w, abs(h)
    return None


def _sniff_jpeg(data: bytes) -> tuple[str, str, int, int] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2) and pos + 9 <= len(data):
            h, w = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return "image/jpeg", "jpg", w, h
        pos += 2 + length
    return "image/jpeg", "jpg", 0, 0


# ---- what an image host does to stored files (Chevereto: BMP -> PNG, thumbnails) ---------


def _bmp_pixels(data: bytes) -> tuple[int, int, list[bytes]] | None:
    """``(width, height, RGBA rows top-down)`` of an uncompressed 1/4/8/24/32-bit BMP."""
    if data[:2] != b"BM" or len(data) < 54:
        return None
    offset = struct.unpack("<I", data[10:14])[0]
    header = struct.unpack("<I", data[14:18])[0]
    width, height = struct.unpack("<ii", data[18:26])
    bpp, compression = struct.unpack("<HI", data[28:34])
    if width <= 0 or height == 0 or compression not in (0, 3) or bpp not in (1, 4, 8, 24, 32):
        return None
    if compression == 3 and bpp != 32:
        return None
    top_down, height = height < 0, abs(height)
    palette: list[bytes] = []
    if bpp <= 8:
        start = 14 + header
        count = struct.unpack("<I", data[46:50])[0] or 2**bpp
        for i in range(count):
            b, g, r = data[start + 4 * i : start + 4 * i + 3]
            palette.append(bytes((r, g, b, 255)))
    stride = (width * bpp + 31) // 32 * 4
    if offset + stride * height > len(data):
        return None
    rows: list[bytes] = []
    for y in range(height):
        raw = data[offset + y * stride : offset + (y + 1) * stride]
        out = bytearray()
        if bpp == 24:
            for x in range(width):
                b, g, r = raw[3 * x : 3 * x + 3]
                out += bytes((r, g, b, 255))
        elif bpp == 32:
            for x in range(width):
                b, g, r = raw[4 * x : 4 * x + 3]
                out += bytes((r, g, b, 255))
        else:
            per_byte = 8 // bpp
            for x in range(width):
                byte = raw[x // per_byte]
                shift = 8 - bpp * (x % per_byte + 1)
                index = (byte >> shift) & (2**bpp - 1)
                out += palette[index] if index < len(palette) else b"\0\0\0\xff"
        rows.append(bytes(out))
    if not top_down:
        rows.reverse()
    return width, height, rows


def bmp_to_png(data: bytes, when: float) -> bytes | None:
    """The PNG an ImageMagick-backed host stores for a BMP upload (``None``: undecodable).

    8-bit RGBA, with the conversion time in a ``tIME`` chunk and ``date:create`` /
    ``date:modify`` text chunks, as ImageMagick writes them: converting the same BMP at
    another second gives different bytes (fixture 36).
    """
    decoded = _bmp_pixels(data)
    if decoded is None:
        return None
    width, height, rows = decoded
    stamp = time.gmtime(when)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", stamp).encode()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    when_chunk = struct.pack(">HBBBBB", *stamp[:6])
    pixels = b"".join(b"\0" + row for row in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"tIME", when_chunk)
        + _png_chunk(b"tEXt", b"date:create\0" + iso)
        + _png_chunk(b"tEXt", b"date:modify\0" + iso)
        + _png_chunk(b"IDAT", zlib.compress(pixels, 9))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_is_complete(data: bytes) -> bool:
    """Whether a JPEG reaches its image data and an end marker (a cut-off file does not).

    Bytes after the end marker are allowed: the recorded 2,000,000-byte upload is a JPEG
    followed by zeros, and the host took it (fixture 39).
    """
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: the entropy-coded data follows
            return data.find(b"\xff\xd9", pos + 2) != -1
        pos += 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
    return False


def derived_file(mime: str, label: str, side: int = 160) -> bytes:
    """A small, valid file of type ``mime`` standing for a host's thumbnail or medium copy.

    A host writes re-encoded copies; the emulator has no image library, so it serves a
    picture of its own, named by ``label`` in a comment (a PNG ``tEXt`` chunk, a JPEG
    ``COM`` segment, a GIF comment extension). Its size is its own, as a real thumbnail's
    is, and it never equals the original's bytes.
    """
    note = f"imgsync fakehost {label}".encode()[:250]
    if mime == "image/jpeg":
        return _JPEG[:2] + b"\xff\xfe" + struct.pack(">H", len(note) + 2) + note + _JPEG[2:]
    if mime == "image/gif":
        return _GIF[:-1] + b"\x21\xfe" + bytes([len(note)]) + note + b"\x00;"
    flat = bytes((note[-1], note[-2], note[-3])) * side
    rows = b"".join(b"\0" + flat for _ in range(side))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"tEXt", b"Comment\0" + note)
        + _png_chunk(b"IDAT", zlib.compress(rows, 6))
        + _png_chunk(b"IEND", b"")
    )
