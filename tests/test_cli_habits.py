"""Habits users bring from rclone and gallery-dl: dry runs that list each item, a progress
line that says how far and how long (options after the verb, a remote without its colon
and ``| head``: tests/test_cli_edges.py)."""

from __future__ import annotations

from pathlib import Path

from helpers import run_cli

from imgsync.fakehosts.images import seed_image


def _images(root: Path, n: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        data, ext = seed_image(i)
        (root / f"img{i:02d}.{ext}").write_bytes(data)
    return root


def _ok(*args: str) -> list[str]:
    proc = run_cli(*args, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_dry_run_lists_each_item_it_would_copy_or_delete(tmp_path: Path) -> None:
    src = _images(tmp_path / "src", 4)
    dst = tmp_path / "dst"
    out = _ok("copy", str(src), str(dst), "--dry-run")
    names = sorted(p.name for p in src.iterdir())
    assert sorted(line.removeprefix("would copy: ") for line in out[:-1]) == names
    assert "would copy 4" in out[-1] and "B/s" not in out[-1]  # no rate for work not done
    assert not dst.exists()

    _ok("sync", str(src), str(dst))
    (src / names[0]).unlink()  # dropped: a real sync deletes its copy
    (src / names[1]).rename(src / "renamed.png")  # moved: written under its new name
    out = _ok("sync", str(src), str(dst), "--dry-run")
    assert sorted(line for line in out if line.startswith("would ")) == [
        "would copy: renamed.png",
        f"would delete: {names[0]}",
        f"would delete: {names[1]}",
    ]
    assert "would delete 2" in out[-1]
    assert (dst / names[0]).exists()  # a dry run changes nothing
    before = {p.name for p in dst.iterdir()}
    _ok("sync", str(src), str(dst))  # the real run does what it listed
    after = {p.name for p in dst.iterdir()}
    assert before - after == {names[0], names[1]} and after - before == {"renamed.png"}


def _screen(raw: str) -> list[str]:
    """What a terminal shows for ``raw``: each line's text after its last carriage return,
    with erase-line codes applied."""
    return [seg.rsplit("\r", 1)[-1].replace("\x1b[K", "") for seg in raw.split("\n")]


def test_progress_shows_percent_eta_elapsed_item_and_puts_logs_above() -> None:
    import io

    from imgsync.pipeline.progress import Progress

    now = [100.0]
    out = io.StringIO()
    held = [""]
    p = Progress(
        enabled=True, stream=out, clock=lambda: now[0], width=200, throttle=lambda: held[0]
    )
    p.total = 10
    p.tick(done=2)  # already there: instant, not part of the pace
    for i in range(4):
        now[0] += 2.0
        p.current = f"img{i}.png"
        p.tick(done=1, copied=1, nbytes=1000)
    line = p.text()
    assert line.startswith(" 60% 6/10")
    assert "elapsed 0:08" in line and "ETA 0:08" in line  # 4 items in 8 s, 4 left
    assert line.endswith("| img3.png")
    held[0] = "api.example paused 0:30"
    assert "| api.example paused 0:30 |" in p.text()

    logs = p.log_stream()
    logs.write("2026-11-30 host_paused host=api.example")
    logs.write("\n")
    p.close()
    shown = [s for s in _screen(out.getvalue()) if s]
    assert shown[0] == "2026-11-30 host_paused host=api.example"  # its own line, above
    assert shown[1].startswith(" 60% 6/10")  # the progress line, drawn again below it


def _renders(text: str) -> list[str]:
    """Every progress line drawn (each starts with the erase sequence)."""
    return [part for part in text.split("\r\x1b[K") if part]


async def test_the_progress_line_moves_during_one_long_upload(tmp_path: Path) -> None:
    """One upload that takes a while (the emulator holds it): the line is drawn again and
    again meanwhile, naming the item with its own clock, not only when an item ends."""
    import io
    import itertools

    from imgsync.config import parse_config
    from imgsync.fakehosts.chevereto import CheveretoFake
    from imgsync.fakehosts.common import Knobs
    from imgsync.pipeline.progress import Progress
    from imgsync.pipeline.run import JobSpec, run_job
    from imgsync.pipeline.summary import CopyOptions
    from imgsync.testing import serve_emulator

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.png").write_bytes(seed_image(3)[0])
    ticks = itertools.count()
    out = io.StringIO()
    progress = Progress(
        enabled=True, stream=out, width=300, clock=lambda: float(next(ticks)), redraw_every=0.05
    )
    key = "chv_progress_key_0123"
    host = CheveretoFake(Knobs(token=key, faults={"slow": 1.0}, slow_seconds=1.5))
    async with serve_emulator(host) as emu:
        cfg = parse_config(
            {
                "state": {"path": str(tmp_path / "state.db")},
                "remotes": {"chv": {"type": "chevereto", "base_url": emu.url, "token": key}},
            }
        )
        opts = CopyOptions(spool_threshold=64)  # streamed from the file, as a large one is
        spec = JobSpec("copy", str(src), "chv:", opts)
        summary = await run_job(cfg, spec, progress=progress)
    assert summary.copied == 1, summary.line()
    during = [r for r in _renders(out.getvalue()) if "0 copied" in r and "| big.png" in r]
    assert len(during) >= 3, _renders(out.getvalue())
    assert any(r.rstrip().endswith(")") and "big.png " in r for r in during)  # its clock
    size = len(seed_image(3)[0])
    assert any(f"| big.png {size / 1000:.1f} KB sent" in r for r in during), during


async def test_a_folder_to_folder_copy_names_what_it_copies(tmp_path: Path) -> None:
    import io

    from imgsync.config import parse_config
    from imgsync.pipeline.progress import Progress
    from imgsync.pipeline.run import JobSpec, run_job

    src = _images(tmp_path / "src", 40)
    for sub in ("a", "b", "c"):
        _images(src / sub, 40)
    out = io.StringIO()
    progress = Progress(enabled=True, stream=out, width=300, redraw_every=0.0005)
    cfg = parse_config({"state": {"path": str(tmp_path / "state.db")}})
    summary = await run_job(
        cfg, JobSpec("copy", str(src), str(tmp_path / "dst")), progress=progress
    )
    assert summary.checked == 160 and summary.failed == 0, summary.line()
    named = [r for r in _renders(out.getvalue()) if " | " in r and "img" in r.split(" | ")[-1]]
    assert named, _renders(out.getvalue())


async def test_redrawing_stops_quietly_when_the_terminal_goes_away() -> None:
    """A closed stream under the progress line (the terminal closed) ends the redrawing
    without an error escaping from its task."""
    import io

    from imgsync.pipeline.progress import Progress

    out = io.StringIO()
    naps: list[float] = []

    async def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 3:
            out.close()

    progress = Progress(enabled=True, stream=out, width=80, redraw_every=0.25, sleep=nap)
    await progress.redraw()  # returns instead of raising "I/O operation on closed file"
    assert naps == [0.25, 0.25, 0.25]


async def test_a_long_download_shows_how_much_has_arrived(tmp_path: Path) -> None:
    """A backup of one image the host sends slowly, in pieces: the line shows the bytes
    of it received so far while it arrives."""
    import asyncio
    import io

    from aiohttp import web

    from imgsync.config import parse_config
    from imgsync.fakehosts.common import Knobs
    from imgsync.fakehosts.gyazo import GyazoFake
    from imgsync.pipeline.progress import Progress
    from imgsync.pipeline.run import JobSpec, run_job
    from imgsync.testing import serve_emulator

    class Trickle(GyazoFake):
        async def serve_file(self, request: web.Request) -> web.StreamResponse:  # type: ignore[override]
            whole = await super().serve_file(request)
            body = bytes(whole.body) if isinstance(whole.body, bytes) else b""
            if request.path.startswith("/thumb/") or len(body) < 4:
                return whole
            resp = web.StreamResponse(headers={"Content-Type": str(whole.content_type)})
            resp.content_length = len(body)
            await resp.prepare(request)
            half = len(body) // 2
            await resp.write(body[:half])
            await asyncio.sleep(0.6)  # the rest comes later
            await resp.write(body[half:])
            return resp

    token = "gyazo-progress-token-1"
    out = io.StringIO()
    progress = Progress(enabled=True, stream=out, width=300, redraw_every=0.05)
    async with serve_emulator(Trickle(Knobs(token=token, seed=1))) as emu:
        cfg = parse_config(
            {
                "state": {"path": str(tmp_path / "state.db")},
                "remotes": {"gy": {"type": "gyazo", "base_url": emu.url, "token": token}},
            }
        )
        spec = JobSpec("backup", "gy:", str(tmp_path / "bk"))
        summary = await run_job(cfg, spec, progress=progress)
    assert summary.copied == 1, summary.line()
    assert any(" received" in r and "0 copied" in r for r in _renders(out.getvalue())), _renders(
        out.getvalue()
    )
