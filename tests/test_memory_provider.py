"""The memory provider through the real engine, in-process (no HTTP, no subprocess): what
engine tests can build on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import tree_files

from imgsync.config import Config, parse_config
from imgsync.errors import TransientError
from imgsync.models import is_image_name
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions
from imgsync.providers import memory
from imgsync.runtime import remote_key


@pytest.fixture(autouse=True)
def _empty_buckets() -> Iterator[None]:
    memory.reset()
    yield
    memory.reset()


def _config(tmp_path: Path) -> Config:
    return parse_config(
        {
            "state": {"path": str(tmp_path / "state.db")},
            "remotes": {
                "a": {"type": "memory", "bucket": "a", "page_size": 5},
                "b": {"type": "memory", "bucket": "b", "page_size": 5},
            },
        }
    )


def _images(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in tree_files(root).items() if is_image_name(k)}


async def test_folder_to_memory_to_memory_to_folder(image_tree: Path, tmp_path: Path) -> None:
    """Copy a folder into bucket a, a into b (listed in pages of 5), b back to a folder:
    the same 12 images arrive, and a second copy finds everything already there."""
    cfg = _config(tmp_path)
    first = await run_job(cfg, JobSpec("copy", str(image_tree), "a:"))
    assert (first.copied, first.failed) == (12, 0)
    assert len(memory.store("a").items()) == 12
    second = await run_job(cfg, JobSpec("copy", "a:", "b:", CopyOptions(job="a-b")))
    assert (second.copied, second.failed) == (12, 0)
    assert memory.store("b").calls["upload"] == 12
    back = await run_job(cfg, JobSpec("copy", "b:", str(tmp_path / "back"), CopyOptions(job="b")))
    assert (back.copied, back.failed) == (12, 0)
    assert sorted(_images(tmp_path / "back").values()) == sorted(_images(image_tree).values())
    again = await run_job(cfg, JobSpec("copy", "a:", "b:", CopyOptions(job="a-b")))
    assert again.copied == 0 and memory.store("b").calls["upload"] == 12


async def test_a_failing_upload_fails_that_item_only(image_tree: Path, tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    memory.store("a").fail_next("upload", TransientError("host hiccup"), times=1)
    summary = await run_job(cfg, JobSpec("copy", str(image_tree), "a:"))
    assert (summary.copied, summary.failed) == (11, 1)
    assert any("host hiccup" in msg for _item, msg in summary.failures)
    retry = await run_job(cfg, JobSpec("copy", str(image_tree), "a:"))
    assert (retry.copied, retry.failed) == (1, 0)


def test_buckets_are_told_apart_and_never_outlive_the_process(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    key_a, key_b = remote_key(cfg.remotes["a"]), remote_key(cfg.remotes["b"])
    assert key_a != key_b
    assert memory._PROCESS in key_a  # state from another process never matches
