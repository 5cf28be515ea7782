"""The delete half of ``imgsync sync``: remove from the destination what the source dropped.

Guarded, because deleting is the one thing imgsync can get irreversibly wrong:

* Nothing is deleted after a copy with any failure, or in a dry run.
* Only what *this source* wrote there is a candidate (state records, per destination and
  checksum, which sources wrote the bytes and which found them there and rely on them),
  and only while no other source relies on the same bytes at that destination. Files the
  user put there, another folder's copies, a backup's images: never touched.
* A candidate whose bytes the source still has (moved or renamed) is kept; at a folder
  destination, so is a path the source still has, and a path the source dropped is
  deleted only when imgsync wrote that file (its stamp is recorded) and those bytes are
  at the destination under a path the source has now (a file renamed in the source:
  the copy wrote it under its new name, the old name goes, as in a mirror).
* A folder destination's file is deleted only if it still holds the bytes imgsync wrote
  (the local provider checks, and refuses otherwise).
* More than ``max_delete`` candidates: nothing is deleted, and the run says so.
* Each delete is committed to state before the next one starts.
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from imgsync.errors import ImgsyncError, NotFound, Rejected, UsageError
from imgsync.localfs import display, key_path
from imgsync.models import RemoteItem
from imgsync.providers.base import Provider
from imgsync.state import queries
from imgsync.state.reader import StateReader
from imgsync.state.store import StateStore


@dataclass
class DeletePlan:
    # (remote id, sha256, delete url, url): a host may need the URL to confirm a delete
    candidates: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    refused: str | None = None


def plan_deletes(
    db: StateReader,
    src_root: str,
    src_key: str,
    dst_key: str,
    dst_is_folder: bool,
    max_delete: int,
) -> DeletePlan:
    """What a sync from the folder ``src_root`` may delete at ``dst_key``."""
    rows, source_rels, source_shas = db.delete_candidates(src_key, dst_key, src_root)
    plan = DeletePlan()
    plan.candidates = _candidates(db, dst_key, dst_is_folder, rows, source_rels, source_shas)
    if len(plan.candidates) > max_delete:
        plan.refused = (
            f"would delete {len(plan.candidates)} items, more than --max-delete {max_delete}; "
            "nothing deleted (raise --max-delete if this is intended)"
        )
    return plan


def dry_run_deletes(
    db: StateReader,
    src_root: str,
    src_key: str,
    dst_key: str,
    dst_is_folder: bool,
    *,
    vanished: list[str],
    rehashed: set[str],
    hashed_shas: set[str],
) -> DeletePlan:
    """What a real sync would delete after this dry run's copy, which recorded nothing:
    the folder as it is now is state's files minus those gone (``vanished``) and those
    read again (``rehashed`` rel keys, whose bytes are now ``hashed_shas``)."""
    rows, _rels, _shas = db.delete_candidates(src_key, dst_key, src_root)
    known = db.local_files(src_root, dst_key)
    gone = set(vanished)
    rels = {k for k in known if k not in gone} | rehashed
    shas = {v[5] for k, v in known.items() if k not in gone and k not in rehashed and v[5]}
    shas |= hashed_shas
    plan = DeletePlan()
    # a real run writes every file read again at its path (a folder destination)
    plan.candidates = _candidates(db, dst_key, dst_is_folder, rows, rels, shas, hashed_shas)
    return plan


def _candidates(
    db: StateReader,
    dst_key: str,
    dst_is_folder: bool,
    rows: list[tuple[str, str, str | None, str | None]],
    rels: set[str],
    shas: set[str],
    arriving: AbstractSet[str] = frozenset(),
) -> list[tuple[str, str, str | None, str | None]]:
    """The rows to delete, given the source's current rel keys and checksums (and, for a
    dry run, the checksums the copy would write under source paths)."""
    if not dst_is_folder:
        return [row for row in rows if row[1] not in shas]
    dropped = [row for row in rows if row[0] not in rels]
    if not any(row[1] in shas for row in dropped):
        return [row for row in dropped if row[1] not in shas]
    files = db.stamps_at(dst_key)
    # bytes at a path the source has now (or at the numbered name its copy was written
    # under, beside the user's own file): a renamed file's old name may go
    kept = {
        sha
        for rid, (_size, _stamp, sha) in files.items()
        if rid in rels or _unnumbered(rid) in rels
    } | arriving
    return [
        row
        for row in dropped
        if row[1] not in shas
        or (
            row[1] in kept
            and files.get(row[0], (None, None, ""))[1]
            and _unnumbered(row[0]) not in rels
        )
    ]


_NUMBERED = re.compile(r"^(.*) \(\d+\)((?:\.[^./]*)?)$")


def _unnumbered(key: str) -> str:
    """``a/img (2).png`` -> ``a/img.png``: the source path whose copy imgsync wrote under
    a numbered name because the user's own file held that name (kept while the source
    has that path)."""
    m = _NUMBERED.match(key)
    return m.group(1) + m.group(2) if m else key


async def run_deletes(
    dst: Provider, plan: DeletePlan, store: StateStore, src_key: str, dst_key: str
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Delete the planned items, each recorded before the next. Returns (deleted (id, sha),
    failures (item, message))."""
    if not dst.features.can_delete:
        raise UsageError(f"{dst.name} cannot delete items, so it cannot be a sync destination")
    deleted: list[tuple[str, str]] = []
    failures: list[tuple[str, str]] = []
    for remote_id, sha, delete_url, url in plan.candidates:
        item = RemoteItem(
            remote_id=remote_id, name=remote_id, url=url, delete_url=delete_url, sha256=sha
        )
        try:
            await dst.delete(item)
        except NotFound:
            pass
        except Rejected:
            continue  # the destination keeps it (a file changed since imgsync wrote it)
        except ImgsyncError as exc:
            failures.append((display(key_path(remote_id)), str(exc)))
            continue
        await queries.forget_location(store, dst_key, remote_id)
        await queries.forget_owners(store, dst_key, src_key, [sha])
        await store.flush()
        deleted.append((remote_id, sha))
    return deleted, failures
