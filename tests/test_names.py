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


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("CON", "CON_"),
        ("con.png", "con_.png"),
        ("Nul.tar.gz", "Nul_.tar.gz"),
        ("aux .jpg", "aux_.jpg"),
        ("PRN.JPEG", "PRN_.JPEG"),
        ("com1.png", "com1_.png"),
        ("LPT9", "LPT9_"),
        ("lpt¹.gif", "lpt¹_.gif"),
        ("COM0.png", "COM0_.png"),
        # not reserved: kept as they are
        ("CONSOLE.png", "CONSOLE.png"),
        ("com10.png", "com10.png"),
        ("my con.png", "my con.png"),
        ("nul_.png", "nul_.png"),
    ],
)
def test_windows_reserved_names_are_mapped(given: str, expected: str) -> None:
    """Windows (an SMB share, a FAT disk mounted there) cannot hold a file called CON, NUL,
    COM1, LPT1 ... whatever its extension and case: such a host name gets ``_`` after the
    reserved word, keeping its extension; the same name always maps the same way."""
    assert safe_name(given) == expected
    assert safe_name(given) == safe_name(given)


def test_reserved_names_map_to_distinct_names_and_are_written(tmp_path: Path) -> None:
    """Every reserved word, in two cases and with or without an extension, maps to a
    distinct name that is not reserved any more; a host that also has the mapped name
    keeps both files (the second gets `` (1)``)."""
    words = ["CON", "PRN", "AUX", "NUL"] + [f"{w}{n}" for w in ("COM", "LPT") for n in range(10)]
    given = [v for w in words for v in (w, w.lower() + ".png", w.title() + ".tar.gz")]
    out = [safe_name(g) for g in given]
    assert len(set(out)) == len(out)
    for name in out:
        base = name.partition(".")[0].rstrip(" ").upper()
        assert base not in words, name
    names = [safe_name("NUL.png"), safe_name("NUL_.png")]
    assert names == ["NUL_.png", "NUL_.png"]
    unit = Unit("", [StagedFile(n, approved=True) for n in names])
    stage_blobs(str(tmp_path), unit, [b"first", b"second"])
    commit_units(str(tmp_path), [unit])
    assert sorted(os.listdir(tmp_path)) == ["NUL_ (1).png", "NUL_.png"]


def test_the_plain_name_fast_path_gives_what_every_rule_gives() -> None:
    """safe_name takes a plain ``abc123.png`` as it is without the full pass: for plain
    names, names just past what the fast path takes, and reserved words, the result is the
    one the full rules give (same name, same file, whichever path computed it)."""
    import random

    from imgsync.localfs.paths import HOST_NAME_BYTES, _safe_name_rules

    rng = random.Random(15)
    alphabet = "abcXYZ019_-.é ~"
    names = [
        "0f9a.png", "a.b", "CON.png", "con.png", "nul.tar", "Com1.jpg", "LPT9.gif", "COM.png",
        "-x.png", "_x.png", "x-.png", "x_.PNG", "x." + "a" * 16, "x." + "a" * 17,
        "a" * (HOST_NAME_BYTES - 4) + ".png", "a" * (HOST_NAME_BYTES - 3) + ".png",
        ".png", "x.png.", "x..png", "x.p-g", "x.p_g", "AUX.tar.gz", "aux_.png",
    ]  # fmt: skip
    names += ["".join(rng.choices(alphabet, k=rng.randint(1, 12))) for _ in range(3000)]
    for name in names:
        assert safe_name(name) == _safe_name_rules(name, HOST_NAME_BYTES), name
        assert safe_name(name, 8) == _safe_name_rules(name, 8), name
