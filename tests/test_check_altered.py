"""`imgsync check` notices a destination file overwritten in place with other bytes."""

from __future__ import annotations

from pathlib import Path

from helpers import run_cli, run_json

from imgsync.fakehosts.images import make_png


def test_check_reports_a_destination_file_overwritten_in_place(
    image_tree: Path, tmp_path: Path
) -> None:
    """The user overwrote a copied file (same name, other bytes of another size): `check`
    reports it altered (exit 1) and changes no file (later checks: missing); the next copy writes the image again
    without overwriting the user's file."""
    dst = tmp_path / "dst"
    assert run_json("copy", str(image_tree), str(dst))[0] == 0
    assert run_json("copy", str(image_tree), str(dst))[1]["copied"] == 0  # the no-op mark
    target = dst / "img01.png"
    theirs = make_png(50, 31, 4242)
    assert len(theirs) != target.stat().st_size
    target.write_bytes(theirs)  # in place: the folder's mtime does not move
    proc = run_cli("check", str(image_tree), str(dst))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "altered: img01.png" in proc.stdout
    assert target.read_bytes() == theirs
    code, summary = run_json("check", str(image_tree), str(dst))  # now known to be missing
    assert code == 1
    assert summary["missing"] == ["img01.png"]
    code, summary = run_json("copy", str(image_tree), str(dst))
    assert code == 0 and summary["copied"] == 1
    assert target.read_bytes() == theirs  # never overwritten: imgsync did not write it
    assert (dst / "img01 (1).png").read_bytes() == (image_tree / "img01.png").read_bytes()
    assert run_cli("check", str(image_tree), str(dst)).returncode == 0
