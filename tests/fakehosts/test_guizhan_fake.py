"""The Guizhan emulator, driven over real loopback HTTP the way a Guizhan client would."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.guizhan import GuizhanFake, create
from imgsync.fakehosts.images import make_gif, make_jpeg, make_png

TOKEN = "guizhan-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000000Z")


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running(fake: GuizhanFake) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(fake.make_app(), host="127.0.0.1")) as client:
        yield client


def knobs(**kw: Any) -> Knobs:
    kw.setdefault("token", TOKEN)
    kw.setdefault("rate", "none")
    return Knobs(**kw)


def image_form(data: bytes, filename: str = "pic.png") -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=filename, content_type="application/octet-stream")
    return form


async def stats(client: TestClient[Any, Any]) -> dict[str, int]:
    result: dict[str, int] = await (await client.get("/_fakehost/stats")).json()
    return result


async def test_list_envelope_default_page_and_escaped_slashes() -> None:
    """GET /v1/images: {code:0,message:null,result:[...]}, 10 per page, newest first, \\/ URLs."""
    async with running(GuizhanFake(knobs(seed=23))) as client:
        resp = await client.get("/v1/images", headers=AUTH)
        assert resp.status == 200
        text = await resp.text()
        assert "https:" not in text and "http:\\/\\/127.0.0.1" in text
        body = await resp.json()
        assert body["code"] == 0 and body["message"] is None
        items = body["result"]
        assert len(items) == 10
        assert set(items[0]) == {"name", "fullname", "size", "upload_time", "url"}
        assert all(STAMP.fullmatch(i["upload_time"]) for i in items)
        times = [i["upload_time"] for i in items]
        assert times == sorted(times, reverse=True)

        names: list[str] = []
        for page in (1, 2, 3):
            got = await (await client.get(f"/v1/images?page={page}", headers=AUTH)).json()
            names += [i["name"] for i in got["result"]]
        assert len(names) == 23 == len(set(names))
        got = await (await client.get("/v1/images?page=4", headers=AUTH)).json()
        assert got == {"code": 0, "message": None, "result": []}


async def test_order_and_direction_case_insensitive() -> None:
    """order=name|size|upload_time with direction asc/DESC in either case."""
    async with running(GuizhanFake(knobs(seed=20))) as client:

        async def listing(query: str) -> list[dict[str, Any]]:
            resp = await client.get(f"/v1/images?per_page=20&{query}", headers=AUTH)
            assert resp.status == 200
            result: list[dict[str, Any]] = (await resp.json())["result"]
            return result

        by_size = await listing("order=size&direction=asc")
        assert [i["size"] for i in by_size] == sorted(i["size"] for i in by_size)
        assert by_size == await listing("order=size&direction=ASC")
        by_name = await listing("order=name&direction=desc")
        keys = [i["name"].casefold() for i in by_name]
        assert keys == sorted(keys, reverse=True)
        oldest = await listing("order=upload_time&direction=Asc")
        assert oldest == list(reversed(await listing("order=upload_time&direction=DESC")))


async def test_per_page_rules_are_validation_errors_in_the_envelope() -> None:
    """per_page must be 5-20, page >= 1, order/direction known: else code 1000, HTTP 422, []."""
    async with running(GuizhanFake(knobs(seed=30))) as client:
        cases = {
            "per_page=4": "The per page must be at least 5.",
            "per_page=21": "The per page must not be greater than 20.",
            "per_page=ten": "The per page must be an integer.",
            "page=0": "The page must be at least 1.",
            "order=date": "The selected order is invalid.",
            "direction=up": "The selected direction is invalid.",
        }
        for query, message in cases.items():
            resp = await client.get(f"/v1/images?{query}", headers=AUTH)
            assert resp.status == 422, query
            assert await resp.json() == {"code": 1000, "message": message, "result": []}
        for per_page in (5, 20):
            resp = await client.get(f"/v1/images?per_page={per_page}", headers=AUTH)
            assert len((await resp.json())["result"]) == per_page
    async with running(GuizhanFake(knobs(seed=30), clamp_paging=True)) as client:
        for per_page, expect in ((1, 5), (100, 20)):
            resp = await client.get(f"/v1/images?per_page={per_page}", headers=AUTH)
            assert resp.status == 200
            assert len((await resp.json())["result"]) == expect
    async with running(GuizhanFake(knobs(seed=3), errors_http_200=True)) as client:
        resp = await client.get("/v1/images?per_page=2", headers=AUTH)
        assert resp.status == 200
        assert (await resp.json())["code"] == 1000


async def test_only_a_bearer_token_authenticates() -> None:
    """Bearer works; no token, a wrong token or a query token: HTTP 401, code 1001."""
    async with running(GuizhanFake(knobs(seed=1))) as client:
        assert (await client.get("/v1/images", headers=AUTH)).status == 200
        for headers, query in (
            ({}, ""),
            ({"Authorization": "Bearer wrong"}, ""),
            ({}, f"?access_token={TOKEN}"),
            ({"Authorization": TOKEN}, ""),
        ):
            resp = await client.get(f"/v1/images{query}", headers=headers)
            assert resp.status == 401
            assert await resp.json() == {"code": 1001, "message": "Unauthenticated.", "result": []}
        resp = await client.post("/v1/images", data=image_form(make_png(4, 4, 1)))
        assert resp.status == 401
        assert (await stats(client))["uploads"] == 0


async def test_multipart_upload_round_trip() -> None:
    """POST image: the result object's url serves the exact bytes; JPEG is named .jpeg."""
    fixed = datetime(2021, 1, 9, 17, 52, 3, 654321, tzinfo=UTC).timestamp()
    fake = GuizhanFake(knobs(), wall_clock=lambda: fixed)
    async with running(fake) as client, aiohttp.ClientSession() as raw:
        for data, mime, ext in (
            (make_png(40, 30, 5), "image/png", "png"),
            (make_jpeg(8), "image/jpeg", "jpeg"),
            (make_gif(2), "image/gif", "gif"),
        ):
            resp = await client.post("/v1/images", data=image_form(data), headers=AUTH)
            assert resp.status == 200
            body = await resp.json()
            assert body["code"] == 0 and body["message"] is None
            item = body["result"]
            assert re.fullmatch(r"[0-9A-Za-z]{7}", item["name"])
            assert item["fullname"] == f"{item['name']}.{ext}"
            assert item["size"] == len(data)
            assert item["upload_time"] == "2021-01-09T17:52:03.000000Z"
            assert URL(item["url"]).path == f"/21w01/{item['fullname']}"
            async with raw.get(item["url"]) as got:
                assert got.status == 200
                assert got.content_type == mime
                assert await got.read() == data
        assert (await client.get("/21w02/nothing.png")).status == 404
        listed = await (await client.get("/v1/images", headers=AUTH)).json()
        assert len(listed["result"]) == 3
        counters = await stats(client)
        assert counters["uploads"] == counters["items"] == 3


async def test_base64_uploads_in_json_form_and_multipart() -> None:
    """image_base64 is accepted in a JSON body, a url-encoded form, a multipart field, as a data URI."""
    async with running(GuizhanFake(knobs())) as client:
        payloads = [make_png(6, 6, n) for n in range(4)]
        encoded = [base64.b64encode(p).decode() for p in payloads]
        multipart = aiohttp.FormData()
        multipart.add_field("image_base64", encoded[2])
        sends: list[dict[str, Any]] = [
            {"json": {"image_base64": encoded[0]}},
            {"data": {"image_base64": encoded[1]}},
            {"data": multipart},
            {"json": {"image_base64": "data:image/png;base64," + encoded[3]}},
        ]
        for payload, kwargs in zip(payloads, sends, strict=True):
            resp = await client.post("/v1/images", headers=AUTH, **kwargs)
            assert resp.status == 200, kwargs
            item = (await resp.json())["result"]
            assert item["size"] == len(payload)
            assert await (await client.get(URL(item["url"]).path)).read() == payload
        # no de-duplication: the same bytes again are a new image
        resp = await client.post("/v1/images", headers=AUTH, json={"image_base64": encoded[0]})
        assert resp.status == 200
        counters = await stats(client)
        assert (counters["items"], counters["distinct_checksums"]) == (5, 4)


async def test_oversize_upload_is_code_1002() -> None:
    """Over max_upload_bytes, by file or base64: code 1002 'Image size exceeds the limit.'."""
    big = make_png(120, 120, 9)
    expected = {"code": 1002, "message": "Image size exceeds the limit.", "result": []}
    async with running(GuizhanFake(knobs(max_upload_bytes=len(big) - 1))) as client:
        resp = await client.post("/v1/images", data=image_form(big), headers=AUTH)
        assert resp.status == 422
        assert await resp.json() == expected
        b64 = base64.b64encode(big).decode()
        resp = await client.post("/v1/images", json={"image_base64": b64}, headers=AUTH)
        assert await resp.json() == expected
        assert (await stats(client))["uploads"] == 0
    fake = GuizhanFake(knobs(max_upload_bytes=len(big)), errors_http_200=True)
    async with running(fake) as client:
        resp = await client.post("/v1/images", data=image_form(big + b"x"), headers=AUTH)
        assert resp.status == 200
        assert await resp.json() == expected
        resp = await client.post("/v1/images", data=image_form(big), headers=AUTH)
        assert (await resp.json())["code"] == 0


async def test_bad_uploads_are_validation_errors() -> None:
    """Nothing sent, a non-image, or bad base64: code 1000 with result []."""
    async with running(GuizhanFake(knobs())) as client:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"json": {}}, "The image field is required when image base64 is not present."),
            ({"data": image_form(b"plain text, no image")}, "The image must be an image."),
            ({"json": {"image_base64": "@@not base64@@"}}, "The image base64 must be a valid"),
            (
                {"json": {"image_base64": base64.b64encode(b"hello").decode()}},
                "The image base64 must be an image.",
            ),
        ]
        for kwargs, message in cases:
            resp = await client.post("/v1/images", headers=AUTH, **kwargs)
            assert resp.status == 422
            body = await resp.json()
            assert body["code"] == 1000 and body["result"] == []
            assert body["message"].startswith(message)


async def test_rate_headers_and_laravel_style_429() -> None:
    """Each reply carries X-RateLimit-*; over the limit 429 + Retry-After + Reset, then reset."""
    clock = FakeClock()
    fake = GuizhanFake(knobs(seed=2, rate="3/second"), clock=clock, wall_clock=lambda: 1.7e9)
    async with running(fake) as client:
        remaining = []
        for _ in range(3):
            resp = await client.get("/v1/images", headers=AUTH)
            assert resp.status == 200
            assert resp.headers["X-RateLimit-Limit"] == "3"
            remaining.append(resp.headers["X-RateLimit-Remaining"])
        assert remaining == ["2", "1", "0"]
        file_path = URL((await resp.json())["result"][0]["url"]).path
        # an unauthenticated call is refused before the throttle and carries no headers
        resp = await client.get("/v1/images")
        assert resp.status == 401
        assert "X-RateLimit-Limit" not in resp.headers

        resp = await client.post("/v1/images", data=image_form(make_png(3, 3, 3)), headers=AUTH)
        assert resp.status == 429
        assert await resp.json() == {"message": "Too Many Attempts."}
        assert resp.headers["Retry-After"] == "1"
        assert resp.headers["X-RateLimit-Reset"] == str(int(1.7e9) + 1)
        assert resp.headers["X-RateLimit-Remaining"] == "0"
        assert (await client.get(file_path)).status == 200  # the image host is not throttled

        clock.now += 1.0
        resp = await client.get("/v1/images", headers=AUTH)
        assert resp.status == 200
        assert resp.headers["X-RateLimit-Remaining"] == "2"
        counters = await stats(client)
        assert counters["throttled"] == 1
        assert counters["uploads"] == 0


async def test_default_rate_is_60_per_minute_and_none_disables_it() -> None:
    """knobs.rate unset: the documented 60/minute; rate='none': no limit and no headers."""
    async with running(GuizhanFake(Knobs(token=TOKEN))) as client:
        resp = await client.get("/v1/images", headers=AUTH)
        assert resp.headers["X-RateLimit-Limit"] == "60"
        assert resp.headers["X-RateLimit-Remaining"] == "59"
    async with running(GuizhanFake(knobs(rate="0/second"))) as client:
        for _ in range(5):
            resp = await client.get("/v1/images", headers=AUTH)
            assert resp.status == 200
            assert "X-RateLimit-Limit" not in resp.headers


async def test_seed_is_deterministic() -> None:
    """--seed N: the same names, sizes and dates every time; N distinct checksums."""
    async with running(GuizhanFake(knobs(seed=8))) as a, running(create(knobs(seed=8))) as b:
        la = (await (await a.get("/v1/images", headers=AUTH)).json())["result"]
        lb = (await (await b.get("/v1/images", headers=AUTH)).json())["result"]
        strip = [{k: v for k, v in i.items() if k != "url"} for i in la]
        assert strip == [{k: v for k, v in i.items() if k != "url"} for i in lb]
        assert {i["fullname"].rsplit(".", 1)[1] for i in la} == {"png", "jpeg", "gif"}
        assert len({i["upload_time"] for i in la}) == 8
        counters = await stats(a)
        assert counters["items"] == counters["distinct_checksums"] == 8


async def test_faults_and_request_counter() -> None:
    """faults={'5xx': 1.0}: every API call gets 503 and is counted; stats stays reachable."""
    async with running(GuizhanFake(knobs(seed=1, faults={"5xx": 1.0}))) as client:
        for _ in range(4):
            resp = await client.get("/v1/images", headers=AUTH)
            assert resp.status == 503
        counters = await stats(client)
        assert counters["faults"] == 4
        assert counters["requests"] == 4
    async with running(GuizhanFake(knobs(seed=1, faults={"malformed": 1.0}))) as client:
        resp = await client.get("/v1/images", headers=AUTH)
        assert resp.status == 200
        text = await resp.text()
        assert not text.endswith("}")


async def test_host_side_deletion_shifts_the_listing() -> None:
    """POST /_fakehost/delete removes images as the website would: later images move up a
    page, the deleted files answer 404, and stats count the deletes."""
    fake = GuizhanFake(knobs(seed=12))
    async with running(fake) as client:
        query = {"per_page": "5", "order": "upload_time", "direction": "ASC"}
        before = (
            await (
                await client.get("/v1/images", params={**query, "page": "2"}, headers=AUTH)
            ).json()
        )["result"]
        first = (
            await (
                await client.get("/v1/images", params={**query, "page": "1"}, headers=AUTH)
            ).json()
        )["result"]
        resp = await client.post("/_fakehost/delete", json={"oldest": 3})
        assert resp.status == 200
        assert (await resp.json())["deleted"] == [r["name"] for r in first[:3]]
        after = (
            await (
                await client.get("/v1/images", params={**query, "page": "1"}, headers=AUTH)
            ).json()
        )["result"]
        assert [r["name"] for r in after[2:]] == [r["name"] for r in before[:3]]
        gone = URL(first[0]["url"]).path
        assert (await client.get(gone)).status == 404
        named = await client.post("/_fakehost/delete", json={"names": [after[0]["name"], "nope"]})
        assert (await named.json())["deleted"] == [after[0]["name"]]
        assert (await client.post("/_fakehost/delete", data=b"x")).status == 400
        stats = await (await client.get("/_fakehost/stats")).json()
        assert stats["deletes"] == 4 and stats["items"] == 8
