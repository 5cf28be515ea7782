"""`imgsync sync`: copy, then delete what the source folder dropped, with its guards."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_cli_async, run_json, start_fake, tree_files, write_config

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import make_png


def test_folder_sync_deletes_what_the_source_dropped(image_tree: Path, tmp_path: Path) -> None:
    """A file removed from the source is removed from the destination; a file the user put
    in the destination, and one changed there since, are kept."""
    dst = tmp_path / "dst"
    assert run_json("sync", str(image_tree), str(dst))[0] == 0
    (dst / "mine.png").write_bytes(make_png(9, 9, 1234))  # the user's own file
    (image_tree / "img01.png").unlink()
    (image_tree / "img02.png").unlink()
    (dst / "img02.png").write_bytes(make_png(9, 9, 4321))  # changed at the destination
    code, summary = run_json("sync", str(image_tree), str(dst))
    assert code == 0, summary
    assert summary["deleted"] == 1
    assert not (dst / "img01.png").exists()
    assert (dst / "img02.png").exists() and (dst / "mine.png").exists()
    assert run_json("sync", str(image_tree), str(dst))[1]["deleted"] == 0


def test_sync_refuses_to_delete_more_than_max_delete(image_tree: Path, tmp_path: Path) -> None:
    """Over --max-delete nothing is deleted and the run says so (exit 1); a later run with
    a higher limit does the deletes."""
    dst = tmp_path / "dst"
    assert run_json("sync", str(image_tree), str(dst))[0] == 0
    for p in list(image_tree.rglob("*.png"))[:5]:
        p.unlink()
    code, summary = run_json("sync", str(image_tree), str(dst), "--max-delete", "3")
    assert code == 1
    assert summary["deleted"] == 0 and "max-delete" in summary["delete_note"]
    assert len([n for n in tree_files(dst) if n.endswith(".png")]) == 8
    code, summary = run_json("sync", str(image_tree), str(dst), "--max-delete", "10")
    assert code == 0 and summary["deleted"] == 5


def test_sync_deletes_nothing_after_errors(image_tree: Path, tmp_path: Path) -> None:
    """A copy with a failure (a broken link, followed with --copy-links) deletes nothing."""
    dst = tmp_path / "dst"
    assert run_json("sync", str(image_tree), str(dst))[0] == 0
    (image_tree / "img05.png").unlink()
    (image_tree / "broken.png").symlink_to(image_tree / "nowhere")
    code, summary = run_json("sync", str(image_tree), str(dst), "--copy-links")
    assert code == 1
    assert summary["deleted"] == 0 and "errors" in summary["delete_note"]
    assert (dst / "img05.png").exists()


async def test_sync_to_a_host_touches_only_its_own_uploads(
    image_tree: Path, tmp_path: Path
) -> None:
    """Sync to Gyazo deletes the upload of a file removed from the folder, never an image
    another source uploaded to the same account."""
    fake = await start_fake(GyazoFake(Knobs(token="tok-12345678")))
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
        )
        env = {"GY": "tok-12345678"}
        other = tmp_path / "other"
        other.mkdir()
        (other / "theirs.png").write_bytes(make_png(7, 7, 99))
        base = ("--config", str(cfg))
        proc = await run_cli_async(*base, "copy", str(other), "gy:", env=env)
        assert proc.returncode == 0, proc.stderr
        proc = await run_cli_async(*base, "sync", str(image_tree), "gy:", "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        assert (await fake.stats())["items"] == 13
        (image_tree / "img05.png").unlink()
        proc = await run_cli_async(*base, "sync", str(image_tree), "gy:", "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["deleted"] == 1
        stats = await fake.stats()
        assert stats["items"] == 12 and stats["deletes"] == 1
    finally:
        await fake.close()
