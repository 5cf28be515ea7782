"""The command line: parse, call one function per verb, map errors to exit codes.

Exit codes: 0 done; 1 finished with item failures (listed); 2 usage; 3 a remote failed
as a whole (bad credentials, paused host); 66 a source folder is missing or unreadable;
70 internal error (a bug); 75 the state database is locked or corrupt; 78 config error;
130 interrupted.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgsync import __version__
from imgsync.errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ConfigError,
    ImgsyncError,
    LocalIOError,
    UsageError,
)

if TYPE_CHECKING:
    from imgsync.config import Config

EXIT_NOINPUT = 66
EXIT_SOFTWARE = 70
EXIT_IOERR = 74  # the output could not be written (the run itself finished)


def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` finds it (``$COLUMNS``, then
    the terminal, else 80), without importing shutil and the archive modules it loads."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        width = _columns() - 2 if width is None else width  # as argparse does
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:  # one line, exit 2 (argparse's own code)
        self.print_usage(sys.stderr)
        print(f"imgsync: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _transfer_verb(
    sub: Any, name: str, help_text: str, dst: str = "DST"
) -> argparse.ArgumentParser:
    """A verb taking SRC and DST plus the common transfer options."""
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    p.add_argument("src", metavar="SRC", help="NAME: for a configured remote, or a folder")
    p.add_argument("dst", metavar=dst, help="NAME: for a configured remote, or a folder")
    _transfer_opts(p)
    return p


def _transfer_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="show what would be done")
    p.add_argument(
        "--transfers",
        type=int,
        default=None,
        metavar="N",
        help="items in flight at once (default: config 'transfers', 4)",
    )
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="only items whose name matches GLOB (repeatable; a host's item: the file name it "
        "gets in a folder; a folder's file: its base name, or its path for a GLOB with /)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip items whose name matches GLOB (repeatable; as --include)",
    )
    p.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show a progress line (default: on a terminal)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument(
        "-L",
        "--copy-links",
        dest="copy_links",
        action="store_true",
        help="a folder SRC: follow symbolic links that stay inside it (default: skip every "
        "link, with a warning)",
    )
    p.add_argument(
        "--max-item-size",
        type=_size,
        default=None,
        metavar="SIZE",
        help="fail any single item larger than SIZE (e.g. 500M, 2G; default 2G)",
    )
    p.add_argument(
        "--item-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="overall deadline for one item's download and upload (default 3600)",
    )
    p.add_argument(
        "--lease-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long to wait for images another running imgsync is uploading "
        "(default 300); what is still held then is reported (exit 1)",
    )
    p.add_argument(
        "--verify-dest",
        action="store_true",
        help="list a host destination first and copy again what was deleted there "
        "(folder destinations are checked on every run)",
    )


def _size(text: str) -> int:
    """``500M``, ``2G``, ``1048576`` -> bytes (for ``--max-item-size``)."""
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in units and t[-1:] else ""
    number = t[: len(t) - len(unit)] if unit else t
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (write e.g. 500M or 2G)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return int(value)


class _Skipped:
    """What a verb other than the one being run is built into: takes every argument,
    group and sub-verb, keeps nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self


class _OneVerb:
    """``add_subparsers()`` that builds the parser of one verb only: building all 18 costs
    a no-op re-run a few milliseconds, and the other verbs cannot be on its command line."""

    def __init__(self, sub: Any, verb: str) -> None:
        self._sub, self._verb = sub, verb
        self.found = False

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name != self._verb:
            return _Skipped()
        self.found = True
        return self._sub.add_parser(name, **kwargs)


def _verb_of(argv: list[str]) -> str | None:
    """The verb of a command line whose global options come first (``_globals_first``),
    or None when unsure (a help request, an unknown or abbreviated option, no verb)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-v", "--verbose") or arg.startswith("--config="):
            i += 1
        elif arg == "--config":
            i += 2
        else:
            return None if arg.startswith("-") else arg
    return None


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser; with ``verb``, only that verb's (the one being run)."""
    p = _Parser(
        prog="imgsync",
        description="Mirror, migrate and back up image libraries "
        "between image hosts and local folders. A REMOTE is NAME: for a remote in the "
        "config, or a folder path.",
        epilog="exit codes: 0 done, 1 item failures, 2 usage, 3 a remote failed as a whole, "
        "66 missing source folder, 70 internal error, 75 state database locked or corrupt, "
        "78 config error, 130 interrupted",
    )
    p.add_argument("--version", action="version", version=f"imgsync {__version__}")
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="config file (default: $IMGSYNC_CONFIG or the user config dir)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub: Any = p.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=_Parser)
    if verb is not None:
        sub = one = _OneVerb(sub, verb)

    _transfer_verb(sub, "copy", "copy what DST lacks (dedupe by checksum); never deletes")
    sy = _transfer_verb(
        sub, "sync", "copy, then delete from DST what the folder SRC no longer has (guarded)"
    )
    sy.add_argument(
        "--max-delete",
        type=int,
        default=100,
        metavar="N",
        help="delete nothing if more than N items would go (default 100)",
    )
    _transfer_verb(sub, "check", "report what DST lacks, changing nothing (exit 1 if any)")
    b = _transfer_verb(
        sub, "backup", "host -> local folder, with a JSON sidecar per image", dst="DIR"
    )
    b.add_argument(
        "--include-non-images", action="store_true", help="also back up files that are not images"
    )
    b.add_argument(
        "--no-gallery",
        dest="gallery",
        action="store_false",
        help="do not write or update the folder's index.html gallery",
    )
    m = _transfer_verb(
        sub, "migrate", "copy everything once, resumably, and write the old-URL -> new-URL map"
    )
    m.add_argument(
        "--map",
        type=Path,
        required=True,
        metavar="FILE",
        help="where to write the map (.csv or .json)",
    )
    m.add_argument(
        "--report",
        type=Path,
        metavar="FILE.html",
        help="also write a page of every item: thumbnails, old -> new URL, failures, totals",
    )
    rp = sub.add_parser("report", help="write the page of the latest migrate/backup run from state")
    rp.add_argument("out", type=Path, metavar="FILE.html", help="where to write the page")
    rp.add_argument("--src", metavar="SRC", help="the run's source (default: the latest run)")
    rp.add_argument("--dst", metavar="DST", help="the run's destination")

    rw = sub.add_parser(
        "rewrite", help="rewrite image links in Markdown/HTML/BBCode files (changes nothing else)"
    )
    rw.add_argument("--map", type=Path, default=None, metavar="FILE", help="old URL -> new URL")
    rw.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    rw.add_argument("--dry-run", action="store_true", help="print a unified diff, change nothing")
    rw.add_argument(
        "--undo", action="store_true", help="put back what the last rewrite of each file changed"
    )
    rw.add_argument("--json", action="store_true")

    vf = sub.add_parser(
        "verify",
        help="check recorded copies are alive and unaltered; repair from another copy",
        description="Check the recorded locations of REMOTE (or of every remote with --all): "
        "alive, gone (404/410 or the host's removed placeholder), altered (other bytes), "
        "unreachable. Exit 0 when all are alive (or all dead ones were repaired), 1 if not.",
    )
    vf.add_argument("remote", nargs="?", metavar="REMOTE", help="NAME: or a folder")
    vf.add_argument("--all", action="store_true", help="every remote with recorded locations")
    mode = vf.add_mutually_exclusive_group()
    mode.add_argument(
        "--sample",
        type=int,
        default=None,
        metavar="N",
        help="check only the N least recently checked locations (a rotating sample)",
    )
    mode.add_argument(
        "--full", action="store_true", help="download every image and compare its SHA-256"
    )
    vf.add_argument(
        "--repair",
        default=None,
        metavar="DEST",
        help="re-upload each gone or altered image to DEST from another recorded copy",
    )
    vf.add_argument(
        "--rewrite",
        nargs="+",
        type=Path,
        default=None,
        metavar="PATH",
        help="with --repair: rewrite links to the dead URLs in these documents (undo: "
        "imgsync rewrite --undo PATH)",
    )
    vf.add_argument(
        "--map",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --repair: a URL map (.csv/.json) to extend with dead URL -> new URL",
    )
    vf.add_argument("--dry-run", action="store_true", help="with --repair: show, change nothing")
    vf.add_argument(
        "--lease-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --repair: how long to wait for an image another running imgsync is "
        "uploading to DEST before leaving it for the next run (default 120)",
    )
    vf.add_argument(
        "--ignore-unreachable-dest",
        action="store_true",
        help="with --repair: a copy DEST already holds that DEST refuses to serve (403, "
        "say) is treated as dead: the image is uploaded again and links to that copy are "
        "mapped to the new one. A copy DEST gives no answer about (a timeout, a 5xx, after "
        "retries) is never treated as dead: that repair is left for the next run (exit 1)",
    )
    vf.add_argument("--transfers", type=int, default=None, metavar="N", help="checks at once")
    vf.add_argument("--json", action="store_true", help="print a JSON report on stdout")

    ls = sub.add_parser("ls", help="list a remote's items")
    ls.add_argument("remote", metavar="REMOTE")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")

    sub.add_parser("run", help="the daemon: run the config's jobs until stopped")

    st = sub.add_parser("status", help="what the state database knows, and whether a daemon runs")
    st.add_argument("--json", action="store_true")
    st.add_argument(
        "--check",
        action="store_true",
        help="exit 0 only if a daemon runs on this state and its /healthz says healthy",
    )
    st.add_argument(
        "--state",
        metavar="PATH|URL",
        default=None,
        help="the state to read: a SQLite file or a postgresql:// URL "
        "(default: [state] url or IMGSYNC_STATE_URL, else state.path)",
    )

    sv = sub.add_parser("state", help="state helpers: copy a state between SQLite and PostgreSQL")
    sv_sub = sv.add_subparsers(
        dest="state_verb", metavar="copy", required=True, parser_class=_Parser
    )
    sc = sv_sub.add_parser(
        "copy",
        help="copy what a state shares (locations, journal, cursors, pauses, owners) "
        "from a SQLite file to a postgresql:// URL or back; safe to run again",
    )
    sc.add_argument("src", metavar="FROM", help="a SQLite state file or a postgresql:// URL")
    sc.add_argument("dst", metavar="TO", help="a SQLite state file or a postgresql:// URL")
    sc.add_argument("--json", action="store_true")

    r = sub.add_parser("remotes", help="configured remotes and their features")
    r.add_argument("--json", action="store_true")
    r.add_argument(
        "--types",
        action="store_true",
        help="every remote type imgsync knows, with its options (not the configured remotes)",
    )

    cf = sub.add_parser("config", help="config helpers")
    cf_sub = cf.add_subparsers(
        dest="config_verb", metavar="check", required=True, parser_class=_Parser
    )
    cf_sub.add_parser("check", help="report every problem in the config, exit 78 if any")

    d = sub.add_parser("demo", help="try imgsync against a local Gyazo emulator (no account)")
    d.add_argument(
        "--dir",
        type=Path,
        default=Path("imgsync-demo"),
        help="working folder for the demo (default: ./imgsync-demo)",
    )

    f = sub.add_parser("fakehost", help="run a host emulator on 127.0.0.1")
    f.add_argument("kind", metavar="KIND", help="the emulator: the remote type it emulates")
    f.add_argument("--port", type=int, default=8080)
    f.add_argument("--token", default="test-token", help="the credential it accepts")
    f.add_argument("--seed", type=int, default=0, help="start with N images")
    f.add_argument(
        "--rate",
        default=None,
        help="enforce a limit, e.g. 60/minute; none: no limit (default: the host's own)",
    )
    f.add_argument("--faults", default=None, help="e.g. 5xx=0.1,reset=0.05,slow=0.1")
    f.add_argument(
        "--max-upload-mb",
        type=float,
        default=None,
        help="largest upload accepted, in decimal MB (default: the host's own; chevereto: 2)",
    )
    f.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an emulator option, e.g. paging=true (discordimages), "
        "checksum_field=checksum (chevereto), mixed_dates=true (gyazo)",
    )
    if verb is not None and not one.found:  # not a verb: the whole parser says so
        return build_parser()
    return p


def _load(args: argparse.Namespace) -> Config:
    # status and remotes talk to no host: an unset token variable must not stop them
    from imgsync.config import load_config  # not for --version, --help or a usage error

    tokens = args.verb not in ("status", "remotes")
    cfg = load_config(args.config, explicit=args.config is not None, tokens=tokens)
    for w in cfg.warnings:
        print(f"imgsync: warning: {w}", file=sys.stderr)
    return cfg


def _globals_first(argv: list[str]) -> list[str]:
    """Move the global options (``-v``, ``--config FILE``) given after the verb to the
    front, as rclone and gallery-dl users write them (``imgsync copy a b -v``)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest.extend(argv[i:])
            break
        if a in ("-v", "--verbose") or a.startswith("--config="):
            front.append(a)
        elif a == "--config" and i + 1 < len(argv):
            front += [a, argv[i + 1]]
            i += 1
        else:
            rest.append(a)
        i += 1
    return front + rest


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``imgsync`` command. Returns the exit code.

    Called without ``argv`` (the ``imgsync`` program, ``python -m imgsync``), a run that
    leaves nothing behind to clean up ends the process here (see :func:`_end_if_idle`),
    and the cyclic garbage collector stays off while the verb's modules load: they are
    tens of thousands of objects that live as long as the process, which it would
    traverse again and again. The verbs that do async work turn it back on before their
    event loop starts, with what was loaded frozen out of its way
    (:func:`imgsync.commands.setup_logging`); the others right after parsing, except a
    folder copy with nothing to do (a short run that makes no cyclic garbage).
    """
    if argv is None:
        gc.disable()
        _standard_streams_open()
    code = _main(argv)
    if argv is None:
        _end_if_idle(code)
    return code


def _end_if_idle(code: int) -> None:
    """End the process at once with ``code`` when its output is flushed and nothing else
    is left to finish (:func:`_nothing_to_finish`). The interpreter's own teardown frees
    every module, class and object one by one: about 8 ms for a no-op re-run, 40-50 ms
    once the HTTP stack was loaded (a backup, an upload), and it changes nothing on disk."""
    if not _nothing_to_finish():
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        return  # the interpreter's exit deals with it as it always did
    os._exit(code)


def _standard_streams_open() -> None:
    """Started with stdin, stdout or stderr closed (``imgsync copy a b >&-``): that
    descriptor is pointed at /dev/null, as a daemon does, and the stream made again, so
    output and log lines are dropped as they would be there. Otherwise the next file
    opened (the state database, a staged image) would take the descriptor of a standard
    stream, and a closed stream (``None``) would fail the run where it is written."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_RDWR)
            except OSError:
                continue
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False, errors="backslashreplace"))  # noqa: SIM115
    out = sys.stdout
    if isinstance(out, io.TextIOWrapper) and out.fileno() == 1:
        # the same stream, on a descriptor whose failed writes say they were the output's
        sys.stdout = io.TextIOWrapper(
            io.BufferedWriter(_StdoutFile(1, "w", closefd=False)),
            encoding=out.encoding,
            errors=out.errors,
            line_buffering=out.line_buffering,
            write_through=out.write_through,
        )


class _OutputError(OSError):
    """A write to stdout failed (a full disk, an I/O error; a closed pipe is not one)."""


class _StdoutFile(io.FileIO):
    def write(self, data: Any, /) -> int:
        try:
            return super().write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _OutputError(exc.errno, exc.strerror) from exc


def _nothing_to_finish() -> bool:
    """Whether skipping the interpreter's teardown loses nothing: a run that never
    started an event loop or logging, one thread, no exit handlers (the no-op path); or,
    after a run that did (a backup, an upload), every other thread ended, no exit handler
    but logging's own with only the standard streams to flush, no pending
    ``weakref.finalize`` (temporary folders), and no regular file or socket open beyond
    stdin, stdout and stderr (so the state database is closed, no file has unwritten
    buffers, no connection is dropped). Anything else, or a system without
    ``/proc/self/fd``: the normal exit."""
    import atexit

    if "asyncio" not in sys.modules and "logging" not in sys.modules:
        return not atexit._ncallbacks() and not _other_threads(wait=False)
    if not _other_threads_end() or not _logging_idle():
        return False
    expected = 1 if "logging" in sys.modules else 0  # logging.shutdown
    if "weakref" in sys.modules:
        finalize: Any = sys.modules["weakref"].finalize
        if getattr(finalize, "_registry", True):
            return False  # pending finalizers (or a weakref we do not know)
        expected += bool(getattr(finalize, "_registered_with_atexit", True))
    return atexit._ncallbacks() == expected and _no_open_files()


def _other_threads(wait: bool) -> bool:
    threading = sys.modules.get("threading")
    if threading is None:
        return False
    if wait:
        for thread in threading.enumerate():
            # an event loop's idle workers are told to stop as the loop closes; the
            # interpreter would wait for them first thing at exit (daemon threads it
            # would not: their presence means the normal exit)
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join(timeout=1.0)
    return bool(threading.active_count() > 1)


def _other_threads_end() -> bool:
    return not _other_threads(wait=True)


def _logging_idle() -> bool:
    """No stdlib logging handler but stream handlers on stderr/stdout (flushed here)."""
    logging = sys.modules.get("logging")
    if logging is None:
        return True
    streams = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    for ref in getattr(logging, "_handlerList", None) or ():
        handler = ref()
        if handler is None:
            continue
        if type(handler) not in (logging.StreamHandler, type(logging.lastResort)):
            return False
        if handler.stream not in streams:
            return False
    return hasattr(logging, "_handlerList")


def _no_open_files() -> bool:
    """No descriptor but 0, 1 and 2 refers to a regular file or a socket (a connection
    to PostgreSQL or a host left open), per Linux's /proc/self/fd."""
    import stat

    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return False
    for name in fds:
        fd = int(name)
        if fd <= 2:
            continue
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            continue  # the listing's own descriptor, closed by now
        if stat.S_ISREG(mode) or stat.S_ISSOCK(mode):
            return False
    return True


def _main(argv: list[str] | None) -> int:
    argv = _globals_first(sys.argv[1:] if argv is None else argv)
    args = build_parser(_verb_of(argv)).parse_args(argv)
    try:
        code = _dispatch(args)
        try:
            sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        except _OutputError as exc:
            return _output_lost(exc, code)
        return code
    except BrokenPipeError:
        return _pipe_closed()
    except _OutputError as exc:
        return _output_lost(exc, 0)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"imgsync: config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except LocalIOError as exc:
        print(f"imgsync: {exc}", file=sys.stderr)
        return EXIT_NOINPUT
    except ImgsyncError as exc:
        print(f"imgsync: {_redacted(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except BaseExceptionGroup as group:
        if _only_pipes(group):
            return _pipe_closed()
        # a task group's worker stopped by an imgsync error (the shared state went away
        # mid-run): that error, in one line, with its exit code
        if group.subgroup(KeyboardInterrupt) is not None:
            print(
                "imgsync: interrupted; what finished is recorded, re-run to resume", file=sys.stderr
            )
            return EXIT_INTERRUPTED
        inner = _first_imgsync_error(group)
        if inner is None:
            return _internal_error(args, group)
        print(f"imgsync: {_redacted(str(inner))}", file=sys.stderr)
        return inner.exit_code
    except KeyboardInterrupt:
        print("imgsync: interrupted; what finished is recorded, re-run to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug: one line (traceback with -v), exit 70
        return _internal_error(args, exc)


def _only_pipes(group: BaseExceptionGroup[Any]) -> bool:
    """Every error in ``group`` is a closed pipe (a task group's writer hit it)."""
    rest = group.subgroup(lambda e: not isinstance(e, (BrokenPipeError, BaseExceptionGroup)))
    return rest is None


def _pipe_closed() -> int:
    """The reader went away (``imgsync ls REMOTE | head``): stop quietly, exit 0. Point
    stdout at /dev/null so the interpreter's last flush does not complain either."""

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0


def _output_lost(exc: OSError, code: int) -> int:
    """What the run printed could not be written (stdout on a full disk, an I/O error):
    one line saying so, exit 74 unless the run failed already (its code stands). What
    is left in the buffer goes to /dev/null, so the interpreter's exit says nothing more."""
    reason = exc.strerror or type(exc).__name__
    print(f"imgsync: cannot write the output (stdout: {reason})", file=sys.stderr)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return code if code != 0 else EXIT_IOERR


def _internal_error(args: argparse.Namespace, exc: BaseException) -> int:
    if args.verbose:
        import traceback

        traceback.print_exception(exc)
    what = _redacted(f"{type(exc).__name__}: {exc}")
    print(f"imgsync: internal error: {what} (run with -v for details)", file=sys.stderr)
    return EXIT_SOFTWARE


def _first_imgsync_error(group: BaseExceptionGroup[BaseException]) -> ImgsyncError | None:
    for exc in group.exceptions:
        if isinstance(exc, ImgsyncError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_imgsync_error(exc)
            if found is not None:
                return found
    return None


def _redacted(text: str) -> str:
    if "imgsync.log" in sys.modules:
        from imgsync.log import redact

        return redact(text)
    return text


# Verbs that need more of the state shared than fleet mode shares yet (sync's deletes
# need the delete URLs, which stay on the worker that uploaded; verify's repairs would
# move locations the fleet shares): refused with exit 2 rather than half working.
# ``verify`` checks every worker's uploads (their locations are taken in first); its
# verdicts stay in this machine's state. The daemon (``run``) refuses only the jobs that
# would delete or verify (``daemon.check_jobs``).
_NOT_IN_FLEET = ("sync",)


# Verbs that call ``setup_logging`` before their event loop (or end soon without one).
_COLLECT_LATER = ("copy", "backup", "migrate", "check", "sync", "run", "ls", "verify", "demo")


def _dispatch(args: argparse.Namespace) -> int:
    verb = args.verb
    if verb not in _COLLECT_LATER:
        gc.enable()
    if verb == "fakehost":
        return _fakehost(args)
    if verb == "demo":
        from imgsync.commands import setup_logging
        from imgsync.config import Config
        from imgsync.demo import run_demo

        setup_logging(Config(), args)
        return run_demo(args.dir)
    if verb == "config":
        from imgsync.config import load_config

        cfg = load_config(args.config, explicit=args.config is not None)
        where = cfg.path or "(no config file; embedded defaults)"
        for w in cfg.warnings:
            print(f"imgsync: warning: {w}", file=sys.stderr)
        print(
            f"config OK: {where}: {len(cfg.remotes)} remotes, {len(cfg.jobs)} jobs, "
            f"state at {cfg.state_path}"
        )
        return 0
    cfg = _load(args)
    if cfg.state_url and verb in _NOT_IN_FLEET:
        raise UsageError(
            f"{verb} does not work with a shared state ([state] url or IMGSYNC_STATE_URL) "
            "yet; fleet mode runs copy, backup, migrate, check, verify (without --repair) and "
            "run (without delete or verify jobs). Instead: run sync on the machine that "
            "uploaded, with its own state and no state URL (README: Many machines)"
        )
    if cfg.state_url and verb == "verify" and getattr(args, "repair", None):
        raise UsageError(
            "verify --repair does not work with a shared state ([state] url or "
            "IMGSYNC_STATE_URL) yet. Instead: run verify without --repair (it checks every "
            "worker's uploads), or imgsync state copy URL FILE and repair on FILE without a "
            "state URL (README: Many machines)"
        )
    if verb == "status":
        if args.check:
            return _health_check(cfg)
        return _status(cfg, args.json, args.state)
    if verb == "state":
        return _state_copy(args)
    if verb == "remotes":
        return _types(args.json) if args.types else _remotes(cfg, args.json)
    if verb == "rewrite":
        return _rewrite(cfg, args)
    if verb == "run":
        import asyncio

        from imgsync.commands import setup_logging
        from imgsync.daemon import run_daemon

        setup_logging(cfg, args)
        return asyncio.run(run_daemon(cfg))
    if verb in ("copy", "backup", "migrate", "check", "sync"):
        from imgsync.commands import run_copy

        return run_copy(cfg, args)
    if verb == "report":
        from imgsync.commands import run_report

        return run_report(cfg, args)
    if verb == "verify":
        from imgsync.verifycmd import run_verify_cmd

        return run_verify_cmd(cfg, args)
    if verb == "ls":
        from imgsync.commands import run_ls

        return run_ls(cfg, args)
    raise UsageError(f"unknown verb {verb}")


def _rewrite(cfg: Config, args: argparse.Namespace) -> int:
    from imgsync.rewrite import UndoJournal, rewrite, undo
    from imgsync.urlmap import read_map

    journal = UndoJournal(cfg.state_path.parent / "rewrites")
    if args.undo:
        if args.map is not None:
            raise UsageError("rewrite --undo takes no --map (it uses what the rewrite recorded)")
        result = undo(args.paths, journal, dry_run=args.dry_run)
    else:
        if args.map is None:
            raise UsageError("rewrite needs --map FILE (or --undo)")
        result = rewrite(read_map(args.map), args.paths, dry_run=args.dry_run, journal=journal)
    if args.json:
        print(
            json.dumps(
                {
                    "files_changed": result.files_changed,
                    "links_replaced": result.links_replaced,
                    "dry_run": args.dry_run,
                    "undo": args.undo,
                    "files": result.changed,
                    "failures": [{"file": f, "error": e} for f, e in result.failures],
                    "skipped": [{"file": f, "reason": r} for f, r in result.skipped],
                }
            )
        )
    else:
        for diff in result.diffs:
            sys.stdout.write(diff)
        if args.undo:
            verb = "would restore" if args.dry_run else "restored"
        else:
            verb = "would rewrite" if args.dry_run else "rewrote"
        print(f"{verb} {result.links_replaced} links in {result.files_changed} files")
    for f, r in result.skipped:
        print(f"  skipped: {f}: {r}", file=sys.stderr)
    for f, e in result.failures:
        print(f"  failed: {f}: {e}", file=sys.stderr)
    return 1 if result.failures else 0


def _names(cfg: Config) -> dict[str, str]:
    """State key -> the configured remote's name, for every remote that resolves."""
    from imgsync.runtime import resolve_spec

    names: dict[str, str] = {}
    for name in sorted(cfg.remotes):
        try:
            names.setdefault(resolve_spec(cfg, f"{name}:")[1], name)
        except ImgsyncError:
            continue
    return names


def _by_name(cfg: Config, remotes: dict[str, Any]) -> dict[str, Any]:
    """State keys (what a destination is) shown as the config's remote names where known."""
    from imgsync.pipeline.summary import shown_key

    names = _names(cfg)
    return {names.get(key, shown_key(key)): {**value, "key": key} for key, value in remotes.items()}


def _name_rows(cfg: Config, rows: list[dict[str, Any]]) -> None:
    """Journal rows (failures, possible duplicates): ``source``/``dest`` as people name
    them (``gy:``, a folder's path), the state keys kept as ``source_key``/``dest_key``."""
    from imgsync.pipeline.summary import shown_key

    names = _names(cfg)
    for row in rows:
        for field in ("source", "dest"):
            key = row.get(field)
            if isinstance(key, str) and f"{field}_key" not in row:
                row[f"{field}_key"] = key
                row[field] = f"{names[key]}:" if key in names else shown_key(key)


def _health_check(cfg: Config) -> int:
    """``status --check``: 0 when a daemon runs on this state and (if it serves one) its
    ``/healthz`` answers 200; else 1 with one line saying why (a container HEALTHCHECK)."""
    from imgsync.pidfile import running_daemon

    info = running_daemon(cfg.state_path)
    if info is None:
        print(f"imgsync: no daemon runs on {cfg.state_path}", file=sys.stderr)
        return 1
    if not info.get("listen"):
        print(f"daemon running, pid {info.get('pid', '?')} (no [daemon] listen to ask)")
        return 0
    import asyncio

    from imgsync.http import probe

    url = f"http://{info['listen']}/healthz"
    status = asyncio.run(probe(url))
    if status != 200:
        print(f"imgsync: {url} answered {status or 'nothing'}", file=sys.stderr)
        return 1
    print(f"daemon healthy, pid {info.get('pid', '?')}")
    return 0


def _status(cfg: Config, as_json: bool, state: str | None = None) -> int:
    """What a state holds: the SQLite file, or with a state URL (``--state``, ``[state]
    url``, ``IMGSYNC_STATE_URL``) the fleet's shared state, in the same shape."""
    from imgsync.pidfile import running_daemon
    from imgsync.state.fleet.common import is_url

    target = state if state is not None else cfg.state_url or str(cfg.state_path)
    if "://" in target and not is_url(target):
        from imgsync.state.fleet.common import redact

        raise UsageError(f"--state {redact(target)}: neither a state file nor a postgresql:// URL")
    if is_url(target):
        from imgsync.state.fleet.report import shared_status

        report = shared_status(target)
        if cfg.state_url and state is None:
            report["worker_state"] = str(cfg.state_path)
    else:
        from imgsync.state.reader import StateReader, open_reader

        path = Path(target).expanduser()
        if state is not None and path.exists():  # a file named here is read, not changed
            from imgsync.state.db import open_readonly

            reader: StateReader | None = StateReader(path, open_readonly(path))
        else:
            reader = open_reader(path, create=False)
        if reader is None:
            report = {"state": str(path), "exists": False}
        else:
            with reader:
                report = {"state": str(path), "exists": True, **reader.status()}
    if report["exists"]:
        report["remotes"] = _by_name(cfg, report["remotes"])
        report["verify"] = _by_name(cfg, report.get("verify", {}))
        _name_rows(cfg, report.get("recent_failures", []))
        _name_rows(cfg, report.get("possible_duplicates", []))
    report["daemon"] = running_daemon(cfg.state_path)
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    fleet = report.get("fleet")
    print(f"state: {report['state']}" + (" (shared by the fleet)" if is_url(target) else ""))
    _print_daemon(report["daemon"])
    if "worker_state" in report:
        print(f"  this worker's own state: {report['worker_state']}")
    if not report["exists"]:
        print("  nothing recorded yet")
        return 0
    print(f"  {report['objects']} distinct images, {report['bytes']} bytes")
    for name, r in report["remotes"].items():
        print(f"  {name}: {r['items']} items")
    for job, stages in report["jobs"].items():
        print(f"  job {job}: " + ", ".join(f"{n} {s}" for s, n in stages.items()))
    import time

    for auth, p in report["paused_hosts"].items():
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(p["until"]))
        print(f"  paused: {auth} until {when} ({p['reason']})")
    from imgsync.verifycmd import last_checks

    for line in last_checks(report):
        print(line)
    for f in report["recent_failures"]:
        print(f"  failed: {f['job']}: {f['item']}: {f['error']}")
    for d in report["possible_duplicates"]:
        print(f"  {d['note']} (job {d['job']})")
    if fleet is not None:
        names = {v["key"]: k for k, v in report["remotes"].items()}
        for listing in fleet.get("listings", {}).values():
            src = names.get(listing["source"], listing["source"])
            dst = names.get(listing["dest"], listing["dest"])
            state = "complete" if listing["complete"] else f"{listing['held']} being worked on"
            print(
                f"  listing {src} -> {dst}, pass {listing['round']}: {listing['done']} of "
                f"{listing['pages']} pages done, {state}"
            )
        print(f"  {fleet['leases']} uploads in flight by {fleet['workers']} workers")
        for auth, n in fleet["hosts"].items():
            print(f"  {auth}: {n} requests in the last minute (all workers)")
    return 0


def _state_copy(args: argparse.Namespace) -> int:
    from imgsync.state.fleet.transfer import copy_state

    counts = copy_state(args.src, args.dst)
    if args.json:
        print(json.dumps({"from": counts.source, "to": counts.target, "copied": counts.rows}))
    else:
        what = ", ".join(f"{n} {table}" for table, n in counts.rows.items())
        print(f"copied {what} from {counts.source} to {counts.target}")
    return 0


def _print_daemon(info: dict[str, Any] | None) -> None:
    import time

    if info is None:
        print("daemon: not running on this state")
        return
    since = info.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since)) if since else "?"
    line = f"daemon: running, pid {info.get('pid', '?')}, since {when}"
    if info.get("jobs") is not None:
        line += f", jobs: {', '.join(info['jobs']) or 'none'}"
    if info.get("listen"):
        line += f"; health at http://{info['listen']}/healthz"
    print(line)


def _remotes(cfg: Config, as_json: bool) -> int:
    import dataclasses

    from imgsync.providers import provider_class
    from imgsync.providers.base import ProviderContext

    out: list[dict[str, Any]] = []
    for name, r in sorted(cfg.remotes.items()):
        # constructing a provider does no I/O; per-remote options can change features
        provider = provider_class(r.type)(r, ProviderContext())
        out.append(
            {
                "name": name,
                "type": r.type,
                "base_url": r.base_url or provider.info.default_base_url,
                "where": None if r.path else type(provider).where(r),
                "path": str(r.path) if r.path else None,
                "options": dataclasses.asdict(provider.options),
                "features": provider.features.describe(),
            }
        )
    if as_json:
        print(json.dumps(out, indent=2))
    elif not out:
        print("no remotes configured; folder paths work as remotes without config")
    else:
        for o in out:
            f = o["features"]
            caps = [k for k in ("list", "delete", "get") if f.get(k)]
            where = o["path"] or o["base_url"] or o["where"]
            print(f"{o['name']}: {o['type']} at {where}; can {', '.join(caps) or 'only upload'}")
    return 0


def _types(as_json: bool) -> int:
    from imgsync.providers import kinds, provider_class

    out = []
    for kind in kinds():
        cls = provider_class(kind)
        out.append({**cls.info.describe(), "features": cls.features.describe()})
    if as_json:
        print(json.dumps(out, indent=2))
        return 0
    for t in out:
        needs = [f"token {t['token']}", f"base_url {t['base_url']}"]
        if t["path"]:
            needs.append("path required")
        print(f"{t['type']}: {t['description']} ({'; '.join(needs)})")
        for o in t["options"]:
            limits = f" [{o['range'][0]}-{o['range'][1]}]" if o["range"] else ""
            limits += f" [{' | '.join(o['choices'])}]" if o["choices"] else ""
            default = "" if o["default"] is None else f" = {json.dumps(o['default'])}"
            print(f"  {o['name']}{default}: {o['type']}{limits}; {o['doc']}")
    return 0


def _fakehost(args: argparse.Namespace) -> int:
    import asyncio

    from imgsync.fakehosts import emulator_factory, emulators
    from imgsync.fakehosts.common import Knobs, parse_faults, rate_limit, serve

    if args.kind not in emulators():
        raise UsageError(f"fakehost: no emulator {args.kind!r} (known: {', '.join(emulators())})")

    try:
        rate_limit(args.rate, "none")  # a rate, or none/off/unlimited/0: no limit
        faults = parse_faults(args.faults)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    knobs = Knobs(
        token=args.token,
        seed=args.seed,
        rate=args.rate,
        faults=faults,
        max_upload_bytes=None if args.max_upload_mb is None else int(args.max_upload_mb * 1e6),
    )
    options: dict[str, Any] = {}
    for item in args.option:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier() or name in ("clock", "wall_clock"):
            raise UsageError(f"--option wants NAME=VALUE, got {item!r}")
        low = value.lower()
        options[name] = (
            low in ("true", "yes", "1")
            if low in ("true", "false", "yes", "no", "1", "0")
            else int(value)
            if value.isdigit()
            else value
        )
    try:
        host = emulator_factory(args.kind)(knobs, **options)
    except TypeError as exc:
        raise UsageError(f"{args.kind} emulator: {exc}") from None
    try:
        asyncio.run(serve(host, args.port))
    except OSError as exc:
        raise UsageError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}") from None
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
