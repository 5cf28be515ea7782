"""Deterministic sample images for the emulators' ``--seed`` knob, and a small sniffer.

The PNGs are drawn here; the JPEG and GIF are two tiny generated pictures kept as bytes,
made distinct per seed by a comment segment (which every decoder ignores).
"""

from __future__ import annotations

import base64
import struct
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
