"""The stored image of the Chevereto emulator and the ~60-key ``image`` object of its replies.

What is recorded (``shared/fixtures/chevereto-4.2.0``) and copied here on purpose:

- the key order of the object, including the different position of ``medium`` when one exists
  (fixture 23: ``image, medium, thumb, url_frame``; otherwise ``image, thumb, url_frame, medium``);
- ``ratio`` is PHP's ``width / height``: an integer when it divides evenly (``1``), else a float;
- ``size_formatted`` uses powers of 1000 rounded to one decimal (``"310 B"``, ``"1.6 KB"``, ``"3 MB"``);
- an animated GIF gets a medium (``.md.``) file, ``display_url`` points at it and ``display_width``
  is the *string* ``"500"`` while ``display_height`` is an integer (fixture 23, verbatim);
- ``chain`` is a bit set of the stored files: 1 image, 2 medium, 4 thumb (5 or 7 in the fixtures);
- JPEG uploads carry ``original_exifdata`` as a JSON *string* of PHP's ``exif_read_data`` summary;
- tags become ``{name, name_safe_html, url_key, url}`` objects and ``tags_string`` joins with ", ";
- ``title_truncated`` cuts titles over 28 characters to 25 plus ``...`` (vendor docs example).

- ``date`` is the site's local time and ``date_gmt`` UTC (the recordings' site ran at UTC-3), the
  date folder follows the local date;
- ``thumb_size``/``thumb.size`` (and ``medium_size``) are the sizes of the derived files, not of
  the original (fixtures 35, 39, 43: a 342-byte image has a 2,097-byte thumbnail);
- an image too big to show inline without a medium copy is displayed by its thumbnail:
  ``display_url`` is the ``.th.`` file and ``display_width``/``display_height`` are the
  *strings* of the thumbnail setting, ``"320"`` (fixture 39, 2,000,000 bytes).

Inferred [INF]: the thumbnail and medium files are small pictures of the image's type drawn by
the emulator (the real server writes re-encoded 320px / 500px versions of the image); where
between 1.6 KB (fixture 05, shown inline) and 2 MB (39, shown by its thumbnail) the
display switch lies: taken here as 1 MB.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

TITLE_TRUNCATE = 28
MEDIUM_WIDTH = "500"  # the site setting, echoed as a string in display_width (fixture 23)
THUMB_SIDE = "320"  # the thumbnail setting, echoed as strings in display_* (fixture 39)
DISPLAY_BY_THUMB_OVER = 1_000_000  # [INF] bytes; see the module docstring
SITE_UTC_OFFSET = -3 * 3600.0  # the recordings' site zone (date vs date_gmt)

CHAIN_IMAGE = 1
CHAIN_MEDIUM = 2
CHAIN_THUMB = 4


@dataclass
class StoredImage:
    """One upload as the emulator keeps it."""

    id: int
    id_encoded: str
    name: str  # stored stem, e.g. "test1" or "test1051b2f977df595f4"
    extension: str
    mime: str
    data: bytes
    width: int
    height: int
    md5: str
    sha256: str
    uploaded: float  # unix time
    folder: str  # "YYYY/MM/DD" (server local date)
    original_filename: str
    title: str
    delete_token: str
    description: str | None = None
    nsfw: int = 0
    tags: list[str] = field(default_factory=list)
    exifdata: str | None = None
    is_animated: bool = False
    expires: float | None = None
    is_approved: bool = True
    thumb: bytes = b""  # the derived files served beside the image
    medium: bytes | None = None
    utc_offset: float = SITE_UTC_OFFSET  # seconds east of UTC of the site's local time

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.extension}"

    @property
    def has_medium(self) -> bool:
        """Whether a medium file exists: animated uploads (fixture 23) or wide ones [INF]."""
        return self.is_animated or self.width > int(MEDIUM_WIDTH)

    def variant_filename(self, variant: str) -> str:
        """``""`` -> the image itself, ``"th"`` -> thumb, ``"md"`` -> medium."""
        if not variant:
            return self.filename
        return f"{self.name}.{variant}.{self.extension}"

    def path(self, variant: str = "") -> str:
        return f"/images/{self.folder}/{self.variant_filename(variant)}"

    @property
    def path_viewer(self) -> str:
        return f"/image/{self.id_encoded}"


def format_bytes(size: int) -> str:
    """Chevereto's size text: ``310 B``, ``1.6 KB``, ``3 MB`` (powers of 1000, one decimal)."""
    if size < 1000:
        return f"{size} B"
    units = ("KB", "MB", "GB", "TB", "PB")
    power = 1
    while power < len(units) and size >= 1000 ** (power + 1):
        power += 1
    return f"{php_number(round(size / 1000**power, 1))} {units[power - 1]}"


def php_number(value: float) -> str:
    """A float as PHP prints it: ``3.0`` -> ``3``, ``1.6`` -> ``1.6``."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def php_ratio(width: int, height: int) -> int | float:
    """PHP's ``$w / $h``: an int when exact, else a float (0 when height is unknown)."""
    if height == 0:
        return 0
    return width // height if width % height == 0 else width / height


def local_datetime(ts: float, utc_offset: float = SITE_UTC_OFFSET) -> str:
    """The site's local time (``utc_offset`` seconds east of UTC), as ``date`` shows it."""
    return datetime.fromtimestamp(ts + utc_offset, UTC).strftime("%Y-%m-%d %H:%M:%S")


def gmt_datetime(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def datefolder(ts: float, utc_offset: float = SITE_UTC_OFFSET) -> str:
    """``YYYY/MM/DD`` of the site's local date (the ``datefolder`` storage mode)."""
    return datetime.fromtimestamp(ts + utc_offset, UTC).strftime("%Y/%m/%d")


def is_animated(data: bytes, mime: str) -> bool:
    """More than one frame in a GIF, or an APNG ``acTL`` chunk, or an animated WebP."""
    if mime == "image/gif":
        return _gif_frames(data) > 1
    if mime == "image/png":
        return b"acTL" in data[: data.find(b"IDAT")] if b"IDAT" in data else False
    if mime == "image/webp":
        return b"ANIM" in data[:64]
    return False


def _gif_frames(data: bytes) -> int:
    """Count image descriptors by walking the GIF block structure."""
    if len(data) < 13:
        return 0
    pos = 13
    flags = data[10]
    if flags & 0x80:
        pos += 3 * (2 ** ((flags & 0x07) + 1))
    frames = 0
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then data sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor, optional local colour table, LZW data
            if pos + 10 > len(data):
                break
            frames += 1
            local = data[pos + 9]
            pos += 10
            if local & 0x80:
                pos += 3 * (2 ** ((local & 0x07) + 1))
            pos = _skip_sub_blocks(data, pos + 1)
        else:
            break
    return frames


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data):
        size = data[pos]
        pos += 1 + size
        if size == 0:
            break
    return pos


def jpeg_exifdata(temp_name: str, size: int, width: int, height: int, when: float) -> str:
    """The JSON string PHP's ``exif_read_data`` summary becomes for a plain JPEG (fixture 05)."""
    summary: dict[str, Any] = {
        "FileName": temp_name,
        "FileDateTime": str(int(when)),
        "FileSize": str(size),
        "FileType": "2",
        "MimeType": "image/jpeg",
        "SectionsFound": "",
        "COMPUTED": {
            "html": f'width="{width}" height="{height}"',
            "Height": str(height),
            "Width": str(width),
            "IsColor": "1",
        },
        "IPTC": [],
        "width": str(width),
        "height": str(height),
    }
    # PHP's json_encode escapes forward slashes
    return json.dumps(summary, separators=(",", ":")).replace("/", "\\/")


def _tag_objects(tags: list[str]) -> list[dict[str, str]]:
    out = []
    for tag in tags:
        key = quote(tag.replace(" ", "-"), safe="")
        out.append(
            {"name": tag, "name_safe_html": html.escape(tag), "url_key": key, "url": f"/tag/{key}"}
        )
    return out


def variant_bytes(img: StoredImage, variant: str) -> bytes:
    """The stored bytes of ``""`` (the image), ``"th"`` or ``"md"``."""
    if variant == "th":
        return img.thumb
    if variant == "md" and img.medium is not None:
        return img.medium
    return img.data


def _file_entry(img: StoredImage, base: str, variant: str) -> dict[str, Any]:
    filename = img.variant_filename(variant)
    return {
        "filename": filename,
        "name": filename.rsplit(".", 1)[0],
        "mime": img.mime,
        "extension": img.extension,
        "url": base + img.path(variant),
        "size": len(variant_bytes(img, variant)),
    }


_NO_MEDIUM: dict[str, Any] = {
    "filename": None,
    "name": None,
    "mime": None,
    "extension": None,
    "url": None,
}


def image_object(img: StoredImage, base: str, checksum_field: str = "md5") -> dict[str, Any]:
    """The ``image`` object of an upload reply, keys in the recorded order."""
    size = len(img.data)
    url = base + img.path()
    title = img.title
    truncated = title if len(title) <= TITLE_TRUNCATE else title[: TITLE_TRUNCATE - 3] + "..."
    chain = CHAIN_IMAGE | CHAIN_THUMB | (CHAIN_MEDIUM if img.has_medium else 0)
    thumb = _file_entry(img, base, "th")
    out: dict[str, Any] = {
        "name": img.name,
        "extension": img.extension,
        "size": size,
        "width": img.width,
        "height": img.height,
        "date": local_datetime(img.uploaded, img.utc_offset),
        "date_gmt": gmt_datetime(img.uploaded),
        "title": title,
        "description": img.description,
        "nsfw": img.nsfw,
        "storage_mode": "datefolder",
        checksum_field: img.md5,
        f"source_{checksum_field}": None,
        "original_filename": img.original_filename,
        "original_exifdata": img.exifdata,
        "views": 0,
        "category_id": None,
        "chain": chain,
        "thumb_size": thumb["size"],
        "medium_size": len(variant_bytes(img, "md")) if img.has_medium else 0,
        "frame_size": 0,
        "expiration_date_gmt": gmt_datetime(img.expires) if img.expires is not None else None,
        "likes": 0,
        "is_animated": int(img.is_animated),
        "is_approved": int(img.is_approved),
        "is_360": 0,
        "duration": 0,
        "type": "image",
        "tags": _tag_objects(img.tags),
        "tags_string": ", ".join(img.tags),
        "file": {"resource": {"type": "path"}},
        "id_encoded": img.id_encoded,
        "filename": img.filename,
        "mime": img.mime,
        "url": url,
        "ratio": php_ratio(img.width, img.height),
        "size_formatted": format_bytes(size),
        "image": _file_entry(img, base, ""),
    }
    if img.has_medium:
        out["medium"] = _file_entry(img, base, "md")
        out["thumb"] = thumb
        out["url_frame"] = ""
        display_url = base + img.path("md")
        display_w: int | str = MEDIUM_WIDTH
        ratio = php_ratio(img.width, img.height) or 1
        display_h: int | str = round(int(MEDIUM_WIDTH) / ratio)
    else:
        out["thumb"] = thumb
        out["url_frame"] = ""
        out["medium"] = dict(_NO_MEDIUM)
        display_url, display_w, display_h = url, img.width, img.height
        if size > DISPLAY_BY_THUMB_OVER:
            display_url, display_w, display_h = thumb["url"], THUMB_SIDE, THUMB_SIDE
    out.update(
        {
            "duration_time": "",
            "url_viewer": base + img.path_viewer,
            "path_viewer": img.path_viewer,
            "url_short": base + img.path_viewer,
            "display_url": display_url,
            "display_width": display_w,
            "display_height": display_h,
            "views_label": "views",
            "likes_label": "likes",
            "how_long_ago": "moments ago",
            "date_fixed_peer": gmt_datetime(img.uploaded),
            "title_truncated": truncated,
            "title_truncated_html": html.escape(truncated),
            "is_use_loader": False,
            "display_title": title,
            "delete_url": f"{base}{img.path_viewer}/delete/{img.delete_token}",
        }
    )
    if not img.is_approved:
        # moderation queue: the server drops every URL that would expose the file [SRC]
        for key in ("url", "display_url"):
            out.pop(key, None)
        for sub in ("image", "thumb", "medium"):
            out[sub].pop("url", None)
    return out
