"""Safe names for files a host names: byte limits, kept extensions, stable odd names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imgsync.localfs import StagedFile, Unit, commit_units, safe_name, stage_blobs
from imgsync.localfs.paths import NAME_MAX_BYTES


def _size(name: str) -> int:
    return len(name.encode("utf-8", "surrogateescape"))


def test_long_names_are_cut_in_bytes_keeping_the_extension() -> None:
    """300 ASCII characters, and 150 x 'é' (300 bytes): both keep '.png' and fit in one
    path component with room for ' (N)' and the sidecar's '.imgsync.json'."""
    for long in ("a" * 300 + ".png", "é" * 150 + ".png", "日本" * 80 + ".jpeg"):
        out = safe_name(long)
        assert out.endswith("." + long.rpartition(".")[2])
        assert _size(out + " (9999).imgsync (99).json") <= NAME_MAX_BYTES
        assert long.startswith(out.rpartition(".")[0])  # a prefix, cut on a character
    assert safe_name("é" * 150 + ".png") == safe_name("é" * 150 + ".png")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (".", "image"),
        ("..", "image"),
        ("", "image"),
        ("   ", "image"),
        ("...png", "image.png"),
        (".png", "image.png"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("a/b\\c.gif", "a_b_c.gif"),
        ("line\nbreak.png", "line_break.png"),
        ("photo.png", "photo.png"),
        ("archive.tar.gz", "archive.tar.gz"),
    ],
)
def test_odd_names_become_stable_names(given: str, expected: str) -> None:
    assert safe_name(given) == expected


def test_a_name_over_255_bytes_is_written_not_failed_forever(tmp_path: Path) -> None:
    """The name that failed with ENAMETOOLONG on every run is written."""
    name = safe_name("é" * 150 + ".png")
    unit = Unit("", [StagedFile(name, approved=True)])
    stage_blobs(str(tmp_path), unit, [b"\x89PNG\r\n\x1a\n..."])
    commit_units(str(tmp_path), [unit])
    assert unit.files[0].error is None
    assert os.listdir(tmp_path) == [name]
