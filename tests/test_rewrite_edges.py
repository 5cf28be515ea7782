"""`imgsync rewrite` stays inside the tree it was given and edits text only: links found
in a folder are not followed, binary files and things that are not regular files are
skipped with a note."""

from __future__ import annotations

import codecs
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import run_cli

from imgsync.urlmap import write_map

OLD = "https://i.gyazo.com/abc.png"
NEW = "https://www.imgz.io/images/a.png"


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    write_map(tmp_path / "map.csv", [(OLD, NEW, "1" * 64)])
    docs, outside = tmp_path / "docs", tmp_path / "outside"
    docs.mkdir()
    outside.mkdir()
    (docs / "post.md").write_text(f"![a]({OLD})\n")
    (outside / "secret.md").write_text(f"![s]({OLD})\n")
    (outside / "deep.md").write_text(f"![d]({OLD})\n")
    return tmp_path / "map.csv", docs, outside


def test_links_in_a_walked_folder_are_not_followed(tmp_path: Path) -> None:
    """docs/link.md -> ../outside/secret.md and docs/ext -> ../outside: neither outside
    file changes; the link to a file is reported as skipped; the real document is
    rewritten (exit 0)."""
    map_csv, docs, outside = _setup(tmp_path)
    (docs / "link.md").symlink_to(outside / "secret.md")
    (docs / "ext").symlink_to(outside, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    proc = run_cli("rewrite", "--map", str(map_csv), str(docs), "--json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before
    assert (docs / "post.md").read_text() == f"![a]({NEW})\n"
    assert out["files_changed"] == 1
    skipped = {s["file"]: s["reason"] for s in out["skipped"]}
    assert "symbolic link" in skipped[str(docs / "link.md")]
    assert (docs / "link.md").is_symlink()


def test_binary_files_and_special_files_are_skipped_with_a_note(tmp_path: Path) -> None:
    """A .md file holding NUL bytes (an image saved under the wrong name) keeps every byte;
    a FIFO named on the command line is skipped at once (reading it would hang); both are
    noted on stderr; a UTF-16 document (NULs, but a BOM) is still rewritten."""
    map_csv, docs, _ = _setup(tmp_path)
    blob = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR " + OLD.encode() + b" \x00\x01\xff"
    (docs / "image.md").write_bytes(blob)
    utf16 = f"![u]({OLD})\r\n".encode("utf-16")
    (docs / "wide.md").write_bytes(utf16)
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    proc = run_cli("rewrite", "--map", str(map_csv), str(docs), str(fifo), timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert (docs / "image.md").read_bytes() == blob
    assert (docs / "wide.md").read_bytes() == f"![u]({NEW})\r\n".encode("utf-16")
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("  skipped: ")]
    assert any("image.md" in ln and "binary" in ln for ln in notes), proc.stderr
    assert any("pipe.md" in ln and "not a regular file" in ln for ln in notes), proc.stderr
    assert "rewrote 2 links in 2 files" in proc.stdout


# ---- large files: bounded memory ------------------------------------------------------------


def _peak_bytes(fn: Callable[[], object]) -> int:
    """The most memory Python held at once while ``fn`` ran (tracemalloc)."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_large_binary_file_is_skipped_after_its_first_block(tmp_path: Path) -> None:
    """A 32 MB file with NUL bytes (a database dump named notes.txt) is skipped after its
    first 64 KiB: it is not read whole into memory first."""
    from imgsync.rewrite import BINARY_NOTE, rewrite

    docs = tmp_path / "docs"
    docs.mkdir()
    blob = docs / "notes.txt"
    with blob.open("wb") as fh:
        fh.write(b"\x00binary\x00" + f" {OLD} ".encode())
        fh.truncate(32 << 20)
    before = blob.stat()
    out: list[object] = []
    peak = _peak_bytes(lambda: out.append(rewrite({OLD: NEW}, [docs], dry_run=False)))
    (result,) = out
    assert result.skipped == [(str(blob), BINARY_NOTE)]  # type: ignore[attr-defined]
    assert peak < 4 << 20, peak
    assert blob.stat().st_mtime_ns == before.st_mtime_ns


def _big_text(lines: int) -> str:
    """Markdown with a mapped link every few lines, CRLF endings, accents."""
    rows = []
    for i in range(lines):
        if i % 50 == 0:
            rows.append(f"line {i} ![é]({OLD}) and {OLD}.\r\n")
        else:
            rows.append(f"line {i} ünïcödé text, nothing to change here at all\r\n")
    return "".join(rows)


def test_a_large_text_file_is_rewritten_in_bounded_memory_and_undone(tmp_path: Path) -> None:
    """A 12 MB Markdown file is rewritten a piece at a time (Python holds well under the
    file's size), with the same bytes as a whole-file rewrite, and --undo restores it
    byte for byte."""
    from imgsync.rewrite import Rewriter, UndoJournal, rewrite, undo

    docs = tmp_path / "docs"
    docs.mkdir()
    doc = docs / "big.md"
    text = _big_text(220_000)
    original = text.encode("utf-8")
    assert len(original) > 12 << 20
    doc.write_bytes(original)
    expected, edits = Rewriter({OLD: NEW}).rewrite_bytes(original, html=False)
    journal = UndoJournal(tmp_path / "state" / "rewrites")
    out: list[object] = []
    peak = _peak_bytes(
        lambda: out.append(rewrite({OLD: NEW}, [docs], dry_run=False, journal=journal))
    )
    (result,) = out
    assert result.links_replaced == len(edits)  # type: ignore[attr-defined]
    assert doc.read_bytes() == expected
    assert peak < 6 << 20, peak
    del expected, text
    back = undo([docs], journal, dry_run=False)
    assert back.failures == [] and back.files_changed == 1
    assert doc.read_bytes() == original


@pytest.mark.parametrize("piece", [7, 64, 4096])
def test_a_document_rewritten_in_pieces_gets_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    """Pieces cut anywhere a URL cannot span (tiny ones too): UTF-8 with stray bytes and
    CRLF, UTF-16 with its BOM, a URL with sentence punctuation or a longer URL at the
    cut, a long line without a newline, HTML with &amp;: each file comes out exactly as
    a whole-file rewrite writes it, the dry-run diff shows the same changed lines, and
    --undo restores every byte."""
    from imgsync import rewrite as rw_mod
    from imgsync.rewrite import Rewriter, UndoJournal, rewrite, undo

    amp_old, amp_new = "https://i.gyazo.com/q.png?a=1&b=2", "https://www.imgz.io/q.png"
    mapping = {OLD: NEW, amp_old: amp_new}
    body = "".join(
        f"{i}: ![x]({OLD}) see {OLD}. not {OLD}/raw \xe9\r\n" if i % 3 else f"{OLD}, {OLD}?\n"
        for i in range(60)
    )
    files = {
        "a.md": body.encode("utf-8") + b"\xff\xfe stray bytes " + OLD.encode(),
        "b.txt": codecs.BOM_UTF16_LE + body.encode("utf-16-le"),
        "c.md": (" ".join([OLD] * 80)).encode(),
        "d.html": f'<img src="{amp_old.replace("&", "&amp;")}"> {body}'.encode(),
    }
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, data in files.items():
        (docs / name).write_bytes(data)
    whole = rewrite(mapping, [docs], dry_run=True)
    expect = {
        name: Rewriter(mapping).rewrite_bytes(data, html=name.endswith(".html"))[0]
        for name, data in files.items()
    }
    monkeypatch.setattr(rw_mod, "STREAM_ABOVE", 0)
    monkeypatch.setattr(rw_mod, "STREAM_PIECE", piece)
    dry = rewrite(mapping, [docs], dry_run=True)
    assert dry.links_replaced == whole.links_replaced and dry.files_changed == 4

    def changed_lines(diffs: list[str]) -> list[str]:
        return sorted(
            ln for d in diffs for ln in d.splitlines() if ln[:1] in "+-" and ln[:3] not in "+++---"
        )

    assert changed_lines(dry.diffs) == changed_lines(whole.diffs)
    assert {n: (docs / n).read_bytes() for n in files} == files  # a dry run writes nothing
    journal = UndoJournal(tmp_path / "state" / "rewrites")
    done = rewrite(mapping, [docs], dry_run=False, journal=journal)
    assert done.failures == [] and done.links_replaced == whole.links_replaced
    assert {n: (docs / n).read_bytes() for n in files} == expect
    assert undo([docs], journal, dry_run=False).files_changed == 4
    assert {n: (docs / n).read_bytes() for n in files} == files
