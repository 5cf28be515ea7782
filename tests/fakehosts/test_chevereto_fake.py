"""The Chevereto emulator over real loopback HTTP, checked against the recorded 4.2.0 fixtures."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from imgsync.fakehosts.chevereto import CheveretoFake, create, expiration_seconds, slug
from imgsync.fakehosts.common import Knobs
from imgsync.testing import serve_emulator

# A copy of shared/fixtures/chevereto-4.2.0 (recorded from a real Chevereto 4.2.0 server)
# lives in the repo, so CI needs nothing beside the checkout.
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chevereto-4.2.0"
INPUTS = FIXTURES / "inputs"
TOKEN = "TEST_KEY"  # the key the fixtures were recorded with
BAD_KEY = "chv_bad_0000"


FILE_FIELD = re.compile(
    r"<file (?P<name>[^,]+), (?P<size>\d+) bytes, md5 (?P<md5>[0-9a-f]{32})> "
    r"\(part Content-Type (?P<ctype>[^)]+)\)"
)
BINARY = re.compile(r"<binary (?P<size>\d+) bytes, md5 (?P<md5>[0-9a-f]{32})>")

# Parts of recorded strings that differ per run, and the pattern this run's value must match.
SHAPE_TOKENS = re.compile(
    r"(?P<host>http://HOST)"
    r"|(?P<datetime>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})"
    r"|(?P<folder>(?<=/images/)\d{4}/\d{2}/\d{2})"
    r"|(?P<id>(?<=/image/)[A-Za-z0-9]+)"
    r"|(?P<token>(?<=/delete/)[0-9a-f]{48})"
    r"|(?P<suffix>[0-9a-f]{16}(?=\.|$))"
    r"|(?P<random>(?:(?<=/)|^)[0-9a-f]{12}(?=\.|$))"
    r"|(?P<path><PATH>)"
)
SHAPE_PATTERNS = {
    "datetime": r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}",
    "folder": r"\d{4}/\d{2}/\d{2}",
    "id": r"[A-Za-z0-9]{2,}",
    "token": r"[0-9a-f]{48}",
    "suffix": r"[0-9a-f]{16}",
    "random": r"[0-9a-f]{12}",
    "path": r"/[^\s`']+",  # a server path the recording masked
}
# keys whose values differ per run: compared by shape, not value
VOLATILE = {
    "name",
    "filename",
    "original_filename",
    "date",
    "date_gmt",
    "date_fixed_peer",
    "expiration_date_gmt",
    "url",
    "url_viewer",
    "path_viewer",
    "url_short",
    "display_url",
    "delete_url",
}
SIZE_OF_DERIVED = {("thumb_size",), ("medium_size",), ("thumb", "size"), ("medium", "size")}
# A converted upload (BMP -> PNG, 35): the encoder's output differs from ImageMagick's, so
# these are compared by type; 36 checks that they describe the file served.
CONVERTED = {("size",), ("md5",), ("size_formatted",), ("image", "size")}


def shape(recorded: str, base: str) -> str:
    """A regex for this run's value of a recorded string (volatile parts generalised)."""
    out, pos = [], 0
    for m in SHAPE_TOKENS.finditer(recorded):
        out.append(re.escape(recorded[pos : m.start()]))
        kind = m.lastgroup or ""
        out.append(re.escape(base) if kind == "host" else SHAPE_PATTERNS[kind])
        pos = m.end()
    out.append(re.escape(recorded[pos:]))
    return "".join(out)


def compare(
    rec: Any, got: Any, base: str, path: tuple[str, ...] = (), converted: bool = False
) -> None:
    """Same keys in the same order, same types; exact values except the volatile ones."""
    where = ".".join(path) or "body"
    key = path[-1] if path else ""
    if rec is None:
        assert got is None, f"{where}: expected null, got {got!r}"
    elif isinstance(rec, dict):
        assert isinstance(got, dict), where
        assert list(got) == list(rec), f"{where}: keys differ:\n{list(got)}\n{list(rec)}"
        for k in rec:
            compare(rec[k], got[k], base, (*path, k), converted)
    elif isinstance(rec, list):
        assert isinstance(got, list) and len(got) == len(rec), where
        for i, (r, g) in enumerate(zip(rec, got, strict=True)):
            compare(r, g, base, (*path, str(i)), converted)
    elif key in ("id_encoded", "id") and path[:1] in (("image",), ("data",)):
        assert isinstance(got, str) and re.fullmatch(r"[A-Za-z0-9]{2,}", got), where
    elif key == "how_long_ago":
        assert isinstance(got, str) and re.fullmatch(r"moments ago|\d+ seconds? ago", got), where
    elif key == "original_exifdata":
        assert isinstance(got, str), where
        rec_exif, got_exif = json.loads(rec), json.loads(got)
        assert list(got_exif) == list(rec_exif), where
        assert re.fullmatch(r"chvtemp_[A-Za-z0-9]{6}", got_exif["FileName"]), where
        for k in rec_exif:
            if k not in ("FileName", "FileDateTime"):
                assert got_exif[k] == rec_exif[k], f"{where}.{k}"
    elif path[1:] in SIZE_OF_DERIVED or (converted and path[1:] in CONVERTED):
        assert type(got) is type(rec), f"{where}: {got!r} is not like {rec!r}"
    elif isinstance(rec, str) and (key in VOLATILE or "<PATH>" in rec):
        assert isinstance(got, str), where
        assert re.fullmatch(shape(rec, base), got), f"{where}: {got!r} is not shaped like {rec!r}"
    else:
        assert type(got) is type(rec) and got == rec, f"{where}: got {got!r}, recorded {rec!r}"


def utc_seconds(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def check_relations(rec: dict[str, Any], got: dict[str, Any]) -> None:
    """The emulator runs on the recorded clock: every date is the recorded one, ``date`` in the
    site's zone beside ``date_gmt`` in UTC, the date folder the local date."""
    for key in ("date", "date_gmt", "date_fixed_peer", "expiration_date_gmt"):
        assert got[key] == rec[key], f"{key}: {got[key]!r}, recorded {rec[key]!r}"
    folder = re.search(r"/images/(\d{4}/\d{2}/\d{2})/", got["url"])
    assert folder and folder.group(1) == got["date"][:10].replace("-", "/")


@contextlib.asynccontextmanager
async def running(host: CheveretoFake) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """Serve ``host`` on a free loopback port; yield its base URL and a client session."""
    async with serve_emulator(host) as emulator, aiohttp.ClientSession() as session:
        yield emulator.url, session


def multipart(fields: dict[str, str | tuple[str, bytes, str]]) -> aiohttp.MultipartWriter:
    """A multipart/form-data body: strings are text fields, tuples (name, bytes, type) files.

    File names go out byte for byte, as the recordings sent them (raw UTF-8 in 47, the
    ``%XX`` text in 48), not percent-quoted by aiohttp.
    """
    writer = aiohttp.MultipartWriter("form-data")
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, data, ctype = value
            part = writer.append(data, {"Content-Type": ctype})
            part.set_content_disposition(
                "form-data", quote_fields=False, name=name, filename=filename
            )
        else:
            part = writer.append(value)
            part.set_content_disposition("form-data", name=name)
    return writer


# 47 and 48 sent inputs/test4.png under these names
SENT_AS = {"ñandú é.png": "test4.png", "%C3%B1and%C3%BA%20%C3%A9.png": "test4.png"}


def input_bytes(name: str, size: int) -> bytes:
    """An input file; ``pad<N>.jpg`` (38, 39: too big to keep) is photo1.jpg zero-padded to N."""
    if re.fullmatch(r"pad\d+\.jpg", name):
        return (INPUTS / "photo1.jpg").read_bytes().ljust(size, b"\0")
    return (INPUTS / SENT_AS.get(name, name)).read_bytes()


def fixture_body(req: dict[str, Any]) -> Any:
    """Rebuild a recorded request body (files from ``inputs/``, base64 as recorded)."""
    kind = req["body_kind"]
    if kind == "none":
        return None
    if kind == "urlencoded":
        return dict(req["fields"])
    assert kind == "multipart", kind
    fields: dict[str, str | tuple[str, bytes, str]] = {}
    for name, value in req["fields"].items():
        m = FILE_FIELD.fullmatch(value)
        if m is None:
            fields[name] = value
            continue
        data = input_bytes(m["name"], int(m["size"]))
        assert len(data) == int(m["size"]) and hashlib.md5(data).hexdigest() == m["md5"]
        fields[name] = (m["name"], data, m["ctype"])
    return multipart(fields)


def upload_urls(rec: dict[str, Any], got: dict[str, Any], base: str) -> dict[str, str]:
    """Recorded URL (with this run's base) -> this run's URL, for every URL of an image object."""
    pairs = {}
    for key in ("url", "url_viewer", "url_short", "display_url", "delete_url"):
        pairs[rec[key].replace("http://HOST", base)] = got[key]
    for sub in ("image", "thumb", "medium"):
        if rec[sub]["url"]:
            pairs[rec[sub]["url"].replace("http://HOST", base)] = got[sub]["url"]
    return pairs


async def replay(
    fx: dict[str, Any],
    base: str,
    session: aiohttp.ClientSession,
    urls: dict[str, str],
    stored: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Send one recorded request to the emulator and compare its reply with the recorded one.

    ``stored`` collects this run's image objects by their URL, for the later GETs.
    """
    stored = {} if stored is None else stored
    req, rec = fx["request"], fx["response"]
    title = fx["title"]
    path = req["path"]
    if base + path in urls:  # a request that depends on an earlier one's reply
        path = urls[base + path][len(base) :]
    headers = {k: v for k, v in req["headers"].items() if k.lower() != "content-type"}
    async with session.request(
        req["method"],
        base + path,
        params=req["query"] or None,
        headers=headers,
        data=fixture_body(req),
        allow_redirects=False,
    ) as resp:
        body = await resp.read()
        raw = {k.decode().lower(): (k.decode(), v.decode()) for k, v in resp.raw_headers}

    assert resp.status == rec["status"], f"{title}: status {resp.status}: {body[:300]!r}"
    for name, value in rec["headers"].items():
        got_name, got_value = raw[name.lower()]
        if name.lower() == "location":
            expected = value.replace("http://HOST", base)
            target, _, query = expected.partition("?")
            if target in urls:
                expected = urls[target] + ("?" + query if query else "")
                assert got_value == expected, title
            else:
                assert re.fullmatch(shape(value, base), got_value), f"{title}: {got_value}"
        elif name.lower() == "content-length" and rec.get("body_md5_matches_upload") is False:
            assert got_value == str(len(body)), title  # a converted file: its own length
        else:
            assert got_name == name, f"{title}: header spelled {got_name!r}, recorded {name!r}"
            assert got_value == value, f"{title}: {name}: {got_value!r}"

    recorded = rec["body"]
    if isinstance(recorded, dict):
        got = json.loads(body)
        compare(recorded, got, base, converted="image/bmp" in json.dumps(req["fields"]))
        key = "data" if "data" in recorded else "image" if "image" in recorded else None
        if key is not None:
            check_relations(recorded[key], got[key])
            urls.update(upload_urls(recorded[key], got[key], base))
            stored[got[key]["url"]] = got[key]
    elif (m := BINARY.fullmatch(recorded)) is not None:
        if rec.get("body_md5_matches_upload"):
            assert len(body) == int(m["size"]) and hashlib.md5(body).hexdigest() == m["md5"]
        elif rec["status"] == 200:  # a converted upload (36): the file the reply described
            image = stored[base + path]
            assert body[:8] == b"\x89PNG\r\n\x1a\n" and resp.content_type == image["mime"]
            assert len(body) == image["size"] and hashlib.md5(body).hexdigest() == image["md5"]
        else:
            assert body.lstrip().lower().startswith(b"<!doctype html"), title
    else:
        text = body.decode()
        assert re.fullmatch(shape(recorded, base), text), f"{title}: {text!r}"
        if recorded.startswith("http://HOST"):
            urls[recorded.replace("http://HOST", base)] = text


def load_fixtures() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, json.loads(p.read_text())) for p in sorted(FIXTURES.glob("*.json"))]


def recorded_times(fixtures: list[tuple[str, dict[str, Any]]]) -> dict[str, float]:
    """The server's clock at each exchange: the ``date_gmt`` of its reply, else the last one."""
    times: dict[str, float] = {}
    last: float | None = None
    for name, fx in fixtures:
        body = fx["response"]["body"]
        image = (body.get("image") or body.get("data")) if isinstance(body, dict) else None
        if image:
            last = utc_seconds(image["date_gmt"])
        if last is not None:
            times[name] = last
    first = next(iter(times.values()))
    return {name: times.get(name, first) for name, _ in fixtures}


def stored_one(fx: dict[str, Any]) -> bool:
    """Whether the recorded exchange stored an image."""
    req, rec = fx["request"], fx["response"]
    if req["path"] not in ("/api/1/upload", "/api/1/upload/") or req["method"] != "POST":
        return False
    body = rec["body"]
    return rec["status"] == 302 or (
        rec["status"] == 200 and (isinstance(body, dict) or body.startswith("http://HOST/images/"))
    )


# Names that were already taken in the day's folder when 47 and 48 were recorded (by uploads
# outside the recordings), which is why their stored names carry the 16-hex suffix.
TAKEN_BEFORE = {
    "47-filename-raw-utf8.json": "ñandú é.png",
    "48-filename-percent-encoded.json": "%C3%B1and%C3%BA%20%C3%A9.png",
}
FLOOD = "51-flood-protection-trips.json"


async def test_replay_every_recorded_exchange() -> None:
    """Every recorded exchange, replayed in order over HTTP, gets a reply shaped like the real one.

    The emulator runs on the recorded clock (so dates, date folders and taken names are the
    recorded ones). The ``00*`` exchanges (stock free edition) go to an emulator built with
    ``request_denied``; 51 to one with the recorded flood limit (3 per minute) after the three
    uploads that preceded it; the rest, in order, to one default emulator, so that the later
    GETs (image URL, delete URL, after delete) use the URLs this run produced.
    """
    fixtures = load_fixtures()
    assert len(fixtures) == 53
    times = recorded_times(fixtures)
    now = [0.0]
    denied = CheveretoFake(Knobs(token=TOKEN), request_denied=True, clock=lambda: now[0])
    async with running(denied) as (base, session):
        for name, fx in fixtures:
            if name.startswith("00"):
                now[0] = times[name]
                await replay(fx, base, session, {})

    flood = CheveretoFake(Knobs(token=TOKEN, rate="3/minute"), clock=lambda: now[0])
    async with running(flood) as (base, session):
        now[0] = times[FLOOD]
        test1 = (INPUTS / "test1.png").read_bytes()
        for _ in range(3):
            assert (await post_upload(session, base, test1, "test1.png"))[0] == 200
        await replay(dict(fixtures)[FLOOD], base, session, {})

    host = CheveretoFake(Knobs(token=TOKEN), clock=lambda: now[0])
    urls: dict[str, str] = {}
    stored: dict[str, dict[str, Any]] = {}
    extra = 0  # requests beyond the recorded ones
    checked = 0
    async with running(host) as (base, session):
        for name, fx in fixtures:
            if name.startswith("00") or name == FLOOD:
                continue
            now[0] = times[name]
            if name in TAKEN_BEFORE:
                status, _ = await post_upload(session, base, png(99), TAKEN_BEFORE[name])
                assert status == 200
                extra += 1
            await replay(fx, base, session, urls, stored)
            for url in list(stored)[checked:]:  # the thumbnail: a real file of its own size
                image = stored[url]
                async with session.get(image["thumb"]["url"]) as resp:
                    thumb = await resp.read()
                extra += 1
                assert resp.status == 200 and resp.content_type == image["mime"]
                assert len(thumb) == image["thumb_size"] == image["thumb"]["size"]
                assert hashlib.md5(thumb).hexdigest() != image["md5"]
            checked = len(stored)
        async with session.get(base + "/_fakehost/stats") as resp:
            stats = await resp.json()

    main = [fx for name, fx in fixtures if not name.startswith("00") and name != FLOOD]
    uploads = [fx for fx in main if stored_one(fx)]
    assert len(uploads) == 18
    assert stats["uploads"] == len(uploads) + len(TAKEN_BEFORE)
    assert stats["deletes"] == 1
    assert stats["items"] == stats["uploads"] - 1 - 4  # one deleted; 02, 03, 04, 33 expired
    assert stats["requests"] == len(main) + extra


async def post_upload(
    session: aiohttp.ClientSession,
    base: str,
    data: bytes,
    filename: str = "pic.png",
    ctype: str = "image/png",
    header_key: str | None = TOKEN,
    **fields: str,
) -> tuple[int, Any]:
    """POST one multipart upload; the reply as JSON when it is JSON, else as text."""
    headers = {"X-API-Key": header_key} if header_key is not None else {}
    body = multipart({**fields, "source": (filename, data, ctype)})
    async with session.post(base + "/api/1/upload", data=body, headers=headers) as resp:
        text = await resp.text()
        return resp.status, json.loads(text) if text.startswith("{") else text


def png(index: int) -> bytes:
    from imgsync.fakehosts.images import make_png

    return make_png(20 + index, 10, index)


async def test_header_key_wins_over_form_key() -> None:
    """The ``X-API-Key`` header is used even when a ``key`` field is also sent."""
    async with running(CheveretoFake(Knobs(token=TOKEN))) as (base, session):
        status, body = await post_upload(session, base, png(1), header_key=BAD_KEY, key=TOKEN)
        assert status == 400 and body["error"] == {"message": "Invalid API key.", "code": 100}
        status, body = await post_upload(session, base, png(1), header_key=TOKEN, key=BAD_KEY)
        assert status == 200 and body["image"]["width"] == 21
        async with session.get(base + "/api/1/upload/", params={"key": TOKEN}) as resp:
            got = await resp.json()
        assert resp.status == 400 and got["error"]["code"] == 130  # key accepted from the query


async def test_check_order_key_version_auth_denied_action() -> None:
    """No key beats a wrong version, a wrong version beats a bad key, auth beats the action."""
    cases = [
        (CheveretoFake(Knobs(token=TOKEN)), "/api/2/upload", None, 100, "No key provided"),
        (CheveretoFake(Knobs(token=TOKEN)), "/api/2/upload", BAD_KEY, 110, "Invalid API version."),
        (CheveretoFake(Knobs(token=TOKEN)), "/api/1/list", BAD_KEY, 100, "Invalid API key."),
        (CheveretoFake(Knobs(token=TOKEN), request_denied=True), "/api/1/list", TOKEN, 401, None),
        (
            CheveretoFake(Knobs(token=TOKEN), request_denied=True),
            "/api/1/upload",
            BAD_KEY,
            100,
            None,
        ),
        (CheveretoFake(Knobs(token=TOKEN)), "/api/1", TOKEN, 100, "No action provided"),
    ]
    for host, path, key, code, message in cases:
        async with running(host) as (base, session):
            headers = {"X-API-Key": key} if key else {}
            body = multipart({"source": ("a.png", png(2), "image/png")})
            async with session.post(base + path, data=body, headers=headers) as resp:
                got = await resp.json()
            assert resp.status == 400 and got["status_txt"] == "Bad Request"
            assert got["error"]["code"] == code, (path, key, got)
            if message:
                assert got["error"]["message"] == message


async def test_checksum_field_variant_renames_both_fields() -> None:
    """``checksum_field="checksum"`` emits ``checksum``/``source_checksum`` where md5 fields were."""
    host = CheveretoFake(Knobs(token=TOKEN), checksum_field="checksum")
    async with running(host) as (base, session):
        data = png(3)
        status, body = await post_upload(session, base, data)
    keys = list(body["image"])
    assert status == 200 and "md5" not in keys and "source_md5" not in keys
    assert keys[keys.index("storage_mode") + 1 : keys.index("storage_mode") + 3] == [
        "checksum",
        "source_checksum",
    ]
    assert body["image"]["checksum"] == hashlib.md5(data).hexdigest()


async def test_moderation_hides_urls_but_keeps_delete_url() -> None:
    """With ``moderation`` the reply says ``is_approved`` 0 and carries none of the file URLs."""
    host = CheveretoFake(Knobs(token=TOKEN), moderation=True)
    async with running(host) as (base, session):
        status, body = await post_upload(session, base, png(4))
        image = body["image"]
        async with session.get(image["delete_url"], allow_redirects=False) as resp:
            deleted = resp.status
    assert status == 200 and image["is_approved"] == 0
    assert "url" not in image and "display_url" not in image
    assert all("url" not in image[sub] for sub in ("image", "thumb", "medium"))
    assert image["url_viewer"].startswith(base) and deleted == 301


async def test_reject_duplicates_within_a_day() -> None:
    """``reject_duplicates``: the same MD5 gets error 101 for a day, then is accepted again."""
    now = [1_800_000_000.0]
    host = CheveretoFake(Knobs(token=TOKEN), reject_duplicates=True, clock=lambda: now[0])
    async with running(host) as (base, session):
        assert (await post_upload(session, base, png(5)))[0] == 200
        status, body = await post_upload(session, base, png(5))
        assert status == 400 and body["error"] == {"message": "Duplicated upload", "code": 101}
        assert (await post_upload(session, base, png(6)))[0] == 200
        now[0] += 86_401
        assert (await post_upload(session, base, png(5)))[0] == 200


async def test_flood_protection_is_http_400_code_130() -> None:
    """Over ``knobs.rate`` an upload is refused with HTTP 400 code 130 and counted as throttled."""
    now = [1_800_000_000.0]
    host = CheveretoFake(Knobs(token=TOKEN, rate="2/minute"), clock=lambda: now[0])
    async with running(host) as (base, session):
        assert (await post_upload(session, base, png(7)))[0] == 200
        assert (await post_upload(session, base, png(8)))[0] == 200
        status, body = await post_upload(session, base, png(9))
        assert status == 400
        assert body["error"] == {
            "message": "Flooding detected. You can only upload 2 images per minute",
            "code": 130,
        }
        now[0] += 61
        assert (await post_upload(session, base, png(9)))[0] == 200
        async with session.get(base + "/_fakehost/stats") as resp:
            stats = await resp.json()
    assert stats["throttled"] == 1 and stats["uploads"] == 3
    per_second = CheveretoFake(Knobs(token=TOKEN, rate="1/second"))
    async with running(per_second) as (base, session):
        await post_upload(session, base, png(1))
        _, body = await post_upload(session, base, png(2))
    assert body["error"]["message"].endswith("upload 1 images per second")


async def test_too_big_upload_and_url_source() -> None:
    """Above ``max_upload_bytes`` -> code 400 "File too big"; a URL source -> code 403."""
    host = CheveretoFake(Knobs(token=TOKEN, max_upload_bytes=1000))
    async with running(host) as (base, session):
        status, body = await post_upload(session, base, b"\x89PNG\r\n\x1a\n" + bytes(2000))
        assert status == 400 and body["error"] == {
            "message": "File too big - max 1 KB",
            "code": 400,
        }
        form = {"key": TOKEN, "source": "https://example.com/a.png"}
        async with session.post(base + "/api/1/upload", data=form) as resp:
            got = await resp.json()
    assert got["error"] == {"message": "URL uploading is disabled", "code": 403}


async def test_expired_image_disappears() -> None:
    """An upload with ``expiration=PT5M`` is served until then and gone (404) afterwards."""
    now = [1_800_000_000.0]
    host = CheveretoFake(Knobs(token=TOKEN), clock=lambda: now[0])
    async with running(host) as (base, session):
        _, body = await post_upload(session, base, png(10), expiration="PT5M")
        url = body["image"]["url"]
        async with session.get(url) as resp:
            assert resp.status == 200
        now[0] += 301
        async with session.get(url) as resp:
            assert resp.status == 404
        async with session.get(body["image"]["url_viewer"]) as resp:
            assert resp.status == 404
    assert expiration_seconds("P1D") == 86400 and expiration_seconds("PT1H30M") == 5400
    assert expiration_seconds("") == 300 and expiration_seconds("P") == 300


async def test_delete_url_needs_the_right_token_and_images_are_byte_exact() -> None:
    """A wrong delete token is a 404 and deletes nothing; files, thumbs and viewer are served."""
    async with running(CheveretoFake(Knobs(token=TOKEN))) as (base, session):
        data = png(11)
        _, body = await post_upload(session, base, data, filename="holiday.png", title="Hi <b>")
        image = body["image"]
        wrong = image["delete_url"][:-4] + "0000"
        async with session.get(wrong, allow_redirects=False) as resp:
            assert resp.status == 404
        async with session.get(image["url"]) as resp:
            assert resp.status == 200 and resp.content_type == "image/png"
            assert await resp.read() == data
        async with session.get(image["thumb"]["url"]) as resp:  # a thumbnail of its own
            thumb = await resp.read()
        assert resp.content_type == "image/png" and thumb[:8] == data[:8] and thumb != data
        assert len(thumb) == image["thumb_size"]
        async with session.get(image["url_viewer"]) as resp:
            page = await resp.text()
        assert resp.status == 200 and image["url"] in page and "Hi &lt;b&gt;" in page
    assert image["filename"] == "holiday.png" and image["title_truncated"] == "Hi <b>"


async def test_imgbb_mode_and_txt_redirect_formats() -> None:
    """``image`` as base64 text answers ImgBB-style, as a file part it is not read (fixture 46);
    txt gives the URL, redirect the viewer path."""
    async with running(CheveretoFake(Knobs(token=TOKEN))) as (base, session):
        form = {"key": TOKEN, "image": base64.b64encode(png(12)).decode()}
        async with session.post(base + "/api/1/upload", data=form) as resp:
            got = await resp.json()
        assert list(got) == ["status_code", "status", "success", "data", "status_txt"]
        assert got["data"]["id"] == got["data"]["id_encoded"]
        body = multipart({"key": TOKEN, "image": ("x.png", png(12), "image/png")})
        async with session.post(base + "/api/1/upload", data=body) as resp:
            got = await resp.json()
        assert resp.status == 400
        assert got["error"] == {"message": "Empty upload source", "code": 130}
        status, text = await post_upload(session, base, png(13), format="txt")
        assert status == 200 and re.fullmatch(re.escape(base) + r"/images/[\d/]{10}/pic\.png", text)
        body = multipart({"format": "redirect", "source": ("r.png", png(14), "image/png")})
        headers = {"X-API-Key": TOKEN}
        async with session.post(
            base + "/api/1/upload", data=body, headers=headers, allow_redirects=False
        ) as resp:
            assert resp.status == 302 and re.fullmatch(r"/image/\w+", resp.headers["Location"])


async def test_seed_images_are_served_and_counted() -> None:
    """``--seed 6`` stores six distinct images of several types, each served at its URL."""
    host = create(Knobs(token=TOKEN, seed=6))
    async with running(host) as (base, session):
        async with session.get(base + "/_fakehost/images") as resp:
            listed = (await resp.json())["images"]
        types = set()
        for item in listed:
            async with session.get(item["url"]) as resp:
                data = await resp.read()
                types.add(resp.content_type)
            assert hashlib.md5(data).hexdigest() == item["md5"] and len(data) == item["size"]
        async with session.get(base + "/_fakehost/stats") as resp:
            stats = await resp.json()
    assert len(listed) == 6 and len({i["title"] for i in listed}) == 6
    assert types == {"image/png", "image/jpeg", "image/gif"}
    assert stats["items"] == 6 and stats["distinct_checksums"] == 6 and stats["uploads"] == 0
    again = CheveretoFake(Knobs(token=TOKEN, seed=6))
    assert [i.md5 for i in again.images()] == [i["md5"] for i in listed]


async def test_fault_injection_applies_to_the_api() -> None:
    """With ``5xx=1`` every API call gets a 503 while the stats route keeps answering."""
    host = CheveretoFake(Knobs(token=TOKEN, faults={"5xx": 1.0}))
    async with running(host) as (base, session):
        status, _ = await post_upload(session, base, png(15))
        async with session.get(base + "/_fakehost/stats") as resp:
            stats = await resp.json()
    assert status == 503 and stats["faults"] == 1 and stats["uploads"] == 0


async def test_flood_window_counts_stored_uploads_only() -> None:
    """The window is the trailing minute of *stored* uploads (fixture 51's notes): a refused
    attempt does not extend it, and a deleted upload stops counting."""
    now = [1_800_000_000.0]
    host = CheveretoFake(Knobs(token=TOKEN, rate="3/minute"), clock=lambda: now[0])
    async with running(host) as (base, session):
        replies = [await post_upload(session, base, png(20 + i)) for i in range(3)]
        assert [status for status, _ in replies] == [200, 200, 200]
        now[0] += 29
        status, body = await post_upload(session, base, png(30))
        assert status == 400 and body["error"]["code"] == 130
        now[0] += 32  # 61 s after the stored ones, 32 s after the refused attempt
        assert (await post_upload(session, base, png(30)))[0] == 200
        for i in range(2):
            assert (await post_upload(session, base, png(31 + i)))[0] == 200
        assert (await post_upload(session, base, png(33)))[0] == 400
        async with session.get(replies[0][1]["image"]["delete_url"], allow_redirects=False):
            pass  # deleting an upload from outside the window frees nothing
        assert (await post_upload(session, base, png(33)))[0] == 400
    fresh = CheveretoFake(Knobs(token=TOKEN, rate="2/minute"), clock=lambda: now[0])
    async with running(fresh) as (base, session):
        first = await post_upload(session, base, png(40))
        assert (await post_upload(session, base, png(41)))[0] == 200
        assert (await post_upload(session, base, png(42)))[0] == 400
        async with session.get(first[1]["image"]["delete_url"], allow_redirects=False) as resp:
            assert resp.status == 301
        assert (await post_upload(session, base, png(42)))[0] == 200  # its row is gone


def test_slug_folds_accents_and_drops_the_rest() -> None:
    """Stored names as the real server slugs them (fixtures 47, 48)."""
    assert slug("ñandú é") == "nandu-e"
    assert slug("%C3%B1and%C3%BA%20%C3%A9") == "C3B1andC3BA20C3A9"
    assert slug("holiday  photo (2)") == "holiday-photo-2"
    assert slug("日本") == "" and slug("a.b_c") == "ab_c"


async def test_bmp_is_stored_as_a_new_png_each_time_and_dates_follow_the_site_zone() -> None:
    """A BMP upload is converted (a new PNG, and another one a second later); ``date`` is the
    site's local time: UTC-3 by default, as recorded, or the ``utc_offset`` option."""
    bmp = (INPUTS / "bitmap1.bmp").read_bytes()
    now = [1_800_000_000.0]
    for offset, expected in ((None, -3 * 3600), (0, 0), ("5.5", 5.5 * 3600)):
        options: dict[str, Any] = {} if offset is None else {"utc_offset": offset}
        host = CheveretoFake(Knobs(token=TOKEN), clock=lambda: now[0], **options)
        async with running(host) as (base, session):
            _, one = await post_upload(session, base, bmp, "bitmap1.bmp", "image/bmp")
            now[0] += 1
            _, two = await post_upload(session, base, bmp, "bitmap1.bmp", "image/bmp")
            async with session.get(one["image"]["url"]) as resp:
                stored = await resp.read()
        image = one["image"]
        assert image["extension"] == "png" and image["mime"] == "image/png"
        assert image["original_filename"] == "bitmap1.bmp" and image["source_md5"] is None
        assert (image["width"], image["height"]) == (32, 24)
        assert hashlib.md5(stored).hexdigest() == image["md5"] != hashlib.md5(bmp).hexdigest()
        assert two["image"]["md5"] != image["md5"]
        delta = utc_seconds(image["date"]) - utc_seconds(image["date_gmt"])
        assert delta == expected


async def test_stock_size_limit_is_two_decimal_megabytes() -> None:
    """Without ``max_upload_bytes`` the stock 2 MB (2,000,000 bytes) applies; a non-image over
    the limit is refused for its type first (the size check comes after it)."""
    jpeg = (INPUTS / "photo1.jpg").read_bytes()
    async with running(CheveretoFake(Knobs(token=TOKEN))) as (base, session):
        _, body = await post_upload(
            session, base, jpeg.ljust(2_000_001, b"\0"), "big.jpg", "image/jpeg"
        )
        assert body["error"] == {"message": "File too big - max 2 MB", "code": 400}
        _, body = await post_upload(session, base, bytes(2_000_001), "zeros.png")
        assert body["error"]["code"] == 610
    assert Knobs().upload_limit() == 20 * 1024 * 1024  # the other emulators keep theirs
