"""An upload whose lease is taken over from a holder that did not finish (its process was
killed, or its fleet lease expired) looks at the destination first: the bytes the killed
holder already sent are found there and recorded, not uploaded a second time."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import run_cli_async, start_fake, write_config

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.guizhan import GuizhanFake
from imgsync.fakehosts.images import seed_image

GZ_TOKEN = "guizhan-takeover-token-4321"


def _images(folder: Path, count: int) -> list[str]:
    """``count`` images in ``folder``; their checksums."""
    folder.mkdir(parents=True, exist_ok=True)
    shas = []
    for i in range(count):
        data, ext = seed_image(i)
        (folder / f"pic{i:03d}.{ext}").write_bytes(data)
        shas.append(hashlib.sha256(data).hexdigest())
    return shas


def _config(path: Path, url: str) -> Path:
    return write_config(
        path, f'[remotes.gz]\ntype = "guizhan"\nbase_url = "{url}"\ntoken_env = "GZ_TOKEN"\n'
    )


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_sqlite_a_dead_runs_lease_is_searched_for_and_not_uploaded_twice(
    tmp_path: Path,
) -> None:
    """A run killed after its uploads reached the host but before it recorded them leaves
    their leases (owner: its dead pid). The re-run takes them over and finds the bytes at
    the destination: the host got one upload per image, and the map has each one's URL."""
    import socket

    fake = await start_fake(GuizhanFake(Knobs(token=GZ_TOKEN)))
    try:
        src = tmp_path / "shots"
        shas = _images(src, 5)
        cfg = _config(tmp_path / "cfg.toml", fake.url)
        env = {**os.environ, "GZ_TOKEN": GZ_TOKEN}
        first = await run_cli_async(
            "--config", str(cfg), "copy", str(src), "gz:", "--json", env=env
        )
        assert first.returncode == 0, first.stderr
        stats = await fake.stats()
        assert stats["uploads"] == 5
        # a clean run never searches the destination (no lease was taken over)
        assert stats["requests"] == stats["uploads"], stats
        # the kill: 3 uploads reached the host, the run died before recording them
        lost = shas[1:4]
        db = sqlite3.connect(os.environ["IMGSYNC_STATE"])
        (dest,) = db.execute("SELECT DISTINCT remote FROM locations").fetchone()
        dead = f"{socket.gethostname()}:{_dead_pid()}"
        with db:
            for table in ("locations", "owners"):
                db.executemany(f"DELETE FROM {table} WHERE sha256 = ?", [(s,) for s in lost])
            db.execute("DELETE FROM scan_marks")  # the folder is no longer all there
            db.executemany(
                "INSERT INTO claims (sha256, dest, owner, claimed_at) VALUES (?, ?, ?, ?)",
                [(s, dest, dead, time.time()) for s in lost],
            )
        db.close()
        again = await run_cli_async(
            "--config", str(cfg), "copy", str(src), "gz:", "--json", env=env
        )
        assert again.returncode == 0, again.stderr
        stats = await fake.stats()
        assert stats["distinct_checksums"] == 5
        assert stats["uploads"] == 5, stats  # none of the dead run's uploads sent again
        db = sqlite3.connect(os.environ["IMGSYNC_STATE"])
        urls = dict(db.execute("SELECT sha256, url FROM locations"))
        recorded = set(urls)
        assert all(str(urls[s]).startswith("http") for s in lost), urls  # each one's URL
        left = db.execute("SELECT COUNT(*) FROM claims").fetchone()[0]
        db.close()
        assert recorded == set(shas)
        assert left == 0
    finally:
        await fake.close()


async def test_fleet_a_dead_workers_expired_lease_is_searched_and_not_uploaded_twice(
    pg_url: str, tmp_path: Path
) -> None:
    """Fleet: a worker on another machine leased 3 images, its uploads reached the host,
    and it died before recording them. Once its leases expire, another worker (its own
    empty SQLite) takes them over, finds the bytes at the destination and records them:
    one upload per image in all."""
    import psycopg

    fake = await start_fake(GuizhanFake(Knobs(token=GZ_TOKEN)))
    try:
        src = tmp_path / "shots"
        shas = _images(src, 5)
        cfg = _config(tmp_path / "cfg.toml", fake.url)

        def env(w: int) -> dict[str, str]:
            return {
                **os.environ,
                "GZ_TOKEN": GZ_TOKEN,
                "IMGSYNC_STATE": str(tmp_path / f"worker{w}" / "state.db"),
                "IMGSYNC_STATE_URL": pg_url,
            }

        args = ("--config", str(cfg), "copy", str(src), "gz:", "--json")
        first = await run_cli_async(*args, env=env(0))
        assert first.returncode == 0, first.stderr
        assert (await fake.stats())["uploads"] == 5
        lost = shas[:3]
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT DISTINCT remote FROM fleet_locations")
            rows: list[Any] = await cur.fetchall()
            (dest,) = rows[0]
            await conn.execute(
                "DELETE FROM fleet_locations WHERE sha256 = ANY(%s::text[])", (lost,)
            )
            await conn.execute(  # the dead worker's leases, expired a second ago, marked
                # as sending (as a worker does just before the bytes go) ten seconds ago
                "INSERT INTO fleet_claims (dest, sha256, owner, expires, sent) "
                "SELECT %s, s, 'elsewhere.example:4242', "
                "EXTRACT(EPOCH FROM clock_timestamp()) - 1, "
                "EXTRACT(EPOCH FROM clock_timestamp()) - 10 FROM unnest(%s::text[]) AS s",
                (dest, lost),
            )
        again = await run_cli_async(*args, env=env(1))
        assert again.returncode == 0, again.stderr
        stats = await fake.stats()
        assert stats["distinct_checksums"] == 5
        assert stats["uploads"] == 5, stats  # found, not uploaded a second time
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT sha256, url FROM fleet_locations")
            urls = {r[0]: r[1] for r in await cur.fetchall()}
            assert set(urls) == set(shas)
            assert all(str(urls[s]).startswith("http") for s in lost), urls
            cur = await conn.execute("SELECT COUNT(*) FROM fleet_claims")
            assert (await cur.fetchone() or [None])[0] == 0
    finally:
        await fake.close()


async def test_fleet_many_leases_taken_over_share_one_listing_of_the_destination(
    pg_url: str, tmp_path: Path
) -> None:
    """A dead worker left 24 leases it may have sent (their images at the destination,
    unrecorded) on a destination of 60 images: the worker taking them over reads the
    destination's listing about once for all of them (one copy shared by every takeover
    search of the run), not once per lease, and finds every one: no upload sent twice."""
    import psycopg

    fake = await start_fake(GuizhanFake(Knobs(token=GZ_TOKEN, rate="none")))
    try:
        src = tmp_path / "shots"
        shas = _images(src, 60)
        cfg = _config(tmp_path / "cfg.toml", fake.url)
        with cfg.open("a") as fh:  # Guizhan's default 60/minute would make this a minute
            fh.write(f'[limits."{fake.authority}"]\nrate = "none"\n')

        def env(w: int) -> dict[str, str]:
            return {
                **os.environ,
                "GZ_TOKEN": GZ_TOKEN,
                "IMGSYNC_STATE": str(tmp_path / f"worker{w}" / "state.db"),
                "IMGSYNC_STATE_URL": pg_url,
            }

        args = ("--config", str(cfg), "copy", str(src), "gz:", "--json")
        first = await run_cli_async(*args, env=env(0))
        assert first.returncode == 0, first.stderr
        assert (await fake.stats())["uploads"] == 60
        lost = shas[:24]
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            cur = await conn.execute("SELECT DISTINCT remote FROM fleet_locations")
            rows: list[Any] = await cur.fetchall()
            (dest,) = rows[0]
            await conn.execute(
                "DELETE FROM fleet_locations WHERE sha256 = ANY(%s::text[])", (lost,)
            )
            await conn.execute(  # the dead worker's leases: expired, taken a minute ago
                "INSERT INTO fleet_claims (dest, sha256, owner, expires, sent) "
                "SELECT %s, s, 'elsewhere.example:4242', "
                "EXTRACT(EPOCH FROM clock_timestamp()) - 1, "
                "EXTRACT(EPOCH FROM clock_timestamp()) - 60 FROM unnest(%s::text[]) AS s",
                (dest, lost),
            )
        fake.host.stats.by_path.clear()
        again = await run_cli_async(*args, env=env(1))
        assert again.returncode == 0, again.stderr
        stats = await fake.stats()
        assert stats["distinct_checksums"] == 60
        assert stats["uploads"] == 60, stats  # each found, none sent a second time
        listings = fake.host.stats.by_path["GET /v1/images"]
        print("listing requests for 24 takeovers:", listings, dict(fake.host.stats.by_path))
        # 60 images, 20 a page: one read of the listing is 3-4 pages (plus a top-up or
        # two); one search per lease read them 24 times (about 80)
        assert listings <= 8, listings
        # only images no worker recorded (the 24) can be the dead worker's uploads: the
        # 36 recorded ones are never downloaded to be compared
        downloads = sum(
            n
            for k, n in fake.host.stats.by_path.items()
            if k.startswith("GET /") and "/v1/" not in k
        )
        assert downloads <= 24, dict(fake.host.stats.by_path)
    finally:
        await fake.close()


async def test_fleet_a_taken_over_lease_on_chevereto_is_reported_as_a_possible_duplicate(
    pg_url: str, tmp_path: Path
) -> None:
    """Chevereto's API cannot list images, so a lease taken over from a dead worker cannot
    be searched for: the worker warns once that the destination cannot be searched,
    sends the image, and reports it as a possible duplicate (summary and journal), not
    as a plain copy."""
    import json

    import psycopg

    from imgsync.fakehosts.chevereto import CheveretoFake

    token = "chv-takeover-token-5678"
    fake = await start_fake(CheveretoFake(Knobs(token=token)))
    try:
        src = tmp_path / "shots"
        shas = _images(src, 3)
        cfg = write_config(
            tmp_path / "cfg.toml",
            f'[remotes.chv]\ntype = "chevereto"\nbase_url = "{fake.url}"\ntoken_env = "CHV_T"\n',
        )
        env = {
            **os.environ,
            "CHV_T": token,
            "IMGSYNC_STATE": str(tmp_path / "w1" / "state.db"),
            "IMGSYNC_STATE_URL": pg_url,
        }
        args = ("--config", str(cfg), "copy", str(src), "chv:", "--json")
        from imgsync.config import load_config
        from imgsync.runtime import resolve_spec

        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CHV_T", token)
            _remote, dest = resolve_spec(load_config(cfg), "chv:")
        from imgsync.state.fleet import Fleet

        await (await Fleet(pg_url, "setup.example:1").open()).close()  # creates the tables
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute(  # a dead worker's expired lease on the first image
                "INSERT INTO fleet_claims (dest, sha256, owner, expires, sent) VALUES "
                "(%s, %s, 'elsewhere.example:4242', EXTRACT(EPOCH FROM clock_timestamp()) - 1, "
                "EXTRACT(EPOCH FROM clock_timestamp()) - 10)",
                (dest, shas[0]),
            )
        run = await run_cli_async(*args, env=env)
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)
        assert summary["copied"] == 3
        (dup,) = summary["possible_duplicates"]
        assert "cannot be searched" in dup["note"] and "pic000" in dup["item"], dup
        assert run.stderr.count("fleet_destination_not_searchable") == 1, run.stderr
        assert token not in run.stdout + run.stderr
    finally:
        await fake.close()
