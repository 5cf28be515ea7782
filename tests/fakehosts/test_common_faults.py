"""The emulators' shared fault knobs, seen from a plain HTTP client."""

from __future__ import annotations

import aiohttp
import pytest
from helpers import start_fake

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.guizhan import GuizhanFake


@pytest.mark.parametrize(
    ("fault", "check"),
    [("reset", "disconnect"), ("truncate", "payload"), ("malformed", "json"), ("5xx", "503")],
)
async def test_each_fault_reaches_the_client(fault: str, check: str) -> None:
    """Every fault kind shows up as the failure it stands for, and is counted."""
    fake = await start_fake(
        GuizhanFake(Knobs(token="t0k3n-abcdef", rate="none", faults={fault: 1.0}))
    )
    headers = {"Authorization": "Bearer t0k3n-abcdef"}
    try:
        async with aiohttp.ClientSession() as s:
            if check == "disconnect":
                with pytest.raises(aiohttp.ClientConnectionError):
                    async with s.get(f"{fake.url}/v1/images", headers=headers) as r:
                        await r.read()
            elif check == "payload":
                with pytest.raises(aiohttp.ClientPayloadError):
                    async with s.get(f"{fake.url}/v1/images", headers=headers) as r:
                        await r.read()
            else:
                async with s.get(f"{fake.url}/v1/images", headers=headers) as r:
                    body = await r.text()
                    if check == "503":
                        assert r.status == 503
                    else:
                        assert r.status == 200 and body.startswith("{") and body.count("}") == 0
        assert (await fake.stats())["faults"] >= 1  # aiohttp may retry a dropped GET once
    finally:
        await fake.close()
