"""The options and the outcome of a copy run (importable without the async engine)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from imgsync.errors import EXIT_ITEM_FAILURES, EXIT_OK, EXIT_REMOTE_FAILURE
from imgsync.pipeline.progress import human_bytes


class StopSignal(Protocol):
    """Anything with ``is_set()`` (``asyncio.Event``, ``anyio.Event``): set, it makes a
    run's sources stop handing out new items."""

    def is_set(self) -> bool: ...


@dataclass
class CopyOptions:
    job: str = "copy"
    verb: str = "copy"
    dry_run: bool = False
    transfers: int = 4
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    sidecars: bool = False  # backup: a JSON metadata file beside each image
    include_non_images: bool = False
    follow_links: bool = False  # a folder source: follow symbolic links inside it (-L)
    max_delete: int = 100  # sync: refuse to delete more than this in one run
    max_item_bytes: int = 2 * 1024**3  # one item larger than this fails (above host limits)
    item_timeout: float = 3600.0  # overall deadline for one item's download and upload
    spool_threshold: int = 8 * 1024 * 1024  # bytes kept in memory before spooling to disk
    log_items: bool = False  # one info line per transferred item (the daemon); else debug
    # an item another live imgsync holds a lease on is waited for this long (re-checked
    # every lease_poll seconds), then reported as not done
    lease_wait: float = 300.0
    lease_poll: float = 2.0
    # the waiting's monotonic clock and sleep (None: the real ones); tests pass a FakeClock
    clock: Callable[[], float] | None = field(default=None, repr=False, compare=False)
    sleep: Callable[[float], Awaitable[None]] | None = field(
        default=None, repr=False, compare=False
    )


def shown_key(key: str) -> str:
    """A state key as a person reads it when no configured name is at hand: a folder's
    path, a host's address without the account fingerprint."""
    if key.startswith("local:"):
        return key.removeprefix("local:")
    return key.partition("#")[0]


@dataclass
class Summary:
    """The outcome of one run; ``line()`` is the one-line summary, ``to_json()`` the machine one."""

    verb: str
    source: str  # the state keys (what the source and destination are) ...
    dest: str
    dry_run: bool = False
    # ... and how the user names them (``gy:``, a folder's path): what is shown
    source_name: str = ""
    dest_name: str = ""
    checked: int = 0
    copied: int = 0
    present: int = 0
    failed: int = 0
    bytes: int = 0
    non_images: int = 0
    # left out by --include/--exclude: not checked (not in the balance), only counted
    filtered: int = 0
    # symbolic links in a folder source left alone: (printable path, why), one warning each
    links_skipped: list[tuple[str, str]] = field(default_factory=list)
    # of those, source files that were a link only by the time they were read (swapped
    # after the scan): the run does not save its scan mark, so a file put back is copied
    links_at_read: int = 0
    not_attempted: int = 0  # left alone after the remote failed as a whole
    # still leased by another running imgsync at the wait's deadline: not done
    held: int = 0
    held_by: set[str] = field(default_factory=set)  # "pid P" (or "host:pid" elsewhere)
    # uploads sent again after the host got them but the reply broke off: the host may
    # hold an extra copy imgsync has no delete link for (item, what happened)
    possible_duplicates: list[tuple[str, str]] = field(default_factory=list)
    sidecars_restored: int = 0  # backup: sidecars deleted by hand, written again
    deleted: int = 0  # sync: removed from the destination
    delete_note: str | None = None  # sync: why nothing was deleted
    elapsed: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    remote_failure: str | None = None
    would_copy: list[str] = field(default_factory=list)  # dry runs: what is missing
    # folder destinations: files overwritten in place since imgsync wrote them (other size)
    altered: list[str] = field(default_factory=list)
    would_delete: list[str] = field(default_factory=list)  # sync --dry-run: what would go
    map_rows: int | None = None  # migrate: rows written to the URL map
    map_path: str | None = None
    gallery_path: str | None = None  # backup: the folder's index.html, updated
    report_path: str | None = None  # migrate --report: the page written
    # pages that could not be written (not items: the images are fine): exit 1
    gallery_error: str | None = None
    report_error: str | None = None

    def link_skipped(self, item: str, why: str, *, at_read: bool = False) -> None:
        """A symbolic link left alone (one warning line): found by the scan, or by the
        read of a file the scan saw (``at_read``)."""
        self.links_skipped.append((item, why))
        if at_read:
            self.links_at_read += 1

    def fail(self, item: str, message: str) -> None:
        self.failed += 1
        if len(self.failures) < 1000:
            self.failures.append((item, message))

    @property
    def exit_code(self) -> int:
        if self.remote_failure:
            return EXIT_REMOTE_FAILURE
        trouble = self.failed or self.held or self.gallery_error or self.report_error
        return EXIT_ITEM_FAILURES if trouble else EXIT_OK

    def held_note(self) -> str:
        """``N held by another running imgsync (pid P)``."""
        who = ", ".join(sorted(self.held_by))
        return f"{self.held} held by another running imgsync ({who})"

    @property
    def shown_source(self) -> str:
        return self.source_name or shown_key(self.source)

    @property
    def shown_dest(self) -> str:
        return self.dest_name or shown_key(self.dest)

    def line(self) -> str:
        rate = self.bytes / self.elapsed if self.elapsed > 0 else 0.0
        done = (  # a dry run moved nothing: no rate
            f"would copy {self.copied} ({human_bytes(self.bytes)})"
            if self.dry_run
            else f"copied {self.copied} ({human_bytes(self.bytes)}, {human_bytes(rate)}/s)"
        )
        text = (
            f"{self.verb} {self.shown_source} -> {self.shown_dest}: {self.checked} checked, "
            f"{done}, {self.present} already there, {self.failed} failed"
        )
        if self.non_images:
            text += f", {self.non_images} non-images skipped"
        if self.filtered:
            text += f", skipped by filter: {self.filtered}"
        if self.links_skipped:
            text += f", {len(self.links_skipped)} symlinks skipped"
        if self.sidecars_restored:
            n = self.sidecars_restored
            text += f", {n} sidecar{'s' if n != 1 else ''} written again"
        if self.not_attempted:
            text += f", {self.not_attempted} not attempted"
        if self.held:
            text += f", {self.held_note()} (not done; run again)"
        if self.possible_duplicates:
            text += (
                f", {len(self.possible_duplicates)} possible duplicates (reply lost, sent again)"
            )
        if self.verb == "sync" and self.dry_run and not self.delete_note:
            text += f", would delete {len(self.would_delete)}"
        elif self.verb == "sync":
            text += f", {self.deleted} deleted"
            if self.delete_note:
                text += f" ({self.delete_note})"
        text += f" in {self.elapsed:.2f}s"
        if self.remote_failure:
            text += f"; stopped: {self.remote_failure}"
        if self.map_path is not None:
            text += f"; URL map: {self.map_rows} rows in {self.map_path}"
        if self.gallery_path is not None:
            text += f"; gallery: {self.gallery_path}"
        if self.report_path is not None:
            text += f"; report: {self.report_path}"
        if self.gallery_error is not None:
            text += f"\ngallery not written: {self.gallery_error}"
        if self.report_error is not None:
            text += f"\nreport not written: {self.report_error}"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "verb": self.verb,
            "source": self.shown_source,
            "dest": self.shown_dest,
            "source_key": self.source,
            "dest_key": self.dest,
            "dry_run": self.dry_run,
            "checked": self.checked,
            "copied": self.copied,
            "already_present": self.present,
            "failed": self.failed,
            "bytes": self.bytes,
            "non_images_skipped": self.non_images,
            "skipped_by_filter": self.filtered,
            "symlinks_skipped": len(self.links_skipped),
            "not_attempted": self.not_attempted,
            "held_elsewhere": self.held,
            "held_by": sorted(self.held_by),
            "possible_duplicates": [{"item": i, "note": n} for i, n in self.possible_duplicates],
            "sidecars_restored": self.sidecars_restored,
            "deleted": self.deleted,
            "delete_note": self.delete_note,
            "elapsed": round(self.elapsed, 3),
            "failures": [{"item": i, "error": e} for i, e in self.failures],
            "remote_failure": self.remote_failure,
            "exit_code": self.exit_code,
            "missing": self.would_copy if self.dry_run else None,
            "altered": self.altered,
            "would_delete": self.would_delete if self.dry_run else None,
            "map_rows": self.map_rows,
            "map_path": self.map_path,
            "gallery": self.gallery_path,
            "report": self.report_path,
            "gallery_error": self.gallery_error,
            "report_error": self.report_error,
        }
