"""Edits that keep a file's size and mtime, and what state must record to catch them.

* A source file edited in place with its mtime put back (``touch -r``) and the same size
  is copied again: its ctime (which nobody can set back) moved. A ctime-only change
  (chmod) is re-hashed, not re-sent.
* ``check`` notices a destination file overwritten with other bytes of the same size:
  the file imgsync wrote is recorded with its mtime, ctime and inode.
* A destination's scan mark does not depend on the wall clock.

Real files, a real SQLite state, the real engine in-process, a Chevereto emulator.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest

from imgsync.cli import main
from imgsync.config import load_config
from imgsync.fakehosts.chevereto import CheveretoFake
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.images import make_png, seed_image
from imgsync.models import RemoteItem
from imgsync.pipeline.plan import plan_local
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions
from imgsync.runtime import resolve_spec
from imgsync.state import queries
from imgsync.state.reader import must_open
from imgsync.state.store import StateStore
from imgsync.testing import serve_emulator

TOKEN = "chv_local_edits_key_1234"


def _cli(*args: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*args, "--no-progress", "--json"])
    summary: dict[str, Any] = json.loads(out.getvalue())
    return code, summary


def _images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        data, ext = seed_image(i)
        (folder / f"pic{i:02d}.{ext}").write_bytes(data)


def _edit_keeping_size_and_mtime(path: Path) -> bytes:
    """Overwrite ``path`` in place with other bytes of its size, then put its mtime back
    (what ``touch -r`` does); the new bytes."""
    before = path.stat()
    old = path.read_bytes()
    new = old[:-8] + bytes(reversed(old[-8:])) if old[-8:] != old[-8:][::-1] else old[:-1] + b"\1"
    assert new != old and len(new) == len(old)
    with open(path, "r+b") as fh:
        fh.write(new)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    return new


def test_touch_r_edit_of_a_source_file_is_copied_again(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _images(src, 4)
    assert _cli("copy", str(src), str(dst))[1]["copied"] == 4
    new = _edit_keeping_size_and_mtime(src / "pic01.png")
    code, summary = _cli("copy", str(src), str(dst))
    assert code == 0 and summary["copied"] == 1, summary
    # the changed file is at the destination: beside the old copy or replacing it
    assert new in [p.read_bytes() for p in dst.iterdir()]
    assert _cli("copy", str(src), str(dst))[1]["copied"] == 0


def test_chmod_is_rehashed_not_rewritten(tmp_path: Path) -> None:
    """chmod moves ctime only: the file is hashed again, its bytes are already there, no
    file is written; the next run is a no-op that trusts the mark again."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _images(src, 3)
    _cli("copy", str(src), str(dst))
    written = (dst / "pic00.png").stat()
    os.chmod(src / "pic00.png", 0o600)
    code, summary = _cli("copy", str(src), str(dst))
    assert code == 0 and summary["copied"] == 0 and summary["already_present"] == 3
    again = (dst / "pic00.png").stat()
    assert (again.st_ino, again.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    assert sorted(p.name for p in dst.iterdir()) == ["pic00.png", "pic01.png", "pic02.png"]
    with must_open(Path(os.environ["IMGSYNC_STATE"])) as db:
        plan = plan_local(db, src, f"local:{dst.resolve()}", dest_root=dst)
    assert plan.marked


def _cfg(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(
        f'[state]\npath = "{tmp_path / "state.db"}"\n'
        f'[remotes.chv]\ntype = "chevereto"\nbase_url = "{url}"\ntoken = "{TOKEN}"\n'
    )
    return path


async def test_host_destination_touch_r_edit_uploads_chmod_does_not(tmp_path: Path) -> None:
    src = tmp_path / "shots"
    _images(src, 3)
    async with serve_emulator(CheveretoFake(Knobs(token=TOKEN))) as emu:
        cfg = load_config(_cfg(tmp_path, emu.url))
        first = await run_job(cfg, JobSpec("copy", str(src), "chv:", CopyOptions()))
        assert first.copied == 3
        os.chmod(src / "pic02.png", 0o600)
        again = await run_job(cfg, JobSpec("copy", str(src), "chv:", CopyOptions()))
        assert again.copied == 0 and (await emu.stats())["uploads"] == 3
        _edit_keeping_size_and_mtime(src / "pic00.png")
        edited = await run_job(cfg, JobSpec("copy", str(src), "chv:", CopyOptions()))
        assert edited.copied == 1 and (await emu.stats())["uploads"] == 4


def test_check_reports_a_same_size_overwrite(tmp_path: Path) -> None:
    """Another image of the same size written over the copy: `check` reports it altered;
    the next copy writes the image beside the user's file."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    mine = make_png(40, 30, 1)
    (src / "img01.png").write_bytes(mine)
    (src / "img02.png").write_bytes(make_png(41, 30, 2))
    assert _cli("copy", str(src), str(dst))[1]["copied"] == 2
    target = dst / "img01.png"
    theirs = bytearray(mine)
    theirs[-20] ^= 0xFF  # same size, other bytes
    target.write_bytes(bytes(theirs))
    code, summary = _cli("check", str(src), str(dst))
    assert code == 1 and summary["altered"] == ["img01.png"], summary
    code, summary = _cli("copy", str(src), str(dst))
    assert code == 0 and summary["copied"] == 1
    assert target.read_bytes() == bytes(theirs)  # imgsync did not write it: kept
    assert (dst / "img01 (1).png").read_bytes() == mine
    assert _cli("check", str(src), str(dst))[0] == 0


def test_check_reports_an_overwrite_with_its_mtime_put_back(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _images(src, 2)
    _cli("copy", str(src), str(dst))
    _edit_keeping_size_and_mtime(dst / "pic00.png")
    code, summary = _cli("check", str(src), str(dst))
    assert code == 1 and summary["altered"] == ["pic00.png"], summary


def test_check_does_not_call_a_chmod_at_the_destination_altered(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _images(src, 2)
    _cli("copy", str(src), str(dst))
    os.chmod(dst / "pic01.png", 0o600)
    code, summary = _cli("check", str(src), str(dst))
    assert code == 0 and summary["altered"] == [] and summary["missing"] == [], summary


async def test_a_host_scan_mark_does_not_trust_the_wall_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock went back: a location is dropped and another recorded (same count, an
    older time than the newest). The destination changed, so the saved mark must not
    match: the file whose bytes the destination no longer has is uploaded again."""
    src = tmp_path / "shots"
    _images(src, 3)
    async with serve_emulator(CheveretoFake(Knobs(token=TOKEN))) as emu:
        cfg = load_config(_cfg(tmp_path, emu.url))
        assert (await run_job(cfg, JobSpec("copy", str(src), "chv:", CopyOptions()))).copied == 3
        _remote, dest = resolve_spec(cfg, "chv:")
        with must_open(cfg.state_path) as db:
            assert plan_local(db, src, dest).marked
            items = db.items_at(dest)
        gone = min(items)
        monkeypatch.setattr("time.time", lambda: 1000.0)  # the clock set back
        async with StateStore(cfg.state_path) as store:
            await queries.forget_locations(store, dest, [gone])
            await queries.record_objects(store, [("f" * 64, 10, None, "image/png")])
            await queries.record_locations(
                store, dest, [("f" * 64, RemoteItem(remote_id="other", name="other.png"))]
            )
            await store.flush()
        monkeypatch.undo()
        with must_open(cfg.state_path) as db:
            assert not plan_local(db, src, dest).marked
        again = await run_job(cfg, JobSpec("copy", str(src), "chv:", CopyOptions()))
        assert again.copied == 1, again.line()


@pytest.mark.parametrize("version", [6, 9])
def test_an_old_state_is_upgraded_without_rehashing_or_losing_anything(
    tmp_path: Path, version: int
) -> None:
    """A state file written by an older imgsync (schema 6 or 9: files recorded without
    their ctime, a scan mark keyed on the wall clock): after the upgrade every row is
    still there, the unchanged files are trusted as before (their ctime is taken, they
    are not read again), the old mark is not trusted, and the next touch -r edit is seen."""
    import sqlite3

    from imgsync.state.schema import MIGRATIONS, SCHEMA_VERSION

    src = tmp_path / "src"
    _images(src, 3)
    state = Path(os.environ["IMGSYNC_STATE"])
    state.parent.mkdir(parents=True, exist_ok=True)
    raw = sqlite3.connect(state)
    for script in MIGRATIONS[:version]:
        raw.executescript(script)
    dest = "chevereto:http://127.0.0.1:9#abc"
    for i, p in enumerate(sorted(src.iterdir())):
        st = p.stat()
        sha = f"{i}" * 64  # not the file's: only a re-read would find its real checksum
        raw.execute(
            "INSERT INTO local_files VALUES (?, ?, ?, ?, ?, ?, NULL)",
            (str(src), p.name, st.st_size, st.st_mtime_ns, st.st_ino, sha),
        )
        raw.execute("INSERT INTO objects VALUES (?, ?, NULL, 'image/png', 0)", (sha, st.st_size))
        raw.execute(
            "INSERT INTO locations (remote, remote_id, sha256, updated) VALUES (?, ?, ?, ?)",
            (dest, f"id{i}", sha, 1000.0 + i),
        )
    raw.execute(
        "INSERT INTO scan_marks (root, dest, fingerprint, dest_count, dest_latest, dest_state) "
        "VALUES (?, ?, 'old', 3, 1002.0, '')",
        (str(src), dest),
    )
    raw.execute(f"PRAGMA user_version = {version}")
    raw.commit()
    raw.close()
    with must_open(state) as db:
        plan = plan_local(db, src, dest)
        assert not plan.marked  # the old mark trusted the clock: one full look
        assert plan.to_hash == [] and plan.to_send == [] and plan.present == 3
    conn = sqlite3.connect(state)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT COUNT(*) FROM locations").fetchone()[0] == 3
    ctimes = dict(conn.execute("SELECT rel, ctime_ns FROM local_files"))
    conn.close()
    assert ctimes == {p.name: p.stat().st_ctime_ns for p in src.iterdir()}
    _edit_keeping_size_and_mtime(src / "pic01.png")
    with must_open(state) as db:
        plan = plan_local(db, src, dest)
    assert [e.rel for e in plan.to_hash] == ["pic01.png"] and plan.present == 2


async def test_a_fleet_worker_keeps_its_no_op_mark(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In fleet mode a run ends by taking in what the other workers recorded: nothing new
    must not move the destination's generation, or no re-run would ever be a no-op."""
    monkeypatch.setenv("IMGSYNC_STATE_URL", pg_url)
    src = tmp_path / "shots"
    _images(src, 3)
    async with serve_emulator(CheveretoFake(Knobs(token=TOKEN))) as emu:
        cfg = load_config(_cfg(tmp_path, emu.url))
        assert cfg.state_url == pg_url
        assert (await run_job(cfg, JobSpec("copy", str(src), "chv:", CopyOptions()))).copied == 3
        _remote, dest = resolve_spec(cfg, "chv:")
        again = await run_job(cfg, JobSpec("copy", str(src), "chv:", CopyOptions()))
        assert again.copied == 0
        with must_open(cfg.state_path) as db:
            assert plan_local(db, src, dest).marked
