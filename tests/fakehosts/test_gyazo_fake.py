"""The Gyazo emulator, driven over real loopback HTTP the way Gyazo clients drive Gyazo."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.gyazo import GyazoFake, create
from imgsync.fakehosts.images import make_jpeg, make_png

TOKEN = "gyazo-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def running(fake: GyazoFake) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(fake.make_app(), host="127.0.0.1")) as client:
        yield client


def knobs(**kw: Any) -> Knobs:
    kw.setdefault("token", TOKEN)
    return Knobs(**kw)


def upload_form(data: bytes, filename: str = "shot.png", **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for key, value in fields.items():
        form.add_field(key, value)
    form.add_field("imagedata", data, filename=filename, content_type="image/png")
    return form


def part_without_filename(data: bytes) -> aiohttp.MultipartWriter:
    """``imagedata`` sent as a plain field: Content-Disposition with a name and no filename."""
    writer = aiohttp.MultipartWriter("form-data")
    part = writer.append(data, {"Content-Type": "application/octet-stream"})
    part.set_content_disposition("form-data", name="imagedata")
    return writer


async def stats(client: TestClient[Any, Any]) -> dict[str, int]:
    resp = await client.get("/_fakehost/stats")
    result: dict[str, int] = await resp.json()
    return result


async def test_list_pages_newest_first_with_paging_headers() -> None:
    """A 25-image library pages as documented: bare array, X-* headers, newest first."""
    async with running(GyazoFake(knobs(seed=25))) as client:
        resp = await client.get("/api/images", headers=AUTH)
        assert resp.status == 200
        first = await resp.json()
        assert isinstance(first, list)
        assert len(first) == 20
        assert resp.headers["X-Total-Count"] == "25"
        assert resp.headers["X-Current-Page"] == "1"
        assert resp.headers["X-Per-Page"] == "20"
        assert resp.headers["X-User-Type"] == "lite"
        assert "Retry-After" not in resp.headers

        seen: list[str] = []
        for page in (1, 2, 3):
            resp = await client.get(f"/api/images?page={page}&per_page=10", headers=AUTH)
            assert resp.headers["X-Current-Page"] == str(page)
            seen += [item["image_id"] for item in await resp.json()]
        assert len(seen) == 25 == len(set(seen))
        assert seen[:20] == [item["image_id"] for item in first]

        resp = await client.get("/api/images?page=4&per_page=10", headers=AUTH)
        assert await resp.json() == []
        assert resp.headers["X-Total-Count"] == "25"

        stamps = [datetime.fromisoformat(i["created_at"]) for i in first]
        assert stamps == sorted(stamps, reverse=True)


async def test_per_page_is_clamped_or_rejected_when_strict() -> None:
    """per_page outside 1-100 is clamped by default (and echoed); strict_paging answers 400."""
    async with running(GyazoFake(knobs(seed=3))) as client:
        resp = await client.get("/api/images?per_page=500&page=0", headers=AUTH)
        assert resp.status == 200
        assert resp.headers["X-Per-Page"] == "100"
        assert resp.headers["X-Current-Page"] == "1"
        resp = await client.get("/api/images?per_page=0", headers=AUTH)
        assert resp.headers["X-Per-Page"] == "1"
        assert len(await resp.json()) == 1
    async with running(GyazoFake(knobs(seed=3), strict_paging=True)) as client:
        resp = await client.get("/api/images?per_page=101", headers=AUTH)
        assert resp.status == 400
        assert "per_page" in (await resp.json())["message"]


async def test_token_is_accepted_in_every_documented_location() -> None:
    """Bearer header, query, GET form body (python-gyazo), multipart field and DELETE form."""
    async with running(GyazoFake(knobs(seed=2))) as client:
        assert (await client.get("/api/images", headers=AUTH)).status == 200
        assert (await client.get(f"/api/images?access_token={TOKEN}")).status == 200
        resp = await client.get("/api/images", data={"access_token": TOKEN})
        assert resp.status == 200
        assert (await client.get("/api/users/me", params={"access_token": TOKEN})).status == 200

        form = upload_form(make_png(8, 8, 1), access_token=TOKEN)
        resp = await client.post("/api/upload", data=form)
        assert resp.status == 200
        image_id = (await resp.json())["image_id"]
        resp = await client.delete(f"/api/images/{image_id}", data={"access_token": TOKEN})
        assert resp.status == 200


async def test_missing_and_wrong_tokens_get_the_documented_401_bodies() -> None:
    """No token: the docs' body with request and method; a wrong token: 'You are not authorized'."""
    async with running(GyazoFake(knobs())) as client:
        resp = await client.get("/api/images")
        assert resp.status == 401
        assert await resp.json() == {
            "message": "This method requires authentication",
            "request": "/api/images",
            "method": "GET",
        }
        resp = await client.get("/api/images", headers={"Authorization": "Bearer nope"})
        assert resp.status == 401
        assert await resp.json() == {"message": "You are not authorized"}
        resp = await client.post("/api/upload", data=upload_form(make_png(4, 4, 2)))
        assert resp.status == 401
        assert (await stats(client))["uploads"] == 0


async def test_upload_round_trip_serves_the_same_bytes() -> None:
    """An upload's reply has the documented keys; its url, thumb and page serve it back."""
    png = make_png(33, 21, 7)
    async with running(GyazoFake(knobs())) as client:
        form = upload_form(
            png,
            title="A title",
            desc="a comment",
            referer_url="https://example.com/x",
            app="imgsync",
            created_at="1500000000.25",
            collection_id="c1",
            metadata_is_public="false",
            access_policy="only_me",
        )
        resp = await client.post("/api/upload", data=form, headers=AUTH)
        assert resp.status == 200
        reply = await resp.json()
        assert set(reply) == {"image_id", "permalink_url", "thumb_url", "url", "type", "created_at"}
        assert reply["image_id"] == hashlib.md5(png).hexdigest()
        assert reply["type"] == "png"
        assert reply["created_at"] == "2017-07-14T02:40:00.250Z"
        base = str(client.make_url("")).rstrip("/")
        assert reply["url"] == f"{base}/{reply['image_id']}.png"
        assert reply["permalink_url"] == f"{base}/{reply['image_id']}"

        async with aiohttp.ClientSession() as raw:
            for url in (reply["url"], reply["thumb_url"]):
                async with raw.get(url) as got:
                    assert got.status == 200
                    assert got.content_type == "image/png"
                    assert await got.read() == png
            async with raw.get(reply["permalink_url"]) as page:
                assert reply["url"] in await page.text()

        resp = await client.get(f"/api/images/{reply['image_id']}", headers=AUTH)
        item = await resp.json()
        assert item["metadata"]["title"] == "A title"
        assert item["metadata"]["desc"] == "a comment"
        assert item["metadata"]["url"] == "https://example.com/x"
        assert item["metadata"]["app"] == "imgsync"
        assert item["ocr"] == {"locale": None, "description": ""}
        assert item["access_policy"] == "only_me"
        assert item["created_at"] == reply["created_at"]


async def test_reupload_of_identical_bytes_returns_the_existing_image() -> None:
    """The same bytes again give the same image_id and created_at, and store nothing new."""
    jpeg = make_jpeg(3)
    async with running(GyazoFake(knobs())) as client:
        first = await (
            await client.post("/api/upload", data=upload_form(jpeg, "a.jpg"), headers=AUTH)
        ).json()
        again = await (
            await client.post(
                "/api/upload",
                data=upload_form(jpeg, "b.jpg", created_at="1"),
                headers=AUTH,
            )
        ).json()
        assert again == first
        assert first["type"] == "jpg"
        counters = await stats(client)
        assert counters["uploads"] == 1
        assert counters["items"] == 1
        assert counters["distinct_checksums"] == 1


async def test_upload_refusals() -> None:
    """No filename: 400; not an image: 422; over max_upload_bytes: 413; bad created_at: 400."""
    async with running(GyazoFake(knobs(max_upload_bytes=2000))) as client:
        resp = await client.post(
            "/api/upload", data=part_without_filename(make_png(4, 4, 1)), headers=AUTH
        )
        assert resp.status == 400
        resp = await client.post("/api/upload", data=upload_form(b"not an image"), headers=AUTH)
        assert resp.status == 422
        assert "message" in await resp.json()
        resp = await client.post(
            "/api/upload", data=upload_form(make_png(200, 200, 1)), headers=AUTH
        )
        assert resp.status == 413
        resp = await client.post(
            "/api/upload",
            data=upload_form(make_png(4, 4, 1), created_at="yesterday"),
            headers=AUTH,
        )
        assert resp.status == 400
        assert (await stats(client))["uploads"] == 0


async def test_delete_then_404_everywhere() -> None:
    """DELETE answers {image_id, type} (plus created_at, as python-gyazo reads it);
    afterwards API, file and second delete are 404."""
    async with running(GyazoFake(knobs(seed=3))) as client:
        items = await (await client.get("/api/images", headers=AUTH)).json()
        target = items[0]
        resp = await client.delete(f"/api/images/{target['image_id']}", headers=AUTH)
        assert resp.status == 200
        body = await resp.json()
        assert {k: body[k] for k in ("image_id", "type")} == {
            "image_id": target["image_id"],
            "type": target["type"],
        }
        assert body["created_at"].endswith("+0000")

        resp = await client.get(f"/api/images/{target['image_id']}", headers=AUTH)
        assert resp.status == 404
        assert await resp.json() == {"message": "image not found."}
        assert (await client.get(URL(target["url"]).path)).status == 404
        resp = await client.delete(f"/api/images/{target['image_id']}", headers=AUTH)
        assert resp.status == 404
        resp = await client.get("/api/images", headers=AUTH)
        assert resp.headers["X-Total-Count"] == "2"
        counters = await stats(client)
        assert counters["deletes"] == 1
        assert counters["items"] == 2


async def test_rate_limit_answers_429_without_retry_after() -> None:
    """Over knobs.rate: 429 with a message and no rate headers; the window then resets."""
    clock = FakeClock()
    async with running(GyazoFake(knobs(seed=1, rate="3/second"), clock=clock)) as client:
        listed = await client.get("/api/images", headers=AUTH)
        file_path = URL((await listed.json())[0]["url"]).path
        for _ in range(2):
            assert (await client.get("/api/images", headers=AUTH)).status == 200
        resp = await client.get("/api/images", headers=AUTH)
        assert resp.status == 429
        assert "message" in await resp.json()
        assert "Retry-After" not in resp.headers
        assert not [h for h in resp.headers if h.lower().startswith("x-ratelimit")]
        # files are another host at Gyazo: not counted
        assert (await client.get(file_path)).status == 200
        clock.now += 1.0
        assert (await client.get("/api/images", headers=AUTH)).status == 200
        assert (await stats(client))["throttled"] == 1


async def test_default_rate_is_the_documented_daily_budget_and_can_be_switched_off() -> None:
    """With no rate knob the 12,500/day limit applies; rate='none' means unlimited."""
    assert GyazoFake(knobs()).window is not None
    assert GyazoFake(knobs()).window.limit == 12_500  # type: ignore[union-attr]
    assert GyazoFake(knobs(rate="none")).window is None
    assert GyazoFake(knobs(rate="0/second")).window is None


async def test_seed_is_deterministic_and_varied() -> None:
    """--seed N gives the same N distinct images each time, with varied types and titles."""
    one, two = GyazoFake(knobs(seed=10)), create(knobs(seed=10))
    async with running(one) as a, running(two) as b:
        la = await (await a.get("/api/images", headers=AUTH)).json()
        lb = await (await b.get("/api/images", headers=AUTH)).json()
        assert [i["image_id"] for i in la] == [i["image_id"] for i in lb]
        assert [i["created_at"] for i in la] == [i["created_at"] for i in lb]
        assert {i["type"] for i in la} == {"png", "jpg", "gif"}
        assert len({i["metadata"]["title"] for i in la}) > 3
        counters = await stats(a)
        assert counters["items"] == counters["distinct_checksums"] == 10
        assert counters["uploads"] == 0


async def test_injected_5xx_faults_are_counted_and_stats_stay_reachable() -> None:
    """faults={'5xx': 1.0} fails every API call with 503; the stats route is never faulted."""
    async with running(GyazoFake(knobs(seed=1, faults={"5xx": 1.0}))) as client:
        for _ in range(3):
            assert (await client.get("/api/images", headers=AUTH)).status == 503
        counters = await stats(client)
        assert counters["faults"] == 3
        assert counters["requests"] == 3


async def test_hardening_knobs_mix_dates_and_drop_fields() -> None:
    """mixed_dates mixes the documented formats; omit_* drop metadata/ocr/url on some items."""
    fake = GyazoFake(knobs(seed=12), mixed_dates=True, omit_metadata=True, omit_urls=True)
    plain = GyazoFake(knobs(seed=12))
    async with running(fake) as client, running(plain) as ref:
        items = await (await client.get("/api/images", headers=AUTH)).json()
        ref_items = await (await ref.get("/api/images", headers=AUTH)).json()
        stamps = [i["created_at"] for i in items]
        assert any(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+0900", s) for s in stamps)
        assert any(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000", s) for s in stamps)
        assert any(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", s) for s in stamps)
        for mixed, ref_item in zip(items, ref_items, strict=True):
            a = datetime.fromisoformat(mixed["created_at"]).timestamp()
            b = datetime.fromisoformat(ref_item["created_at"]).timestamp()
            assert abs(a - b) < 1
        assert any("metadata" not in i and "ocr" not in i for i in items)
        assert any("url" not in i and i["permalink_url"] is None for i in items)
        assert all("metadata" in i and "url" in i for i in ref_items)

        resp = await client.post("/api/upload", data=upload_form(make_png(5, 5, 99)), headers=AUTH)
        created = (await resp.json())["created_at"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0000", created)


async def test_oembed_and_users_me() -> None:
    """oEmbed needs no token and gives the file URL and size; users/me gives a user object."""
    png = make_png(17, 9, 4)
    async with running(GyazoFake(knobs())) as client:
        reply = await (await client.post("/api/upload", data=upload_form(png), headers=AUTH)).json()
        resp = await client.get("/api/oembed", params={"url": reply["permalink_url"]})
        assert resp.status == 200
        body = await resp.json()
        assert body["type"] == "photo"
        assert body["url"] == reply["url"]
        assert (body["width"], body["height"]) == (17, 9)
        resp = await client.get("/api/oembed", params={"url": "https://gyazo.com/" + "0" * 32})
        assert resp.status == 404
        me = await (await client.get("/api/users/me", headers=AUTH)).json()
        assert set(me["user"]) == {"email", "name", "profile_image", "uid"}
