"""Benchmark: peak memory moving one huge image through an emulator (issue 11).

Starts ``imgsync fakehost gyazo`` in its own process, then times whole ``imgsync``
processes and reads their peak RSS from ``wait4``:

* ``copy ./big gy:``   -- a ``--size`` MB image uploaded from a folder;
* ``backup gy: ./out`` -- the same image downloaded into a folder.

Target: peak RSS <= 120 MB for a 300 MB image, each way. ``--pythonpath DIR`` runs another
checkout of imgsync (e.g. the old code, to compare in the same session).

Usage: python bench/bench_stream.py [--size 300] [--pythonpath DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TOKEN = "bench-stream-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_image(path: Path, megabytes: int) -> str:
    """A PNG signature and header followed by ``megabytes`` MB of noise; its SHA-256."""
    from imgsync.fakehosts.images import make_png

    head = make_png(64, 64, 7)[:33]
    h = hashlib.sha256(head)
    with open(path, "wb") as fh:
        fh.write(head)
        for _ in range(megabytes):
            chunk = os.urandom(1024 * 1024)
            h.update(chunk)
            fh.write(chunk)
    return h.hexdigest()


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB, from ``wait4``) and stdout of one whole process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err.read()}")
        return elapsed, usage.ru_maxrss / 1024, out.read()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=300, help="image size in MB")
    ap.add_argument("--pythonpath", default=None, help="run the imgsync found here")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="imgsync-stream-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("IMGSYNC_CONFIG", None)
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    env["IMGSYNC_STATE"] = str(work / "state.db")
    env["BENCH_GY_TOKEN"] = TOKEN
    for suffix in ("", "-wal", "-shm"):
        Path(f"{work / 'state.db'}{suffix}").unlink(missing_ok=True)

    import shutil

    shutil.rmtree(work / "out", ignore_errors=True)
    src = work / "big"
    src.mkdir(exist_ok=True)
    image = src / "huge.png"
    print(f"writing a {args.size} MB image ...", flush=True)
    sha = make_image(image, args.size)

    port = free_port()
    host = subprocess.Popen(
        [
            sys.executable, "-m", "imgsync", "fakehost", "gyazo", "--port", str(port),
            "--token", TOKEN, "--max-upload-mb", str(args.size * 2),
        ],
        env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/_fakehost/stats", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        cfg = work / "cfg.toml"
        cfg.write_text(
            f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{url}"\ntoken_env = "BENCH_GY_TOKEN"\n'
        )
        imgsync = [sys.executable, "-m", "imgsync", "--config", str(cfg)]
        t_up, rss_up, _ = run([*imgsync, "copy", str(src), "gy:", "--no-progress"], env, work)
        out_dir = work / "out"
        t_down, rss_down, _ = run(
            [*imgsync, "backup", "gy:", str(out_dir), "--no-progress", "--json"], env, work
        )
        stats = json.loads(urllib.request.urlopen(url + "/_fakehost/stats").read())
    finally:
        host.terminate()
        host.wait()
    got = [p for p in out_dir.iterdir() if p.suffix == ".png"]
    ok = len(got) == 1 and hashlib.sha256(got[0].read_bytes()).hexdigest() == sha
    which = args.pythonpath or "this checkout"
    print(f"\n== one {args.size} MB image through the Gyazo emulator ({which}) ==")
    print(f"upload  (copy ./big gy:)     {t_up:7.2f} s   peak RSS {rss_up:7.1f} MB")
    print(f"download (backup gy: ./out)  {t_down:7.2f} s   peak RSS {rss_down:7.1f} MB")
    print(f"uploads seen by the emulator {stats['uploads']}; backup identical: {ok}")
    print(
        f"RSS / {args.size} MB image: {max(rss_up, rss_down) / args.size:.2f} "
        f"(target: peak <= 120 MB -> {'met' if max(rss_up, rss_down) <= 120 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
