"""The delete half of ``imgsync sync``: remove from the destination what the source dropped.

Guarded, because deleting is the one thing imgsync can get irreversibly wrong:

* Nothing is deleted after a copy with any failure, or in a dry run.
* Only what this source put there is a candidate. For a folder destination (which keeps
  relative paths) that is a file imgsync recorded at a path the source no longer has; for
  a host, an item whose upload the journal records from this source folder. Items other
  jobs or sources uploaded to the same account are never touched.
* A candidate whose bytes the source still has (moved or renamed) is kept.
* A folder destination's file is deleted only if it still holds the bytes imgsync wrote.
* More than ``max_delete`` candidates: nothing is deleted, and the run says so.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from imgsync.errors import ImgsyncError, NotFound, Rejected, UsageError
from imgsync.localfs import display, key_path
from imgsync.models import RemoteItem
from imgsync.providers.base import Provider


@dataclass
class DeletePlan:
    candidates: list[tuple[str, str, str | None]] = field(default_factory=list)  # id, sha, url
    refused: str | None = None


def plan_deletes(
    conn: sqlite3.Connection,
    src_root: str,
    src_key: str,
    dst_key: str,
    dst_is_folder: bool,
    max_delete: int,
) -> DeletePlan:
    """What a sync from the folder ``src_root`` may delete at ``dst_key``."""
    source_shas = {
        r[0] for r in conn.execute("SELECT sha256 FROM local_files WHERE root = ?", (src_root,))
    }
    plan = DeletePlan()
    if dst_is_folder:
        source_rels = {
            r[0] for r in conn.execute("SELECT rel FROM local_files WHERE root = ?", (src_root,))
        }
        rows = conn.execute(
            "SELECT remote_id, sha256, delete_url FROM locations WHERE remote = ?", (dst_key,)
        ).fetchall()
        plan.candidates = [
            (rid, sha, d)
            for rid, sha, d in rows
            if rid not in source_rels and sha not in source_shas
        ]
    else:
        rows = conn.execute(
            "SELECT l.remote_id, l.sha256, l.delete_url FROM locations l "
            "WHERE l.remote = ? AND l.sha256 IN (SELECT j.sha256 FROM journal j "
            "WHERE j.source = ? AND j.dest = ? AND j.stage IN ('uploaded', 'verified'))",
            (dst_key, src_key, dst_key),
        ).fetchall()
        plan.candidates = [(rid, sha, d) for rid, sha, d in rows if sha not in source_shas]
    if len(plan.candidates) > max_delete:
        plan.refused = (
            f"would delete {len(plan.candidates)} items, more than --max-delete {max_delete}; "
            "nothing deleted (raise --max-delete if this is intended)"
        )
    return plan


async def run_deletes(
    dst: Provider, plan: DeletePlan
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Delete the planned items. Returns (deleted (id, sha), failures (item, message))."""
    if not dst.features.can_delete:
        raise UsageError(f"{dst.name} cannot delete items, so it cannot be a sync destination")
    deleted: list[tuple[str, str]] = []
    failures: list[tuple[str, str]] = []
    for remote_id, sha, delete_url in plan.candidates:
        item = RemoteItem(remote_id=remote_id, name=remote_id, delete_url=delete_url, sha256=sha)
        try:
            await dst.delete(item)
        except NotFound:
            pass
        except Rejected:
            continue  # the destination keeps it (a file changed since imgsync wrote it)
        except ImgsyncError as exc:
            failures.append((display(key_path(remote_id)), str(exc)))
            continue
        deleted.append((remote_id, sha))
    return deleted, failures
