"""Host-path figures of issue 15: uploads, downloads (backup), large files.

Each figure is imgsync (a whole process, start-up included) against a bare aiohttp loop
doing the same network work, also a whole process. To keep the ratio steady on a shared
machine:

* each side talks to its *own* emulator process (same kind, same seed), so neither pays
  for the other's server and both servers are equally warm;
* one untimed warm-up run of each side first (page cache, bytecode, emulator caches);
* then ``repeat`` rounds, the order alternating, old outputs moved aside, a ``sync``
  before every timed run (no run pays for another's writeback);
* printed: the median with its min-max of each side, the CPU seconds each process used,
  and the ratio two ways -- of the medians, and the median (min-max) of each round's
  paired ratio (both runs of a round saw about the same load).

imgsync is given the same concurrency as the bare loop: ``--transfers 8`` and
``[limits."127.0.0.1:PORT"] concurrency = 8`` (the default cap is 4 connections per host).

Run through ``bench/run_all.py --only upload,download,large``, or alone::

    python bench/bench_net.py [--quick] [--repeat 5] [--only download] [--work DIR]
                              [--pythonpath OLD_CHECKOUT] [--compare OLD_CHECKOUT]

``--compare OLD_CHECKOUT`` adds a third side to the upload, download and large sections: the imgsync
of that checkout, against its own emulator, in the same rounds (an A/B of a change on a
loaded machine); it prints new vs old per round beside each side's ratio to the reference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PY = sys.executable
HERE = Path(__file__).resolve()
CHV_TOKEN = "bench-chv-token"
GY_TOKEN = "bench-gy-token"
TRANSFERS = 8
COMPARE: Path | None = None  # --compare: an older checkout run beside this one


# ---- processes -----------------------------------------------------------------------


@dataclass
class Run:
    wall: float
    cpu: float  # user + system seconds of the process
    rss_mb: float


def timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> Run:
    """One whole process, after a ``sync`` (earlier runs' dirty pages are not its cost)."""
    os.sync()
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            sys.exit(f"command failed: {' '.join(cmd)}\n{err.read().decode()[-2000:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Emulator:
    """``imgsync fakehost KIND`` in its own process, unthrottled."""

    def __init__(self, kind: str, env: dict[str, str], *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.authority = f"127.0.0.1:{self.port}"
        token = CHV_TOKEN if kind == "chevereto" else GY_TOKEN
        self.proc = subprocess.Popen(
            [PY, "-m", "imgsync", "fakehost", kind, "--port", str(self.port), "--token", token,
             "--rate", "1000000/second", *extra],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(1200):  # seeding many images takes a while
            try:
                urllib.request.urlopen(self.url + "/_fakehost/stats", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        sys.exit(f"the {kind} emulator did not start")

    def stats(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(
            urllib.request.urlopen(self.url + "/_fakehost/stats", timeout=5).read()
        )
        return data

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def env_base(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("IMGSYNC_CONFIG", None)
    env["BENCH_CHV"] = CHV_TOKEN
    env["BENCH_GY"] = GY_TOKEN
    (work / "state").mkdir(mode=0o700, parents=True, exist_ok=True)
    return env


def fresh_state(env: dict[str, str], work: Path, tag: str) -> dict[str, str]:
    return {**env, "IMGSYNC_STATE": str(work / "state" / f"{tag}-{time.monotonic_ns()}.db")}


def config(work: Path, emu: Emulator, kind: str) -> Path:
    """A config naming the emulator ``chv:`` or ``gy:``, with the same connection cap as
    the bare loop's concurrency."""
    name, token = ("chv", "BENCH_CHV") if kind == "chevereto" else ("gy", "BENCH_GY")
    cfg = work / f"cfg-{time.monotonic_ns()}.toml"
    cfg.write_text(
        f'[remotes.{name}]\ntype = "{kind}"\nbase_url = "{emu.url}"\ntoken_env = "{token}"\n'
        f'[limits."{emu.authority}"]\nconcurrency = {TRANSFERS}\n'
    )
    return cfg


def imgsync(cfg: Path) -> list[str]:
    return [PY, "-m", "imgsync", "--config", str(cfg)]


def old_side(env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """The environment and folder that make ``python -m imgsync`` the ``--compare`` one."""
    assert COMPARE is not None
    return {**env, "PYTHONPATH": str(COMPARE)}, COMPARE


def report_old(
    what: str, mine: list[Run], old: list[Run], ref: list[Run], amount: float, unit: str
) -> None:
    """The ``--compare`` side: its figures, its ratio to the reference, new vs old."""
    digits = 1 if unit == "MB/s" else 0
    old_r = [amount / r.wall for r in old]
    vs_ref = [r.wall / o.wall for o, r in zip(old, ref, strict=True)]
    new_old = [o.wall / m.wall for m, o in zip(mine, old, strict=True)]
    print(
        f"  {'imgsync --compare (old)':<26}{fig(old_r, unit, digits)}  CPU {fig([r.cpu for r in old], 's', 2)}"
    )
    print(
        f"  -> old {what}: {statistics.median(vs_ref):.2f}x per round "
        f"({min(vs_ref):.2f}-{max(vs_ref):.2f}); new vs old: {statistics.median(new_old):.2f}x "
        f"per round ({min(new_old):.2f}-{max(new_old):.2f}), CPU new/old "
        f"{statistics.median([m.cpu / o.cpu for m, o in zip(mine, old, strict=True)]):.2f}x",
        flush=True,
    )


def bare(mode: str, *args: str) -> list[str]:
    return [PY, str(HERE), "--bare", mode, *args]


class Trash:
    """Old outputs are moved aside, not deleted (a big delete slows this disk for minutes)."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "trash"
        self.dir.mkdir(parents=True, exist_ok=True)

    def aside(self, path: Path) -> None:
        if path.exists():
            path.rename(self.dir / f"{path.name}-{time.monotonic_ns()}")


# ---- printing ------------------------------------------------------------------------


def fig(xs: list[float], unit: str, digits: int = 0) -> str:
    med = statistics.median(xs)
    if len(xs) == 1:
        return f"{med:.{digits}f} {unit}"
    return f"{med:.{digits}f} {unit} ({min(xs):.{digits}f}-{max(xs):.{digits}f}, n={len(xs)})"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def report(
    what: str, mine: list[Run], ref: list[Run], amount: float, unit: str, names: tuple[str, str]
) -> float:
    """Print both sides and the ratio of their speeds; returns the median paired ratio."""
    digits = 1 if unit == "MB/s" else 0
    mine_r = [amount / r.wall for r in mine]
    ref_r = [amount / r.wall for r in ref]
    paired = [a / b for a, b in zip(mine_r, ref_r, strict=True)]
    print(f"  {names[0]:<26}{fig(mine_r, unit, digits)}  CPU {fig([r.cpu for r in mine], 's', 2)}")
    print(f"  {names[1]:<26}{fig(ref_r, unit, digits)}  CPU {fig([r.cpu for r in ref], 's', 2)}")
    of_medians = statistics.median(mine_r) / statistics.median(ref_r)
    med = statistics.median(paired)
    ok = med >= 0.8
    spread = f" ({min(paired):.2f}-{max(paired):.2f})" if len(paired) > 1 else ""
    print(
        f"  -> {what}: {med:.2f}x per round{spread}, {of_medians:.2f}x of the medians "
        f"(target >= 0.80)  {'MET' if ok else 'MISSED'}   [{load()}]",
        flush=True,
    )
    return med


def rounds(repeat: int, steps: list[Callable[[], None]]) -> None:
    for rep in range(repeat):
        for step in steps if rep % 2 == 0 else steps[::-1]:
            step()


# ---- the bare reference loops (run as whole processes through --bare) ----------------


async def bare_upload(url: str, folder: str, concurrency: int) -> None:
    """Multipart POSTs of every file to the Chevereto emulator, ``concurrency`` at a time."""
    import aiohttp

    files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(path: Path) -> None:
            async with sem:
                form = aiohttp.FormData()
                form.add_field("format", "json")
                form.add_field("source", path.read_bytes(), filename=path.name)
                async with session.post(
                    f"{url}/api/1/upload", data=form, headers={"X-API-Key": CHV_TOKEN}
                ) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise SystemExit(f"upload refused: {resp.status}")

        await asyncio.gather(*(one(p) for p in files))


async def bare_stream_upload(url: str, folder: str) -> None:
    """Each file streamed (not read whole) as a Gyazo multipart upload, one after another."""
    import aiohttp

    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for path in files:
            with open(path, "rb") as fh:
                form = aiohttp.FormData()
                form.add_field("access_token", GY_TOKEN)
                form.add_field("imagedata", fh, filename=path.name, content_type="image/png")
                async with session.post(f"{url}/api/upload", data=form) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise SystemExit(f"upload refused: {resp.status}")


async def bare_download(url: str, folder: str, concurrency: int, durable: bool = True) -> None:
    """List every page, GET each image, write it and a JSON sidecar; then sync.

    ``durable`` (the reference of the target): what any tool that promises "a crash never
    leaves a half-written image under its name" must do at least, done as cheaply as it
    can be: what was fetched meanwhile is written as one group in a thread (each file and
    its sidecar under a temporary name, one ``syncfs``, then renamed), the downloads going
    on meanwhile, and one ``sync`` at the end. Without ``durable``: each file written in
    place and one ``sync`` at the end (a crash can leave truncated images under their
    real names; printed for information).
    """
    import aiohttp

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    headers = {"Authorization": f"Bearer {GY_TOKEN}"}
    sem = asyncio.Semaphore(concurrency)
    fetched: list[tuple[str, bytes, str]] = []
    arrived = asyncio.Event()
    all_fetched = False

    def write_group(group: list[tuple[str, bytes, str]]) -> None:
        for i, (_name, body, side) in enumerate(group):
            (out / f".tmp-{i}").write_bytes(body)
            (out / f".tmp-{i}.json").write_text(side)
        fd = os.open(out, os.O_RDONLY)
        try:
            syncfs(fd)
        finally:
            os.close(fd)
        for i, (name, _body, _side) in enumerate(group):
            os.rename(out / f".tmp-{i}", out / name)
            os.rename(out / f".tmp-{i}.json", out / f"{name}.json")

    async def writer() -> None:
        while True:
            if fetched:
                group = fetched[:]
                fetched.clear()
                await asyncio.to_thread(write_group, group)
            elif all_fetched:
                return
            else:
                await arrived.wait()
                arrived.clear()

    async with aiohttp.ClientSession(headers=headers) as session:
        items: list[dict[str, object]] = []
        page = 1
        while True:
            async with session.get(f"{url}/api/images?page={page}&per_page=100") as resp:
                batch = await resp.json()
            if not batch:
                break
            items.extend(batch)
            page += 1

        async def one(item: dict[str, object]) -> None:
            async with sem:
                src = str(item["url"])
                async with session.get(src) as resp:
                    body = await resp.read()
                name = src.rsplit("/", 1)[-1]
                if durable:
                    fetched.append((name, body, json.dumps(item)))
                    arrived.set()
                else:
                    (out / name).write_bytes(body)
                    (out / f"{name}.json").write_text(json.dumps(item))

        task = asyncio.create_task(writer()) if durable else None
        await asyncio.gather(*(one(i) for i in items if i.get("url")))
        all_fetched = True
        arrived.set()
        if task is not None:
            await task
    os.sync()


def syncfs(fd: int) -> None:
    """``syncfs(2)`` of the filesystem holding ``fd`` (``sync`` where there is none)."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except AttributeError:
        os.sync()
        return
    if fn(fd) != 0:
        raise OSError(ctypes.get_errno(), "syncfs failed")


def run_bare(argv: list[str]) -> None:
    mode, *rest = argv
    if mode == "upload":
        asyncio.run(bare_upload(rest[0], rest[1], int(rest[2])))
    elif mode == "stream":
        asyncio.run(bare_stream_upload(rest[0], rest[1]))
    elif mode == "download":
        asyncio.run(bare_download(rest[0], rest[1], int(rest[2])))
    elif mode == "download-plain":
        asyncio.run(bare_download(rest[0], rest[1], int(rest[2]), durable=False))
    else:
        sys.exit(f"unknown bare mode {mode}")


# ---- sections ------------------------------------------------------------------------


def upload(work: Path, src: Path, n: int, repeat: int) -> float:
    """``imgsync copy ./up chv:`` vs the bare multipart loop, each into a fresh emulator of
    its own every round (uploads are not idempotent)."""
    env = env_base(work)
    mine: list[Run] = []
    ref: list[Run] = []
    old: list[Run] = []

    def side(kind: str, into: list[Run] | None) -> Callable[[], None]:
        def step() -> None:
            emu = Emulator("chevereto", env, "--max-upload-mb", "50")
            try:
                if kind in ("mine", "old"):
                    cmd = [*imgsync(config(work, emu, "chevereto")), "copy", str(src), "chv:",
                           "--transfers", str(TRANSFERS), "--no-progress"]  # fmt: skip
                    run_env, cwd = old_side(env) if kind == "old" else (env, None)
                    run = timed(cmd, fresh_state(run_env, work, "up"), cwd)
                else:
                    run = timed(bare("upload", emu.url, str(src), str(TRANSFERS)), env)
                uploads = emu.stats().get("uploads")
                if uploads != n:
                    sys.exit(f"{kind}: the emulator saw {uploads} uploads, not {n}")
            finally:
                emu.stop()
            if into is not None:
                into.append(run)

        return step

    side("mine", None)()  # warm-up
    side("bare", None)()
    steps = [side("mine", mine), side("bare", ref)]
    if COMPARE is not None:
        side("old", None)()
        steps.append(side("old", old))
    rounds(repeat, steps)
    ratio = report(
        "uploads vs bare loop", mine, ref, n, "/s", ("imgsync copy ./up chv:", "bare aiohttp loop")
    )
    if COMPARE is not None:
        report_old("uploads vs bare loop", mine, old, ref, n, "/s")
    return ratio


def download(work: Path, n: int, repeat: int) -> float:
    """``imgsync backup gy: ./out`` vs the bare list/GET/write/sidecar loop, each against
    its own Gyazo emulator seeded with the same ``n`` images.

    The reference is the bare loop made as durable as imgsync promises to be (no image
    under its real name before its bytes are on disk: files written under temporary names
    in groups, one ``syncfs`` per group, renamed, one ``sync`` at the end; see
    :func:`bare_download`). The plain loop (written in place, one ``sync`` at the end) is
    printed beside it for information; it runs against the same emulator as the durable
    loop, in the same rounds. ``--compare``: the older imgsync runs in the same rounds too,
    against imgsync's emulator (the sides run one after another, and a backup only reads)."""
    env = env_base(work)
    trash = Trash(work)
    emu_mine = Emulator("gyazo", env, "--seed", str(n))
    emu_bare = Emulator("gyazo", env, "--seed", str(n))
    mine: list[Run] = []
    ref: list[Run] = []
    plain: list[Run] = []
    old: list[Run] = []
    try:
        cfg = config(work, emu_mine, "gyazo")

        def mine_step(into: list[Run] | None, older: bool = False) -> Callable[[], None]:
            def step() -> None:
                dst = work / "dst-backup"
                trash.aside(dst)
                cmd = [*imgsync(cfg), "backup", "gy:", str(dst), "--no-progress",
                       "--transfers", str(TRANSFERS)]  # fmt: skip
                run_env, cwd = old_side(env) if older else (env, None)
                run = timed(cmd, fresh_state(run_env, work, "down"), cwd)
                got = sum(1 for p in dst.iterdir() if p.name.endswith(".json"))
                if got != n:
                    sys.exit(f"imgsync backup wrote {got} sidecars, not {n}")
                if into is not None:
                    into.append(run)

            return step

        def bare_step(mode: str, into: list[Run] | None) -> Callable[[], None]:
            def step() -> None:
                dst = work / f"dst-bare-{mode}"
                trash.aside(dst)
                run = timed(bare(mode, emu_bare.url, str(dst), str(TRANSFERS)), env)
                got = sum(1 for p in dst.iterdir() if p.name.endswith(".json"))
                if got != n:
                    sys.exit(f"the bare loop ({mode}) wrote {got} sidecars, not {n}")
                if into is not None:
                    into.append(run)

            return step

        mine_step(None)()  # warm-up
        bare_step("download", None)()
        bare_step("download-plain", None)()
        steps = [mine_step(mine), bare_step("download", ref), bare_step("download-plain", plain)]
        if COMPARE is not None:
            mine_step(None, older=True)()
            steps.append(mine_step(old, older=True))
        rounds(repeat, steps)
    finally:
        emu_mine.stop()
        emu_bare.stop()  # the trash stays: deleting it now would slow the next section
    names = ("imgsync backup gy: ./out", "durable bare loop")
    print(
        "  (reference: the bare loop writes each group under temporary names, syncfs, renames;"
        "\n   imgsync also flushes the renames before recording a group done in its state)"
    )
    ratio = report("downloads vs durable bare loop", mine, ref, n, "/s", names)
    plain_r = [n / r.wall for r in plain]
    paired = [(n / a.wall) / (n / b.wall) for a, b in zip(mine, plain, strict=True)]
    print(
        f"  {'plain bare loop (info)':<26}{fig(plain_r, '/s')}  CPU "
        f"{fig([r.cpu for r in plain], 's', 2)}  (in place, one sync at the end: a crash can "
        f"leave half-written images)\n  -> vs the plain loop (the reference as issue 15 words it): "
        f"{statistics.median(paired):.2f}x per round (target >= 0.80)  "
        f"{'MET' if statistics.median(paired) >= 0.8 else 'MISSED'}",
        flush=True,
    )
    if COMPARE is not None:
        report_old("downloads vs durable bare loop", mine, old, ref, n, "/s")
    return ratio


def make_image(path: Path, megabytes: int) -> None:
    """A PNG signature and header followed by ``megabytes`` MB of noise."""
    from imgsync.fakehosts.images import make_png

    with open(path, "wb") as fh:
        fh.write(make_png(64, 64, 7)[:33])
        fh.writelines(os.urandom(1024 * 1024) for _ in range(megabytes))


def large(work: Path, count: int, mb: int, repeat: int) -> tuple[float, list[float]]:
    """``imgsync copy ./large gy:`` vs a raw streamed upload of the same files, MB/s, each
    to its own Gyazo emulator (it keeps one copy of identical bytes, so rounds do not grow
    it). Returns the median paired ratio and imgsync's peak RSS per round."""
    src = work / f"large-{count}x{mb}"
    if not src.exists():
        part = src.with_name(src.name + ".part")
        part.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            make_image(part / f"big{i}.png", mb)
        part.rename(src)
    env = env_base(work)
    total = count * mb
    emu_mine = Emulator("gyazo", env, "--max-upload-mb", str(mb * 2))
    emu_bare = Emulator("gyazo", env, "--max-upload-mb", str(mb * 2))
    emu_old = Emulator("gyazo", env, "--max-upload-mb", str(mb * 2)) if COMPARE else None
    mine: list[Run] = []
    ref: list[Run] = []
    old: list[Run] = []
    try:
        cfg = config(work, emu_mine, "gyazo")

        def mine_step() -> None:  # a fresh state: every round uploads everything
            cmd = [*imgsync(cfg), "copy", str(src), "gy:", "--no-progress"]
            mine.append(timed(cmd, fresh_state(env, work, "large")))

        def bare_step() -> None:
            ref.append(timed(bare("stream", emu_bare.url, str(src)), env))

        def old_step() -> None:
            assert emu_old is not None
            cmd = [
                *imgsync(config(work, emu_old, "gyazo")),
                "copy",
                str(src),
                "gy:",
                "--no-progress",
            ]
            run_env, cwd = old_side(env)
            old.append(timed(cmd, fresh_state(run_env, work, "large"), cwd))

        rounds(repeat, [mine_step, bare_step, *([old_step] if emu_old else [])])
    finally:
        emu_mine.stop()
        emu_bare.stop()
        if emu_old is not None:
            emu_old.stop()
    rss = [r.rss_mb for r in mine]
    print(f"  imgsync peak RSS          {fig(rss, 'MB', 1)} (target <= 120)")
    names = ("imgsync copy ./large gy:", "raw streamed upload")
    ratio = report("large uploads vs raw stream", mine, ref, total, "MB/s", names)
    if COMPARE is not None:
        report_old("large uploads vs raw stream", mine, old, ref, total, "MB/s")
    return ratio, rss


def tree(work: Path, n: int) -> Path:
    """``n`` files of ~20 KB in 10 folders, each starting as a PNG (hosts check)."""
    from imgsync.fakehosts.images import make_png

    src = work / f"upimg-{n}"
    if src.exists():
        return src
    part = src.with_name(src.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    head = make_png(64, 64, 7)[:33]
    for i in range(n):
        folder = part / f"d{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:06d}.png").write_bytes(head + os.urandom(20_000 - len(head)))
    part.rename(src)
    return src


SECTIONS = ("upload", "download", "large")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--bare":
        run_bare(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--repeat", type=int, default=None, help="rounds (default 3, quick 1)")
    ap.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (kept for reuse)")
    ap.add_argument(
        "--pythonpath",
        type=Path,
        default=None,
        help="run the imgsync of another checkout (e.g. the code before a change)",
    )
    ap.add_argument(
        "--compare",
        type=Path,
        default=None,
        help="also run another checkout's imgsync in the same rounds (upload, large)",
    )
    args = ap.parse_args()
    global COMPARE
    COMPARE = args.compare.resolve() if args.compare is not None else None
    repeat = args.repeat or (1 if args.quick else 3)
    work = (args.work or Path(tempfile.mkdtemp(prefix="imgsync-bench-net-"))).resolve()
    if args.pythonpath is not None:  # ``python -m imgsync`` looks in the current folder
        os.environ["PYTHONPATH"] = str(args.pythonpath.resolve())  # first, then here
        os.chdir(args.pythonpath)
    work.mkdir(parents=True, exist_ok=True)
    chosen = {s.strip() for s in args.only.split(",") if s.strip()}
    import bench_copy  # beside this file

    print(bench_copy.compile_imgsync())  # as an install has it: see there
    print(f"imgsync host benchmarks in {work}, {os.cpu_count()} cores, {load()}")
    n = 300 if args.quick else 2_000
    if "upload" in chosen:
        print(f"\n== uploads, {n} x ~20 KB into the Chevereto emulator, {TRANSFERS} transfers ==")
        upload(work, tree(work, n), n, repeat)
    if "download" in chosen:
        print(
            f"\n== downloads, backup of {n} images from the Gyazo emulator, {TRANSFERS} transfers =="
        )
        download(work, n, repeat)
    if "large" in chosen:
        count, mb = (5, 20) if args.quick else (5, 200)
        print(f"\n== large files, {count} x {mb} MB uploaded to the Gyazo emulator ==")
        large(work, count, mb, repeat)


if __name__ == "__main__":
    main()
