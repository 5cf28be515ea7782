"""`imgsync rewrite` stays inside the tree it was given and edits text only: links found
in a folder are not followed, binary files and things that are not regular files are
skipped with a note."""

from __future__ import annotations

import json
import os
from pathlib import Path

from helpers import run_cli

from imgsync.urlmap import write_map

OLD = "https://i.gyazo.com/abc.png"
NEW = "https://www.imgz.io/images/a.png"


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    write_map(tmp_path / "map.csv", [(OLD, NEW, "1" * 64)])
    docs, outside = tmp_path / "docs", tmp_path / "outside"
    docs.mkdir()
    outside.mkdir()
    (docs / "post.md").write_text(f"![a]({OLD})\n")
    (outside / "secret.md").write_text(f"![s]({OLD})\n")
    (outside / "deep.md").write_text(f"![d]({OLD})\n")
    return tmp_path / "map.csv", docs, outside


def test_links_in_a_walked_folder_are_not_followed(tmp_path: Path) -> None:
    """docs/link.md -> ../outside/secret.md and docs/ext -> ../outside: neither outside
    file changes; the link to a file is reported as skipped; the real document is
    rewritten (exit 0)."""
    map_csv, docs, outside = _setup(tmp_path)
    (docs / "link.md").symlink_to(outside / "secret.md")
    (docs / "ext").symlink_to(outside, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    proc = run_cli("rewrite", "--map", str(map_csv), str(docs), "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    assert (docs / "post.md").read_text() == f"![a]({NEW})\n"
    assert out["files_changed"] == 1
    skipped = {s["file"]: s["reason"] for s in out["skipped"]}
    assert "symbolic link" in skipped[str(docs / "link.md")]
    assert (docs / "link.md").is_symlink()


def test_binary_files_and_special_files_are_skipped_with_a_note(tmp_path: Path) -> None:
    """A .md file holding NUL bytes (an image saved under the wrong name) keeps every byte;
    a FIFO named on the command line is skipped at once (reading it would hang); both are
    noted on stderr; a UTF-16 document (NULs, but a BOM) is still rewritten."""
    map_csv, docs, _ = _setup(tmp_path)
    blob = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR " + OLD.encode() + b" \x00\x01\xff"
    (docs / "image.md").write_bytes(blob)
    utf16 = f"![u]({OLD})\r\n".encode("utf-16")
    (docs / "wide.md").write_bytes(utf16)
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    proc = run_cli("rewrite", "--map", str(map_csv), str(docs), str(fifo), timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert (docs / "image.md").read_bytes() == blob
    assert (docs / "wide.md").read_bytes() == f"![u]({NEW})\r\n".encode("utf-16")
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("  skipped: ")]
    assert any("image.md" in ln and "binary" in ln for ln in notes), proc.stderr
    assert any("pipe.md" in ln and "not a regular file" in ln for ln in notes), proc.stderr
    assert "rewrote 2 links in 2 files" in proc.stdout
