"""Backup sidecars never replace a file imgsync did not write as that image's sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from helpers import run_cli_async, start_fake, write_config

from imgsync.fakehosts.common import Knobs, sha256_hex
from imgsync.fakehosts.guizhan import GuizhanFake
from imgsync.localfs import (
    StagedFile,
    Unit,
    commit_units,
    find_sidecar,
    stage_blobs,
    write_sidecars,
)

TOKEN = "gz-sidecar-token-31"


async def test_backup_leaves_the_users_own_json_files_untouched(tmp_path: Path) -> None:
    """The backup folder already holds the user's notes as <image>.json for 3 of the 6
    images: they stay byte for byte; those images' sidecars go to <image>.imgsync.json
    (each naming its image and checksum); a second backup adds and changes nothing."""
    fake = GuizhanFake(Knobs(token=TOKEN, seed=6, rate="none"))
    running = await start_fake(fake)
    dest = tmp_path / "backup"
    dest.mkdir()
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            aiohttp.ClientSession(headers=auth) as s,
            s.get(f"{running.url}/v1/images", params={"per_page": 20}) as r,
        ):
            names = [row["fullname"] for row in (await r.json())["result"]]
        mine = {n: f'{{"my": "notes on {n}"}}\n'.encode() for n in names[:3]}
        for n, data in mine.items():
            (dest / f"{n}.json").write_bytes(data)
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gz]\ntype = "guizhan"\nbase_url = "{running.url}"\ntoken_env = "GZ"\n',
        )
        args = ("--config", str(cfg), "backup", "gz:", str(dest), "--json")
        first = await run_cli_async(*args, env={"GZ": TOKEN})
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["copied"] == 6
        before = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}
        second = await run_cli_async(*args, env={"GZ": TOKEN})
        assert second.returncode == 0, second.stderr
        after = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}
    finally:
        await running.close()
    for n, data in mine.items():
        assert (dest / f"{n}.json").read_bytes() == data
        side = json.loads((dest / f"{n}.imgsync.json").read_bytes())
        assert side["file"] == n and side["sha256"] == sha256_hex((dest / n).read_bytes())
        assert find_sidecar(dest, n, side["sha256"]) == f"{n}.imgsync.json"
    for n in names[3:]:
        assert json.loads((dest / f"{n}.json").read_bytes())["file"] == n
    assert not [p for p in after if "imgsync (" in p]
    assert {k: v for k, v in after.items() if k.endswith(".json")} == {
        k: v for k, v in before.items() if k.endswith(".json")
    }


def _side(sha: str) -> dict[str, object]:
    return {"source": "di", "remote_id": "x1", "sha256": sha, "name": "photo.png"}


def test_a_host_item_named_like_a_sidecar_is_never_replaced(tmp_path: Path) -> None:
    """--include-non-images with a host file photo.png.json: in the same batch as
    photo.png, or in a later run, its bytes stay; the image's sidecar goes elsewhere."""
    root = str(tmp_path)
    host_json = b'{"this is": "a file on the host"}'
    png = b"\\x89PNG fake image bytes"
    sha = sha256_hex(png)
    unit = Unit(
        "",
        [
            StagedFile("photo.png", sidecar=_side(sha), approved=True),
            StagedFile("photo.png.json", approved=True),
        ],
    )
    stage_blobs(root, unit, [png, host_json])
    commit_units(root, [unit])
    write_sidecars(root, unit)
    assert [f.error for f in unit.files] == [None, None]
    assert (tmp_path / "photo.png.json").read_bytes() == host_json
    assert unit.files[0].sidecar_final == "photo.png.imgsync.json"

    # the other order: the sidecar first, the host's .json item in a later run
    other = tmp_path / "later"
    other.mkdir()
    first = Unit("", [StagedFile("photo.png", sidecar=_side(sha), approved=True)])
    stage_blobs(str(other), first, [png])
    commit_units(str(other), [first])
    write_sidecars(str(other), first)
    second = Unit("", [StagedFile("photo.png.json", approved=True)])
    stage_blobs(str(other), second, [host_json])
    commit_units(str(other), [second])
    assert second.files[0].final == "photo.png (1).json"
    assert (other / "photo.png (1).json").read_bytes() == host_json
    assert json.loads((other / "photo.png.json").read_bytes())["sha256"] == sha


def test_sidecars_are_staged_with_their_images(tmp_path: Path) -> None:
    """A sidecar is written into the staging folder with its image and renamed into place
    by the commit (so the flush before the renames covers its bytes): after the commit it
    is there, complete, naming its file; the staging folder is gone. An image that gets
    another name (its own is taken by another file) gets a sidecar naming that name."""
    root = str(tmp_path)
    (tmp_path / "taken.png").write_bytes(b"someone else's file")
    imgs = [b"\x89PNG one", b"\x89PNG two", b"\x89PNG three"]
    names = ["a.png", "b.png", "taken.png"]
    unit = Unit(
        "",
        [
            StagedFile(n, sidecar=_side(sha256_hex(b)), approved=True)
            for n, b in zip(names, imgs, strict=True)
        ],
    )
    stage_blobs(root, unit, list(imgs))
    commit_units(root, [unit])
    assert [f.final for f in unit.files] == ["a.png", "b.png", "taken (1).png"]
    # placed by the commit: the image kept its name and <image>.json was free
    assert [f.sidecar_final for f in unit.files] == ["a.png.json", "b.png.json", None]
    for n, b in zip(names[:2], imgs[:2], strict=True):
        side = json.loads((tmp_path / f"{n}.json").read_bytes())
        assert side["file"] == n and side["sha256"] == sha256_hex(b)
    write_sidecars(root, unit)
    assert [f.error for f in unit.files] == [None, None, None]
    side = json.loads((tmp_path / "taken (1).png.json").read_bytes())
    assert side["file"] == "taken (1).png" and side["sha256"] == sha256_hex(imgs[2])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*names, "a.png.json", "b.png.json", "taken (1).png", "taken (1).png.json"]
    )


def test_an_own_sidecar_from_an_earlier_run_is_updated_in_place(tmp_path: Path) -> None:
    """The same image backed up again (its file and sidecar still there): the staged
    sidecar does not take another name; the one there is rewritten, no second file."""
    root = str(tmp_path)
    png = b"\x89PNG same bytes"
    for meta in ({"title": "old"}, {"title": "new"}):
        f = StagedFile("p.png", sidecar={**_side(sha256_hex(png)), "metadata": meta}, approved=True)
        unit = Unit("", [f])
        stage_blobs(root, unit, [png])
        commit_units(root, [unit])
        write_sidecars(root, unit)
        assert f.error is None and f.final == "p.png" and f.sidecar_final == "p.png.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "p.png.json"]
    assert json.loads((tmp_path / "p.png.json").read_bytes())["metadata"] == {"title": "new"}


def test_a_fifo_named_like_a_sidecar_is_not_read(tmp_path: Path) -> None:
    """A named pipe where a sidecar would be is not a sidecar: looking (the gallery, a
    later backup) does not wait forever for a writer; the image's sidecar goes elsewhere."""
    import os

    png = b"\x89PNG fake image bytes"
    sha = sha256_hex(png)
    os.mkfifo(tmp_path / "photo.png.json")
    assert find_sidecar(tmp_path, "photo.png", sha) is None
    unit = Unit("", [StagedFile("photo.png", sidecar=_side(sha), approved=True)])
    stage_blobs(str(tmp_path), unit, [png])
    commit_units(str(tmp_path), [unit])
    write_sidecars(str(tmp_path), unit)
    assert unit.files[0].error is None
    assert unit.files[0].sidecar_final == "photo.png.imgsync.json"
    assert find_sidecar(tmp_path, "photo.png", sha) == "photo.png.imgsync.json"


def test_sidecar_json_is_what_json_dumps_writes() -> None:
    """Sidecars are encoded by a faster writer of the same text as
    ``json.dumps(indent=2, ensure_ascii=False)``: checked on many random nested values
    (odd strings, big and special numbers, empty containers, tuples, non-string keys)."""
    import enum
    import random

    from imgsync.localfs.stage import pretty_json

    class Kind(enum.IntEnum):
        A = 3

    rnd = random.Random(15)
    leaves = [None, True, False, 0, -3, 2**70, 1.5, -0.0, float("nan"), float("inf"),
              float("-inf"), 1e-7, 1e300, "x", "é\n\t\x00\ud800\u2028", "", "\\\"", Kind.A]  # fmt: skip
    keys = ["a", "ü", 'k"q', "", "<x>", "\x7f"]

    def value(depth: int) -> object:
        roll = rnd.random()
        if depth < 3 and roll < 0.2:
            return {rnd.choice(keys) + str(rnd.randint(0, 9)): value(depth + 1) for _ in range(4)}
        if depth < 3 and roll < 0.35:
            return [value(depth + 1) for _ in range(rnd.randint(0, 4))]
        if depth < 3 and roll < 0.4:
            return tuple(value(depth + 1) for _ in range(rnd.randint(0, 3)))
        return rnd.choice(leaves)

    samples = [value(0) for _ in range(3000)]
    samples += [{1: "x", "a": [1, (2, 3)]}, {"a": {None: 1}}, {"a": {"b": {}, "c": []}}]
    for v in samples:
        assert pretty_json(v) == json.dumps(v, indent=2, ensure_ascii=False)


async def test_a_lone_surrogate_in_host_metadata_is_written_escaped(tmp_path: Path) -> None:
    """A host's JSON may carry a lone UTF-16 surrogate escape (``"\\ud800"``: valid JSON,
    not encodable as UTF-8). The backup does not fail on it (it stopped with a traceback
    while writing the sidecar): the sidecar holds the same escape, so it reads back as
    the host sent it, and the gallery is written."""
    from imgsync.fakehosts.gyazo import GyazoFake

    fake = GyazoFake(Knobs(token=TOKEN, seed=3, rate="none"))
    odd = next(iter(fake.images.values()))
    odd.title = "before \ud800 after"
    running = await start_fake(fake)
    dest = tmp_path / "backup"
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{running.url}"\ntoken_env = "GY"\n',
        )
        args = ("--config", str(cfg), "backup", "gy:", str(dest), "--json")
        done = await run_cli_async(*args, env={"GY": TOKEN})
    finally:
        await running.close()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["copied"] == 3
    sides = [json.loads(p.read_bytes()) for p in dest.glob("*.json")]
    titles = [s["metadata"].get("title") for s in sides]
    assert "before \ud800 after" in titles
    assert (dest / "index.html").is_file()


async def test_a_deleted_sidecar_is_made_again_by_the_next_backup(tmp_path: Path) -> None:
    """The user deletes two sidecars from a backup folder. The next backup (nothing new on
    the host) writes them again, byte for byte as they were, without downloading their
    images again, even on a host whose listing resumes at its last page (Guizhan); a run
    with every sidecar in place changes nothing."""
    import os

    from imgsync.config import load_config
    from imgsync.pipeline.run import JobSpec, run_job
    from imgsync.pipeline.summary import CopyOptions

    fake = GuizhanFake(Knobs(token=TOKEN, seed=6, rate="none"))
    running = await start_fake(fake)
    dest = tmp_path / "backup"
    os.environ["GZ"] = TOKEN
    try:
        cfg = load_config(
            write_config(
                tmp_path / "cfg.toml",
                f'[remotes.gz]\ntype = "guizhan"\nbase_url = "{running.url}"\ntoken_env = "GZ"\n',
            ),
            explicit=True,
        )

        async def backup() -> object:
            return await run_job(
                cfg, JobSpec("backup", "gz:", str(dest), CopyOptions(sidecars=True))
            )

        first = await backup()
        sidecars = {p.name: p.read_bytes() for p in dest.glob("*.json")}
        assert first.copied == 6 and len(sidecars) == 6  # type: ignore[attr-defined]
        gone = sorted(sidecars)[:2]
        for name in gone:
            (dest / name).unlink()
        images = {p.name: p.stat().st_ino for p in dest.iterdir() if not p.name.endswith(".json")}
        again = await backup()
        assert again.copied == 0 and again.failed == 0  # type: ignore[attr-defined]
        assert {p.name: p.read_bytes() for p in dest.glob("*.json")} == sidecars
        same = {p.name: p.stat().st_ino for p in dest.iterdir() if not p.name.endswith(".json")}
        assert same == images  # no image written again
        mtimes = {p.name: p.stat().st_mtime_ns for p in dest.glob("*.json")}
        third = await backup()
        assert third.copied == 0  # type: ignore[attr-defined]
        assert {p.name: p.stat().st_mtime_ns for p in dest.glob("*.json")} == mtimes
        image = min(images)  # an image deleted by hand is copied again too
        data = (dest / image).read_bytes()
        (dest / image).unlink()
        fourth = await backup()
        assert fourth.copied == 1 and (dest / image).read_bytes() == data  # type: ignore[attr-defined]
    finally:
        del os.environ["GZ"]
        await running.close()
