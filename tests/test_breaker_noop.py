"""Hostile re-runs of a folder copy against its scan mark: what happens at the destination
while a run is going on must not be folded into the mark the run saves.

In-process runs of the real CLI on real files and a real SQLite state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imgsync.cli import main
from imgsync.pipeline import plan as plan_module


def _copy(src: Path, dst: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(["copy", str(src), str(dst), "--no-progress", "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def _tree(root: Path) -> None:
    for folder in ("a", "b"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (root / folder / f"{folder}{i}.png").write_bytes(f"{folder}:{i}".encode() * 40)


def test_a_destination_file_deleted_during_a_run_is_copied_by_the_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run copies a new file; meanwhile the user deletes an old copy at the
    destination. The mark the run saves must not claim that copy is still there."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    assert _copy(src, dst, capsys)["copied"] == 6
    (src / "a" / "new.png").write_bytes(b"new" * 100)
    victim = dst / "b" / "b1.png"
    state = plan_module.LocalPlan.dest_state

    def deleted_meanwhile(self: plan_module.LocalPlan, *args: Any) -> str | None:
        # the user's rm lands after the plan looked at the destination and before the
        # run's end: the moment the run reads the destination folders' state
        victim.unlink(missing_ok=True)
        return state(self, *args)

    monkeypatch.setattr(plan_module.LocalPlan, "dest_state", deleted_meanwhile)
    assert _copy(src, dst, capsys)["copied"] == 1
    monkeypatch.setattr(plan_module.LocalPlan, "dest_state", state)
    assert not victim.exists()
    again = _copy(src, dst, capsys)
    assert again["copied"] == 1
    assert victim.read_bytes() == (src / "b" / "b1.png").read_bytes()
