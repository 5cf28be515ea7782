"""``imgsync verify``: are the recorded copies still there, and still the same bytes?

Checking one location of a host takes one GET through the shared client (so the per-host
limiter paces it like every other request):

* 404/410 -> **gone**; an answer that is not an image (a 200 with an HTML page: the host's
  "removed" placeholder, a login wall) -> **gone**; a redirect to another file whose bytes
  are not the image (Imgur's ``removed.png``) -> **gone**;
* an image whose bytes are not the recorded ones -> **altered** (a host that re-encodes
  uploads, declared in its ``Features``, has the bytes first seen kept as its baseline);
* a transport failure, a timeout, a refusal (403), a paused host -> **unreachable**, kept
  apart from gone: the next run checks it again;
* otherwise **alive**. Without ``--full`` a validator the host sends (``Content-MD5``, an
  MD5 ``ETag``) that matches the recorded MD5 settles it without reading the body, and a
  ``Content-Length`` other than the recorded size settles "altered"; with ``--full`` (or
  without a validator) the body is read and its SHA-256 compared.

The GET carries the remote's credential (its token header) when the URL is on the remote's
own origin (a host that hides private images from anyone else, or paces anonymous
requests harder), never for another origin: redirects are then followed hop by hop and
the credential is dropped at the first hop that leaves the origin.

A Discord-style signed URL (``ex``/``is``/``hm``) that has expired answers 404 while the
image is still there: such an answer is not "gone". The remote is asked for a fresh URL
(``Provider.refresh_url``); the fresh one is checked and, alive, recorded in place of the
old; a host that gives none (no refresh route: Discord Images documents none, and its
provider's is a guess; or one that answers with the same, or another expired, URL) leaves
the location **unreachable** ("expired"), never gone. "Expired" allows for the host's
clock being ahead of ours (:data:`CLOCK_SKEW`). A signed URL far from its expiry that
answers 404 is gone like any other. An image the host deleted for real behind an expired
URL is gone only on the host's definite word: the fresh URL answers 404, or the refresh
route, asked in the same request about another image of the remote last seen alive (a
control), renews that one and not this one. A refresh that fails (a 5xx, a timeout), a
route that renews nothing (the control left out too) or no control to ask about leave it
unreachable: a transient failure never makes a live image gone.

A folder's location is checked by hashing the file (missing -> gone).

Every verdict is written to state with its time as it is made. A full check of a remote
is a *pass*: an interrupted pass resumes with the locations it had not checked yet.
``--sample N`` checks the N least recently checked locations (a rotating sample).

Repair (``--repair DEST``): for each gone or altered location not yet repaired, the bytes
are taken from another recorded copy (a folder's file first, then another host), checked
against the SHA-256, and uploaded to DEST under a lease (as every upload is), unless DEST
already holds a live copy, which is then used as it is. A copy at DEST that cannot be
checked (refused, not answering) is neither trusted nor doubled: that image's repair fails
until it answers, or, for a copy DEST refuses to serve (403), until the user says it is dead
(``ignore_unreachable_dest``, the CLI's ``--ignore-unreachable-dest``: it is then replaced
like a gone one). A copy DEST gave no answer about (a timeout, a 5xx: ``Verdict.transient``)
is never taken for dead, even then: that repair is left for the next run
(``VerifyReport.left_for_next_run``). The dead location is forgotten, the
check remembers what replaced it, and the old URL -> new URL pairs are returned for the
map and for rewriting documents. An image with no other good copy is reported as lost.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import anyio
import anyio.to_thread

from imgsync.config import Config, RemoteConfig
from imgsync.errors import (
    AuthError,
    Duplicate,
    ImgsyncError,
    NotFound,
    ProviderError,
    RemotePaused,
    RemoteUnavailable,
    ReplyLost,
    ResponseError,
    TransientError,
    UsageError,
)
from imgsync.localfs import key_path, safe_name
from imgsync.log import get_logger, redact
from imgsync.models import ItemMeta, RemoteItem, guess_mime, signed_expiry, sniff_image
from imgsync.pipeline.run import _spool_dir as spool_dir
from imgsync.pipeline.summary import StopSignal
from imgsync.pipeline.transfer import SPOOL_THRESHOLD, Body, fetch, read_local
from imgsync.providers.base import MAX_FILE_HOPS, FileHop, file_hop
from imgsync.runtime import Runtime, resolve_spec
from imgsync.state import checks, queries
from imgsync.state.checks import Broken, Target, Verdict
from imgsync.state.store import StateStore

log = get_logger("imgsync.verify")

MAX_CHECK_BYTES = 2 * 1024**3
UNREACHABLE_STREAK = 8  # this many unreachable in a row: stop checking that remote this run
EXPIRED = "the signed URL expired"
# a signed URL this close to its expiry by our clock counts as expired: the host's clock
# may be ahead of ours, and it already answers 404
CLOCK_SKEW = 600.0
_SNIFF = 512

# what a repair that succeeded did: uploaded; found (the upload of a run that did not
# finish, found at DEST); relinked (to a live copy DEST held); alive again (no repair needed)
REPAIRED = ("uploaded", "found", "relinked", "alive again")

# ``url`` -> the remote's credential headers for a GET of it ({} for another origin)
Credentials = Callable[[str], dict[str, str]]


@dataclass(frozen=True)
class VerifyOptions:
    full: bool = False
    sample: int | None = None  # check only the N least recently checked locations
    transfers: int = 4
    repair_to: str | None = None  # DEST spec (``NAME:``)
    dry_run: bool = False
    # a copy DEST already holds that cannot be checked (it answers 403 for good, say) is
    # treated as dead: uploaded again and its URL mapped to the new one (default: the
    # repair of that image fails, and the message names this option)
    ignore_unreachable_dest: bool = False
    max_item_bytes: int = MAX_CHECK_BYTES
    # a repair whose bytes another run is uploading to DEST now waits for it up to
    # lease_wait seconds (looking every lease_poll), then relinks to what it recorded
    lease_wait: float = 120.0
    lease_poll: float = 0.5
    # the waiting's monotonic clock and sleep (None: the real ones); tests pass a FakeClock
    clock: Callable[[], float] | None = field(default=None, repr=False, compare=False)
    # unix time, to tell whether a signed URL expired (None: the real one)
    wall: Callable[[], float] | None = field(default=None, repr=False, compare=False)
    sleep: Callable[[float], Awaitable[None]] | None = field(
        default=None, repr=False, compare=False
    )


@dataclass
class RemoteResult:
    """What one remote's check found."""

    name: str  # as the user knows it (``chv``), or the state key
    key: str
    checked: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(checks.STATUSES, 0))
    problems: list[Verdict] = field(default_factory=list)  # every non-alive verdict
    resumed: bool = False
    complete: bool = True  # False: stopped before every location was checked
    gave_up: str = ""  # why the rest was left for the next run (the host seems down)

    def to_json(self) -> dict[str, Any]:
        return {
            "remote": self.name,
            "checked": self.checked,
            **self.counts,
            "resumed": self.resumed,
            "complete": self.complete,
            "gave_up": self.gave_up or None,
            "problems": [
                {"id": v.remote_id, "url": v.url, "status": v.status, "detail": v.detail}
                for v in self.problems
            ],
        }


@dataclass
class Repair:
    """What happened (or would happen) to one dead location."""

    remote: str
    remote_id: str
    sha256: str
    old_url: str | None
    old_page: str | None
    action: str  # uploaded | found | relinked | would upload | would relink | lost | failed
    source: str = ""  # where the bytes came from
    new_url: str | None = None
    new_page: str | None = None
    error: str = ""
    dest: str = ""  # DEST's name
    # a copy DEST already held, as the repair found it when it checked it just now:
    # alive (re-used) | gone | altered (replaced by the upload) | unreachable (not relied
    # on) | None (DEST held none)
    dest_copy: str | None = None
    dest_detail: str = ""
    # that copy could not be checked because DEST gave no answer (timeout, 5xx): the
    # repair is left for the next run, with or without ``ignore_unreachable_dest``
    dest_transient: bool = False
    # dead copies at DEST the upload replaced: (url, page url) each
    replaced: list[tuple[str | None, str | None]] = field(default_factory=list)

    def pairs(self) -> list[tuple[str, str]]:
        """(old URL, new URL) for the map and the documents."""
        out = []
        for old_url, old_page in [(self.old_url, self.old_page), *self.replaced]:
            if old_url and self.new_url and old_url != self.new_url:
                out.append((old_url, self.new_url))
            new_page = self.new_page or self.new_url
            if old_page and new_page and old_page not in (old_url, new_page):
                out.append((old_page, new_page))
        return out

    @property
    def note(self) -> str:
        """What the repair made of the copy DEST already held, in words."""
        where = self.dest or "the destination"
        if self.dest_copy == "alive":
            return f"re-used the copy already at {where}, checked alive just now (same bytes)"
        if self.dest_copy in ("gone", "altered"):
            return (
                f"the copy already at {where} is {self.dest_copy} ({self.dest_detail}): "
                "not trusted, uploaded again"
                if self.action in ("uploaded", "found", "would upload")
                else f"the copy already at {where} is {self.dest_copy} ({self.dest_detail})"
            )
        if self.dest_copy == "unreachable":
            if self.dest_transient:
                return (
                    f"the copy already at {where} did not answer ({self.dest_detail}): "
                    "left alone, checked again next run"
                )
            if self.action in ("uploaded", "found", "would upload"):
                return (
                    f"the copy already at {where} could not be checked ({self.dest_detail}): "
                    "treated as dead (--ignore-unreachable-dest), uploaded again"
                )
            return (
                f"the copy already at {where} could not be checked ({self.dest_detail}): "
                "not relied on"
            )
        return ""

    def to_json(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "id": self.remote_id,
            "sha256": self.sha256,
            "old_url": self.old_url,
            "action": self.action,
            "source": self.source,
            "new_url": self.new_url,
            "error": self.error,
            "dest_copy": self.dest_copy,
            "dest_no_answer": self.dest_transient,
            "note": self.note,
            "replaced": [url for url, _page in self.replaced if url],
        }


@dataclass
class VerifyReport:
    remotes: list[RemoteResult] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)
    earlier: list[Repair] = field(default_factory=list)  # repaired by earlier runs
    dest: str | None = None
    dry_run: bool = False

    @property
    def left_for_next_run(self) -> int:
        """Repairs left alone because the copy DEST already holds did not answer."""
        return sum(1 for r in self.repairs if r.dest_transient and r.action not in REPAIRED)

    @property
    def not_alive(self) -> int:
        return sum(r.checked - r.counts["alive"] for r in self.remotes)

    def mapping(self) -> dict[str, str]:
        """Old URL -> new URL of every repair done now or earlier (or, dry run, known in
        advance), each followed to its last replacement (A died for B, then B for C:
        A -> C), so a document never gets a URL that is known dead."""
        pairs = {old: new for r in (*self.earlier, *self.repairs) for old, new in r.pairs() if new}
        out = {}
        for old, new in pairs.items():
            seen = {old}
            while new in pairs and new not in seen:
                seen.add(new)
                new = pairs[new]
            if new != old:
                out[old] = new
        return out

    @property
    def exit_code(self) -> int:
        """0 when every checked location is alive (or, repairing, every dead one was
        repaired); 1 otherwise."""
        if self.dest is not None and not self.dry_run:
            left = [r for r in self.repairs if r.action not in REPAIRED]
            unreachable = sum(r.counts["unreachable"] for r in self.remotes)
            return 1 if left or unreachable else 0
        return 1 if self.not_alive else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "remotes": [r.to_json() for r in self.remotes],
            "repair_to": self.dest,
            "dry_run": self.dry_run,
            "repairs": [r.to_json() for r in self.repairs],
            "left_for_next_run": self.left_for_next_run,
        }


# ---- checking one location -----------------------------------------------------------


def _path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}"


def _validator(headers: Any) -> str | None:
    """An MD5 of the body the host vouches for: ``Content-MD5`` or a plain-MD5 ETag."""
    raw = headers.get("Content-MD5")
    if raw:
        try:
            return base64.b64decode(raw, validate=True).hex()
        except ValueError:
            return None
    etag = (headers.get("ETag") or "").strip('"').lower()
    if len(etag) == 32 and all(c in "0123456789abcdef" for c in etag):
        return etag
    return None


def judge(
    target: Target,
    *,
    seen_sha: str,
    head: bytes,
    seen_md5: str | None = None,
    content_type: str,
    redirected_to: str | None,
    reencodes: bool,
) -> Verdict:
    """The verdict on a 2xx answer whose body hashed to ``seen_sha``."""

    def verdict(status: str, detail: str, seen: str | None = None) -> Verdict:
        return Verdict(
            target.remote_id, target.sha256, target.url, target.page_url, status, detail, seen
        )

    if sniff_image(head) is None:
        kind = "an HTML page" if b"<" in head[:200] or "html" in content_type else "not an image"
        return verdict("gone", f"answers 200 with {kind} (the host's placeholder)")
    if seen_sha == target.sha256 or seen_sha == target.baseline:
        return verdict("alive", "same bytes", seen_sha)
    if seen_md5 is not None and target.md5 and seen_md5 == target.md5.lower():
        # the bytes the host said it stored when it converted the upload (BMP -> PNG)
        return verdict("alive", "the host's converted copy, as it reported it", seen_sha)
    if redirected_to is not None:
        return verdict("gone", f"redirected to {redacted_url(redirected_to)} (a placeholder)")
    if reencodes and target.baseline is None and target.checked_at is None:
        return verdict("alive", "re-encoded by the host; these bytes are its baseline", seen_sha)
    return verdict("altered", f"bytes differ (sha256 {seen_sha[:12]}...)", seen_sha)


def redacted_url(url: str) -> str:
    return redact(url)


def no_answer(exc: BaseException) -> bool:
    """The host gave no answer about the image at all: a timeout, a 5xx, a reset, a body
    cut short, a rate refusal, a paused host or one whose breaker is open (retried per the
    retry policy before it gets here). Such a failure says nothing about the image, unlike
    a refusal (401/403) or a 404."""
    return isinstance(exc, TransientError | RemotePaused | RemoteUnavailable | OSError)


@contextlib.asynccontextmanager
async def open_checked(
    http: Any, remote: str, url: str, auth: Credentials | None
) -> AsyncIterator[Any]:
    """GET ``url`` through the shared client (its limiter, retries, redaction). With
    ``auth``, the remote's credential goes with a request to the remote's own origin only:
    redirects are then followed here, hop by hop, asking ``auth`` again for each, so a
    redirect to a CDN or another storage never carries it (aiohttp would forward a custom
    header such as ``X-API-Key`` to any origin)."""
    for _ in range(MAX_FILE_HOPS + 1):
        headers = auth(url) if auth is not None else {}
        if not headers:
            async with http.stream(url, remote=remote, allow_redirects=True) as body:
                yield body
            return
        try:
            async with http.stream(
                url, remote=remote, headers=headers, allow_redirects=False, map_error=file_hop
            ) as body:
                yield body
            return
        except FileHop as hop:
            url = urljoin(url, hop.location)
    raise ResponseError(f"more than {MAX_FILE_HOPS} redirects", remote=remote)


async def check_host(
    http: Any,
    remote: str,
    target: Target,
    opts: VerifyOptions,
    *,
    reencodes: bool,
    auth: Credentials | None = None,
) -> Verdict:
    """One GET of a host location (see the module docstring); ``auth`` gives the remote's
    credential for a URL on its own origin."""

    def verdict(status: str, detail: str) -> Verdict:
        return Verdict(target.remote_id, target.sha256, target.url, target.page_url, status, detail)

    if not target.url:
        return verdict("unreachable", "no URL recorded for this location")
    try:
        async with open_checked(http, remote, target.url, auth) as body:
            redirected = body.url if _path_of(body.url) != _path_of(target.url) else None
            ctype = body.content_type or ""
            if not opts.full and redirected is None and not reencodes:
                vouched = _validator(body.headers)
                if vouched is not None and target.md5 and ctype.startswith("image/"):
                    same = vouched == target.md5.lower()
                    return verdict(
                        "alive" if same else "altered",
                        "the host's checksum matches"
                        if same
                        else "the host's checksum differs from the recorded one",
                    )
                if (
                    body.size is not None
                    and target.size is not None
                    and body.size != target.size
                    and ctype.startswith("image/")
                ):
                    return verdict(
                        "altered", f"{body.size} bytes instead of the recorded {target.size}"
                    )
            sha = hashlib.sha256()
            md5 = hashlib.md5()
            head = b""
            async for chunk in body:
                if len(head) < _SNIFF:
                    head += chunk[: _SNIFF - len(head)]
                sha.update(chunk)
                md5.update(chunk)
                if body.received > opts.max_item_bytes:
                    return verdict("altered", f"more than {opts.max_item_bytes} bytes")
    except NotFound as exc:
        return verdict("gone", f"HTTP {exc.status or 404}")
    except AuthError as exc:
        return verdict("unreachable", f"refused (HTTP {exc.status}): hotlink block or login wall")
    except ProviderError as exc:
        return verdict("unreachable", redact(str(exc))[:300])._replace(transient=no_answer(exc))
    except OSError as exc:  # a spool or socket failure outside the client's mapping
        return verdict("unreachable", redact(str(exc))[:300])._replace(transient=True)
    return judge(
        target,
        seen_sha=sha.hexdigest(),
        seen_md5=md5.hexdigest(),
        head=head,
        content_type=ctype,
        redirected_to=redirected,
        reencodes=reencodes,
    )


def check_local(root: str, target: Target) -> Verdict:
    """A folder's location: the file must be there with the recorded bytes."""
    from imgsync.localfs import file_sha256

    path = os.path.join(root, key_path(target.remote_id))

    def verdict(status: str, detail: str, seen: str | None = None) -> Verdict:
        return Verdict(
            target.remote_id, target.sha256, target.url, target.page_url, status, detail, seen
        )

    if not os.path.lexists(path):
        return verdict("gone", "file missing")
    seen = file_sha256(path)
    if seen is None:
        return verdict("unreachable", "cannot read the file")
    if seen != target.sha256:
        return verdict("altered", f"bytes differ (sha256 {seen[:12]}...)", seen)
    return verdict("alive", "same bytes", seen)


# ---- running a check of remotes -------------------------------------------------------


def known_remotes(cfg: Config) -> dict[str, RemoteConfig]:
    """state key -> configured remote (the first name, sorted, for a shared key)."""
    out: dict[str, RemoteConfig] = {}
    for name in sorted(cfg.remotes):
        try:
            remote, key = resolve_spec(cfg, f"{name}:")
        except ImgsyncError:
            continue
        out.setdefault(key, remote)
    return out


class Verifier:
    """Checks remotes' recorded locations and repairs what died; one per run."""

    def __init__(
        self,
        cfg: Config,
        rt: Runtime,
        store: StateStore,
        opts: VerifyOptions,
        on_verdict: Callable[[str, Verdict], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.rt = rt
        self.store = store
        self.opts = opts
        self.on_verdict = on_verdict
        self.by_key = known_remotes(cfg)
        self.definite: set[tuple[str, str]] = set()  # (remote, id) found 404/410 this run
        self._providers: dict[str, Any] = {}
        self._spool = spool_dir(cfg)

    def name_of(self, key: str) -> str:
        remote = self.by_key.get(key)
        return remote.name if remote is not None else key

    async def _reencodes(self, key: str) -> bool:
        remote = self.by_key.get(key)
        if remote is None or remote.type == "local":
            return False
        from imgsync.providers import provider_class

        return bool(provider_class(remote.type).features.reencodes_uploads)

    async def _auth(self, key: str) -> Credentials | None:
        """The remote's credential for its own image URLs (None: a folder, an unknown
        remote, or a remote the provider cannot open)."""
        remote = self.by_key.get(key)
        if remote is None or remote.type == "local":
            return None
        try:
            provider = await self._provider(remote)
        except ImgsyncError:
            return None
        creds: Credentials = provider.credentials_for
        return creds

    async def _check(
        self,
        key: str,
        t: Target,
        opts: VerifyOptions,
        *,
        reencodes: bool,
        auth: Credentials | None,
    ) -> Verdict:
        """One host location checked (see :func:`check_host`), an expired signed URL
        renewed first (see the module docstring)."""
        http = await self.rt.http()
        name = self.name_of(key)
        v = await check_host(http, name, t, opts, reencodes=reencodes, auth=auth)
        expires = signed_expiry(t.url)
        now = (self.opts.wall or time.time)()
        if v.status not in ("gone", "unreachable") or expires is None:
            return v
        if expires > now + CLOCK_SKEW:
            return v  # far from its expiry: a 404 there is the image's
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
        remote = self.by_key.get(key)
        fresh = None
        try:
            if remote is not None:
                control = await checks.control_url(self.store, key, t.remote_id)
                fresh = await (await self._provider(remote)).refresh_url(
                    t.url or "", control=control
                )
        except NotFound as exc:
            # the route renewed another image of this remote in the same request but not
            # this one: the host's own answer that it no longer has it
            return v._replace(
                status="gone",
                detail=f"{EXPIRED} {when}, and the host no longer has it: "
                f"{redact(exc.detail)[:200]}",
            )
        except ImgsyncError as exc:
            return v._replace(
                status="unreachable",
                detail=f"{EXPIRED} {when}; renewing it failed: {redact(str(exc))[:200]}",
                transient=no_answer(exc),
            )
        if fresh and (fresh == t.url or (signed_expiry(fresh) or now + 1) <= now):
            fresh = None  # the route answered but renewed nothing: no news of the image
        if not fresh:
            return v._replace(
                status="unreachable",
                detail=f"{EXPIRED} {when} and the host gives no fresh one (not counted as gone)",
            )
        again = await check_host(
            http, name, t._replace(url=fresh), opts, reencodes=reencodes, auth=auth
        )
        if again.status == "alive":
            await checks.set_url(self.store, key, t.remote_id, fresh)
            return again._replace(detail=f"{again.detail} ({EXPIRED} {when}: renewed)")
        # the fresh URL answers gone or altered too: the image itself is dead
        return again._replace(url=t.url, page_url=t.page_url)

    async def check_remote(self, key: str, stop: StopSignal | None = None) -> RemoteResult:
        """Check ``key``'s locations (a pass, resumed if one was interrupted, or a sample)."""
        result = RemoteResult(self.name_of(key), key)
        if self.opts.sample is not None:
            todo = await checks.targets(self.store, key, limit=self.opts.sample)
        else:
            current = await checks.current_pass(self.store, key)
            if current is not None and current[1] is None:
                result.resumed = True
                todo = await checks.targets(self.store, key, before=current[0])
            else:
                await checks.start_pass(self.store, key, time.time())
                await self.store.flush()
                todo = await checks.targets(self.store, key)
        local_root = key.removeprefix("local:") if key.startswith("local:") else None
        reencodes = await self._reencodes(key)
        auth = None if local_root is not None else await self._auth(key)  # opened once
        name = result.name
        send, recv = anyio.create_memory_object_stream[Target](self.opts.transfers)
        done: set[str] = set()

        async def feed() -> None:
            async with send:
                for t in todo:
                    if (stop is not None and stop.is_set()) or result.gave_up:
                        result.complete = False
                        return
                    await send.send(t)

        streak = 0  # unreachable verdicts in a row: the host is down, not the images

        async def work() -> None:
            nonlocal streak
            async for t in recv:
                if (stop is not None and stop.is_set()) or result.gave_up:
                    result.complete = False
                    continue  # queued but not started: the next run checks it
                if local_root is not None:
                    v = await anyio.to_thread.run_sync(check_local, local_root, t)
                else:
                    v = await self._check(key, t, self.opts, reencodes=reencodes, auth=auth)
                await checks.record(self.store, key, [v])
                done.add(t.remote_id)
                if v.status == "gone" and v.detail.startswith("HTTP 4"):
                    self.definite.add((key, t.remote_id))  # a 404/410 just now: no doubt
                down = v.status == "unreachable" and not v.detail.startswith(EXPIRED)
                streak = streak + 1 if down else 0
                if streak >= UNREACHABLE_STREAK and not result.gave_up:
                    result.gave_up = f"{streak} unreachable in a row ({v.detail})"
                    log.warning("verify_gave_up", remote=name, reason=result.gave_up)
                result.checked += 1
                result.counts[v.status] += 1
                if v.status != "alive":
                    result.problems.append(v)
                if self.on_verdict is not None:
                    self.on_verdict(name, v)

        async with recv, anyio.create_task_group() as tg:
            tg.start_soon(feed)
            for _ in range(self.opts.transfers):
                tg.start_soon(work)
        if self.opts.sample is None and result.complete:
            await checks.finish_pass(self.store, key)
        await self.store.flush()
        if result.resumed:  # report the whole pass, not only what this run checked
            await self._add_earlier(result, current[0] if current else 0.0, done)
        return result

    async def _add_earlier(self, result: RemoteResult, since: float, done: set[str]) -> None:
        for v in await checks.checked_since(self.store, result.key, since):
            if v.remote_id in done:
                continue
            result.checked += 1
            result.counts[v.status] += 1
            if v.status != "alive":
                result.problems.append(v)

    # ---- repair -------------------------------------------------------------------

    async def repair(self, keys: list[str], dest_spec: str) -> list[Repair]:
        """Repair every gone/altered, unrepaired location of ``keys`` onto ``dest_spec``."""
        dest_cfg, dest_key = resolve_spec(self.cfg, dest_spec)
        if dest_cfg.type == "local":
            raise UsageError("--repair needs a host (documents link to URLs, a folder has none)")
        dest = await self.rt.open(dest_cfg)
        out: list[Repair] = []
        for key in keys:
            for b in await checks.broken(self.store, key):
                rep = await self._repair_one(b, dest, dest_cfg, dest_key)
                out.append(rep)
        await self.store.flush()
        return out

    async def _repair_one(
        self, b: Broken, dest: Any, dest_cfg: RemoteConfig, dest_key: str
    ) -> Repair:
        rep = Repair(b.remote, b.remote_id, b.sha256, b.url, b.page_url, "lost")
        rep.dest = dest_cfg.name
        if (b.remote, b.remote_id) not in self.definite:
            # a verdict from an earlier run, or a soft one (a placeholder page, other bytes):
            # look again before re-hosting, so a glitch never moves a live image
            again = await self._recheck(b)
            if again.status == "alive":
                rep.action = "alive again"
                if not self.opts.dry_run:
                    await checks.record(self.store, b.remote, [again])
                return rep
            if again.status == "unreachable":
                rep.action = "failed"
                rep.error = f"could not look again: {again.detail}"
                return rep
        copies = [
            c
            for c in await checks.copies(self.store, b.sha256)
            if not (c.remote == b.remote and c.remote_id == b.remote_id)
        ]
        # 1. DEST already holds these bytes: re-used only when checked alive just now
        dead: list[checks.Copy] = []
        silent: Verdict | None = None  # a copy DEST gave no answer about (5xx, timeout)
        for c in [c for c in copies if c.remote == dest_key]:
            v = await self._check_dest_copy(c, dest_cfg, dest_key)
            if v.status == "alive":
                return await self._relink(b, rep, v.url or c.url, c.page_url, v)
            if rep.dest_copy != "unreachable":
                rep.dest_copy, rep.dest_detail = v.status, v.detail
            if v.status == "unreachable" and v.transient:
                silent = silent or v  # no evidence of death: never replaced
            elif v.status != "unreachable" or self.opts.ignore_unreachable_dest:
                dead.append(c)
        if silent is not None:
            # neither trusted nor doubled, whatever --ignore-unreachable-dest says: a host
            # that is down or slow for a while would otherwise collect a second copy
            rep.action = "failed"
            rep.dest_copy, rep.dest_detail, rep.dest_transient = "unreachable", silent.detail, True
            rep.error = (
                f"the copy already at {dest_cfg.name} could not be checked, the host did not "
                f"answer ({silent.detail}); "
                "not treated as dead (a timeout or a server error is no evidence): "
                "left for the next run; run again later"
            )
            return rep
        if rep.dest_copy == "unreachable" and not self.opts.ignore_unreachable_dest:
            # neither trusted nor doubled: the host may well still have it
            rep.action = "failed"
            rep.error = (
                f"the copy already at {dest_cfg.name} could not be checked "
                f"({rep.dest_detail}); re-run to finish, or, if {dest_cfg.name} refuses "
                "it for good, add --ignore-unreachable-dest to upload it again"
            )
            return rep
        rep.replaced = [(c.url, c.page_url) for c in dead]
        # 2. the bytes from another copy, checked against the checksum
        got = await self._bytes_from(b.sha256, [c for c in copies if c.remote != dest_key])
        if got is None:
            rep.error = "no other good copy recorded"
            return rep
        body, source = got
        rep.source = source
        try:
            if self.opts.dry_run:
                rep.action = "would upload"
                return rep
            return await self._upload(b, rep, body, dest, dest_cfg, dest_key, dead)
        finally:
            body.discard()

    async def _check_dest_copy(
        self, c: checks.Copy, dest_cfg: RemoteConfig, dest_key: str
    ) -> Verdict:
        """A copy DEST holds, checked now in full (the bytes hashed); the verdict is stored
        (unless a dry run, or the host could not be asked)."""
        t = await checks.target_at(self.store, dest_key, c.remote_id)
        if t is None:
            return Verdict(c.remote_id, "", c.url, c.page_url, "gone", "no longer recorded")
        full = VerifyOptions(full=True, max_item_bytes=self.opts.max_item_bytes)
        v = await self._check(
            dest_key,
            t,
            full,
            reencodes=await self._reencodes(dest_key),
            auth=await self._auth(dest_key),
        )
        if not self.opts.dry_run and v.status != "unreachable":
            await checks.record(self.store, dest_key, [v])
        return v

    async def _relink(
        self, b: Broken, rep: Repair, url: str | None, page: str | None, v: Verdict
    ) -> Repair:
        rep.action = "would relink" if self.opts.dry_run else "relinked"
        rep.source = rep.dest
        rep.dest_copy, rep.dest_detail = "alive", v.detail
        rep.new_url, rep.new_page = url, page
        if not self.opts.dry_run:
            await self._done(b, rep)
        return rep

    async def _lease(self, dest_key: str, sha: str) -> tuple[bool, bool, bool, float | None]:
        """Lease ``sha`` at DEST as the copy pipeline does: (mine, recorded there, taken
        over from a holder that did not finish, the earliest time that holder can have
        sent it, when known). Held by another run (another process, or another repair or
        job of this one): wait for it up to ``lease_wait``, looking every ``lease_poll``."""
        clock = self.opts.clock or time.monotonic
        sleep = self.opts.sleep or anyio.sleep
        deadline = clock() + self.opts.lease_wait
        while True:
            got = await self.store.lease(dest_key, [sha])
            if got.mine or got.present:
                taken = sha in got.taken_over
                return bool(got.mine), bool(got.present), taken, got.since.get(sha)
            now = clock()
            if now >= deadline:
                return False, False, False, None
            await sleep(min(self.opts.lease_poll, deadline - now))

    async def _upload(
        self,
        b: Broken,
        rep: Repair,
        body: Body,
        dest: Any,
        dest_cfg: RemoteConfig,
        dest_key: str,
        dead: list[checks.Copy],
    ) -> Repair:
        # the dead location goes first: a repair onto the same host must not find it there;
        # so do dead copies at DEST, or the lease would find those bytes "already there".
        # A repair that then fails puts them back as they were (delete links included).
        places = [(b.remote, b.remote_id), *((dest_key, c.remote_id) for c in dead)]
        saved = await checks.save_locations(self.store, places)
        for remote, remote_id in places:
            await queries.forget_location(self.store, remote, remote_id)
        await self.store.flush()
        await self._upload_leased(b, rep, body, dest, dest_cfg, dest_key, dead)
        if rep.action not in REPAIRED:
            await checks.restore_locations(self.store, saved)
            await self.store.flush()
        return rep

    async def _upload_leased(
        self,
        b: Broken,
        rep: Repair,
        body: Body,
        dest: Any,
        dest_cfg: RemoteConfig,
        dest_key: str,
        dead: list[checks.Copy],
    ) -> Repair:
        mine, present, taken_over, since = await self._lease(dest_key, b.sha256)
        if present:  # another run recorded these bytes there meanwhile
            return await self._relink_recorded(b, rep, dest_cfg, dest_key)
        if not mine:
            from imgsync.state.db import describe_owner

            holder = (await self.store.holders(dest_key, [b.sha256])).get(b.sha256)
            rep.action = "failed"
            rep.error = (
                "another run is uploading these bytes there now"
                f"{f' ({describe_owner(holder)})' if holder else ''}; re-run to finish"
            )
            return rep
        try:
            name = _name_for(b, body.head())
            src = body.upload_source(name, guess_mime(name))
            found = None
            if taken_over:  # the holder that died may have sent them: look first
                found = await self._find_sent(dest, src, name, since)
            if found is not None:
                item = found
                rep.action = "found"
                log.info(
                    "found at the destination",
                    remote=self.name_of(b.remote),
                    id=b.remote_id,
                    dest=dest_cfg.name,
                    why="its lease was taken over from a run that did not finish",
                )
            else:
                item = await self._send(dest, src, name, rep)
        except Duplicate:
            await self.store.release(dest_key, [b.sha256])
            rep.action = "failed"
            rep.error = "the host refuses these bytes as a duplicate it already holds"
            return rep
        except (ImgsyncError, OSError) as exc:
            await self.store.release(dest_key, [b.sha256])
            rep.action = "failed"
            rep.error = redact(str(exc))[:300]
            return rep
        await queries.record_locations(self.store, dest_key, [(b.sha256, item)])
        await queries.record_owners(
            self.store, dest_key, f"verify:{b.remote}", [b.sha256], wrote=True
        )
        await self.store.flush()
        await self.store.release(dest_key, [b.sha256])
        if rep.action != "found":
            rep.action = "uploaded"
        rep.new_url, rep.new_page = item.url, item.page_url
        await self._done(b, rep)
        for c in dead:  # the dead copies at DEST are replaced by this one too
            await checks.mark_repaired(self.store, dest_key, c.remote_id, item.url, item.page_url)
        await self.store.flush()
        log.info("repaired", remote=self.name_of(b.remote), id=b.remote_id, source=rep.source)
        return rep

    async def _find_sent(
        self, dest: Any, src: Any, name: str, since: float | None = None
    ) -> RemoteItem | None:
        """What an earlier upload of ``src`` left at DEST (sent no earlier than ``since``,
        when known), when DEST can be listed (None: not found, or it cannot be searched)."""
        if not dest.features.can_list:
            return None
        try:
            found: RemoteItem | None = await dest.find_upload(src, rel_path=name, since=since)
        except ImgsyncError as exc:
            if exc.scope != "item":
                raise
            return None
        return found

    async def _send(self, dest: Any, src: Any, name: str, rep: Repair) -> RemoteItem:
        """Upload ``src`` to DEST. A reply that broke off is not sent again blindly: DEST
        is searched first (when it can be listed); otherwise it is sent once more and the
        possible extra copy noted."""
        meta = ItemMeta(title=Path(name).stem)
        try:
            item: RemoteItem = await dest.upload(src, meta, rel_path=name)
            return item
        except ReplyLost as lost:
            first = lost
        found = await self._find_sent(dest, src, name)
        if found is not None:
            rep.action = "found"
            return found
        item = await dest.upload(src, meta, rel_path=name)
        rep.error = (
            f"possible duplicate: the reply to the first upload broke off ({first.detail}); "
            f"{rep.dest} may hold an extra copy imgsync has no delete link for"
        )
        return item

    async def _recheck(self, b: Broken) -> Verdict:
        t = Target(b.remote_id, b.sha256, b.url, b.page_url, None, None, 0.0, None)
        if b.remote.startswith("local:"):
            return await anyio.to_thread.run_sync(check_local, b.remote.removeprefix("local:"), t)
        full = VerifyOptions(full=True, max_item_bytes=self.opts.max_item_bytes)
        return await self._check(
            b.remote,
            t,
            full,
            reencodes=await self._reencodes(b.remote),
            auth=await self._auth(b.remote),
        )

    async def _relink_recorded(
        self, b: Broken, rep: Repair, dest_cfg: RemoteConfig, dest_key: str
    ) -> Repair:
        """Another run put these bytes at DEST while this one was getting them: re-used
        once checked alive, like any copy found there."""
        for c in await checks.copies(self.store, b.sha256):
            if c.remote != dest_key:
                continue
            v = await self._check_dest_copy(c, dest_cfg, dest_key)
            if v.status == "alive":
                return await self._relink(b, rep, v.url or c.url, c.page_url, v)
            rep.dest_copy, rep.dest_detail = v.status, v.detail
        rep.action = "failed"
        rep.error = (
            f"another run put these bytes at {rep.dest} but that copy is "
            f"{rep.dest_copy or 'not recorded'}; re-run to finish"
        )
        return rep

    async def _done(self, b: Broken, rep: Repair) -> None:
        await queries.forget_location(self.store, b.remote, b.remote_id)
        await checks.mark_repaired(self.store, b.remote, b.remote_id, rep.new_url, rep.new_page)
        await self.store.flush()

    async def _bytes_from(self, sha256: str, copies: list[checks.Copy]) -> tuple[Body, str] | None:
        """The bytes of ``sha256`` from a folder (cheapest) or another host, checked
        against the checksum (large ones spooled to disk, never held whole)."""
        paths = [
            Path(root) / key_path(rel) for root, rel in await checks.local_paths(self.store, sha256)
        ]
        paths += [
            Path(c.remote.removeprefix("local:")) / key_path(c.remote_id)
            for c in copies
            if c.remote.startswith("local:")
        ]
        for path in dict.fromkeys(paths):
            body = await anyio.to_thread.run_sync(_read_checked, path, sha256)
            if body is not None:
                return body, str(path)
        for c in copies:
            remote = self.by_key.get(c.remote)
            if c.remote.startswith("local:") or remote is None:
                continue
            try:
                provider = await self._provider(remote)
                item = RemoteItem(
                    remote_id=c.remote_id, name=c.remote_id, url=c.url, page_url=c.page_url
                )
                body = await fetch(
                    provider, item, spool_dir=self._spool, max_item_bytes=self.opts.max_item_bytes
                )
            except (ImgsyncError, OSError) as exc:
                log.info(
                    "copy_unusable", remote=remote.name, id=c.remote_id, error=redact(str(exc))
                )
                continue
            if body.digest.sha256 == sha256:
                return body, f"{remote.name}: {c.url or c.remote_id}"
            body.discard()
        return None

    async def _provider(self, remote: RemoteConfig) -> Any:
        if remote.name not in self._providers:
            self._providers[remote.name] = await self.rt.open(remote)
        return self._providers[remote.name]


def _read_checked(path: Path, sha256: str) -> Body | None:
    """A folder's copy, hashed in chunks (and left where it is for the upload)."""
    try:
        size = path.stat().st_size
        body = read_local(path, size, True, SPOOL_THRESHOLD)
    except (OSError, ImgsyncError):
        return None
    if body.digest.sha256 != sha256:
        body.discard()
        return None
    return body


def _name_for(b: Broken, head: bytes) -> str:
    """A file name for the re-upload: the dead URL's, else the checksum's."""
    tail = safe_name(unquote(urlsplit(b.url or "").path.rsplit("/", 1)[-1]))
    if tail != "image" and "." in tail and len(tail) <= 120:
        return tail
    mime = sniff_image(head[:_SNIFF]) or "image/png"
    ext = {"image/jpeg": "jpg", "image/svg+xml": "svg"}.get(mime, mime.split("/")[-1])
    return f"{b.sha256[:16]}.{ext}"


async def run_verify(
    cfg: Config,
    remotes: list[str] | None,
    opts: VerifyOptions,
    *,
    stop: StopSignal | None = None,
    on_verdict: Callable[[str, Verdict], None] | None = None,
    http: Any = None,
) -> VerifyReport:
    """Check ``remotes`` (specs like ``chv:``; None: every remote with locations), then
    repair onto ``opts.repair_to`` when given."""
    report = VerifyReport(dest=opts.repair_to, dry_run=opts.dry_run)
    async with Runtime(cfg, http) as rt, StateStore(cfg.state_path, cfg.state_url) as store:
        if remotes is None:
            if store.fleet is not None:  # fleet mode: where any worker recorded uploads
                for key in await store.fleet.remotes():
                    await queries.import_fleet_locations(store, key)
            keys = await checks.remotes_with_locations(store)
        else:
            keys = []
            for spec in remotes:
                _remote, key = resolve_spec(cfg, spec)
                keys.append(key)
                # fleet mode: every worker's uploads there are checked, not only this one's
                await queries.import_fleet_locations(store, key)
        v = Verifier(cfg, rt, store, opts, on_verdict)
        if opts.repair_to is not None:
            dest_cfg, dest_key = resolve_spec(cfg, opts.repair_to)
            if dest_cfg.type == "local":
                raise UsageError(
                    "--repair needs a host (documents link to URLs, a folder has none)"
                )
            if remotes is None:
                keys = [k for k in keys if k != dest_key]
        for key in keys:
            report.remotes.append(await v.check_remote(key, stop))
        if opts.repair_to is not None and not (stop is not None and stop.is_set()):
            report.repairs = await v.repair(keys, opts.repair_to)
        if opts.repair_to is not None:  # so documents missed before are fixed now
            for key in keys:
                for r in await checks.repaired(store, key):
                    done = Repair(r.remote, r.remote_id, r.sha256, r.url, r.page_url, "earlier")
                    done.new_url, done.new_page = r.repaired_url, r.repaired_page
                    report.earlier.append(done)
    return report
