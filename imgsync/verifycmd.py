"""``imgsync verify``'s face: run the checks (and the repair), then extend the URL map and
rewrite documents with the same engine as ``imgsync rewrite`` (byte-exact, undoable with
``imgsync rewrite --undo``). The daemon's ``kind = "verify"`` jobs call :func:`verify_once`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgsync.config import Config
from imgsync.errors import UsageError
from imgsync.pipeline.verify import Repair, VerifyOptions, VerifyReport, run_verify


@dataclass
class Outcome:
    """A verify run with what was done to the map and the documents."""

    report: VerifyReport
    links_replaced: int = 0
    files_changed: int = 0
    rewrite_failures: list[tuple[str, str]] = field(default_factory=list)
    diffs: list[str] = field(default_factory=list)
    lost_in: dict[str, list[str]] = field(default_factory=dict)  # lost URL -> documents
    map_rows: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if self.report.exit_code or self.rewrite_failures else 0

    def to_json(self) -> dict[str, Any]:
        return {
            **self.report.to_json(),
            "links_replaced": self.links_replaced,
            "files_changed": self.files_changed,
            "rewrite_failures": [{"file": f, "error": e} for f, e in self.rewrite_failures],
            "lost_in": self.lost_in,
            "map_rows": self.map_rows,
        }


def references(urls: list[str], paths: list[Path]) -> dict[str, list[str]]:
    """URL -> the documents under ``paths`` that link to it (nothing is written)."""
    from imgsync.rewrite import _HTML_SUFFIXES, Rewriter, documents

    out: dict[str, list[str]] = {}
    if not urls:
        return out
    finder = Rewriter(dict.fromkeys(urls, ""))
    for doc in documents(paths):
        try:
            data = doc.read_bytes()
        except OSError:
            continue
        _new, edits = finder.rewrite_bytes(data, html=doc.suffix.lower() in _HTML_SUFFIXES)
        for e in edits:
            url = e.old.decode("utf-8", "replace").replace("&amp;", "&")
            if str(doc) not in out.setdefault(url, []):
                out[url].append(str(doc))
    return out


def apply_repairs(
    cfg: Config,
    report: VerifyReport,
    rewrite_paths: list[Path],
    map_path: Path | None,
    *,
    dry_run: bool,
) -> Outcome:
    """Extend the map file and rewrite the documents from what the repair did."""
    from imgsync.rewrite import UndoJournal, rewrite

    out = Outcome(report)
    mapping = report.mapping()
    if map_path is not None and mapping and not dry_run:
        from imgsync.urlmap import extend_map

        shas = {old: r.sha256 for r in (*report.earlier, *report.repairs) for old, _ in r.pairs()}
        out.map_rows = extend_map(map_path, mapping, shas)
    if rewrite_paths:
        journal = UndoJournal(cfg.state_path.parent / "rewrites")
        result = rewrite(mapping, rewrite_paths, dry_run=dry_run, journal=journal)
        out.links_replaced = result.links_replaced
        out.files_changed = result.files_changed
        out.rewrite_failures = result.failures
        out.diffs = result.diffs
        unmapped = [
            r.old_url
            for r in report.repairs
            if r.old_url and r.action in ("lost", "failed", "would upload")
        ]
        out.lost_in = references(unmapped, rewrite_paths)
    return out


async def verify_once(
    cfg: Config,
    remotes: list[str] | None,
    opts: VerifyOptions,
    rewrite_paths: list[Path],
    map_path: Path | None,
    stop: Any = None,
) -> Outcome:
    """One verify run (and repair, map, rewrite): what the CLI and the daemon do."""
    import anyio.to_thread

    missing = [p for p in rewrite_paths if not p.exists()]
    if missing:  # before anything is checked or uploaded
        raise UsageError(f"--rewrite: no such file or folder: {missing[0]}")
    report = await run_verify(cfg, remotes, opts, stop=stop)
    return await anyio.to_thread.run_sync(
        lambda: apply_repairs(cfg, report, rewrite_paths, map_path, dry_run=opts.dry_run)
    )


def run_verify_cmd(cfg: Config, args: argparse.Namespace) -> int:
    """``imgsync verify REMOTE|--all [--sample N|--full] [--repair DEST [--rewrite PATH...]]``."""
    import asyncio

    from imgsync.commands import setup_logging

    if args.all == (args.remote is not None):
        raise UsageError("verify takes one REMOTE or --all")
    if args.sample is not None and args.full:
        raise UsageError("--sample and --full do not go together")
    if args.sample is not None and args.sample < 1:
        raise UsageError("--sample must be at least 1")
    if (args.rewrite or args.map) and args.repair is None:
        raise UsageError("--rewrite and --map need --repair DEST")
    ignore_dest = bool(getattr(args, "ignore_unreachable_dest", False))
    if ignore_dest and args.repair is None:
        raise UsageError("--ignore-unreachable-dest needs --repair DEST")
    transfers = args.transfers if args.transfers is not None else cfg.transfers
    if not 1 <= transfers <= 64:
        raise UsageError("--transfers must be between 1 and 64")
    lease_wait = getattr(args, "lease_wait", None)
    if lease_wait is not None and not 0 <= lease_wait <= 86400:
        raise UsageError("--lease-wait must be between 0 and 86400 seconds")
    opts = VerifyOptions(
        full=args.full,
        sample=args.sample,
        transfers=transfers,
        repair_to=args.repair,
        dry_run=args.dry_run,
        ignore_unreachable_dest=ignore_dest,
        **({"lease_wait": lease_wait} if lease_wait is not None else {}),
    )
    setup_logging(cfg, args)
    remotes = None if args.all else [args.remote]
    outcome = asyncio.run(verify_once(cfg, remotes, opts, list(args.rewrite or []), args.map))
    if args.json:
        print(json.dumps(outcome.to_json(), indent=2))
    else:
        _print(outcome)
    return outcome.exit_code


def _print(outcome: Outcome) -> None:
    report = outcome.report
    for r in report.remotes:
        resumed = " (resumed pass)" if r.resumed else ""
        stopped = "" if r.complete else " (stopped early; re-run to finish)"
        if r.gave_up:
            stopped = f" (gave up: {r.gave_up}; re-run to finish)"
        print(
            f"{r.name}: {r.checked} checked{resumed}: {r.counts['alive']} alive, "
            f"{r.counts['gone']} gone, {r.counts['altered']} altered, "
            f"{r.counts['unreachable']} unreachable{stopped}"
        )
        for v in r.problems:
            print(f"  {v.status}: {v.url or v.remote_id}: {v.detail}")
    if report.dest is not None:
        _print_repairs(report.repairs, report.dest, report.dry_run)
    for diff in outcome.diffs:
        sys.stdout.write(diff)
    if outcome.links_replaced or outcome.files_changed:
        verb = "would rewrite" if report.dry_run else "rewrote"
        print(f"{verb} {outcome.links_replaced} links in {outcome.files_changed} files")
    if outcome.map_rows:
        print(f"map: {outcome.map_rows} rows")
    for url, docs in outcome.lost_in.items():
        print(f"  still linked: {url} in {', '.join(docs)}")
    for f, e in outcome.rewrite_failures:
        print(f"  failed: {f}: {e}", file=sys.stderr)


def _print_repairs(repairs: list[Repair], dest: str, dry_run: bool) -> None:
    counts: dict[str, int] = {}
    for rep in repairs:
        counts[rep.action] = counts.get(rep.action, 0) + 1
        new = f" -> {rep.new_url}" if rep.new_url else ""
        why = f" ({rep.error})" if rep.error else ""
        src = f" from {rep.source}" if rep.source and rep.source != rep.dest else ""
        note = f" [{rep.note}]" if rep.note else ""
        print(f"  {rep.action}: {rep.old_url or rep.remote_id}{new}{src}{why}{note}")
    parts = ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "nothing to repair"
    print(f"repair onto {dest}{' (dry run)' if dry_run else ''} - {parts}")
    silent = sum(1 for r in repairs if r.dest_transient)
    if silent:
        print(
            f"{silent} left for the next run: the copy already at {dest} did not answer "
            "(a timeout or a server error, after retries); not treated as dead, even with "
            "--ignore-unreachable-dest (exit 1; run again later)"
        )


def last_checks(report: dict[str, Any]) -> list[str]:
    """``status`` lines for the verify results in a status report."""
    lines = []
    for name, v in report.get("verify", {}).items():
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(v["last_check"]))
        lines.append(
            f"  verify {name}: {v['alive']} alive, {v['gone']} gone, {v['altered']} altered, "
            f"{v['unreachable']} unreachable, {v['repaired']} repaired (last check {when})"
        )
    return lines
