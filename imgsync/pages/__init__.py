"""Pages imgsync writes for people to look at: a backup folder's gallery (``index.html``)
and a migration report. Both are static files that work offline from where they lie.

The engine calls :func:`after_run` once at the end of a run; ``imgsync report`` calls
:func:`report_from_state`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from imgsync.errors import LocalIOError, UsageError

if TYPE_CHECKING:
    from imgsync.pages.report import ReportResult
    from imgsync.pipeline.summary import Summary


def after_run(
    state_path: Path,
    summary: Summary,
    *,
    job: str,
    dst_path: Path | None,
    gallery: bool,
    report: Path | None = None,
) -> None:
    """At the end of a run: update the backup folder's gallery (``backup`` with
    ``gallery``) and write the report page (``report``). A page that cannot be written is
    reported on its own (``gallery_error``/``report_error``, exit 1), not as an item; the
    images are untouched either way."""
    if summary.dry_run or not (gallery or report):
        return
    from imgsync.state.reader import must_open

    with must_open(state_path) as db:
        if (
            gallery
            and summary.verb == "backup"
            and dst_path is not None
            and dst_path.is_dir()
            # nothing backed up there (a wrong token, an empty host): no empty page
            and (summary.copied or summary.present or (dst_path / "index.html").exists())
        ):
            from imgsync.pages.gallery import update_gallery

            try:
                res = update_gallery(db, dst_path, summary.dest, source=summary.source)
            except OSError as exc:
                summary.gallery_error = f"cannot write {dst_path / 'index.html'}: " + str(
                    exc.strerror or exc
                )
            else:
                summary.gallery_path = str(res.path)
        if report is not None:
            from imgsync.pages.report import write_report

            data = summary.to_json()
            data["_finished"] = time.time()
            try:
                write_report(
                    db, report, job=job, source=summary.source, dest=summary.dest, summary=data
                )
            except OSError as exc:
                summary.report_error = f"cannot write {report}: {exc.strerror or exc}"
            else:
                summary.report_path = str(report)


def report_from_state(
    state_path: Path, out: Path, source: str | None = None, dest: str | None = None
) -> ReportResult:
    """``imgsync report``: the report of the latest migrate (or backup) run recorded in
    state, optionally of the given source and destination keys. Raises ``UsageError``."""
    from imgsync.pages.report import write_report
    from imgsync.state.reader import open_reader

    db = open_reader(state_path, create=False)
    if db is None:
        raise UsageError(f"no state database at {state_path}: nothing has run yet")
    with db:
        run = db.latest_run(("migrate", "backup", "copy"), source, dest)
        if run is None:
            what = f" from {source or 'any source'} to {dest or 'any destination'}"
            raise UsageError(f"no finished migrate, backup or copy run{what} recorded in state")
        data = dict(run.summary)
        data["_finished"] = run.finished
        try:
            return write_report(
                db,
                out,
                job=run.job,
                source=str(data.get("source_key", data.get("source"))),
                dest=str(data.get("dest_key", data.get("dest"))),
                summary=data,
            )
        except OSError as exc:
            raise LocalIOError(
                f"cannot write {out}: {exc.strerror or exc}", path=str(out)
            ) from None
