"""A throwaway PostgreSQL cluster for the tests that need one (fleet mode).

``initdb`` into a temporary folder and ``pg_ctl start`` listening on a Unix socket only
(no TCP port to collide with another test run), stopped and removed afterwards. As root,
the cluster runs as the ``postgres`` (or ``nobody``) OS user, since PostgreSQL refuses
to run as root. Where no PostgreSQL is installed the tests are skipped, unless
``IMGSYNC_REQUIRE_POSTGRES=1`` (set by ``.ci/run``, which installs it) makes that a failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


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


class PgServer:
    def __init__(self, root: Path, bindir: Path) -> None:
        self.root = root
        self.bindir = bindir
        self.data = root / "data"
        self.sock = root / "sock"
        self.prefix = _run_as()

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
        self._pg(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
            "-o", opts, "-w", "start",
        )  # fmt: skip

    def stop(self) -> None:
        try:
            self._pg(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

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
    root = Path(tempfile.mkdtemp(prefix="imgsync-pg-", dir="/tmp"))
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
