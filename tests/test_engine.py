"""The job runner's limits and signals: per-item deadline, per-item size cap, the stop
signal, and the one ``run_job()`` every face calls."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web
from helpers import run_cli_async, start_fake, tree_files, write_config

from imgsync.config import load_config
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions

TOKEN = "engine-test-token-42"


class SlowFiles(GyazoFake):
    """Gyazo whose image files (not its API) are affected by the fault knobs."""

    def fault_applies(self, request: web.Request) -> bool:
        return not request.path.startswith(("/api", "/_fakehost"))


def _gyazo_config(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path / "cfg.toml",
        f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{url}"\ntoken_env = "GY"\n',
    )


async def test_an_item_that_outlives_its_deadline_fails_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    """A host that holds an image file for longer than ``--item-timeout`` costs that item,
    not the worker: the run ends, the item is a failure, no partial file is left."""
    host = SlowFiles(Knobs(token=TOKEN, seed=3, faults={"slow": 1.0}, slow_seconds=2))
    fake = await start_fake(host)
    try:
        cfg = _gyazo_config(tmp_path, fake.url)
        dest = tmp_path / "backup"
        proc = await run_cli_async(
            "--config", str(cfg), "backup", "gy:", str(dest), "--json",
            "--item-timeout", "0.5", "--transfers", "3",
            env={"GY": TOKEN},
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["failed"] == 3 and summary["copied"] == 0
        assert all("per-item deadline" in f["error"] for f in summary["failures"])
        assert tree_files(dest) == {}
        host.knobs.faults = {}
        proc = await run_cli_async(
            "--config", str(cfg), "backup", "gy:", str(dest), "--json", env={"GY": TOKEN}
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["copied"] == 3
    finally:
        await fake.close()


async def test_an_item_over_the_size_cap_fails_alone(tmp_path: Path) -> None:
    host = GyazoFake(Knobs(token=TOKEN, seed=10))
    fake = await start_fake(host)
    try:
        cap = 2000
        small = sum(1 for img in host.images.values() if len(img.data) <= cap)
        assert 0 < small < 10
        cfg = _gyazo_config(tmp_path, fake.url)
        dest = tmp_path / "backup"
        proc = await run_cli_async(
            "--config", str(cfg), "backup", "gy:", str(dest), "--json",
            "--max-item-size", str(cap), env={"GY": TOKEN},
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["copied"] == small and summary["failed"] == 10 - small
        assert all("size cap" in f["error"] for f in summary["failures"])
        assert len([n for n in tree_files(dest) if not n.endswith(".json")]) == small
        bad = await run_cli_async(
            "--config", str(cfg), "backup", "gy:", str(dest), "--max-item-size", "lots"
        )
        assert bad.returncode == 2 and "not a size" in bad.stderr
    finally:
        await fake.close()


async def test_the_stop_signal_stops_handing_out_items(image_tree: Path, tmp_path: Path) -> None:
    """With the stop signal set, a run hands out nothing (and saves no finished listing or
    scan mark); the next run without it does the work."""
    host = GyazoFake(Knobs(token=TOKEN))
    fake = await start_fake(host)
    try:
        cfg_path = _gyazo_config(tmp_path, fake.url)
        import os

        os.environ["GY"] = TOKEN
        cfg = load_config(cfg_path, explicit=True)
        stop = asyncio.Event()
        stop.set()
        spec = JobSpec("copy", str(image_tree), "gy:", CopyOptions(job="t", verb="copy"))
        summary = await run_job(cfg, spec, stop=stop)
        assert summary.copied == 0 and summary.not_attempted == 12
        assert (await fake.stats())["uploads"] == 0
        summary = await run_job(cfg, spec)
        assert summary.copied == 12
        assert (await fake.stats())["uploads"] == 12
        back = JobSpec("backup", "gy:", str(tmp_path / "b"), CopyOptions(job="b", verb="backup"))
        summary = await run_job(cfg, back, stop=stop)
        assert summary.copied == 0
        summary = await run_job(cfg, back)
        assert summary.copied == 12
    finally:
        os.environ.pop("GY", None)
        await fake.close()


async def test_large_items_stream_through_spool_files_both_ways(tmp_path: Path) -> None:
    """Above the spool threshold an upload streams from the file and a download goes to a
    spool file moved into place: the host and the backup hold the exact bytes, and no
    spool file is left anywhere."""
    import hashlib
    import os

    from imgsync.fakehosts.images import make_png

    src = tmp_path / "src"
    src.mkdir()
    bodies = {}
    for i in range(3):
        data = make_png(8, 8, i)[:33] + os.urandom(40_000 + i)  # a PNG header, then noise
        (src / f"big{i}.png").write_bytes(data)
        bodies[hashlib.sha256(data).hexdigest()] = data
    host = GyazoFake(Knobs(token=TOKEN))
    fake = await start_fake(host)
    os.environ["GY"] = TOKEN
    try:
        cfg = load_config(_gyazo_config(tmp_path, fake.url), explicit=True)
        opts = CopyOptions(job="up", verb="copy", spool_threshold=4096)
        summary = await run_job(cfg, JobSpec("copy", str(src), "gy:", opts))
        assert summary.copied == 3, summary.failures
        assert set(host.stored_checksums()) == set(bodies)
        dest = tmp_path / "backup"
        opts = CopyOptions(job="down", verb="backup", sidecars=True, spool_threshold=4096)
        summary = await run_job(cfg, JobSpec("backup", "gy:", str(dest), opts))
        assert summary.copied == 3, summary.failures
        images = {k: v for k, v in tree_files(dest).items() if k.endswith(".png")}
        assert {hashlib.sha256(v).hexdigest() for v in images.values()} == set(bodies)
        assert not list(dest.rglob(".imgsync-tmp-*"))
        # host -> host: spooled in the private folder beside the state database
        other = GyazoFake(Knobs(token=TOKEN))
        other_fake = await start_fake(other)
        try:
            both = write_config(
                tmp_path / "both.toml",
                f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n'
                f'[remotes.gy2]\ntype = "gyazo"\nbase_url = "{other_fake.url}"\n'
                'token_env = "GY"\n',
            )
            cfg = load_config(both, explicit=True)
            opts = CopyOptions(job="hop", verb="copy", spool_threshold=4096)
            summary = await run_job(cfg, JobSpec("copy", "gy:", "gy2:", opts))
            assert summary.copied == 3, summary.failures
            assert set(other.stored_checksums()) == set(bodies)
            spool = cfg.state_path.parent / "spool"
            assert spool.is_dir() and not list(spool.iterdir())
        finally:
            await other_fake.close()
    finally:
        os.environ.pop("GY", None)
        await fake.close()


def test_a_large_file_is_copied_between_folders_in_chunks(tmp_path: Path) -> None:
    from helpers import run_json

    from imgsync.fakehosts.images import make_png

    src = tmp_path / "src"
    src.mkdir()
    big = make_png(8, 8, 3)[:33] + bytes(range(256)) * (9 * 4096 + 7)  # > 8 MB
    (src / "big.png").write_bytes(big)
    code, summary = run_json("copy", str(src), str(tmp_path / "dst"))
    assert code == 0 and summary["copied"] == 1
    assert (tmp_path / "dst" / "big.png").read_bytes() == big
    code, summary = run_json("copy", str(src), str(tmp_path / "dst"))
    assert code == 0 and summary["copied"] == 0


async def test_the_committers_byte_budget_holds_fetched_items_back_until_a_group_is_written() -> (
    None
):
    import anyio
    from anyio import wait_all_tasks_blocked

    from imgsync.pipeline.committer import ByteBudget

    budget = ByteBudget(100)
    await budget.take(60)
    order: list[str] = []

    async def second() -> None:
        await budget.take(60)  # would pass the limit: waits for the first to be given back
        order.append("second in")

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await wait_all_tasks_blocked()
        assert order == []
        order.append("first out")
        budget.give(60)
    assert order == ["first out", "second in"]
    assert budget.held == 60
    budget.give(60)
    await budget.take(500)  # larger than the whole budget: let through when nothing is held
    assert budget.held == 500


async def test_no_md5_is_taken_for_a_host_that_reports_none_yet_lost_replies_are_found(
    tmp_path: Path,
) -> None:
    """Gyazo reports no checksum: files bound for it are hashed once (SHA-256, which the
    lease needs) and never MD5-hashed (2.3x the CPU) -- state records no MD5 for them.
    The one use of an MD5 there, finding an upload whose reply was cut off (Gyazo's image
    id is the MD5 of the bytes), takes it when that happens: files streamed from disk and
    in memory alike are found and sent once, none reported as a possible duplicate."""
    import hashlib
    import os
    import sqlite3

    from imgsync.fakehosts.images import make_png

    src = tmp_path / "src"
    src.mkdir()
    sent = {}
    for i in range(10):  # above the spool threshold: streamed from the file
        data = make_png(8, 8, i)[:33] + os.urandom(30_000 + i)
        (src / f"big{i}.png").write_bytes(data)
        sent[hashlib.sha256(data).hexdigest()] = hashlib.md5(data).hexdigest()
    for i in range(4):  # below it: read whole
        data = make_png(8, 8, 20 + i)
        (src / f"small{i}.png").write_bytes(data)
        sent[hashlib.sha256(data).hexdigest()] = hashlib.md5(data).hexdigest()
    host = GyazoFake(Knobs(token=TOKEN, faults={"truncate": 0.4}))
    fake = await start_fake(host)
    os.environ["GY"] = TOKEN
    try:
        cfg = load_config(_gyazo_config(tmp_path, fake.url), explicit=True)
        opts = CopyOptions(job="up", verb="copy", spool_threshold=4096)
        summary = await run_job(cfg, JobSpec("copy", str(src), "gy:", opts))
        stats = await fake.stats()
    finally:
        os.environ.pop("GY", None)
        await fake.close()
    assert summary.copied == 14 and summary.exit_code == 0, summary.failures
    assert stats["faults"] > 0  # replies were cut off ...
    assert stats["uploads"] == 14 and not summary.possible_duplicates  # ... and found
    with sqlite3.connect(cfg.state_path) as db:
        objects = dict(db.execute("SELECT sha256, md5 FROM objects").fetchall())
        files = dict(db.execute("SELECT sha256, md5 FROM local_files").fetchall())
        urls = dict(db.execute("SELECT sha256, remote_id FROM locations").fetchall())
    assert objects == files == dict.fromkeys(sent)
    assert urls == sent  # each recorded as the image its own bytes made (id = its MD5)
