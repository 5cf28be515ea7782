"""Symbolic links in a source folder are skipped (as rclone does without ``-L``), with one
warning line per link; ``--copy-links`` follows the ones that stay inside the folder.
Nothing outside the source folder is ever copied or uploaded through a link."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from helpers import run_cli, start_fake, tree_files, write_config

from imgsync.config import load_config
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.fakehosts.images import make_png
from imgsync.pipeline.plan import LocalPlan
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions

TOKEN = "links-test-token-77"


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """src: 3 real images; links to a file and a folder outside, to /etc/passwd (under an
    image name), a broken one, and a folder loop. outside: a private image."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    (src / "odd").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(make_png(9, 9, 900))
    (src / "a.png").write_bytes(make_png(8, 8, 1))
    (src / "odd" / "b.png").write_bytes(make_png(8, 8, 2))
    (src / "odd" / "c.png").write_bytes(make_png(8, 8, 3))
    (src / "odd" / "link.png").symlink_to(outside / "secret.png")
    (src / "odd" / "passwd.png").symlink_to("/etc/passwd")
    (src / "odd" / "gone.png").symlink_to(src / "odd" / "nowhere.png")
    (src / "out").symlink_to(outside, target_is_directory=True)
    (src / "odd" / "loop").symlink_to(src, target_is_directory=True)
    return src, outside


def test_links_are_skipped_with_one_warning_each(tmp_path: Path) -> None:
    """Five links: none is followed, each gets one warning line on stderr, the summary
    counts them as skipped; the run is clean (exit 0) and copies the 3 real images."""
    src, _ = _tree(tmp_path)
    dst = tmp_path / "dst"
    proc = run_cli("copy", str(src), str(dst), "--no-progress", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(tree_files(dst)) == ["a.png", "odd/b.png", "odd/c.png"]
    warnings = [ln for ln in proc.stderr.splitlines() if "symlink" in ln]
    assert len(warnings) == 5, proc.stderr
    assert all(ln.startswith("imgsync: warning: skipped symlink ") for ln in warnings)
    assert "5 symlinks skipped" in proc.stdout
    again = run_cli("copy", str(src), str(dst), "--json", timeout=60)
    summary = json.loads(again.stdout)
    assert again.returncode == 0 and summary["symlinks_skipped"] == 5
    assert summary["copied"] == 0 and summary["failed"] == 0


async def test_links_are_never_uploaded(tmp_path: Path) -> None:
    """copy SRC gyazo: uploads the 3 real images only; the private image outside the
    folder and /etc/passwd never reach the host."""
    src, outside = _tree(tmp_path)
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN)))
    os.environ["GY"] = TOKEN
    try:
        cfg = load_config(
            write_config(
                tmp_path / "cfg.toml",
                f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
            ),
            explicit=True,
        )
        summary = await run_job(cfg, JobSpec("copy", str(src), "gy:", CopyOptions()))
        stored = set(fake.host.stored_checksums())
    finally:
        await fake.close()
        del os.environ["GY"]
    assert summary.copied == 3 and summary.failed == 0 and len(summary.links_skipped) == 5
    secret = hashlib.sha256((outside / "secret.png").read_bytes()).hexdigest()
    assert len(stored) == 3 and secret not in stored


def test_copy_links_follows_links_that_stay_inside(tmp_path: Path) -> None:
    """``--copy-links``: a link to an image and a link to a folder inside the source are
    copied as what they point to; links leading outside are still skipped; the folder
    loop is skipped with its warning and does not hang the scan; a broken link is a
    failure."""
    src, _ = _tree(tmp_path)
    (src / "raw.bin").write_bytes(make_png(7, 7, 70))  # not an image by its name
    (src / "alias.png").symlink_to(src / "raw.bin")
    (src / "odd2").symlink_to(src / "odd", target_is_directory=True)
    dst = tmp_path / "dst"
    proc = run_cli("copy", str(src), str(dst), "--json", "--copy-links", timeout=60)
    summary = json.loads(proc.stdout)
    files = tree_files(dst)
    assert files["alias.png"] == (src / "raw.bin").read_bytes()
    assert not any(name.startswith("out/") for name in files)
    assert "odd/link.png" not in files and "odd/passwd.png" not in files
    errors = {f["item"]: f["error"] for f in summary["failures"]}
    assert errors.get("odd/gone.png") == "broken symlink"
    # out, odd/link.png, odd/passwd.png, odd/loop, and odd2 (odd is read once, as odd/)
    assert summary["symlinks_skipped"] == 5
    assert sorted(errors) == ["odd/gone.png"]
    assert sorted(files) == ["a.png", "alias.png", "odd/b.png", "odd/c.png"]
    assert proc.returncode == 1  # the broken link


def test_copy_links_reads_each_real_folder_once(tmp_path: Path) -> None:
    """``-L``: a folder with two links to it, and two folders linking to each other, are
    each read once, under their own paths; every extra way in is one warning; the same
    tree gives the same list on every scan."""
    from imgsync.localfs import scan_tree
    from imgsync.localfs.scan import LINK_LOOP, LINK_TWICE

    src = tmp_path / "src"
    for folder in ("photos/sub", "p", "q"):
        (src / folder).mkdir(parents=True)
    for rel in ("photos/a.png", "photos/sub/b.png", "p/c.png", "q/d.png"):
        (src / rel).write_bytes(make_png(4, 4, len(rel)))
    (src / "l1").symlink_to(src / "photos", target_is_directory=True)
    (src / "l2").symlink_to("photos", target_is_directory=True)
    (src / "photos" / "sub" / "up").symlink_to(src / "photos", target_is_directory=True)
    (src / "p" / "to-q").symlink_to(src / "q", target_is_directory=True)
    (src / "q" / "to-p").symlink_to(src / "p", target_is_directory=True)
    entries, problems, _ = scan_tree(src, follow_links=True)
    rels = sorted(e.rel for e in entries)
    assert rels == ["p/c.png", "photos/a.png", "photos/sub/b.png", "q/d.png"]
    why = {p.rel: p.message for p in problems}
    assert why == {
        "l1": LINK_TWICE,
        "l2": LINK_TWICE,
        "photos/sub/up": LINK_LOOP,
        "p/to-q": LINK_TWICE,
        "q/to-p": LINK_TWICE,
    }
    assert all(p.skipped for p in problems)
    assert scan_tree(src, follow_links=True) == (entries, problems, 0)


def _swap_for_link(path: Path, target: Path) -> None:
    """Replace the file ``path`` by a link to ``target``, which is given the same size and
    modification time, so nothing but the link itself tells them apart."""
    st = path.stat()
    assert target.stat().st_size == st.st_size
    os.utime(target, ns=(st.st_mtime_ns, st.st_mtime_ns))
    path.unlink()
    path.symlink_to(target)


@pytest.mark.parametrize("streamed", [False, True])
def test_a_file_swapped_for_a_link_after_the_scan_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    """Folder -> folder: the scan saw a file; by the time it is read it is a link to a
    private file outside the folder. Its bytes are never read or staged: the file gets the
    scan's own "not followed" note (a warning, not a failure); its neighbour is copied."""
    from imgsync.errors import LinkSkipped
    from imgsync.localfs import make_units, scan_tree, stage_unit
    from imgsync.localfs import stage as stage_mod
    from imgsync.localfs.paths import LINK_SKIPPED

    if streamed:
        monkeypatch.setattr(stage_mod, "STREAM_ABOVE", 10)
    src, outside, dst = tmp_path / "src", tmp_path / "outside", tmp_path / "dst"
    src.mkdir()
    outside.mkdir()
    (src / "a.png").write_bytes(make_png(8, 8, 1))
    (src / "b.png").write_bytes(make_png(8, 8, 2))
    secret = b"private" * 40  # the same size as a.png
    secret = secret[: (src / "a.png").stat().st_size]
    (outside / "secret.png").write_bytes(secret)
    entries, problems, _ = scan_tree(src)
    assert not problems
    _swap_for_link(src / "a.png", outside / "secret.png")
    (unit,) = make_units(entries)
    stage_unit(str(src), str(dst), unit, False)
    by_rel = {f.rel: f for f in unit.files}
    err = by_rel["a.png"].error
    assert isinstance(err, LinkSkipped) and str(err) == LINK_SKIPPED
    assert [f.rel for f in unit.staged] == ["b.png"]
    staged = [p.read_bytes() for p in Path(unit.stage_dir).iterdir()]
    assert secret not in staged and len(staged) == 1


@pytest.mark.parametrize("threshold", [1 << 20, 10])
def test_read_local_never_reads_through_a_link(tmp_path: Path, threshold: int) -> None:
    """Uploads read a source file with ``read_local`` (whole, or hashed in chunks and sent
    from disk): a link there is not read, and with ``--copy-links`` only one that stays
    inside the folder is (a large one is then sent from its real path)."""
    from imgsync.errors import LinkSkipped
    from imgsync.localfs.paths import LINK_OUTSIDE
    from imgsync.pipeline.transfer import read_local

    src, outside = tmp_path / "src", tmp_path / "outside"
    src.mkdir()
    outside.mkdir()
    (outside / "secret.png").write_bytes(make_png(8, 8, 3))
    (src / "real.png").write_bytes(make_png(8, 8, 4))
    (src / "in.png").symlink_to(src / "real.png")
    (src / "out.png").symlink_to(outside / "secret.png")
    for name in ("in.png", "out.png"):
        with pytest.raises(LinkSkipped):
            read_local(src / name, 100, False, threshold)
    root = os.path.realpath(src)
    with pytest.raises(LinkSkipped, match=LINK_OUTSIDE):
        read_local(src / "out.png", 100, False, threshold, follow_root=root)
    body = read_local(src / "in.png", 100, False, threshold, follow_root=root)
    want = hashlib.sha256((src / "real.png").read_bytes()).hexdigest()
    assert body.digest.sha256 == want
    assert body.path is None or body.path == src / "real.png"


async def test_a_copy_skips_a_file_swapped_for_a_link_with_a_warning(tmp_path: Path) -> None:
    """A whole folder -> folder run: a file becomes a link to a private file between the
    scan and the read. The run goes on (exit 0), the link is one warning like a link the
    scan found, its target is never copied; and once the file is put back as it was, the
    next run copies it (the run that met the link left no scan mark behind)."""
    src, outside, dst = tmp_path / "src", tmp_path / "outside", tmp_path / "dst"
    src.mkdir()
    outside.mkdir()
    (src / "a.png").write_bytes(make_png(8, 8, 1))
    (src / "b.png").write_bytes(make_png(8, 8, 2))
    secret = (b"private" * 40)[: (src / "a.png").stat().st_size]
    (outside / "secret.png").write_bytes(secret)
    aside = tmp_path / "a.png.aside"

    def swap(plan: LocalPlan) -> LocalPlan:
        os.link(src / "a.png", aside)  # the original, to be put back later as it was
        _swap_for_link(src / "a.png", outside / "secret.png")
        return plan

    cfg = load_config(None)
    summary = await run_job(cfg, JobSpec("copy", str(src), str(dst), CopyOptions()), admit=swap)
    assert summary.exit_code == 0 and summary.failed == 0, summary.failures
    why = "not followed (--copy-links follows links that stay inside the folder)"
    assert summary.links_skipped == [("a.png", why)]
    assert tree_files(dst) == {"b.png": (src / "b.png").read_bytes()}
    (src / "a.png").unlink()
    os.rename(aside, src / "a.png")  # back, with its inode, size and time
    again = await run_job(cfg, JobSpec("copy", str(src), str(dst), CopyOptions()))
    assert again.copied == 1 and again.exit_code == 0 and not again.links_skipped
    assert sorted(tree_files(dst)) == ["a.png", "b.png"]


async def test_an_upload_skips_a_file_swapped_for_a_link_with_a_warning(tmp_path: Path) -> None:
    """Folder -> host: a file swapped for a link to a private file after the scan is not
    read through the link: one warning, not a failure (exit 0); its target never reaches
    the host; the other image is uploaded."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    src.mkdir()
    outside.mkdir()
    (src / "a.png").write_bytes(make_png(8, 8, 1))
    (src / "b.png").write_bytes(make_png(8, 8, 2))
    secret = make_png(8, 8, 3)
    secret = secret + b"\x00" * max(0, (src / "a.png").stat().st_size - len(secret))
    (outside / "secret.png").write_bytes(secret[: (src / "a.png").stat().st_size])

    def swap(plan: LocalPlan) -> LocalPlan:
        _swap_for_link(src / "a.png", outside / "secret.png")
        return plan

    fake = await start_fake(GyazoFake(Knobs(token=TOKEN)))
    os.environ["GY"] = TOKEN
    try:
        cfg = load_config(
            write_config(
                tmp_path / "cfg.toml",
                f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
            ),
            explicit=True,
        )
        summary = await run_job(cfg, JobSpec("copy", str(src), "gy:", CopyOptions()), admit=swap)
        stored = set(fake.host.stored_checksums())
    finally:
        await fake.close()
        del os.environ["GY"]
    assert summary.exit_code == 0 and summary.failed == 0, summary.failures
    assert summary.copied == 1 and [rel for rel, _ in summary.links_skipped] == ["a.png"]
    leaked = hashlib.sha256((outside / "secret.png").read_bytes()).hexdigest()
    assert len(stored) == 1 and leaked not in stored


@pytest.mark.parametrize("threshold", [8 << 20, 10])  # in memory; hashed and sent from disk
async def test_copy_links_uploads_a_link_that_stays_inside(tmp_path: Path, threshold: int) -> None:
    """``-L`` to a host: a link to a file inside the folder is read (through the link, as
    the scan followed it), small or streamed from disk; links leading outside are not."""
    src, outside = _tree(tmp_path)
    (src / "raw.bin").write_bytes(make_png(7, 7, 70))  # not an image by its name
    (src / "alias.png").symlink_to(src / "raw.bin")
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN)))
    os.environ["GY"] = TOKEN
    try:
        cfg = load_config(
            write_config(
                tmp_path / "cfg.toml",
                f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
            ),
            explicit=True,
        )
        opts = CopyOptions(follow_links=True, spool_threshold=threshold)
        summary = await run_job(cfg, JobSpec("copy", str(src), "gy:", opts))
        stored = set(fake.host.stored_checksums())
    finally:
        await fake.close()
        del os.environ["GY"]
    alias = hashlib.sha256((src / "raw.bin").read_bytes()).hexdigest()
    secret = hashlib.sha256((outside / "secret.png").read_bytes()).hexdigest()
    assert summary.exit_code == 1 and summary.failed == 1  # the broken link, as at scan time
    assert alias in stored and secret not in stored and len(stored) == 4


@pytest.mark.parametrize("threshold", [8 << 20, 1000])  # read whole; hashed from disk
async def test_max_item_size_fails_a_large_file_uploaded_to_a_host(
    tmp_path: Path, threshold: int
) -> None:
    """README: `--max-item-size SIZE` fails one item larger than SIZE, for folder -> host
    uploads too: one clear line for the large file, nothing of it sent, the small one
    uploaded, exit 1 (some items failed)."""
    src = tmp_path / "src"
    src.mkdir()
    big, small = make_png(300, 300, 5), make_png(8, 8, 6)
    big += bytes(300_000 - len(big)) if len(big) < 300_000 else b""
    (src / "big.png").write_bytes(big)
    (src / "small.png").write_bytes(small)
    fake = await start_fake(GyazoFake(Knobs(token=TOKEN)))
    os.environ["GY"] = TOKEN
    try:
        cfg = load_config(
            write_config(
                tmp_path / "cfg.toml",
                f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
            ),
            explicit=True,
        )
        opts = CopyOptions(max_item_bytes=100_000, spool_threshold=threshold)
        summary = await run_job(cfg, JobSpec("copy", str(src), "gy:", opts))
        stored = set(fake.host.stored_checksums())
    finally:
        await fake.close()
        del os.environ["GY"]
    assert summary.exit_code == 1 and summary.copied == 1 and summary.failed == 1
    assert summary.failures == [("big.png", "larger than the per-item size cap of 100000 bytes")]
    assert stored == {hashlib.sha256(small).hexdigest()}
