"""The old-URL -> new-URL map of a migration.

The map is built from state: every item of the source with a URL whose bytes (by
SHA-256) are also at the destination, with its file URL and its page URL (permalink).
It is written as CSV (``old_url,new_url,sha256``) or JSON (``{"old": "new", ...}``) by
the file's extension, atomically. Documents are rewritten with it by
:mod:`imgsync.rewrite`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from imgsync.errors import UsageError


def write_map(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """Write the map as CSV or JSON (by extension), via a temp file and a rename."""
    if path.suffix.lower() == ".json":
        text = json.dumps({old: new for old, new, _ in rows}, indent=2, ensure_ascii=False)
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["old_url", "new_url", "sha256"])
        writer.writerows(rows)
        text = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_map(path: Path) -> dict[str, str]:
    """Read a map written by :func:`write_map` (or by hand). Raises ``UsageError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read map {path}: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"map {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise UsageError(f"map {path} must be a JSON object of old URL -> new URL")
        return data
    out: dict[str, str] = {}
    for i, row in enumerate(csv.reader(io.StringIO(text))):
        if i == 0 and row[:2] == ["old_url", "new_url"]:
            continue
        if len(row) < 2 or not row[0] or not row[1]:
            raise UsageError(f"map {path} line {i + 1}: expected old_url,new_url")
        out[row[0]] = row[1]
    return out


def extend_map(path: Path, repaired: dict[str, str], shas: dict[str, str]) -> int:
    """Add ``repaired`` (dead URL -> its replacement) to the map at ``path`` (created when
    missing), and point every entry whose new URL died at the replacement, so the map
    never sends a document to a dead URL. Returns the number of rows written."""
    rows: list[tuple[str, str, str]] = []
    if path.exists():
        if path.suffix.lower() == ".json":
            rows = [(old, new, "") for old, new in read_map(path).items()]
        else:
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read map {path}: {exc}") from None
            for i, row in enumerate(csv.reader(io.StringIO(text))):
                if i == 0 and row[:2] == ["old_url", "new_url"]:
                    continue
                if len(row) < 2 or not row[0] or not row[1]:
                    raise UsageError(f"map {path} line {i + 1}: expected old_url,new_url")
                rows.append((row[0], row[1], row[2] if len(row) > 2 else ""))
    out: dict[str, tuple[str, str, str]] = {}
    for old, new, sha in rows:
        out[old] = (old, repaired.get(new, new), sha)
    for old, new in repaired.items():
        out[old] = (old, new, shas.get(old, out.get(old, ("", "", ""))[2]))
    write_map(path, list(out.values()))
    return len(out)
