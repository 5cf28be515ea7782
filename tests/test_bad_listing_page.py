"""A listing page answered 200 with something that is not JSON (a proxy's or CDN's HTML
page, a body cut off mid-JSON) after the host had answered properly is retried like a
transient failure; a host that never answered JSON (a wrong base_url serving a web page)
still stops the run at once with exit 3."""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web
from helpers import start_fake, tree_files, write_config

from imgsync.config import load_config
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake
from imgsync.pipeline.run import JobSpec, run_job
from imgsync.pipeline.summary import CopyOptions, Summary

TOKEN = "bad-page-token-31"
PORTAL = (
    "<!DOCTYPE html><html><head><title>Checking your browser</title></head>"
    "<body>One moment, please...</body></html>"
)


class FlakyListing(GyazoFake):
    """Gyazo whose listing pages after the first can be answered by an HTML page (200)."""

    def __init__(self, knobs: Knobs, *, every_page: bool = False, portal: bool = True) -> None:
        super().__init__(knobs)
        self.every_page = every_page
        self.portal = portal  # else the emulator's own fault: JSON cut off mid-way
        self.listing_requests = 0

    def fault_applies(self, request: web.Request) -> bool:
        if request.path != "/api/images":
            return False
        self.listing_requests += 1
        return self.every_page or request.query.get("page", "1") != "1"

    def malformed_body(self) -> web.Response:
        if not self.portal:
            return super().malformed_body()
        return web.Response(status=200, text=PORTAL, content_type="text/html")


def _config(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path / "cfg.toml",
        f'[remotes.gy]\ntype = "gyazo"\nbase_url = "{url}"\ntoken_env = "GY"\nper_page = 5\n',
    )


async def _backup(host: GyazoFake, tmp_path: Path, url_suffix: str = "") -> tuple[Summary, Path]:
    fake = await start_fake(host)
    os.environ["GY"] = TOKEN
    try:
        cfg = load_config(_config(tmp_path, fake.url + url_suffix), explicit=True)
        dest = tmp_path / "backup"
        opts = CopyOptions(job="b", verb="backup", sidecars=True)
        summary = await run_job(cfg, JobSpec("backup", "gy:", str(dest), opts))
    finally:
        await fake.close()
        del os.environ["GY"]
    return summary, dest


async def test_one_bad_listing_page_is_retried(tmp_path: Path) -> None:
    """Page 2 of 4 answers an HTML page once: the backup gets all 18 images (exit 0)."""
    host = FlakyListing(Knobs(token=TOKEN, seed=18))
    host.fail_next("malformed", 1)
    summary, dest = await _backup(host, tmp_path)
    assert summary.exit_code == 0, (summary.remote_failure, summary.failures)
    assert summary.copied == 18
    assert len([n for n in tree_files(dest) if not n.endswith(".json")]) == 18
    assert host.stats.faults == 1


async def test_a_page_that_stays_bad_still_fails_the_run_in_bounded_requests(
    tmp_path: Path,
) -> None:
    """Page 2 answers HTML every time: a few attempts, then exit 3 naming the page."""
    host = FlakyListing(Knobs(token=TOKEN, seed=18, faults={"malformed": 1.0}))
    summary, _dest = await _backup(host, tmp_path)
    assert summary.exit_code == 3
    assert "expected JSON" in (summary.remote_failure or "")
    assert "<" not in (summary.remote_failure or "")
    assert 2 <= host.stats.faults <= 5


async def test_a_web_page_from_the_first_request_is_not_retried(tmp_path: Path) -> None:
    """A wrong base_url (every answer a web page, even the first): exit 3 after 1 request."""
    host = FlakyListing(Knobs(token=TOKEN, seed=18, faults={"malformed": 1.0}), every_page=True)
    summary, _dest = await _backup(host, tmp_path)
    assert summary.exit_code == 3
    assert host.listing_requests == 1


async def test_a_first_page_cut_off_mid_json_is_retried(tmp_path: Path) -> None:
    """The very first listing request answers JSON cut off mid-way (it claims to be JSON:
    an API glitch, not a website): retried, and the backup gets all 18 images."""
    host = FlakyListing(Knobs(token=TOKEN, seed=18), every_page=True, portal=False)
    host.fail_next("malformed", 1)
    summary, _dest = await _backup(host, tmp_path)
    assert summary.exit_code == 0 and summary.copied == 18, summary.remote_failure
    assert host.stats.faults == 1
