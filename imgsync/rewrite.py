"""``imgsync rewrite``: replace image links in documents from a URL map, and undo it.

What changes is exactly the bytes of each mapped URL; everything else in the file is kept
byte for byte: line endings (CRLF stays CRLF), a byte-order mark, the encoding (UTF-8,
UTF-16 with a BOM, and any other bytes, which are carried through untouched), trailing
whitespace, the file's mode.

Which occurrences are links: a mapped URL counts wherever it stands as a whole URL, which
covers Markdown inline links and images, Markdown reference definitions
(``[id]: URL "title"``), HTML ``src``/``href``/``srcset`` attributes, BBCode
``[img]URL[/img]`` / ``[url=URL]`` and bare URLs in text. "Whole" means the characters
after it are not more of a URL: ``https://h/a.png/raw`` or ``https://h/a.png?x=1`` is a
different URL and is left alone, while sentence punctuation after a URL
(``see https://h/a.png.``, ``(https://h/a.png),``) is not part of it, as in GitHub's
autolinks. In HTML files a URL whose ``&`` is written ``&amp;`` is matched too, and its
replacement is written the same way.

What is read: files named on the command line (a symbolic link named there is followed:
it was asked for), and the document files found by walking a named folder. Symbolic links
found while walking are not followed, to a file or to a folder: a rewrite never edits
anything outside the tree it was given. Binary files (NUL bytes without a UTF-16/32
byte-order mark) and anything that is not a regular file (a FIFO would block the read) are
skipped with a note and left untouched.

Undo: before a changed file is replaced, the edits (offset, new bytes, old bytes) and the
SHA-256 of the file before and after are appended to a journal kept beside the state
database (``<state dir>/rewrites/``, private to the user). ``--undo`` puts back the old
bytes of the most recent rewrite of each file, and refuses (with a message) a file whose
bytes are no longer what that rewrite wrote.
"""

from __future__ import annotations

import codecs
import difflib
import errno
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

REWRITE_SUFFIXES = frozenset(
    {".md", ".markdown", ".mdx", ".html", ".htm", ".xhtml", ".txt", ".rst", ".bbcode"}
)
_HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})

# Characters that can continue a URL. What may follow a whole URL: a run of sentence
# punctuation (``.,:;!?'")`` ...), and then either the end or a character that cannot be
# part of a URL (space, ``"``, ``<``, ``>``, ``[``, a newline ...).
_URL_CHARS = r"\w.~/?#%=&+:@!$*,;'()\-"
_TRAILING = r"[.,:;!?'*)]"
_WHOLE = rf"(?={_TRAILING}*+(?:$|[^{_URL_CHARS}]))"

# Byte-order marks we decode through; anything else is read as UTF-8 with stray bytes
# carried through unchanged (``surrogateescape``), which round-trips every byte string.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


@dataclass
class Edit:
    """One replaced URL: at byte ``offset`` of the new file, ``new`` replaced ``old``."""

    offset: int
    new: bytes
    old: bytes


@dataclass
class RewriteResult:
    files_changed: int = 0
    links_replaced: int = 0
    diffs: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why), left alone

    def count(self, doc: Path, links: int, before: bytes, after: bytes, dry_run: bool) -> None:
        """One file changed (or that would change: then its diff is kept)."""
        self.files_changed += 1
        self.links_replaced += links
        self.changed.append(str(doc))
        if dry_run:
            self.diffs.append(_diff(doc, before, after))


# A document's first block decides whether it is text (binary files are skipped unread);
# a larger one than STREAM_ABOVE is rewritten a piece at a time (pieces end after a line
# end, else after any whitespace), so memory stays bounded whatever its size.
SNIFF_BYTES = 65536
STREAM_ABOVE = 8 * 1024 * 1024
STREAM_PIECE = 256 * 1024
_CUTS = re.compile(r"[\n \t\r]")

LINK_NOTE = "symbolic link; not followed (name the file itself to rewrite it)"
SPECIAL_NOTE = "not a regular file; not read"
BINARY_NOTE = "binary file (NUL bytes); not changed"


def documents(
    paths: Iterable[Path], skipped: list[tuple[str, str]] | None = None
) -> Iterable[Path]:
    """The files to look at: named files as given, folders walked for document suffixes.

    Walking never follows a symbolic link (to a file or a folder); such links, and named
    paths that are not regular files, are appended to ``skipped`` as (path, why)."""
    notes: list[tuple[str, str]] = [] if skipped is None else skipped
    for p in paths:
        if p.is_dir():
            for folder, dirs, files in os.walk(p):  # does not enter linked folders
                dirs.sort()
                for name in sorted(files):
                    sub = Path(folder, name)
                    if sub.suffix.lower() not in REWRITE_SUFFIXES:
                        continue
                    if sub.is_symlink():
                        notes.append((str(sub), LINK_NOTE))
                    elif sub.is_file():
                        yield sub
        elif p.exists() and not p.is_file():
            notes.append((str(p), SPECIAL_NOTE))
        else:
            yield p


def _open_document(doc: Path, follow: bool) -> BinaryIO:
    """``doc`` open for reading, refusing anything that is not a regular file when opened.
    A file found by walking (``follow`` false) is opened with ``O_NOFOLLOW``: one swapped
    for a link after the walk looked at it is refused, not followed."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(doc, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, LINK_NOTE) from None
        raise
    fh = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
        fh.close()
        raise OSError(errno.EINVAL, SPECIAL_NOTE)
    return fh


def is_binary(data: bytes) -> bool:
    """NUL bytes (git's test), unless a UTF-16/32 byte-order mark explains them."""
    return _codec(data)[1] == "utf-8" and b"\x00" in data[:65536]


def _codec(data: bytes) -> tuple[bytes, str]:
    for bom, name in _BOMS:
        if data.startswith(bom):
            return bom, name
    return b"", "utf-8"


def _errors(codec: str) -> str:
    return "surrogateescape" if codec == "utf-8" else "strict"


class Rewriter:
    """Compiled once per map; :meth:`edits` finds the replacements in one document."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = dict(mapping)
        self._plain = self._compile(mapping)
        # HTML writes & as &amp; inside attributes: match and write that spelling too
        for old, new in mapping.items():
            if "&" in old:
                self.mapping.setdefault(old.replace("&", "&amp;"), new.replace("&", "&amp;"))
        self._html = self._compile(self.mapping)

    @staticmethod
    def _compile(urls: Iterable[str]) -> re.Pattern[str] | None:
        olds = sorted(urls, key=len, reverse=True)
        if not olds:
            return None
        return re.compile("(?:" + "|".join(re.escape(o) for o in olds) + ")" + _WHOLE)

    @property
    def streamable(self) -> bool:
        """Can a document be cut after a line end, space, tab or CR? (No old URL holds
        one: then no match spans a cut, and what follows a match is judged the same on
        either side of it.)"""
        return not any(_CUTS.search(old) for old in self.mapping)

    def rewrite_bytes(self, data: bytes, *, html: bool) -> tuple[bytes, list[Edit]]:
        """The new bytes and the edits; ``data`` itself when nothing matched."""
        bom, codec = _codec(data)
        errors = _errors(codec)
        try:
            text = data[len(bom) :].decode(codec, errors)
        except UnicodeDecodeError:
            return data, []
        pieces: list[bytes] = [bom]
        edits = self.rewrite_text(text, codec, html=html, offset=len(bom), out=pieces)
        if not edits:
            return data, []
        return b"".join(pieces), edits

    def rewrite_text(
        self, text: str, codec: str, *, html: bool, offset: int, out: list[bytes]
    ) -> list[Edit]:
        """Append the encoded new text of ``text`` to ``out``; the edits, at byte offsets
        counted from ``offset`` (where this text starts in the new file)."""
        pattern = self._html if html else self._plain
        errors = _errors(codec)
        if pattern is None:
            out.append(text.encode(codec, errors))
            return []
        edits: list[Edit] = []
        pos = 0
        size = offset
        for m in pattern.finditer(text):
            before = text[pos : m.start()].encode(codec, errors)
            out.append(before)
            size += len(before)
            old = m.group(0).encode(codec, errors)
            new = self.mapping[m.group(0)].encode(codec, errors)
            if new != old:
                edits.append(Edit(size, new, old))
            out.append(new)
            size += len(new)
            pos = m.end()
        out.append(text[pos:].encode(codec, errors))
        return edits


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _diff(path: Path, old: bytes, new: bytes) -> str:
    bom, codec = _codec(old)
    errors = "replace"
    a = old[len(bom) :].decode(codec, errors).splitlines(keepends=True)
    b = new[len(bom) :].decode(codec, errors).splitlines(keepends=True)
    lines = difflib.unified_diff(a, b, fromfile=f"a/{path}", tofile=f"b/{path}")
    end = "\n\\ No newline at end of file\n"
    return "".join(line if line.endswith("\n") else line + end for line in lines)


def _replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` over ``path`` atomically, keeping its mode."""
    st = path.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".imgsync-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class UndoJournal:
    """Per-document records of rewrites, one JSON file per document, newest last."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _file(self, doc: Path) -> Path:
        key = hashlib.sha256(os.fsencode(doc)).hexdigest()[:32]
        return self.folder / f"{key}.json"

    def records(self, doc: Path) -> list[dict[str, object]]:
        try:
            data = json.loads(self._file(doc).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        recs = data.get("records") if isinstance(data, dict) else None
        return recs if isinstance(recs, list) else []

    def save(self, doc: Path, records: list[dict[str, object]]) -> None:
        target = self._file(doc)
        if not records:
            target.unlink(missing_ok=True)
            return
        if not self.folder.parent.exists():  # the state folder: private, as state/db makes it
            self.folder.parent.mkdir(mode=0o700, parents=True)
        self.folder.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=self.folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"path": str(doc), "records": records}, f)
        os.replace(tmp, target)

    def push(self, doc: Path, before: bytes, after: bytes, edits: list[Edit]) -> None:
        self.push_digests(doc, _sha(before), _sha(after), edits)

    def push_digests(self, doc: Path, before: str, after: str, edits: list[Edit]) -> None:
        recs = self.records(doc)
        recs.append(
            {
                "before": before,
                "after": after,
                "edits": [[e.offset, e.new.hex(), e.old.hex()] for e in edits],
            }
        )
        self.save(doc, recs)


def _open(doc: Path, named: set[Path], result: RewriteResult) -> tuple[BinaryIO, bytes] | None:
    """The open document and its first block; None when it is not read (a failure or a
    note recorded: a link, not a regular file, a binary file seen from its first block)."""
    try:
        fh = _open_document(doc, doc in named)
    except OSError as exc:
        if exc.strerror in (SPECIAL_NOTE, LINK_NOTE):
            result.skipped.append((str(doc), exc.strerror))
        else:
            result.failures.append((str(doc), f"cannot read: {exc.strerror or exc}"))
        return None
    try:
        head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        fh.close()
        result.failures.append((str(doc), f"cannot read: {exc.strerror or exc}"))
        return None
    if is_binary(head):
        fh.close()
        result.skipped.append((str(doc), BINARY_NOTE))
        return None
    return fh, head


def _load(doc: Path, named: set[Path], result: RewriteResult) -> bytes | None:
    """The whole document's bytes (binary or not), or None with a failure or a note."""
    try:
        with _open_document(doc, doc in named) as fh:
            return fh.read()
    except OSError as exc:
        if exc.strerror in (SPECIAL_NOTE, LINK_NOTE):
            result.skipped.append((str(doc), exc.strerror))
        else:
            result.failures.append((str(doc), f"cannot read: {exc.strerror or exc}"))
        return None


def rewrite(
    mapping: dict[str, str],
    paths: Iterable[Path],
    *,
    dry_run: bool,
    journal: UndoJournal | None = None,
) -> RewriteResult:
    """Replace every old URL of ``mapping`` in the documents under ``paths``."""
    result = RewriteResult()
    if not mapping:
        return result
    rw = Rewriter(mapping)
    paths = list(paths)
    named = {p for p in paths if not p.is_dir()}
    streamable = rw.streamable
    for doc in documents(paths, result.skipped):
        real = Path(os.path.realpath(doc))
        html = doc.suffix.lower() in _HTML_SUFFIXES
        opened = _open(doc, named, result)
        if opened is None:
            continue
        fh, head = opened
        with fh:
            try:
                large = os.fstat(fh.fileno()).st_size > STREAM_ABOVE and streamable
                if large:
                    _rewrite_streamed(rw, doc, real, fh, head, html, result, dry_run, journal)
                    continue
                data = head + fh.read()
            except OSError as exc:
                result.failures.append((str(doc), f"cannot read: {exc.strerror or exc}"))
                continue
        new, edits = rw.rewrite_bytes(data, html=html)
        if not edits:
            continue
        result.count(doc, len(edits), data, new, dry_run)
        if dry_run:
            continue
        try:
            if journal is not None:
                journal.push(real, data, new, edits)
            _replace_file(real, new)
        except OSError as exc:
            result.failures.append((str(doc), f"cannot write: {exc.strerror or exc}"))
    return result


def _pieces(fh: BinaryIO, head: bytes, codec: str, raw_seen: Any) -> Iterable[str]:
    """The document's text (after its byte-order mark) in pieces of about
    ``STREAM_PIECE`` bytes, each ending after a line end, else after a space, tab or
    carriage return (a piece with none grows until it has one, or the text ends); every
    block read after ``head`` is passed to ``raw_seen``. Raises UnicodeDecodeError."""
    decoder = codecs.getincrementaldecoder(codec)(_errors(codec))
    bom = _codec(head)[0]
    pending = decoder.decode(head[len(bom) :])
    while True:
        raw = fh.read(STREAM_PIECE)
        raw_seen(raw)
        pending += decoder.decode(raw, final=not raw)
        if not raw:
            if pending:
                yield pending
            return
        cut = pending.rfind("\n") + 1 or max(pending.rfind(c) for c in " \t\r") + 1
        if cut:
            yield pending[:cut]
            pending = pending[cut:]


def _rewrite_streamed(
    rw: Rewriter,
    doc: Path,
    real: Path,
    fh: BinaryIO,
    head: bytes,
    html: bool,
    result: RewriteResult,
    dry_run: bool,
    journal: UndoJournal | None,
) -> None:
    """Rewrite a large document a piece at a time into a temporary file beside it (memory
    bounded by the piece size), then replace it as :func:`_replace_file` does; a dry run
    keeps only the diff of the pieces that change."""
    bom, codec = _codec(head)
    before, after = hashlib.sha256(head), hashlib.sha256(bom)
    edits: list[Edit] = []
    hunks: list[str] = []
    size, line = len(bom), 0
    out: BinaryIO | None = None
    tmp = ""
    if not dry_run:
        fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".imgsync-tmp", dir=real.parent)
        out = os.fdopen(fd, "wb")
    try:
        if out is not None:
            out.write(bom)
        for text in _pieces(fh, head, codec, before.update):
            chunks: list[bytes] = []
            found = rw.rewrite_text(text, codec, html=html, offset=size, out=chunks)
            new = b"".join(chunks)
            after.update(new)
            size += len(new)
            if found:
                edits += found
                if dry_run:
                    hunks.append(_hunks(text, new.decode(codec, _errors(codec)), line))
            if dry_run:  # lines are numbered for the diff only
                line += len(text.splitlines())
            if out is not None:
                out.write(new)
        if not edits:
            return
        result.files_changed += 1
        result.links_replaced += len(edits)
        result.changed.append(str(doc))
        if dry_run:
            result.diffs.append(f"--- a/{doc}\n+++ b/{doc}\n" + "".join(hunks))
            return
        assert out is not None
        out.flush()
        os.fsync(out.fileno())
        out.close()
        os.chmod(tmp, os.stat(real).st_mode & 0o7777)
        if journal is not None:
            journal.push_digests(real, before.hexdigest(), after.hexdigest(), edits)
        os.replace(tmp, real)
        tmp = ""
    except UnicodeDecodeError:
        return  # not text in its own encoding after all: left as it is (as a whole read)
    except OSError as exc:
        result.failures.append((str(doc), f"cannot write: {exc.strerror or exc}"))
    finally:
        if out is not None:
            out.close()
        if tmp:
            Path(tmp).unlink(missing_ok=True)


def _hunks(old: str, new: str, line: int) -> str:
    """The unified-diff hunks of one piece (its lines numbered from ``line`` + 1)."""
    a = old.encode("utf-8", "surrogateescape").decode("utf-8", "replace").splitlines(True)
    b = new.encode("utf-8", "surrogateescape").decode("utf-8", "replace").splitlines(True)
    shifted = []
    end = "\n\\ No newline at end of file\n"
    for text in list(difflib.unified_diff(a, b, n=3))[2:]:
        m = _HUNK.match(text)
        if m:
            a0, a1, b0, b1 = m.groups()
            text = f"@@ -{int(a0) + line}{a1 or ''} +{int(b0) + line}{b1 or ''} @@\n"
        shifted.append(text if text.endswith("\n") else text + end)
    return "".join(shifted)


_HUNK = re.compile(r"@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


def _put_back(data: bytes, edits: list[list[Any]]) -> bytes | None:
    """``data`` with each edit's old bytes back in place of its new ones (one pass: a
    file with thousands of edits is not copied once per edit); None if one does not fit."""
    pieces: list[bytes] = []
    pos = 0
    for offset, new_hex, old_hex in edits:
        new_b = bytes.fromhex(new_hex)
        if offset < pos or data[offset : offset + len(new_b)] != new_b:
            return None
        pieces += (data[pos:offset], bytes.fromhex(old_hex))
        pos = offset + len(new_b)
    pieces.append(data[pos:])
    return b"".join(pieces)


def undo(paths: Iterable[Path], journal: UndoJournal, *, dry_run: bool) -> RewriteResult:
    """Put back what the last rewrite of each document changed.

    A document whose bytes differ from what that rewrite wrote is refused (listed in
    ``failures``) and left alone; its record is kept.
    """
    result = RewriteResult()
    paths = list(paths)
    named = {p for p in paths if not p.is_dir()}
    for doc in documents(paths, result.skipped):
        real = Path(os.path.realpath(doc))
        recs = journal.records(real)
        if not recs:
            continue
        data = _load(doc, named, result)
        if data is None:
            continue
        last = recs[-1]
        digest = _sha(data)
        if digest == last.get("before"):  # a rewrite that never reached the file
            if not dry_run:
                journal.save(real, recs[:-1])
            continue
        if digest != last.get("after"):
            result.failures.append(
                (str(doc), "edited since the last rewrite; not undone (restore it by hand)")
            )
            continue
        raw_edits = last.get("edits")
        assert isinstance(raw_edits, list)
        out = _put_back(data, raw_edits)
        if out is None:  # cannot happen when the hash matched
            result.failures.append((str(doc), "undo record does not fit the file"))
        else:
            result.count(doc, len(raw_edits), data, out, dry_run)
            if dry_run:
                continue
            try:
                _replace_file(real, out)
            except OSError as exc:
                result.failures.append((str(doc), f"cannot write: {exc.strerror or exc}"))
                continue
            journal.save(real, recs[:-1])
    return result
