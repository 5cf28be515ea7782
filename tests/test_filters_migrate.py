"""`--include`/`--exclude` with `migrate` (its URL map and report), on one machine and in
fleet mode (PostgreSQL), and the run summary's count of what a filter left out."""

from __future__ import annotations

import asyncio
import csv
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from imgsync.config import Config, parse_config
from imgsync.fakehosts.images import seed_image
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions, Summary
from imgsync.testing import RunningEmulator, serve_emulator

# the Gyazo emulator's first 10 seeded images: six PNG, two JPEG, two GIF
PNGS, OTHERS = 6, 4


def _config(gy: RunningEmulator, chv: RunningEmulator, state: dict[str, Any]) -> Config:
    return parse_config(
        {
            "state": state,
            "remotes": {
                "gy": {"type": "gyazo", "base_url": gy.url, "token": gy.token},
                "chv": {"type": "chevereto", "base_url": chv.url, "token": chv.token},
            },
        }
    )


def _map(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _migrate(map_path: Path, *include: str, exclude: tuple[str, ...] = ()) -> JobSpec:
    opts = CopyOptions(verb="migrate", job="gy-to-chv", include=include, exclude=exclude)
    return JobSpec("migrate", "gy:", "chv:", opts, map_path=map_path)


def _ext(url: str) -> str:
    return url.rsplit(".", 1)[-1].lower() if "/images/" in url else ""


async def test_migrate_with_filters_maps_only_what_it_took_and_a_later_run_the_rest(
    tmp_path: Path,
) -> None:
    async with serve_emulator("gyazo", seed=10) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv, {"path": str(tmp_path / "state.db")})
        urls = tmp_path / "map.csv"
        s = await run_job(cfg, _migrate(urls, "*.png"))
        assert (s.copied, s.failed, s.checked) == (PNGS, 0, PNGS), s.line()
        assert s.filtered == OTHERS and f"skipped by filter: {OTHERS}" in s.line()
        assert s.to_json()["skipped_by_filter"] == OTHERS
        rows = _map(urls)
        assert {_ext(r["new_url"]) for r in rows} == {"png", ""}, rows
        assert len({r["sha256"] for r in rows}) == PNGS
        assert (await chv.stats())["uploads"] == PNGS
        # a dry run with the opposite filter says what it would take, and moves nothing
        dry = await run_job(
            cfg,
            JobSpec(
                "migrate",
                "gy:",
                "chv:",
                CopyOptions(verb="migrate", job="gy-to-chv", exclude=("*.png",), dry_run=True),
                map_path=tmp_path / "dry.csv",
            ),
        )
        assert (dry.copied, dry.filtered) == (OTHERS, PNGS), dry.line()
        assert (await chv.stats())["uploads"] == PNGS
        # the same map, without the filter: the rest is migrated, the map is complete
        s = await run_job(cfg, _migrate(urls))
        assert (s.copied, s.present, s.failed, s.filtered) == (OTHERS, PNGS, 0, 0), s.line()
        assert "skipped by filter" not in s.line()
        rows = _map(urls)
        assert len({r["sha256"] for r in rows}) == PNGS + OTHERS
        assert {_ext(r["new_url"]) for r in rows} == {"png", "jpg", "gif", ""}, rows
        assert (await chv.stats())["uploads"] == PNGS + OTHERS
        # and the filtered run again: nothing to do, and its map is not shrunk
        s = await run_job(cfg, _migrate(urls, "*.png"))
        assert (s.copied, s.present, s.filtered) == (0, PNGS, OTHERS), s.line()
        assert len({r["sha256"] for r in _map(urls)}) == PNGS + OTHERS


async def test_the_migration_report_of_a_filtered_run_balances(tmp_path: Path) -> None:
    from imgsync.pages.report import totals_of

    async with serve_emulator("gyazo", seed=10) as gy, serve_emulator("chevereto") as chv:
        cfg = _config(gy, chv, {"path": str(tmp_path / "state.db")})
        spec = replace(
            _migrate(tmp_path / "map.csv", exclude=("*.png",)), report_path=tmp_path / "report.html"
        )
        s = await run_job(cfg, spec)
        assert (s.copied, s.filtered) == (OTHERS, PNGS), s.line()
        t = totals_of(s.to_json())
        assert t["checked"] == t["copied"] + t["present"] + t["skipped"] + t["failed"], t
        page = (tmp_path / "report.html").read_text(encoding="utf-8")
        assert 'id="balance">balances' in page


async def test_a_folder_sources_filtered_files_are_counted_in_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import write_config

    from imgsync.cli import main

    src = tmp_path / "pics"
    (src / "sub").mkdir(parents=True)
    for i in range(5):
        data, ext = seed_image(i)
        (src / ("sub" if i % 2 else "") / f"p{i}.{ext}").write_bytes(data)
    (src / "notes.txt").write_text("not an image")
    cfg = write_config(tmp_path / "cfg.toml", "")
    out = tmp_path / "out"
    args = ["--config", str(cfg), "copy", str(src), str(out), "--no-progress"]
    code = await asyncio.to_thread(main, [*args, "--exclude", "sub/*", "--json"])
    got = json.loads(capsys.readouterr().out)
    assert code == 0, got
    assert (got["copied"], got["skipped_by_filter"]) == (3, 2), got
    assert got["non_images_skipped"] == 1  # a non-image is that, not "filtered"
    code = await asyncio.to_thread(main, [*args, "--include", "p1.*"])
    line = capsys.readouterr()
    assert code == 0, line
    assert "skipped by filter: 4" in line.out + line.err, line
    # check says it too
    code = await asyncio.to_thread(main, [*args[:2], "check", *args[3:], "--exclude", "sub/*"])
    line = capsys.readouterr()
    assert code == 0 and "0 missing at the destination" in line.out, line
    assert line.out.rstrip().endswith("skipped by filter: 2"), line
    # the re-run's no-op path (its saved scan mark) counts them too
    code = await asyncio.to_thread(main, [*args, "--exclude", "sub/*", "--json"])
    got = json.loads(capsys.readouterr().out)
    assert (got["copied"], got["skipped_by_filter"]) == (0, 2), got


async def test_fleet_workers_migrate_with_filters_each_image_once_and_the_rest_later(
    pg_url: str, tmp_path: Path
) -> None:
    """Two workers on one PostgreSQL state migrate only the PNGs (each uploaded once,
    each worker's map holding all of them and nothing else); a fleet run without the
    filter then takes the rest."""
    async with serve_emulator("gyazo", seed=10) as gy, serve_emulator("chevereto") as chv:
        cfgs = [
            _config(gy, chv, {"path": str(tmp_path / f"w{i}" / "state.db"), "url": pg_url})
            for i in range(3)
        ]
        maps = [tmp_path / f"map{i}.csv" for i in range(3)]
        done: list[Summary] = await asyncio.gather(
            *(run_job(cfgs[i], _migrate(maps[i], "*.png")) for i in range(2))
        )
        for s in done:
            assert s.failed == 0 and s.remote_failure is None, s.line()
        assert sum(s.copied for s in done) == PNGS, [s.line() for s in done]
        assert (await chv.stats())["uploads"] == PNGS
        for i in range(2):
            rows = _map(maps[i])
            assert len({r["sha256"] for r in rows}) == PNGS, (i, rows)
            assert {_ext(r["new_url"]) for r in rows} == {"png", ""}, rows
        # the items the filter left out are counted by whichever worker listed them
        assert sum(s.filtered for s in done) == OTHERS, [s.line() for s in done]
        # a third worker without the filter: the rest only
        rest = await run_job(cfgs[2], _migrate(maps[2]))
        assert rest.failed == 0 and rest.copied == OTHERS, rest.line()
        assert (await chv.stats())["uploads"] == PNGS + OTHERS
        assert len({r["sha256"] for r in _map(maps[2])}) == PNGS + OTHERS


async def test_fleet_with_filters_on_an_appending_listing_leaves_nothing_behind(
    pg_url: str, tmp_path: Path
) -> None:
    """A listing that resumes from its end (Guizhan, oldest first, 50 items: three pages):
    the fleet's place after a filtered pass must not make a pass without the filter skip
    what the filtered one left out."""
    async with serve_emulator("guizhan", seed=50) as gz, serve_emulator("chevereto") as chv:
        cfgs = [
            parse_config(
                {
                    "state": {"path": str(tmp_path / f"w{i}" / "state.db"), "url": pg_url},
                    "remotes": {
                        "gy": {"type": "guizhan", "base_url": gz.url, "token": gz.token},
                        "chv": {"type": "chevereto", "base_url": chv.url, "token": chv.token},
                    },
                }
            )
            for i in range(2)
        ]
        maps = [tmp_path / f"map{i}.csv" for i in range(2)]
        first = await run_job(cfgs[0], _migrate(maps[0], exclude=("*.png",)))
        assert first.failed == 0 and first.copied == 20, first.line()
        assert first.filtered == 30
        rest = await run_job(cfgs[1], _migrate(maps[1]))
        assert rest.failed == 0 and (rest.copied, rest.present) == (30, 20), rest.line()
        assert (await chv.stats())["uploads"] == 50
        again = await run_job(cfgs[0], _migrate(maps[0], exclude=("*.png",)))
        assert again.failed == 0 and again.copied == 0, again.line()
