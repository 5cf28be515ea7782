"""The verbs that move data (``copy``, ``sync``, ``migrate``, ``backup``, ``check``: each one
:func:`~imgsync.pipeline.run.run_job`) and ``ls``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from imgsync.config import Config
from imgsync.errors import EXIT_OK, EXIT_REMOTE_FAILURE, ProviderError, UsageError
from imgsync.localfs import display
from imgsync.pipeline.progress import Progress
from imgsync.pipeline.summary import CopyOptions, Summary
from imgsync.runtime import resolve_spec


def setup_logging(cfg: Config, args: argparse.Namespace, progress: Progress | None = None) -> None:
    """Configure structlog (only on paths that do async work: it costs start-up time).
    With a progress line shown, log lines are written above it.

    Called once the verb's modules are loaded, before its event loop: in the ``imgsync``
    program (which turned the garbage collector off for start-up, see
    :func:`imgsync.cli.main`) what is loaded by now is frozen out of the collector's way
    and the collector turned back on, so no full collection during the run walks every
    module, class and function again (one costs about 30 ms with the HTTP stack loaded)."""
    import gc

    from imgsync.log import configure

    stream = progress.log_stream() if progress is not None and progress.enabled else None
    configure("debug" if args.verbose else cfg.log_level, cfg.log_format, stream=stream)
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _options(cfg: Config, args: argparse.Namespace) -> CopyOptions:
    transfers = args.transfers if args.transfers is not None else cfg.transfers
    if not 1 <= transfers <= 64:
        raise UsageError("--transfers must be between 1 and 64")
    return CopyOptions(
        job=f"{args.verb}:{args.src}->{args.dst}",
        verb=args.verb,
        dry_run=args.dry_run or args.verb == "check",
        transfers=transfers,
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        sidecars=args.verb == "backup",
        max_delete=getattr(args, "max_delete", 100),
        include_non_images=getattr(args, "include_non_images", False),
        follow_links=getattr(args, "copy_links", False),
        **_limits(args),
    )


def _limits(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "max_item_size", None) is not None:
        out["max_item_bytes"] = args.max_item_size
    if getattr(args, "item_timeout", None) is not None:
        if args.item_timeout <= 0:
            raise UsageError("--item-timeout must be a positive number of seconds")
        out["item_timeout"] = args.item_timeout
    if getattr(args, "lease_wait", None) is not None:
        if args.lease_wait < 0:
            raise UsageError("--lease-wait must be 0 or a positive number of seconds")
        out["lease_wait"] = args.lease_wait
    return out


def run_copy(cfg: Config, args: argparse.Namespace) -> int:
    """``imgsync copy|sync|migrate|backup|check SRC DST``: one :func:`run_job`."""
    from imgsync.pipeline.run import JobSpec, run_job_blocking

    spec = JobSpec(
        verb=args.verb,
        source=args.src,
        dest=args.dst,
        options=_options(cfg, args),
        map_path=getattr(args, "map", None),
        verify_dest=getattr(args, "verify_dest", False),
        gallery=args.verb == "backup" and getattr(args, "gallery", True),
        report_path=getattr(args, "report", None),
    )
    if spec.report_path is not None and spec.options.dry_run:
        raise UsageError("--report needs a real run, not --dry-run")
    from imgsync.runtime import held_back

    progress = Progress(
        enabled=args.progress if args.progress is not None else sys.stderr.isatty(),
        throttle=lambda: held_back(cfg),
    )
    summary = run_job_blocking(
        cfg, spec, progress, before_async=lambda: setup_logging(cfg, args, progress)
    )
    return _report(summary, args.json)


def run_report(cfg: Config, args: argparse.Namespace) -> int:
    """``imgsync report FILE.html [--src SRC --dst DST]``: the page of the latest run."""
    from imgsync.pages import report_from_state

    src = resolve_spec(cfg, args.src)[1] if args.src else None
    dst = resolve_spec(cfg, args.dst)[1] if args.dst else None
    res = report_from_state(cfg.state_path, args.out, src, dst)
    counts = ", ".join(f"{n} {what}" for what, n in res.counts.items())
    note = "" if res.balanced else "; the run's totals do not balance"
    print(f"report: {res.items} items ({counts}) in {res.path}{note}")
    return EXIT_OK


def _warn_links(summary: Summary) -> None:
    """One warning line per symbolic link the run left alone (stderr)."""
    for rel, why in summary.links_skipped:
        print(f"imgsync: warning: skipped symlink {rel}: {why}", file=sys.stderr)


def _report(summary: Summary, as_json: bool) -> int:
    _warn_links(summary)
    if summary.verb == "check":
        return _report_check(summary, as_json)
    if as_json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        if summary.dry_run:
            _list_dry_run(summary)
        print(summary.line())
        for item, err in summary.failures[:20]:
            print(f"  failed: {item}: {err}", file=sys.stderr)
        if len(summary.failures) > 20:
            print(
                f"  ... and {summary.failed - 20} more (imgsync status lists them)", file=sys.stderr
            )
    return summary.exit_code


def _list_dry_run(summary: Summary) -> None:
    """``--dry-run``: one line per item the run would copy or delete (stdout)."""
    for item in summary.would_copy:
        print(f"would copy: {item}")
    if summary.copied > len(summary.would_copy):
        print(f"... and {summary.copied - len(summary.would_copy)} more to copy")
    for item in summary.would_delete:
        print(f"would delete: {item}")


def _report_check(summary: Summary, as_json: bool) -> int:
    """``check``: what the destination lacks or holds altered; exit 0 when nothing, 1 when
    something."""
    if as_json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        for item in summary.altered:
            print(f"altered: {item} (not the size imgsync wrote: changed since the copy)")
        for item in summary.would_copy:
            print(f"missing: {item}")
        if summary.copied > len(summary.would_copy):
            print(f"... and {summary.copied - len(summary.would_copy)} more")
        print(
            f"check {summary.shown_source} -> {summary.shown_dest}: {summary.checked} checked, "
            f"{summary.copied} missing at the destination, {summary.present} present, "
            f"{summary.failed} could not be checked"
            + (f", skipped by filter: {summary.filtered}" if summary.filtered else "")
        )
    for item, err in summary.failures[:20]:
        print(f"  failed: {item}: {err}", file=sys.stderr)
    if summary.remote_failure:
        return summary.exit_code
    return 1 if summary.copied or summary.failed or summary.altered else 0


def run_ls(cfg: Config, args: argparse.Namespace) -> int:
    """``imgsync ls REMOTE``: every item, one per line (``--json``: JSON lines)."""
    import asyncio

    remote, _key = resolve_spec(cfg, args.remote)
    setup_logging(cfg, args)

    async def go() -> None:
        from imgsync.runtime import Runtime

        async with Runtime(cfg) as rt:
            provider = await rt.open(remote)
            if not provider.features.can_list:
                raise UsageError(f"{remote.name} ({remote.type}) cannot be listed")
            async for page, _cursor in provider.iter_all(None):
                for item in page.items:
                    if args.json:
                        print(
                            json.dumps(
                                {
                                    "id": item.remote_id,
                                    "name": item.name,
                                    "size": item.size,
                                    "url": item.url,
                                    "is_image": item.is_image,
                                    "metadata": item.meta.to_json(),
                                },
                                ensure_ascii=False,
                            )
                        )
                    else:
                        size = "-" if item.size is None else str(item.size)
                        print(f"{size:>10}  {display(item.name)}  {item.url or ''}".rstrip())

    try:
        asyncio.run(go())
    except ProviderError as exc:  # a listing is all or nothing: any failure is remote-wide
        from imgsync.log import redact

        print(f"imgsync: {redact(str(exc))}", file=sys.stderr)
        return EXIT_REMOTE_FAILURE
    return EXIT_OK
