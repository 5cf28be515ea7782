"""The daemon's timing and operator surface, in process, on a virtual clock: complete files
only, retries on a schedule, stop seam, reload, /healthz and /metrics, sd_notify, locks."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemonclock import VirtualClock, eventually
from helpers import run_cli_async, tree_files

from imgsync.config import load_config
from imgsync.daemon import Daemon, JobLoop
from imgsync.errors import StateError
from imgsync.fakehosts.images import make_png
from imgsync.metrics import JobHealth
from imgsync.pipeline.plan import plan_local
from imgsync.watch import Settler, backoff, open_for_writing


def _config(tmp_path: Path, jobs: str, daemon: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[state]
path = "{tmp_path / "state" / "state.db"}"

[daemon]
debounce = "2s"
retry = "30s"
retry_max = "2m"
{daemon}

{jobs}
"""
    )
    return path


def _watch_job(name: str, src: Path, dst: Path) -> str:
    return f"""
[[jobs]]
name = "{name}"
kind = "watch"
source = "{src}"
destinations = ["{dst}"]
"""


def _due(settler: Settler) -> float | None:
    return settler.due


def _set_mtime(path: Path, when: float) -> None:
    os.utime(path, (when, when))


# ---- complete files only ------------------------------------------------------------------


def test_settler_holds_a_file_until_it_has_been_quiet(tmp_path: Path) -> None:
    """A file written just now is held back until ``debounce`` has passed since its last
    write; hidden and temporary names are never admitted; an old file goes at once."""
    clock = VirtualClock()
    src = tmp_path / "src"
    src.mkdir()
    (src / "old.png").write_bytes(make_png(5, 5, 1))
    _set_mtime(src / "old.png", clock.time() - 3600)  # moved in: complete already
    (src / "fresh.png").write_bytes(make_png(5, 5, 2)[:40])
    _set_mtime(src / "fresh.png", clock.time())
    for name in (".~partial.png", "shot.png.part", "~lock.png", "a.crdownload"):
        (src / name).write_bytes(make_png(5, 5, 3))
        _set_mtime(src / name, clock.time() - 3600)
    (src / ".stversions").mkdir()  # a sync client's old versions: a hidden folder
    (src / ".stversions" / "old~1.png").write_bytes(make_png(5, 5, 4))
    _set_mtime(src / ".stversions" / "old~1.png", clock.time() - 3600)
    settler = Settler(clock, 2.0, load_config(None).daemon.ignore, check_writers=False)
    settler.begin()
    plan = settler.admit(plan_local(None, src, "dest"))
    assert [e.rel for e in plan.to_hash] == ["old.png"]
    assert settler.deferred == 1 and settler.due == clock.monotonic() + 2.0
    assert plan.fingerprint == ""  # a held-back file must not let the folder count as done

    clock.advance(1.5)  # written again half-way through its quiet period
    (src / "fresh.png").write_bytes(make_png(5, 5, 2))
    _set_mtime(src / "fresh.png", clock.time())
    settler.begin()
    plan = settler.admit(plan_local(None, src, "dest"))
    assert "fresh.png" not in [e.rel for e in plan.to_hash]
    assert settler.due == clock.monotonic() + 2.0

    clock.advance(1.9)
    settler.begin()
    plan = settler.admit(plan_local(None, src, "dest"))
    assert "fresh.png" not in [e.rel for e in plan.to_hash]
    clock.advance(0.1)
    settler.begin()
    plan = settler.admit(plan_local(None, src, "dest"))
    assert sorted(e.rel for e in plan.to_hash) == ["fresh.png", "old.png"]
    assert settler.deferred == 0 and plan.fingerprint
    assert _due(settler) is None  # (a call: mypy narrowed the attribute above)


def test_every_destination_of_a_run_gets_the_same_decision(tmp_path: Path) -> None:
    """The first destination's copy takes time; a file that becomes quiet meanwhile must
    not go to the second destination only (it would then never reach the first)."""
    clock = VirtualClock()
    src = tmp_path / "src"
    src.mkdir()
    (src / "b.png").write_bytes(make_png(5, 5, 2))
    _set_mtime(src / "b.png", clock.time() - 1.5)
    settler = Settler(clock, 2.0, (), check_writers=False)
    settler.begin()
    assert settler.admit(plan_local(None, src, "gyazo")).to_hash == []
    clock.advance(1.0)  # uploading to the first destination took a second
    assert settler.admit(plan_local(None, src, "mirror")).to_hash == []
    assert settler.deferred == 1 and _due(settler) is not None
    settler.begin()
    assert [e.rel for e in settler.admit(plan_local(None, src, "gyazo")).to_hash] == ["b.png"]
    assert [e.rel for e in settler.admit(plan_local(None, src, "mirror")).to_hash] == ["b.png"]


def test_settler_trusts_repeated_looks_when_the_mtime_is_in_the_future(tmp_path: Path) -> None:
    """An mtime from a clock ahead of ours (a network share) cannot say how old a file is:
    the file is sent once two looks ``debounce`` apart saw it unchanged."""
    clock = VirtualClock()
    src = tmp_path / "src"
    src.mkdir()
    (src / "nfs.png").write_bytes(make_png(6, 6, 1))
    _set_mtime(src / "nfs.png", clock.time() + 600)
    settler = Settler(clock, 2.0, (), check_writers=False)
    settler.begin()
    assert settler.admit(plan_local(None, src, "d")).to_hash == []
    clock.advance(2.0)
    settler.begin()
    assert [e.rel for e in settler.admit(plan_local(None, src, "d")).to_hash] == ["nfs.png"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
def test_settler_holds_a_file_another_process_has_open_for_writing(tmp_path: Path) -> None:
    clock = VirtualClock()
    src = tmp_path / "src"
    src.mkdir()
    target = src / "camera.png"
    target.write_bytes(make_png(7, 7, 1))
    _set_mtime(target, clock.time() - 3600)
    writer = subprocess.Popen(
        [sys.executable, "-c", f"f = open({str(target)!r}, 'ab'); input()"],
        stdin=subprocess.PIPE,
    )
    try:
        for _ in range(2000):  # until the child has opened it (bounded)
            if open_for_writing([str(target)]):
                break
            writer.poll()
            time.sleep(0.01)
        settler = Settler(clock, 2.0, ())
        settler.begin()
        assert settler.admit(plan_local(None, src, "d")).to_hash == []
        assert settler.deferred == 1
    finally:
        writer.communicate(b"\n", timeout=10)
    assert open_for_writing([str(target)]) == set()
    settler.begin()
    assert [e.rel for e in settler.admit(plan_local(None, src, "d")).to_hash] == ["camera.png"]


async def test_a_file_written_slowly_is_copied_once_complete(tmp_path: Path) -> None:
    """Through a real job run on a virtual clock: the half-written file is not copied;
    the job looks again when the file would be quiet, without any file event."""
    clock = VirtualClock()
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    cfg = load_config(_config(tmp_path, _watch_job("shots", src, dst)))
    loop = JobLoop(cfg, cfg.jobs[0], JobHealth("shots", "watch"), clock=clock, watch_events=False)
    full = make_png(40, 40, 9)
    shot = src / "shot.png"
    shot.write_bytes(full[: len(full) // 2])
    _set_mtime(shot, clock.time())
    (src / ".~partial.png").write_bytes(full)
    task = asyncio.create_task(loop.loop())
    try:
        await eventually(lambda: loop.health.runs == 1 and clock.waiters > 0)
        assert not (dst / "shot.png").exists()
        assert loop.health.pending == 1
        clock.advance(1.0)
        shot.write_bytes(full)  # the writer finishes a second later
        _set_mtime(shot, clock.time())
        clock.advance(1.0)  # the first file's quiet period ends: looked at again, still fresh
        await eventually(lambda: loop.health.runs == 2 and clock.waiters > 0)
        assert not (dst / "shot.png").exists()
        clock.advance(1.0)
        await eventually(lambda: loop.health.runs == 3 and clock.waiters > 0)
        assert tree_files(dst) == {"shot.png": full}
        assert loop.health.pending == 0 and loop.health.state == "ok"
    finally:
        loop.stop()
        await task


async def test_a_watched_folder_made_again_is_watched_again(tmp_path: Path) -> None:
    """Real watcher: a watched folder deleted and created again (a remount, a sync client
    replacing it) is watched again, so a file written there later is copied at once
    rather than at the hourly rescan."""
    import shutil

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    path = _config(tmp_path, _watch_job("w", src, dst), daemon='retry = "0.2s"')
    text = path.read_text().replace('debounce = "2s"', 'debounce = "0.2s"')
    path.write_text(text.replace('retry = "30s"\n', ""))
    daemon = Daemon(load_config(path), signals=False)
    task = await _start(daemon)
    try:
        loop = daemon.loops["w"]
        await eventually(lambda: loop.watch_starts == 1 and loop.health.runs >= 1)
        shutil.rmtree(src)
        src.mkdir()
        (src / "a.png").write_bytes(make_png(9, 9, 1))
        await eventually(lambda: (dst / "a.png").exists())
        await eventually(lambda: loop.watch_starts >= 2)
        # by the new watch's event (or the scan that follows a restart), not the rescan
        (src / "b.png").write_bytes(make_png(9, 9, 2))
        await eventually(lambda: (dst / "b.png").exists())
    finally:
        daemon.request_stop()
        assert await task == 0


async def test_a_file_that_changes_while_it_is_read_is_not_sent(tmp_path: Path) -> None:
    """A file that grew between the scan and the read fails for this run (the daemon
    retries it) instead of sending bytes that do not match what was planned."""
    from imgsync.pipeline.plan import LocalPlan
    from imgsync.pipeline.run import JobSpec, run_job

    src, dst = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "a.png").write_bytes(make_png(8, 8, 1))
    (src / "b.png").write_bytes(make_png(8, 8, 2))

    def grow_after_planning(plan: LocalPlan) -> LocalPlan:
        with (src / "a.png").open("ab") as fh:
            fh.write(b"more")
        return plan

    summary = await run_job(
        load_config(None), JobSpec("copy", str(src), str(dst)), admit=grow_after_planning
    )
    assert summary.copied == 1 and summary.failed == 1
    assert "changed while it was read" in summary.failures[0][1]
    assert sorted(tree_files(dst)) == ["b.png"]


# ---- retries on a schedule ----------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff(n, 30, 300) for n in range(6)] == [30, 60, 120, 240, 300, 300]


async def test_a_missing_folder_is_retried_on_the_backoff_schedule(tmp_path: Path) -> None:
    """A failed run is retried after ``retry``, then twice as long, without any event;
    once the folder is there its files are copied and the job is healthy again."""
    clock = VirtualClock()
    src, dst = tmp_path / "later", tmp_path / "dst"
    cfg = load_config(_config(tmp_path, _watch_job("usb", src, dst)))
    loop = JobLoop(cfg, cfg.jobs[0], JobHealth("usb", "watch"), clock=clock, watch_events=False)
    task = asyncio.create_task(loop.loop())
    try:
        await eventually(lambda: loop.health.runs == 1 and clock.waiters > 0)
        assert loop.health.state == "failing" and "later" in (loop.health.last_error or "")
        clock.advance(29.9)
        await eventually(lambda: clock.waiters > 0)
        assert loop.health.runs == 1
        clock.advance(0.1)
        await eventually(lambda: loop.health.runs == 2 and clock.waiters > 0)
        clock.advance(59.9)  # second retry: twice the wait
        await eventually(lambda: clock.waiters > 0)
        assert loop.health.runs == 2
        src.mkdir()
        (src / "a.png").write_bytes(make_png(9, 9, 1))
        _set_mtime(src / "a.png", clock.time() - 60)
        clock.advance(0.1)
        await eventually(lambda: loop.health.runs == 3 and clock.waiters > 0)
        assert (dst / "a.png").exists()
        assert loop.health.state == "ok" and loop.health.next_retry is None
    finally:
        loop.stop()
        await task


# ---- stopping -----------------------------------------------------------------------------


async def test_a_stopped_run_hands_out_nothing_and_is_not_recorded_as_done(
    image_tree: Path, tmp_path: Path
) -> None:
    """The daemon's stop signal: set, a run starts no item, and the next run still
    copies everything (the folder was not marked done)."""
    from imgsync.pipeline.run import JobSpec, run_job

    cfg = load_config(None)
    dst = tmp_path / "out"
    stop = asyncio.Event()
    stop.set()
    first = await run_job(cfg, JobSpec("copy", str(image_tree), str(dst)), stop=stop)
    assert first.copied == 0
    assert not dst.exists() or tree_files(dst) == {}
    second = await run_job(cfg, JobSpec("copy", str(image_tree), str(dst)))
    assert second.copied == 12


# ---- the daemon: reload, health, metrics, notify, locks ----------------------------------


async def _start(daemon: Daemon) -> asyncio.Task[int]:
    task = asyncio.create_task(daemon.run())
    await eventually(lambda: daemon.ready.is_set() or task.done())
    if task.done():
        task.result()
    return task


async def test_reload_adds_removes_and_keeps_jobs(tmp_path: Path) -> None:
    clock = VirtualClock()
    a_src, a_dst, b_src, b_dst = (tmp_path / n for n in ("a", "a-out", "b", "b-out"))
    for folder, seed in ((a_src, 1), (b_src, 2)):
        folder.mkdir()
        (folder / f"{folder.name}.png").write_bytes(make_png(9, 9, seed))
        _set_mtime(folder / f"{folder.name}.png", clock.time() - 60)
    path = _config(tmp_path, _watch_job("a", a_src, a_dst))
    daemon = Daemon(load_config(path), clock=clock, signals=False, watch_events=False)
    task = await _start(daemon)
    try:
        await eventually(lambda: (a_dst / "a.png").exists())
        kept = daemon.loops["a"]

        path.write_text(path.read_text() + '\n[[jobs]]\nname = "b"\nkind = "nope"\n')
        assert await daemon.reload() is False  # bad config: the old one goes on
        assert daemon.loops["a"] is kept and daemon.stats.failed_reloads == 1

        path.write_text(
            _config(
                tmp_path, _watch_job("a", a_src, a_dst) + _watch_job("b", b_src, b_dst)
            ).read_text()
        )
        assert await daemon.reload() is True
        await eventually(lambda: (b_dst / "b.png").exists())
        assert daemon.loops["a"] is kept  # unchanged: not restarted

        _config(tmp_path, _watch_job("b", b_src, b_dst))
        assert await daemon.reload() is True
        assert set(daemon.loops) == {"b"} and set(daemon.stats.jobs) == {"b"}
    finally:
        daemon.request_stop()
        assert await task == 0


async def test_reload_gives_the_shared_limiter_the_new_limits(tmp_path: Path) -> None:
    """SIGHUP's reload applies a changed [limits] table to the process's live limiter (the
    same limiter, its counted requests kept) and a new lease_wait restarts the jobs."""
    from imgsync.runtime import shared_limiters

    clock = VirtualClock()
    src, dst = tmp_path / "a", tmp_path / "a-out"
    src.mkdir()
    job = _watch_job("a", src, dst)
    limits = '[limits."img.example.org"]\nrate = "2/minute"\noutage_budget = "30s"\n'
    path = _config(tmp_path, limits + job)
    daemon = Daemon(load_config(path), clock=clock, signals=False, watch_events=False)
    task = await _start(daemon)
    try:
        limiter = shared_limiters(daemon.cfg).for_authority("img.example.org")
        async with limiter.slot():
            pass
        kept = daemon.loops["a"]
        path.write_text(
            _config(
                tmp_path,
                limits.replace("2/minute", "5/minute").replace("30s", "2m") + job,
                daemon='lease_wait = "20s"',
            ).read_text()
        )
        assert await daemon.reload() is True
        assert shared_limiters(daemon.cfg).for_authority("img.example.org") is limiter
        assert (limiter.rates, limiter.outage_budget) == (("5/minute",), 120.0)
        assert len(limiter.usage()) == 1  # the request made before the reload still counts
        assert daemon.loops["a"] is not kept and daemon.loops["a"].cfg.daemon.lease_wait == 20
    finally:
        daemon.request_stop()
        assert await task == 0


async def test_healthz_and_metrics(tmp_path: Path) -> None:
    """/healthz is 200 while every job is healthy and 503 once one fails; /metrics is
    Prometheus text a Prometheus parser reads, with items by job, destination, outcome."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    clock = VirtualClock()
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "a.png").write_bytes(make_png(9, 9, 1))
    _set_mtime(src / "a.png", clock.time() - 60)
    missing = tmp_path / "unmounted"
    path = _config(
        tmp_path,
        _watch_job("shots", src, dst),
        daemon='listen = "127.0.0.1:0"',
    )
    daemon = Daemon(load_config(path), clock=clock, signals=False, watch_events=False)
    task = await _start(daemon)
    base = f"http://127.0.0.1:{daemon.port}"
    try:
        await eventually(lambda: daemon.stats.jobs["shots"].runs == 1)
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
                body = await r.json()
                assert body["jobs"]["shots"]["state"] == "ok"
            async with http.get(base + "/metrics") as r:
                assert r.status == 200
                text = await r.text()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            copied = [
                s.value
                for s in families["imgsync_items"].samples
                if s.labels.get("outcome") == "copied" and s.labels["job"] == "shots"
            ]
            assert copied == [1.0]
            assert "imgsync_job_last_success_timestamp_seconds" in families
            assert "imgsync_queue_depth" in families
            check = await run_cli_async("--config", str(path), "status", "--check")
            assert check.returncode == 0, check.stderr

            path.write_text(
                _config(
                    tmp_path,
                    _watch_job("shots", src, dst) + _watch_job("usb", missing, dst),
                    daemon='listen = "127.0.0.1:0"',
                ).read_text()
            )
            assert await daemon.reload()
            await eventually(
                lambda: "usb" in daemon.stats.jobs and daemon.stats.jobs["usb"].runs > 0
            )
            base = f"http://127.0.0.1:{daemon.port}"
            async with http.get(base + "/healthz") as r:
                assert r.status == 503
                body = await r.json()
                assert body["jobs"]["usb"]["state"] == "failing"
                assert body["jobs"]["usb"]["next_retry"] is not None
            check = await run_cli_async("--config", str(path), "status", "--check")
            assert check.returncode == 1 and "answered 503" in check.stderr
    finally:
        daemon.request_stop()
        assert await task == 0


async def test_daemon_tells_systemd_it_is_ready_and_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    src = tmp_path / "src"
    src.mkdir()
    daemon = Daemon(
        load_config(_config(tmp_path, _watch_job("w", src, tmp_path / "d"))),
        clock=VirtualClock(),
        signals=False,
        watch_events=False,
    )
    got: list[str] = []

    def drain() -> str:
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except BlockingIOError:
                return "\n".join(got)

    task = await _start(daemon)
    await eventually(lambda: "READY=1" in drain() and "WATCHDOG=1" in drain())
    daemon.request_stop()
    assert await task == 0
    assert "STOPPING=1" in drain()
    sock.close()


async def test_one_daemon_per_state_and_status_sees_it(tmp_path: Path) -> None:
    from imgsync.pidfile import running_daemon

    src = tmp_path / "src"
    src.mkdir()
    cfg = load_config(_config(tmp_path, _watch_job("w", src, tmp_path / "d")))
    assert running_daemon(cfg.state_path) is None
    first = Daemon(cfg, clock=VirtualClock(), signals=False, watch_events=False)
    task = await _start(first)
    try:
        info = running_daemon(cfg.state_path)
        assert info is not None and info["pid"] == os.getpid() and info["jobs"] == ["w"]
        second = Daemon(cfg, clock=VirtualClock(), signals=False, watch_events=False)
        with pytest.raises(StateError, match="another imgsync daemon"):
            await second.run()
    finally:
        first.request_stop()
        assert await task == 0
    assert running_daemon(cfg.state_path) is None


async def test_a_stop_asked_during_start_up_runs_nothing_and_exits_0(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(make_png(9, 9, 1))
    daemon = Daemon(
        load_config(_config(tmp_path, _watch_job("w", src, tmp_path / "d"))),
        clock=VirtualClock(),
        signals=False,
        watch_events=False,
    )
    daemon.request_stop()
    assert await daemon.run() == 0
    assert daemon.stats.jobs["w"].runs == 0 and not (tmp_path / "d").exists()


async def test_an_unwritable_state_folder_fails_at_start(tmp_path: Path) -> None:
    """Not "up, doing nothing": a state folder the daemon cannot write ends it (exit 75)."""
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "file").write_text("x")
    text = _config(tmp_path, _watch_job("w", src, tmp_path / "d")).read_text()
    path = tmp_path / "config.toml"
    path.write_text(text.replace(str(tmp_path / "state"), str(tmp_path / "file")))
    daemon = Daemon(load_config(path), signals=False, watch_events=False)
    with pytest.raises(StateError) as info:
        await daemon.run()
    assert info.value.exit_code == 75 and "cannot write the state folder" in str(info.value)


# ---- warnings said once ---------------------------------------------------------------------


async def test_a_skipped_link_is_warned_once_per_daemon_life(tmp_path: Path) -> None:
    """A watch job whose folder holds a link: every rescan skips it again, but the warning
    is logged once, not once per run; a link that changes (another target) or a new link
    is warned about once more; the images are copied all along."""
    import structlog

    clock = VirtualClock()
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    src.mkdir()
    outside.mkdir()
    (src / "a.png").write_bytes(make_png(8, 8, 1))
    (outside / "x.png").write_bytes(make_png(8, 8, 2))
    (outside / "y.png").write_bytes(make_png(8, 8, 3))
    (src / "link.png").symlink_to(outside / "x.png")
    cfg = load_config(
        _config(tmp_path, _watch_job("w", src, dst), daemon='rescan_interval = "60s"')
    )
    loop = JobLoop(cfg, cfg.jobs[0], JobHealth("w", "watch"), clock=clock, watch_events=False)

    def warned() -> list[str]:
        return [e["path"] for e in logs if e["event"] == "symlink_skipped"]

    async def rescan(runs: int) -> None:
        clock.advance(60)
        await eventually(lambda: loop.health.runs == runs and clock.waiters > 0)

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(loop.loop())
        try:
            await eventually(lambda: loop.health.runs == 1 and clock.waiters > 0)
            await rescan(2)
            await rescan(3)
            assert warned() == ["link.png"]
            (src / "link.png").unlink()
            (src / "link.png").symlink_to(outside / "y.png")  # another target
            (src / "other.png").symlink_to(outside / "x.png")
            (src / "b.png").write_bytes(make_png(8, 8, 4))
            await rescan(4)
            await rescan(5)
            assert sorted(warned()) == ["link.png", "link.png", "other.png"]
            assert sorted(tree_files(dst)) == ["a.png", "b.png"]
        finally:
            loop.stop()
            await task
