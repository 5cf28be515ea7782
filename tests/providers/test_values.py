"""``as_int``: the one reader of integers in host replies (Guizhan's codes and sizes, Lsky
Pro's page numbers and cursors)."""

from __future__ import annotations

from typing import Any

import pytest

from imgsync.providers.values import as_int


@pytest.mark.parametrize(
    ("value", "signed", "unsigned"),
    [
        (12, 12, 12),
        ("12", 12, 12),
        (" 40\n", 40, 40),
        ("+7", 7, 7),
        (-3, -3, None),
        ("-3", -3, None),
        ("0", 0, 0),
        # the two copies this replaced raised ValueError on these
        ("--5", None, None),
        ("²", None, None),
        ("١٢", None, None),
        (True, None, None),
        (1.0, None, None),
        ("1.5", None, None),
        ("", None, None),
        (None, None, None),
        ([1], None, None),
    ],
)
def test_as_int(value: Any, signed: int | None, unsigned: int | None) -> None:
    assert as_int(value) == signed
    assert as_int(value, negative=False) == unsigned
