"""The no-op re-run of a folder copy: what it trusts, what it notices, what it loads.

A re-run whose scan matches the saved mark (a digest of every path, size, mtime and
inode) copies nothing without looking at state per file; any change to one of those must
break the match, and the files that changed are copied again. In-process runs of the
real CLI on real files and a real SQLite state.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from imgsync.cli import main
from imgsync.localfs import ScanEntry, scan_tree
from imgsync.pipeline.plan import fingerprint, plan_local
from imgsync.state.reader import must_open


def _copy(src: Path, dst: Path) -> dict[str, Any]:
    """One in-process run's JSON summary (stdout taken with redirect_stdout, not capsys:
    a run that copies configures logging on the stderr of the moment, and the loggers
    it caches must not keep a stream capsys closes after the test)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["copy", str(src), str(dst), "--no-progress", "--json"]) == 0
    summary: dict[str, Any] = json.loads(out.getvalue())
    return summary


def _tree(root: Path) -> None:
    for folder in ("", "a", "a/b", "c"):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            name = f"{folder.replace('/', '-') or 'top'}{i}.png"
            (root / folder / name).write_bytes(f"{folder}:{i}".encode() * 50)
    (root / "only-text").mkdir()
    (root / "only-text" / "notes.txt").write_text("no images here")


def _marked(src: Path, dst: Path) -> bool:
    with must_open(Path(os.environ["IMGSYNC_STATE"])) as db:
        plan = plan_local(db, src, f"local:{dst.resolve()}", dest_root=dst)
    return plan.marked


def test_a_rerun_matches_the_mark_and_copies_nothing(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    assert _copy(src, dst)["copied"] == 12
    assert _marked(src, dst)
    again = _copy(src, dst)
    assert again["copied"] == 0 and again["already_present"] == 12


def test_a_file_rewritten_in_place_with_the_same_size_is_copied_again(tmp_path: Path) -> None:
    """Same name, same size, same inode: only the mtime tells it changed."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    _copy(src, dst)
    target = src / "a" / "b" / "a-b1.png"
    before = target.stat()
    new = bytes(reversed(target.read_bytes()))
    assert len(new) == before.st_size and new != target.read_bytes()
    with open(target, "r+b") as fh:  # in place: the inode stays
        fh.write(new)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert target.stat().st_ino == before.st_ino and target.stat().st_size == before.st_size
    assert not _marked(src, dst)
    summary = _copy(src, dst)
    assert summary["copied"] == 1
    assert (dst / "a" / "b" / "a-b1.png").read_bytes() == new


def test_a_file_with_its_old_mtime_but_another_size_is_copied_again(tmp_path: Path) -> None:
    """Rewritten and its mtime put back (as some tools do): the size still tells."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    _copy(src, dst)
    target = src / "c" / "c2.png"
    before = target.stat()
    with open(target, "ab") as fh:
        fh.write(b"more")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_mtime_ns == before.st_mtime_ns
    summary = _copy(src, dst)
    assert summary["copied"] == 1
    assert (dst / "c" / "c2.png").read_bytes() == target.read_bytes()


def test_the_digest_changes_with_every_field_the_order_and_the_filters() -> None:
    base = [
        ScanEntry("a/one.png", 10, 1_700_000_000_000_000_000, 5),
        ScanEntry("b/tw\udcffo.png", 20, 1_700_000_000_000_000_001, 6),  # not UTF-8
    ]
    digest = fingerprint(base, (), ())
    assert digest == fingerprint(list(base), (), ())  # the same files: the same digest
    changed = [
        [base[0]._replace(rel="a/one.PNG"), base[1]],
        [base[0]._replace(size=11), base[1]],
        [base[0]._replace(mtime_ns=base[0].mtime_ns + 1), base[1]],
        [base[0]._replace(inode=7), base[1]],
        [base[1], base[0]],
        base[:1],
    ]
    digests = {fingerprint(entries, (), ()) for entries in changed}
    assert len(digests) == len(changed) and digest not in digests
    assert fingerprint(base, ("*.png",), ()) != digest
    assert fingerprint(base, (), ("*.png",)) != digest


def test_an_mtime_past_2262_is_digested_too() -> None:
    """A nanosecond mtime past 2**63 (year 2262) does not fit the packed column: it is
    digested as digits instead, and still tells one time from another."""
    far = 2**63 + 5
    one = [ScanEntry("x.png", 1, far, 9)]
    assert fingerprint(one, (), ()) == fingerprint(list(one), (), ())
    assert fingerprint(one, (), ()) != fingerprint([one[0]._replace(mtime_ns=far + 1)], (), ())
    assert fingerprint(one, (), ()) != fingerprint([one[0]._replace(size=2)], (), ())


def test_the_scan_names_the_folders_that_hold_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    folders: set[str] = set()
    entries, _problems, skipped = scan_tree(src, folders=folders)
    assert skipped == 1  # notes.txt
    assert folders == {e.rel.rpartition("/")[0] for e in entries} == {"", "a", "a/b", "c"}


def test_a_no_op_rerun_loads_no_http_tls_or_openssl(tmp_path: Path) -> None:
    """Folder -> folder with nothing to do: no event loop, no aiohttp, no ssl, no
    OpenSSL-backed hashlib, no provider code (a fresh interpreter tells what was loaded)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    _copy(src, dst)
    probe = (
        "import sys\n"
        "from imgsync.cli import main\n"
        f"code = main(['copy', {str(src)!r}, {str(dst)!r}, '--no-progress'])\n"
        "heavy = ('asyncio', 'aiohttp', 'ssl', '_ssl', '_hashlib', 'anyio', 'aiosqlite',\n"
        "         'structlog', 'imgsync.providers.base', 'imgsync.http', 'concurrent.futures')\n"
        "print(code, sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "0 []"


@pytest.mark.parametrize("xdg", [None, "", "relative/dir", "/abs/xdg"])
@pytest.mark.parametrize("home", ["/home/someone", "/home/someone/", "/"])
def test_the_default_paths_are_platformdirs_own(
    xdg: str | None, home: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config and state paths worked out without importing platformdirs are the
    ones platformdirs gives."""
    import platformdirs

    from imgsync.config import default_config_path, default_state_path

    monkeypatch.delenv("IMGSYNC_CONFIG", raising=False)
    monkeypatch.delenv("IMGSYNC_STATE", raising=False)
    monkeypatch.setenv("HOME", home)
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        if xdg is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, xdg)
    assert default_config_path() == platformdirs.user_config_path("imgsync") / "config.toml"
    assert default_state_path() == platformdirs.user_state_path("imgsync") / "state.db"


_COMMAND_LINES = [
    ["copy", "a", "b"],
    ["--config", "c.toml", "-v", "sync", "a", "b", "--max-delete", "5"],
    ["--config=c.toml", "backup", "gy:", "out", "--no-gallery", "--transfers", "3"],
    ["migrate", "gy:", "chv:", "--map", "m.csv", "--report", "r.html"],
    ["verify", "gy:", "--sample", "3", "--repair", "chv:", "--dry-run"],
    ["state", "copy", "s.db", "postgresql://h/db", "--json"],
    ["config", "check"],
    ["status", "--json", "--state", "s.db"],
    ["fakehost", "gyazo", "--port", "0", "--option", "paging=true"],
]
_BAD_LINES = [
    ["copy", "a"],  # DST missing
    ["copy", "a", "b", "--bogus"],
    ["copyy", "a", "b"],  # no such verb
    ["--conf", "c.toml", "copy", "a", "b"],  # an abbreviated global option
    ["migrate", "gy:", "chv:"],  # --map missing
    ["verify", "--sample", "1", "--full"],  # mutually exclusive
    ["state"],
    [],
]


def _parse(argv: list[str], verb: str | None) -> tuple[Any, str]:
    from imgsync.cli import build_parser

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return vars(build_parser(verb).parse_args(argv)), err.getvalue()
        except SystemExit as exc:
            return ("exit", exc.code), err.getvalue()


def test_the_parser_of_the_verb_alone_reads_every_line_as_the_whole_parser_does() -> None:
    """A run builds only its own verb's parser: the same namespace, the same one-line
    errors and exit codes as the parser of every verb."""
    from imgsync.cli import _globals_first, _verb_of

    for argv in _COMMAND_LINES + _BAD_LINES:
        argv = _globals_first(argv)
        assert _parse(argv, _verb_of(argv)) == _parse(argv, None), argv
    assert _parse(["copyy", "a", "b"], "copyy")[0] == ("exit", 2)


def test_a_verbs_help_is_the_same_from_its_own_parser(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from imgsync.cli import build_parser

    monkeypatch.setenv("COLUMNS", "100")
    pages = []
    for verb in ("copy", None):
        with pytest.raises(SystemExit):
            build_parser(verb).parse_args(["copy", "--help"])
        pages.append(capsys.readouterr().out)
    assert pages[0] == pages[1] and "--max-item-size" in pages[0]
    assert max(len(line) for line in pages[0].splitlines()) <= 98


def test_names_that_look_like_images_but_are_not_plain_files(tmp_path: Path) -> None:
    """The scan's short path (a lower-case image extension, one status read) hands
    everything that is not a plain file to the full checks: a folder, a link, a pipe,
    and names that are only an extension or shout it."""
    src = tmp_path / "src"
    (src / "album.png").mkdir(parents=True)  # a folder named like an image
    (src / "album.png" / "inside.jpg").write_bytes(b"1")
    (src / "a.png").write_bytes(b"2")  # five characters: an image
    (src / ".png").write_bytes(b"3")  # only an extension: not an image
    (src / ".jpeg").write_bytes(b"4")
    (src / "LOUD.PNG").write_bytes(b"5")  # upper case: an image
    (src / "Mixed.JpEg").write_bytes(b"6")
    os.mkfifo(src / "pipe.png")  # not a regular file: not copied, no error
    os.symlink(src / "a.png", src / "link.png")  # a link: skipped with a warning
    (src / "notes.txt").write_text("x")
    folders: set[str] = set()
    entries, problems, skipped = scan_tree(src, folders=folders)
    assert sorted(e.rel for e in entries) == [
        "LOUD.PNG",
        "Mixed.JpEg",
        "a.png",
        "album.png/inside.jpg",
    ]
    assert [(p.rel, p.skipped) for p in problems] == [("link.png", True)]
    assert skipped == 3  # .png, .jpeg, notes.txt
    assert folders == {"", "album.png"}
    by_rel = {e.rel: e for e in entries}
    st = os.stat(src / "a.png")
    assert by_rel["a.png"][1:] == (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


def test_a_no_op_program_run_ends_early_with_all_its_output(tmp_path: Path) -> None:
    """Run as a program, a no-op re-run ends without the interpreter's teardown: its
    summary (stdout, a pipe) and its warnings (stderr) are all there, the code too."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    os.symlink(src / "a" / "a0.png", src / "link.png")  # a warning on every run
    _copy(src, dst)
    probe = (
        "import atexit, runpy, sys\n"
        "atexit.register(print, 'teardown ran', file=sys.stderr)\n"
        "runpy.run_module('imgsync', run_name='__main__')\n"
    )
    runs = {
        "program": [sys.executable, "-m", "imgsync"],
        "with an exit handler": [sys.executable, "-c", probe],
    }
    for how, cmd in runs.items():
        proc = subprocess.run(
            [*cmd, "copy", str(src), str(dst), "--json"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, (how, proc.stderr)
        summary = json.loads(proc.stdout)
        assert summary["copied"] == 0 and summary["already_present"] == 12, how
        assert "skipped symlink link.png" in proc.stderr, how
        # an exit handler is honoured: that run takes the interpreter's own way out
        assert ("teardown ran" in proc.stderr) == (how == "with an exit handler")


def test_a_rerun_without_its_mark_trusts_state_for_every_kind_of_name(tmp_path: Path) -> None:
    """With no scan mark to match (dropped here), each file is looked up in state by
    its key, size, mtime and inode: names that are not ASCII, or not even UTF-8, are
    found as well as plain ones, so nothing is read or copied again."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    (src / "фото.png").write_bytes(b"cyrillic" * 20)
    (src / os.fsdecode(b"caf\xe9.png")).write_bytes(b"latin-1" * 20)  # not UTF-8
    assert _copy(src, dst)["copied"] == 14
    state = Path(os.environ["IMGSYNC_STATE"])
    with sqlite3.connect(state) as conn:
        conn.execute("DELETE FROM scan_marks")
    conn.close()
    with must_open(state) as db:
        plan = plan_local(db, src.resolve(), f"local:{dst.resolve()}", dest_root=dst.resolve())
    assert not plan.marked and plan.to_hash == [] and plan.present == 14
    again = _copy(src, dst)
    assert again["copied"] == 0 and again["already_present"] == 14
    (src / "фото.png").write_bytes(b"changed!" * 20)  # same size, a new mtime
    os.utime(src / "фото.png", ns=(1, 1))
    with must_open(state) as db:
        plan = plan_local(db, src.resolve(), f"local:{dst.resolve()}", dest_root=dst.resolve())
    assert [e.rel for e in plan.to_hash] == ["фото.png"]


def test_a_file_dated_past_2262_is_copied_and_then_left_alone(tmp_path: Path) -> None:
    """Its mtime in nanoseconds is past what SQLite's INTEGER holds: the copy used to hang
    for ever (the state writer died on the value and nobody was told); now the file is
    copied, recorded, and recognised by the next run."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    far = src / "a" / "a1.png"
    os.utime(far, ns=(1, 2**63 + 5_000_000_000))
    assert far.stat().st_mtime_ns > 2**63
    assert _copy(src, dst)["copied"] == 12
    assert (dst / "a" / "a1.png").read_bytes() == far.read_bytes()
    state = Path(os.environ["IMGSYNC_STATE"])
    with sqlite3.connect(state) as conn:
        conn.execute("DELETE FROM scan_marks")  # the file-by-file look at state, too
    conn.close()
    again = _copy(src, dst)
    assert again["copied"] == 0 and again["already_present"] == 12


async def test_a_value_sqlite_cannot_hold_fails_the_flush_instead_of_hanging(
    tmp_path: Path,
) -> None:
    import asyncio

    from imgsync.errors import StateError
    from imgsync.state.store import StateStore

    async with StateStore(tmp_path / "s.db") as store:
        await store.write_many(
            "INSERT INTO objects (sha256, size, md5, mime, first_seen) VALUES (?, ?, ?, ?, ?)",
            [("ab" * 32, 2**64, None, None, 0.0)],
        )
        with pytest.raises(StateError, match="too large"):
            await asyncio.wait_for(store.flush(), 20)
