"""Fixtures of the conformance suite: one run of every case per registered remote type."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.targets import Open, target_opener
from imgsync.providers import kinds


@pytest.fixture(params=kinds())
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def open_target(kind: str, tmp_path: Path) -> Open:
    """``async with open_target(seed=N, token=..., rate=...) as target``."""
    return target_opener(kind, tmp_path)
