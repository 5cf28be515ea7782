"""A throwaway PostgreSQL cluster for the tests that need one (fleet mode).

``initdb`` into a temporary folder and ``pg_ctl start`` listening on a Unix socket only
(no TCP port to collide with another test run), stopped and removed afterwards. As root,
the cluster runs as the ``postgres`` (or ``nobody``) OS user, since PostgreSQL refuses
to run as root. Where no PostgreSQL is installed the tests are skipped, unless
``IMGSYNC_REQUIRE_POSTGRES=1`` (set by ``.ci/run``, which installs it) makes that a failure.

The cluster lives no longer than the process that started it, even one killed with
SIGKILL: a small reaper process (its own session, so a Ctrl-C to the test run does not
reach it) reads a pipe only the starting process holds; when that process is gone, for
whatever reason, the pipe ends and the reaper stops the cluster and removes its folder.
Starting a cluster also sweeps what an earlier run left behind without a reaper: a
folder whose recorded owner process is dead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from imgsync.pids import pid_alive


def pg_bindir() -> Path | None:
    """Where ``initdb``/``pg_ctl`` are: ``IMGSYNC_PG_BIN``, Debian's versioned folder, PATH."""
    env = os.environ.get("IMGSYNC_PG_BIN")
    if env:
        return Path(env)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _run_as() -> list[str]:
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--"]
    pytest.fail("running as root and no non-root user (postgres, nobody) to run PostgreSQL")


PREFIX = "imgsync-pg-"
_OWNER = "owner.pid"  # the pid of the process the cluster belongs to


def _stop_cluster(root: Path, bindir: Path, prefix: list[str]) -> None:
    """Stop the cluster in ``root`` (if it runs) and remove the folder."""
    data = root / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
            cwd="/",
            check=False,
        )
    shutil.rmtree(root, ignore_errors=True)


def sweep_stale(tmp: Path = Path("/tmp")) -> list[Path]:
    """Stop and remove the clusters earlier runs left whose owner process is dead."""
    bindir = pg_bindir()
    swept = []
    for root in tmp.glob(PREFIX + "*"):
        try:
            if (root / _OWNER).stat().st_uid != os.geteuid():
                continue  # another user's
            owner = int((root / _OWNER).read_text())
        except (OSError, ValueError):
            continue  # not ours, or made by an older version (its cluster may be in use)
        if pid_alive(owner) or bindir is None:
            continue
        _stop_cluster(root, bindir, _run_as())
        swept.append(root)
    return swept


class PgServer:
    def __init__(self, root: Path, bindir: Path) -> None:
        self.root = root
        self.bindir = bindir
        self.data = root / "data"
        self.sock = root / "sock"
        self.prefix = _run_as()
        self._lifeline: int | None = None  # the write end of the reaper's pipe
        self.reaper: subprocess.Popen[bytes] | None = None

    def _pg(self, *args: str) -> None:
        subprocess.run(
            [*self.prefix, *args], check=True, capture_output=True, timeout=60, cwd=self.root
        )

    def start(self) -> None:
        self.sock.mkdir()
        if self.prefix:
            user = self.prefix[2]
            info = pwd.getpwnam(user)
            for p in (self.root, self.sock):
                os.chown(p, info.pw_uid, info.pw_gid)
        self._pg(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        opts = f"-c listen_addresses='' -k {self.sock} -c fsync=off -c max_connections=60"
        (self.root / _OWNER).write_text(str(os.getpid()))
        self._start_reaper()
        self._pg(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
            "-o", opts, "-w", "start",
        )  # fmt: skip

    def _start_reaper(self) -> None:
        """The process that stops the cluster once this one is gone (see the module doc)."""
        read_end, write_end = os.pipe()  # neither end is inherited by other children
        try:
            self.reaper = subprocess.Popen(
                [sys.executable, __file__, "reap", str(self.root), str(self.bindir), *self.prefix],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
            )
        finally:
            os.close(read_end)
        self._lifeline = write_end

    def stop(self) -> None:
        try:
            _stop_cluster(self.root, self.bindir, self.prefix)
        finally:
            if self._lifeline is not None:
                os.close(self._lifeline)  # the reaper finds nothing left and exits
                self._lifeline = None
            if self.reaper is not None:
                try:
                    self.reaper.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.reaper.kill()
                    self.reaper.wait()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={self.sock}"

    def new_database(self) -> str:
        """A fresh, empty database on this cluster; its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


@contextmanager
def pg_server() -> Iterator[PgServer]:
    bindir = pg_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        if os.environ.get("IMGSYNC_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL is required (IMGSYNC_REQUIRE_POSTGRES=1) but not installed")
        pytest.skip("PostgreSQL is not installed (initdb not found)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get("IMGSYNC_REQUIRE_POSTGRES") == "1":
            pytest.fail("the postgres extra (psycopg) is required but not installed")
        pytest.skip("the postgres extra (psycopg) is not installed")
    sweep_stale()
    root = Path(tempfile.mkdtemp(prefix=PREFIX, dir="/tmp"))
    os.chmod(root, 0o755)
    server = PgServer(root, bindir)
    try:
        server.start()
    except subprocess.CalledProcessError as exc:
        log = (root / "log").read_text() if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr.decode()[-800:]} {log[-800:]}")
    try:
        yield server
    finally:
        server.stop()


def _reap(root: str, bindir: str, prefix: list[str]) -> None:
    """The reaper: wait for the end of the pipe on stdin, then stop the cluster."""
    while True:
        try:
            if not os.read(0, 4096):
                break
        except InterruptedError:
            continue
        except OSError:
            break
    deadline = time.monotonic() + 60
    while True:  # a cluster still starting has no postmaster.pid yet
        try:
            _stop_cluster(Path(root), Path(bindir), prefix)
            return
        except (OSError, subprocess.SubprocessError):
            if time.monotonic() > deadline:
                return
            time.sleep(1)


if __name__ == "__main__" and len(sys.argv) >= 4 and sys.argv[1] == "reap":
    _reap(sys.argv[2], sys.argv[3], sys.argv[4:])
