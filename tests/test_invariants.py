"""The promises state makes (DESIGN.md "State: what it must guarantee"), each driven as a
user would: the real CLI in real processes, real SQLite files, emulators on 127.0.0.1.

1. ``sync`` deletes only what this job wrote and no other job relies on.
2. Bytes that are not an image are never written under an image name, nor recorded.
3. A destination is what it is (normalised base URL + account), not the remote's name.
4. A remote effect is committed before its item counts as done (SIGKILL loses at most
   what was in flight).
5. Two processes on the same state and destination upload each image once.
6. Migrations run under an exclusive lock; a corrupt database exits 75, "move it aside".
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from helpers import run_cli, run_cli_async, run_json, start_fake, tree_files, write_config

from imgsync.fakehosts.chevereto import CheveretoFake
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import make_png, seed_image
from imgsync.models import sniff_image

GY_TOKEN = "gyazo-invariant-token-1234"
CHV_TOKEN = "chv_invariant_key_5678"
ENV = {"GY_TOKEN": GY_TOKEN, "CHV_TOKEN": CHV_TOKEN}


def _images(folder: Path, count: int, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        data, ext = seed_image(i)
        (folder / f"pic{i:03d}.{ext}").write_bytes(data)
    return folder


def _config(path: Path, gy_url: str | None = None, chv_url: str | None = None) -> Path:
    text = ""
    if gy_url:
        text += f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{gy_url}"\ntoken_env = "GY_TOKEN"\n'
    if chv_url:
        text += (
            f'[remotes.chv]\ntype = "chevereto"\nbase_url = "{chv_url}"\ntoken_env = "CHV_TOKEN"\n'
        )
    return write_config(path, text)


# ---- 1. sync deletes only what this job wrote -----------------------------------------


def test_sync_from_another_folder_keeps_what_other_jobs_wrote(tmp_path: Path) -> None:
    """``copy A d`` then ``sync B d``: B never wrote A's files, so none is deleted."""
    a = _images(tmp_path / "a", 6)
    b = tmp_path / "b"
    b.mkdir()
    (b / "only-b.png").write_bytes(make_png(5, 5, 777))
    d = tmp_path / "d"
    assert run_json("copy", str(a), str(d))[0] == 0
    code, summary = run_json("sync", str(b), str(d), "--max-delete", "1000")
    assert code == 0, summary
    assert summary["deleted"] == 0
    assert len(tree_files(d)) == 7


async def test_sync_keeps_a_host_copy_another_folder_relies_on(tmp_path: Path) -> None:
    """Folders A and B both hold X; A dropping X must not delete the host's X that B
    relies on (dedupe uploaded it once, from A)."""
    fake = await start_fake(GyazoFake(Knobs(token=GY_TOKEN)))
    try:
        cfg = _config(tmp_path / "cfg.toml", gy_url=fake.url)
        a = _images(tmp_path / "a", 3)
        b = tmp_path / "b"
        b.mkdir()
        (b / "same.png").write_bytes((a / "pic000.png").read_bytes())
        base = ("--config", str(cfg))
        for folder in (a, b):
            proc = await run_cli_async(*base, "sync", str(folder), "gy:", "--json", env=ENV)
            assert proc.returncode == 0, proc.stderr
        assert (await fake.stats())["items"] == 3
        (a / "pic000.png").unlink()
        proc = await run_cli_async(*base, "sync", str(a), "gy:", "--json", env=ENV)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["deleted"] == 0
        assert (await fake.stats())["items"] == 3
        # once B drops it too, B's sync may not delete it (B did not upload it) and A's
        # sync no longer has it: nothing is deleted that anyone still relies on
        (b / "same.png").unlink()
        proc = await run_cli_async(*base, "sync", str(b), "gy:", "--json", env=ENV)
        assert proc.returncode == 0, proc.stderr
    finally:
        await fake.close()


# ---- 2. non-image bytes are never written or recorded ---------------------------------


class LyingGyazo(GyazoFake):
    """Gyazo whose image files sometimes come back as an HTML/JSON page with status 200."""

    def fault_applies(self, request: web.Request) -> bool:
        return not request.path.startswith(("/api", "/_fakehost"))


async def test_backup_never_writes_or_records_a_page_that_is_not_an_image(
    tmp_path: Path,
) -> None:
    host = LyingGyazo(Knobs(token=GY_TOKEN, seed=20, faults={"malformed": 0.4}))
    fake = await start_fake(host)
    try:
        cfg = _config(tmp_path / "cfg.toml", gy_url=fake.url)
        d = tmp_path / "backup"
        args = ("--config", str(cfg), "backup", "gy:", str(d), "--json")
        first = await run_cli_async(*args, env=ENV)
        assert first.returncode == 1, first.stderr  # the lying replies are item failures
        for name, data in tree_files(d).items():
            if not name.endswith(".json"):
                assert sniff_image(data) is not None, f"{name} is not an image"
        host.knobs.faults = {}
        second = await run_cli_async(*args, env=ENV)
        assert second.returncode == 0, second.stderr
        images = [n for n in tree_files(d) if not n.endswith(".json")]
        assert len(images) == 20
        assert all(sniff_image(data) for n, data in tree_files(d).items() if n in images)
    finally:
        await fake.close()


# ---- 3. a destination is identified by what it is -------------------------------------


async def test_renaming_a_remote_or_a_trailing_slash_uploads_nothing_again(
    tmp_path: Path,
) -> None:
    fake = await start_fake(CheveretoFake(Knobs(token=CHV_TOKEN)))
    try:
        src = _images(tmp_path / "shots", 5)
        cfg = _config(tmp_path / "cfg.toml", chv_url=fake.url)
        proc = await run_cli_async("--config", str(cfg), "copy", str(src), "chv:", env=ENV)
        assert proc.returncode == 0, proc.stderr
        assert (await fake.stats())["uploads"] == 5
        renamed = write_config(
            tmp_path / "renamed.toml",
            f'[remotes.imgz]\ntype = "chevereto"\nbase_url = "{fake.url}/"\n'
            'token_env = "CHV_TOKEN"\n'
            f'[remotes.alias]\ntype = "chevereto"\nbase_url = "{fake.url}"\n'
            'token_env = "CHV_TOKEN"\n',
        )
        for name in ("imgz:", "alias:"):
            proc = await run_cli_async(
                "--config", str(renamed), "copy", str(src), name, "--json", env=ENV
            )
            assert proc.returncode == 0, proc.stderr
            assert json.loads(proc.stdout)["copied"] == 0
        assert (await fake.stats())["uploads"] == 5
        # another account at the same site is another destination
        env = {**ENV, "CHV_TOKEN": "someone-else"}
        proc = await run_cli_async("--config", str(renamed), "copy", str(src), "imgz:", env=env)
        assert proc.returncode != 0  # the emulator refuses the other key: it did try
    finally:
        await fake.close()


# ---- 4. remote effects are committed before an item counts as done --------------------


async def test_sigkill_during_a_migration_redoes_at_most_what_was_in_flight(
    tmp_path: Path,
) -> None:
    count, transfers, kills = 40, 4, 3
    gyazo = await start_fake(GyazoFake(Knobs(token=GY_TOKEN, seed=count)))
    chv_host = CheveretoFake(Knobs(token=CHV_TOKEN))
    chv = await start_fake(chv_host)
    try:
        cfg = _config(tmp_path / "cfg.toml", gy_url=gyazo.url, chv_url=chv.url)
        args = [
            sys.executable, "-m", "imgsync", "--config", str(cfg), "migrate", "gy:", "chv:",
            "--map", str(tmp_path / "map.csv"), "--transfers", str(transfers),
        ]  # fmt: skip
        env = {**os.environ, **ENV}
        for k in range(1, kills + 1):
            proc = await asyncio.create_subprocess_exec(
                *args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            target = k * count // (kills + 1)
            while chv_host.stats.uploads < target and proc.returncode is None:
                await asyncio.sleep(0.005)
            if proc.returncode is None:  # a fast run may have finished the rest already
                proc.kill()
            await proc.wait()
        proc = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        stats = await chv.stats()
        assert stats["distinct_checksums"] == count
        assert stats["uploads"] - count <= kills * transfers, stats
    finally:
        await gyazo.close()
        await chv.close()


async def test_sigkill_during_a_backup_leaves_only_recorded_files_that_are_on_disk(
    tmp_path: Path,
) -> None:
    """Backups write in groups (one flush each) while downloads go on: whatever state
    records at the folder after a SIGKILL is there with the recorded bytes and its
    sidecar, and the next run finishes the rest with no second copy of anything."""
    count, kills = 120, 3
    host = GyazoFake(Knobs(token=GY_TOKEN, seed=count))
    gyazo = await start_fake(host)
    out = tmp_path / "backup"
    db = Path(os.environ["IMGSYNC_STATE"])
    try:
        cfg = _config(tmp_path / "cfg.toml", gy_url=gyazo.url)
        args = [
            sys.executable, "-m", "imgsync", "--config", str(cfg), "backup", "gy:", str(out),
            "--transfers", "8",
        ]  # fmt: skip
        env = {**os.environ, **ENV}
        for k in range(1, kills + 1):
            start = host.stats.requests
            proc = await asyncio.create_subprocess_exec(
                *args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            while host.stats.requests < start + 30 * k and proc.returncode is None:
                await asyncio.sleep(0.002)
            if proc.returncode is None:  # a fast run may have finished the rest already
                proc.kill()
            await proc.wait()
            with sqlite3.connect(db) as conn:
                rows = conn.execute(
                    "SELECT remote_id, sha256 FROM locations WHERE remote LIKE 'local:%'"
                ).fetchall()
            for rel, sha in rows:
                assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == sha, rel
                assert json.loads((out / f"{rel}.json").read_text())["sha256"] == sha
        proc = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
    finally:
        await gyazo.close()
    files = [p for p in out.iterdir() if p.is_file()]
    images = sorted(p.name for p in files if sniff_image(p.read_bytes()[:64]))
    assert len(images) == count, images
    assert not [n for n in images if " (" in n]  # no second copy under another name
    assert all((out / f"{n}.json").is_file() for n in images)
    assert not [p for p in out.iterdir() if p.name.startswith(".imgsync-tmp")]


# ---- 5. two processes upload each image once -----------------------------------------


async def test_two_processes_copying_at_once_upload_each_image_once(tmp_path: Path) -> None:
    fake = await start_fake(CheveretoFake(Knobs(token=CHV_TOKEN)))
    try:
        src = _images(tmp_path / "shots", 60)
        cfg = _config(tmp_path / "cfg.toml", chv_url=fake.url)
        args = ("--config", str(cfg), "copy", str(src), "chv:", "--transfers", "4")
        one, two = await asyncio.gather(
            run_cli_async(*args, env=ENV), run_cli_async(*args, env=ENV)
        )
        assert one.returncode == 0, one.stderr
        assert two.returncode == 0, two.stderr
        stats = await fake.stats()
        assert stats["uploads"] == 60, stats
    finally:
        await fake.close()


# ---- 6. migrations under a lock; a corrupt database exits 75 ---------------------------


def _waiting_on_lock(pid: int, db: Path) -> bool:
    """True once process ``pid`` has the database open and sleeps in SQLite's busy wait."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        opened = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds}
        syscall = Path(f"/proc/{pid}/syscall").read_text().split()[0]
    except OSError:
        return False
    # nanosleep / clock_nanosleep (x86-64, arm64): the busy handler's sleep
    return str(db) in opened and syscall in {"35", "230", "101", "115"}


@pytest.mark.skipif(not Path("/proc/self/syscall").exists(), reason="needs Linux /proc")
def test_two_processes_on_a_fresh_database_both_succeed(tmp_path: Path) -> None:
    """Process B starts while A (here: the test, running imgsync's own migrations) holds the
    database's write lock on a fresh file; B must wait and then see the migrated schema,
    not migrate again from the version it read before the lock."""
    from imgsync.state.schema import MIGRATIONS, SCHEMA_VERSION

    db = tmp_path / "state" / "fresh.db"
    db.parent.mkdir()
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA journal_mode = WAL")
    holder.execute("BEGIN IMMEDIATE")
    env = {**os.environ, "IMGSYNC_STATE": str(db)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgsync", "status", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(20_000):
            if _waiting_on_lock(proc.pid, db) or proc.poll() is not None:
                break
            import time

            time.sleep(0.001)
        for script in MIGRATIONS:
            for stmt in script.split(";"):
                if stmt.strip():
                    holder.execute(stmt)
        holder.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        holder.execute("COMMIT")
        out, err = proc.communicate(timeout=60)
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)["objects"] == 0


def test_a_corrupt_database_met_mid_run_exits_75(tmp_path: Path) -> None:
    src = _images(tmp_path / "src", 30)
    dst = tmp_path / "dst"
    assert run_json("copy", str(src), str(dst))[0] == 0
    db = Path(os.environ["IMGSYNC_STATE"])
    (src / "new.png").write_bytes(make_png(6, 6, 4242))  # the next run has work to do
    raw = bytearray(db.read_bytes())
    page = int.from_bytes(raw[16:18], "big") or 65536
    assert len(raw) > 2 * page
    raw[page:] = b"\xa5" * (len(raw) - page)  # the header and schema page stay readable
    db.write_bytes(bytes(raw))
    for verb in ("copy", "sync"):
        proc = run_cli(verb, str(src), str(dst))
        assert proc.returncode == 75, (verb, proc.returncode, proc.stderr)
        assert "move it aside" in proc.stderr
        assert "Traceback" not in proc.stderr


async def test_items_leased_by_a_live_process_are_not_marked_done_for_later_runs(
    tmp_path: Path,
) -> None:
    """Run B meets leases held by a live process A and leaves those items to it. If A then
    dies before uploading them, the next run must still upload them: B must not save its
    "this folder is all at the destination" mark (found by a hostile run: 197 of 200
    images reported "already there" forever after a kill)."""
    import socket

    fake = await start_fake(CheveretoFake(Knobs(token=CHV_TOKEN)))
    try:
        src = _images(tmp_path / "shots", 1)
        cfg = _config(tmp_path / "cfg.toml", chv_url=fake.url)
        args = ("--config", str(cfg), "copy", str(src), "chv:", "--json")
        proc = await run_cli_async(*args, env=ENV)
        assert proc.returncode == 0, proc.stderr
        _images(src, 4, start=1)
        db = sqlite3.connect(os.environ["IMGSYNC_STATE"])
        (dest,) = db.execute("SELECT DISTINCT remote FROM locations").fetchone()
        shas = [
            hashlib.sha256((src / f"pic{i:03d}.{seed_image(i)[1]}").read_bytes()).hexdigest()
            for i in range(1, 5)
        ]
        live = f"{socket.gethostname()}:1"  # pid 1 is alive: process A, mid-run
        with db:
            db.executemany(
                "INSERT INTO claims (sha256, dest, owner, claimed_at) VALUES (?, ?, ?, ?)",
                [(s, dest, live, time.time()) for s in shas],
            )
        proc = await run_cli_async(*args, "--lease-wait", "0", env=ENV)
        assert proc.returncode == 1, proc.stderr  # not done, and not "already there"
        summary = json.loads(proc.stdout)
        assert (summary["already_present"], summary["held_elsewhere"]) == (1, 4)
        assert summary["held_by"] == ["pid 1"]
        assert (await fake.stats())["uploads"] == 1  # left to process A
        dead = f"{socket.gethostname()}:{_dead_pid()}"
        with db:  # process A was killed before it uploaded anything
            db.execute("UPDATE claims SET owner = ?", (dead,))
        db.close()
        proc = await run_cli_async(*args, env=ENV)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["copied"] == 4
        assert (await fake.stats())["uploads"] == 5
    finally:
        await fake.close()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
