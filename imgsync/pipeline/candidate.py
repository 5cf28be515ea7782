"""One source item on its way through the copy pipeline, and the batch sizes."""

from __future__ import annotations

from dataclasses import dataclass

from imgsync.hashing import Digest
from imgsync.localfs import ScanEntry
from imgsync.models import RemoteItem
from imgsync.pipeline.transfer import Body
from imgsync.state.queries import KnownFile

BATCH_FILES = 256
BATCH_BYTES = 8 * 1024 * 1024  # a larger file travels alone
HOST_BATCH = 16  # host items handed to a worker at once (each streamed on its own)


@dataclass(slots=True)
class Candidate:
    """One source item on its way through the pipeline."""

    source_id: str  # path key (local) or remote id
    rel: str  # relative path at a local destination; the base name is the upload name
    scan: ScanEntry | None = None
    known: KnownFile | None = None
    remote: RemoteItem | None = None
    sha256: str | None = None
    body: Body | None = None
    page: int = -1
    handed: bool = False  # given to the committer, which finishes it
    taken_over: bool = False  # its lease was taken from a holder that did not finish
    search_since: float | None = None  # ... that began sending it then: searched back to it
    taken_at: int = 0  # when (the run's shared search's mark) its lease was taken over

    @property
    def digest(self) -> Digest | None:
        return self.body.digest if self.body is not None else None
