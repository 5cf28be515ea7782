"""Downloads bound for a folder are hashed by the committer, a group at a time in a worker
thread (``fetch(defer_hash=True)``): the digest is the same as hashing while streaming."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from imgsync.config import RemoteConfig
from imgsync.fakehosts.images import make_png
from imgsync.hashing import digest_bytes
from imgsync.pipeline.committer import _hash_all
from imgsync.pipeline.transfer import Body, fetch
from imgsync.providers.base import ProviderContext
from imgsync.providers.memory import MemoryProvider, store


async def test_a_deferred_digest_is_the_streamed_one(tmp_path: Path) -> None:
    small, big = make_png(40, 40, 3), make_png(300, 300, 7)
    bucket = store("defer-hash")
    items = [bucket.put("small.png", small), bucket.put("big.png", big)]
    cfg = RemoteConfig(name="m", type="memory", options={"bucket": "defer-hash"})
    async with MemoryProvider(cfg, ProviderContext()) as p:
        for item, data in zip(items, (small, big), strict=True):
            for with_md5 in (True, False):
                want = digest_bytes(data, with_md5)
                streamed, deferred = [
                    await fetch(
                        p,
                        item,
                        spool_dir=tmp_path,
                        spool_threshold=64 * 1024,
                        with_md5=with_md5,
                        defer_hash=defer,
                    )
                    for defer in (False, True)
                ]
                assert streamed.digest == want
                if data is small:  # kept in memory: no digest until asked, or hashed
                    assert not deferred.hashed  # by the committer in a thread
                    await anyio.to_thread.run_sync(_hash_all, [deferred])
                else:  # spooled past the threshold: hashed as it streamed, as always
                    assert deferred.hashed and deferred.path is not None
                assert deferred.digest == want
                for body in (streamed, deferred):
                    body.discard()


def test_a_body_dropped_before_its_digest_was_asked_keeps_it() -> None:
    data = make_png(20, 20, 1)
    body = Body(None, data=data)
    body.discard()
    assert body.data is None and body.digest == digest_bytes(data, True)


async def test_a_backup_hashed_in_the_committers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every group hashed in the worker thread (the threshold set to one byte): each image's
    sidecar and state record carry the SHA-256 of the file on disk."""
    import json

    from helpers import start_fake, write_config

    from imgsync.config import load_config
    from imgsync.fakehosts.common import Knobs
    from imgsync.fakehosts.gyazo import GyazoFake
    from imgsync.localfs import file_sha256
    from imgsync.pipeline import committer
    from imgsync.pipeline.run import JobSpec, run_job
    from imgsync.pipeline.summary import CopyOptions

    monkeypatch.setattr(committer, "HASH_IN_THREAD", 1)
    monkeypatch.setenv("GY", "defer-hash-token-9")
    fake = await start_fake(GyazoFake(Knobs(token="defer-hash-token-9", seed=40)))
    dest = tmp_path / "backup"
    try:
        cfg = load_config(
            write_config(
                tmp_path / "cfg.toml",
                f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
            ),
            explicit=True,
        )
        opts = CopyOptions(job="b", verb="backup", sidecars=True)
        summary = await run_job(cfg, JobSpec("backup", "gy:", str(dest), opts))
    finally:
        await fake.close()
    assert summary.exit_code == 0 and summary.copied == 40, summary
    sides = list(dest.glob("*.json"))
    assert len(sides) == 40
    for side in sides:
        data = json.loads(side.read_bytes())
        assert data["sha256"] == file_sha256(dest / data["file"])
