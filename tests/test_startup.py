"""Process start-up and exit: what is loaded lazily, and the quick exit after a run.

* aiohttp builds its default TLS contexts at import; the system CA bundle they read is
  loaded when a TLS connection first needs it (:mod:`imgsync.certs`), and verification is
  what it was: a host whose certificate no trusted CA signed is refused.
* A network run (backup, upload) that leaves nothing to finish ends without the
  interpreter's teardown (``cli._end_if_idle``); whatever is left (an exit handler, a file
  with unwritten buffers, a temporary folder, a thread) gets the normal exit.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from helpers import run_cli_async, start_fake, write_config

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake

# A module global whose __del__ writes a line: the interpreter's teardown runs it, a
# process ended with os._exit does not.
_MARKER = (
    "import sys\n"
    "class _Teardown:\n"
    "    def __del__(self):\n"
    "        sys.stderr.write('TEARDOWN-RAN\\n')\n"
    "_keep = _Teardown()\n"
)


def _probe(
    code: str, tmp_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
    )


# ---- TLS: the CA bundle is read on first use, verification unchanged --------------------


def test_importing_the_http_client_reads_no_ca_bundle(tmp_path: Path) -> None:
    """``import imgsync.http`` leaves aiohttp's default contexts without CAs (still
    requiring verification); the first https connection loads them (144 or so system
    CAs; at least one here), on the very context aiohttp then uses."""
    code = (
        "import asyncio, ssl\n"
        "import imgsync.http\n"
        "import aiohttp, aiohttp.connector as c\n"
        "v, u = c._SSL_CONTEXT_VERIFIED, c._SSL_CONTEXT_UNVERIFIED\n"
        "print(v.cert_store_stats()['x509_ca'], u.cert_store_stats()['x509_ca'])\n"
        "print(v.verify_mode == ssl.CERT_REQUIRED, v.check_hostname)\n"
        "async def go():\n"
        "    async with aiohttp.ClientSession() as s:\n"
        "        try:\n"
        "            await s.get('https://127.0.0.1:9/')\n"  # nothing listens: refused
        "        except aiohttp.ClientError:\n"
        "            pass\n"
        "asyncio.run(go())\n"
        "print(v.cert_store_stats()['x509_ca'] > 0, u.cert_store_stats()['x509_ca'])\n"
    )
    ca = _make_ca(tmp_path)
    proc = _probe(code, tmp_path, {"SSL_CERT_FILE": str(ca.ca)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["0 0", "True True", "True 0"]


class _Certs:
    def __init__(self, folder: Path) -> None:
        self.ca = folder / "ca.pem"
        self.cert = folder / "leaf.pem"
        self.key = folder / "leaf.key"


def _make_ca(folder: Path) -> _Certs:
    """A throwaway CA and a certificate for 127.0.0.1 signed by it (openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test CA")
    certs = _Certs(folder)
    ext = folder / "leaf.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (
        [openssl, "req", "-x509", *ec, "-keyout", str(folder / "ca.key"), "-out", str(certs.ca),
         "-days", "2", "-subj", "/CN=imgsync test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", str(certs.key), "-out", str(folder / "leaf.csr"),
         "-subj", "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", str(folder / "leaf.csr"), "-CA", str(certs.ca),
         "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-out", str(certs.cert),
         "-days", "2", "-extfile", str(ext)],
    ):  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return certs


async def test_https_hosts_are_verified_with_the_cas_loaded_on_use(tmp_path: Path) -> None:
    """``imgsync ls`` of a host served over TLS: trusted through ``SSL_CERT_FILE`` (read
    where the system CAs are read, now on first use) it lists; with the system CAs only,
    the certificate is refused (exit 3, a certificate error), as before."""
    certs = _make_ca(tmp_path)
    fake = GyazoFake(Knobs(token="tls-token-1234", seed=3))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs.cert, certs.key)
    runner = web.AppRunner(fake.make_app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
        await site.start()
        port = runner.addresses[0][1]
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "https://127.0.0.1:{port}"\n'
            'token_env = "GY"\n',
        )
        args = ("--config", str(cfg), "ls", "gy:", "--json")
        trusted = await run_cli_async(
            *args, env={"GY": "tls-token-1234", "SSL_CERT_FILE": str(certs.ca)}
        )
        assert trusted.returncode == 0, trusted.stderr
        assert len([json.loads(line) for line in trusted.stdout.splitlines()]) == 3
        system = await run_cli_async(*args, env={"GY": "tls-token-1234", "SSL_CERT_FILE": ""})
        assert system.returncode == 3, system.stderr
        assert "certificate" in system.stderr.lower()
        assert "tls-token-1234" not in system.stderr
    finally:
        await runner.cleanup()


# ---- the quick exit after a network run ----------------------------------------------


async def test_a_backup_ends_without_the_interpreter_teardown(tmp_path: Path) -> None:
    """``imgsync backup -v`` (the program, not ``main(argv)``): everything written and
    recorded, the summary printed, every debug log line out whole (JSON lines, the token
    masked), the state database closed (its WAL checkpointed away), and no teardown."""
    fake = await start_fake(GyazoFake(Knobs(token="exit-token-1234", seed=4)))
    out = tmp_path / "backup"
    state = tmp_path / "st" / "state.db"
    try:
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{fake.url}"\ntoken_env = "GY"\n',
        )
        argv = ["imgsync", "--config", str(cfg), "backup", "gy:", str(out), "--json", "-v"]
        code = (
            _MARKER
            + f"sys.argv = {argv!r}\nfrom imgsync.cli import main\nraise SystemExit(main())\n"
        )
        import os

        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, cwd=tmp_path,
            env={**os.environ, "GY": "exit-token-1234", "IMGSYNC_STATE": str(state)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await fake.close()
    assert proc.returncode == 0, stderr.decode()
    assert json.loads(stdout)["copied"] == 4
    assert "TEARDOWN-RAN" not in stderr.decode()
    events = [json.loads(line) for line in stderr.decode().splitlines()]  # JSON logs, whole
    assert len([e for e in events if e["event"] == "transferred"]) == 4
    assert "exit-token-1234" not in stderr.decode()
    assert len([p for p in out.iterdir() if p.name.endswith(".json")]) == 4
    assert not state.with_name("state.db-wal").exists()  # closed: checkpointed, removed
    import sqlite3

    with sqlite3.connect(state) as conn:
        assert conn.execute("SELECT count(*) FROM locations").fetchone()[0] >= 4


_AFTER_A_RUN = "import asyncio, logging\n"  # as after a network run: the extended checks


@pytest.mark.parametrize(
    ("leftover", "check"),
    [
        ("import atexit\natexit.register(lambda: print('EXIT-HANDLER-RAN'))\n", "handler"),
        ("_f = open('unflushed.txt', 'w')\n_f.write('buffered words')\n", "file"),
        ("import tempfile\n_t = tempfile.TemporaryDirectory(dir='.')\nopen(_t.name + '/x', 'w').close()\n", "tmpdir"),
        ("import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.3), open('late.txt', 'w').write('done'))).start()\n", "thread"),
        ("import logging\nlogging.getLogger().addHandler(logging.FileHandler('log.txt'))\n", "loghandler"),
        ("import threading, time\nthreading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n", "daemon"),
        ("import socket\n_s = socket.create_server(('127.0.0.1', 0))\n", "socket"),
        ("", "nothing"),
    ],
)  # fmt: skip
def test_the_normal_exit_runs_when_something_is_left(
    leftover: str, check: str, tmp_path: Path
) -> None:
    """After a run that loaded asyncio and logging: anything left to finish gets the
    interpreter's normal exit (which finishes it); with nothing left, no teardown. A
    thread still working is waited for first, as the interpreter would (then nothing is
    left); a daemon thread (which the interpreter would not wait for) means the normal exit."""
    code = (
        _MARKER + _AFTER_A_RUN + leftover + "sys.argv = ['imgsync', 'config', 'check']\n"
        "from imgsync.cli import main\nraise SystemExit(main())\n"
    )
    proc = _probe(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("config OK")
    torn_down = "TEARDOWN-RAN" in proc.stderr
    assert torn_down == (check not in ("nothing", "thread"))
    if check == "handler":
        assert "EXIT-HANDLER-RAN" in proc.stdout
    elif check == "file":
        assert (tmp_path / "unflushed.txt").read_text() == "buffered words"
    elif check == "tmpdir":
        assert not [p for p in tmp_path.iterdir() if p.name.startswith("tmp")]
    elif check == "thread":
        assert (tmp_path / "late.txt").read_text() == "done"


# ---- the garbage collector during start-up -------------------------------------------


@pytest.mark.parametrize(
    ("argv", "frozen"),
    [(["ls", "{folder}"], True), (["status"], False), (["copy", "{folder}", "{out}"], True)],
)
def test_the_collector_is_back_on_for_the_run(
    argv: list[str], frozen: bool, image_tree: Path, tmp_path: Path
) -> None:
    """The program loads its modules with the collector off; a verb with async work
    (``ls``, a copy) turns it back on before its event loop with what was loaded frozen
    (``gc.get_freeze_count()``), another verb (``status``) right after parsing. An exit
    handler (which also means the normal exit) reports what the run ended with."""
    args = [a.format(folder=image_tree, out=tmp_path / "out") for a in argv]
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('GC', gc.isenabled(), gc.get_freeze_count() > 1000))\n"
        f"sys.argv = ['imgsync', *{args!r}]\n"
        "from imgsync.cli import main\nraise SystemExit(main())\n"
    )
    proc = _probe(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"GC True {frozen}"


def test_setup_logging_leaves_an_enabled_collector_alone() -> None:
    """Called in-process (tests, the library), ``setup_logging`` freezes nothing."""
    import argparse
    import gc

    from imgsync.commands import setup_logging
    from imgsync.config import Config

    before = gc.get_freeze_count()
    setup_logging(Config(), argparse.Namespace(verbose=False))
    assert gc.isenabled() and gc.get_freeze_count() == before


# ---- closed or full standard streams -------------------------------------------------


def _shell_run(redirect: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``python -m imgsync ARGS`` started by a shell with ``redirect`` applied (``>&-``
    closes stdout, ``2>&-`` stderr, ``>/dev/full`` fills the disk on every write)."""
    import os
    import shlex

    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "imgsync", *args])
    return subprocess.run(
        ["sh", "-c", f"exec {cmd} {redirect}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "IMGSYNC_STATE": str(tmp_path / "st" / "state.db")},
    )


@pytest.mark.parametrize("redirect", [">&-", "2>&-"])
def test_a_closed_standard_stream_neither_fails_the_run_nor_hides_its_exit_code(
    redirect: str, image_tree: Path, tmp_path: Path
) -> None:
    """``imgsync copy SRC DST >&-`` (or ``2>&-``): the copy is done and exits 0, with no
    internal error and no traceback (the quick exit flushed a stream that is ``None``);
    a run that fails keeps its exit code (a missing config file: 78, not 1)."""
    out = tmp_path / "out"
    proc = _shell_run(redirect, ["copy", str(image_tree), str(out), "--json"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "internal error" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len([p for p in out.rglob("*") if p.is_file()]) == 12
    bad = _shell_run(redirect, ["--config", str(tmp_path / "none.toml"), "status"], tmp_path)
    assert bad.returncode == 78, bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr


def test_output_to_a_full_disk_is_one_line_and_its_own_exit_code(
    image_tree: Path, tmp_path: Path
) -> None:
    """``imgsync copy SRC DST --json >/dev/full``: the copy is done and recorded, the
    summary cannot be written: one line saying so (not an internal error), exit 74."""
    out = tmp_path / "out"
    proc = _shell_run(">/dev/full", ["copy", str(image_tree), str(out), "--json"], tmp_path)
    assert proc.returncode == 74, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("imgsync: cannot write the output"), lines
    assert "No space left on device" in lines[0]
    assert len([p for p in out.rglob("*") if p.is_file()]) == 12
    again = _shell_run(">/dev/null", ["copy", str(image_tree), str(out), "--json"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert len([p for p in out.rglob("*") if p.is_file()]) == 12  # recorded: nothing twice


# ---- what the command line alone loads -----------------------------------------------


@pytest.mark.parametrize("argv", [["--version"], ["backup", "--help"], ["copy", "a"]])
def test_version_help_and_usage_errors_load_no_config_or_runtime(
    argv: list[str], tmp_path: Path
) -> None:
    """``--version``, a verb's ``--help`` and a usage error (exit 2) need the parser
    only: not the config (dataclasses, tomllib), the state, logging or the HTTP stack."""
    code = (
        "import sys, contextlib, io\n"
        "from imgsync.cli import main\n"
        "try:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"        main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    print('exit', exc.code)\n"
        "heavy = ('imgsync.config', 'dataclasses', 'tomllib', 'sqlite3', 'logging', 'structlog',\n"
        "         'asyncio', 'aiohttp', 'ssl', 'imgsync.log', 'imgsync.commands')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = _probe(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"exit {2 if argv == ['copy', 'a'] else 0}", "[]"]
