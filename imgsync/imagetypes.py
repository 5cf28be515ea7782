"""Which names are images: the extensions imgsync handles.

A module of its own with no imports, so the scan of a no-op re-run reads it without
loading the value types of :mod:`imgsync.models` (which re-exports both names).
"""

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".avif", ".tif", ".tiff", ".heic", ".svg"}
)


def is_image_name(name: str) -> bool:
    """True when the name's extension is one of the image types imgsync handles."""
    dot = name.rfind(".")
    return dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS
