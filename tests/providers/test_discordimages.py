"""DiscordImagesProvider against the Discord Images emulator on 127.0.0.1 (and the CLI).

What every provider must do is the conformance suite's (tests/conformance); this file keeps
the host's own quirks (names as ids, the inferred paging/delete options, size text,
lolisafe's reply shapes). Retries and pacing run on imgsync.testing's fake clock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import RunningFake, backup_files, run_cli_async, start_fake, write_config

from imgsync.config import RemoteConfig
from imgsync.errors import (
    AuthError,
    NotFound,
    RateLimited,
    Rejected,
    RemoteMisconfigured,
    RemoteUnavailable,
    Unsupported,
)
from imgsync.fakehosts.common import Knobs
from imgsync.fakehosts.discordimages import DiscordImagesFake
from imgsync.fakehosts.images import make_jpeg, make_png
from imgsync.http import ApiClient
from imgsync.models import ItemMeta, RemoteItem, UploadSource
from imgsync.providers.base import ProviderContext
from imgsync.providers.discordimages import DiscordImagesProvider, parse_size
from imgsync.testing import fast_client, read_all, upload_source

TOKEN = "di-test-token-5f2a"


@pytest.fixture
async def client() -> AsyncIterator[ApiClient]:
    """An ApiClient whose retries and host pacing wait on a fake clock."""
    async with fast_client(attempts=5) as c:
        yield c


@contextlib.asynccontextmanager
async def served(host: Any) -> AsyncIterator[RunningFake]:
    """Serve an emulator (or any object with ``make_app``) for the block."""
    fake = await start_fake(host)
    try:
        yield fake
    finally:
        await fake.close()


def provider(
    url: str, client: ApiClient, token: str | None = TOKEN, **options: Any
) -> DiscordImagesProvider:
    cfg = RemoteConfig(
        name="di", type="discordimages", base_url=url, token=token, options=dict(options)
    )
    return DiscordImagesProvider(cfg, ProviderContext(http=client))


def source(name: str, data: bytes) -> UploadSource:
    return upload_source(data, name)


# ---- contract against the emulator ------------------------------------------------------


async def test_list_seeded_account(client: ApiClient) -> None:
    """One GET lists everything newest first; .txt files are flagged, fields are mapped."""
    host = DiscordImagesFake(Knobs(token=TOKEN, seed=12))
    async with served(host) as fake:
        p = provider(fake.url, client)
        pages = [page async for page, _ in p.iter_all()]
        assert (await fake.stats())["requests"] == 1
    assert len(pages) == 1 and pages[0].next_cursor is None
    items = pages[0].items
    stored = host.files()
    assert [i.remote_id for i in items] == [str(f.id) for f in stored]
    assert [i.is_image for i in items] == [f.is_image for f in stored]
    assert sum(not i.is_image for i in items) == 2
    assert all(i.name.endswith(".txt") for i in items if not i.is_image)
    for item, f in zip(items, stored, strict=True):
        assert item.name == f.name and item.url == f"{fake.url}/{f.name}"
        assert item.meta.created_at == f.timestamp
        assert item.meta.tags == ((f.album,) if f.album else ())
        assert item.size is not None and abs(item.size - len(f.data)) <= len(f.data) * 0.005
    assert any(i.meta.tags == ("Screenshots",) for i in items)


async def test_include_non_images_option_keeps_is_image_accurate(client: ApiClient) -> None:
    """With include_non_images = true the listing still says which files are images (the
    engine reads the option and takes the others too)."""
    async with served(DiscordImagesFake(Knobs(token=TOKEN, seed=6))) as fake:
        page = await provider(fake.url, client, include_non_images=True).list_page(None)
    assert len(page.items) == 6
    assert sorted(i.is_image for i in page.items) == [False, True, True, True, True, True]


async def test_cli_backup_with_include_non_images_option(tmp_path: Path) -> None:
    """The remote option include_non_images = true makes backup take the .txt files."""
    host = DiscordImagesFake(Knobs(token=TOKEN, seed=6))
    out = tmp_path / "backup"
    async with served(host) as fake:
        cfg = di_config(tmp_path, fake.url)
        cfg.write_text(cfg.read_text() + "include_non_images = true\n")
        proc = await run_cli_async(
            "--config", str(cfg), "backup", "di:", str(out), "--json", env={"DI_TOKEN": TOKEN}
        )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["copied"] == 6
    assert len(list(out.glob("*.txt"))) == 1


@pytest.mark.parametrize(("seed", "sizes"), [(60, [25, 25, 10]), (50, [25, 25, 0])])
async def test_paging_option_walks_pages(client: ApiClient, seed: int, sizes: list[int]) -> None:
    """paging = true reads /api/uploads/0, /1, ... (25 each) and stops on a short page."""
    async with served(DiscordImagesFake(Knobs(token=TOKEN, seed=seed), paging=True)) as fake:
        p = provider(fake.url, client, paging=True)
        got = [(cursor, page) async for page, cursor in p.iter_all()]
        assert (await fake.stats())["requests"] == len(sizes)
    assert [len(page.items) for _, page in got] == sizes
    # each cursor: the next page and the id of the last file handed out (the watermark)
    lasts = [page.items[-1].remote_id for _, page in got[:-1]]
    assert [cursor for cursor, _ in got] == [None, f"1@{lasts[0]}", f"2@{lasts[1]}"]
    ids = [i.remote_id for _, page in got for i in page.items]
    assert len(set(ids)) == seed
    assert ids == sorted(ids, key=int, reverse=True)


async def test_paging_option_on_a_host_without_it_is_a_config_problem(client: ApiClient) -> None:
    """A host that has no paged route answers 404: RemoteMisconfigured, naming the option."""
    async with served(DiscordImagesFake(Knobs(token=TOKEN, seed=3))) as fake:
        with pytest.raises(RemoteMisconfigured, match="paging"):
            await provider(fake.url, client, paging=True).list_page(None)


async def test_upload_list_download_round_trip(client: ApiClient, tmp_path: Path) -> None:
    """Uploaded bytes (from memory and from a file) are listed and served back unchanged."""
    png, jpeg = make_png(30, 20, 7), make_jpeg(8)
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg)
    from_path = UploadSource(
        name="photo.jpg", size=len(jpeg), sha256="x", md5=None, mime="image/jpeg", path=path
    )
    async with served(DiscordImagesFake(Knobs(token=TOKEN))) as fake:
        p = provider(fake.url, client)
        meta = ItemMeta(title="shot")
        a = await p.upload(source("shot.png", png), meta, rel_path="sub/shot.png")
        b = await p.upload(from_path, ItemMeta(), rel_path="photo.jpg")
        assert a.name.endswith(".png") and len(a.name) == 9 and a.remote_id == a.name
        assert a.url == f"{fake.url}/{a.name}" and a.size == len(png)
        assert a.meta == ItemMeta()  # the host keeps no title (nor any of ``meta``)
        assert b.name.endswith(".jpg")
        listed = {i.name: i for i in (await p.list_page(None)).items}
        assert set(listed) == {a.name, b.name}
        assert await read_all(p, listed[a.name]) == png
        assert await read_all(p, listed[b.name]) == jpeg
        assert await read_all(p, a) == png
        assert (await fake.stats())["uploads"] == 2


async def test_delete_with_the_option(client: ApiClient) -> None:
    """delete = true: by listed id, by uploaded name (looked up), then NotFound when gone."""
    host = DiscordImagesFake(Knobs(token=TOKEN, seed=3), delete=True)
    async with served(host) as fake:
        p = provider(fake.url, client, delete=True)
        assert p.features.can_delete and DiscordImagesProvider.features.can_delete
        first = (await p.list_page(None)).items[0]
        await p.delete(first)
        uploaded = await p.upload(source("a.png", make_png(8, 8, 1)), ItemMeta(), rel_path="a.png")
        await p.delete(uploaded)
        assert [f.id for f in host.files()] == [2, 1]
        assert (await fake.stats())["deletes"] == 2
        with pytest.raises(NotFound):
            await p.delete(first)
        with pytest.raises(NotFound):
            await p.delete(uploaded)


async def test_delete_is_declared_absent_without_the_option(client: ApiClient) -> None:
    """Without delete = true the feature is absent and delete() raises Unsupported, sending nothing."""
    async with served(DiscordImagesFake(Knobs(token=TOKEN, seed=2), delete=True)) as fake:
        p = provider(fake.url, client)
        assert p.features.can_delete is False
        with pytest.raises(Unsupported):
            await p.delete(RemoteItem(remote_id="1", name="x.png"))
        assert (await fake.stats())["requests"] == 0


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("tool.exe", b"MZ" + bytes(64), "EXE files are not permitted"),
        ("big.png", make_png(64, 64, 3), "File too large"),
    ],
)
async def test_success_false_is_rejected(
    client: ApiClient, name: str, data: bytes, message: str
) -> None:
    """An HTTP 200 {success:false, description} upload reply -> Rejected with the description."""
    host = DiscordImagesFake(Knobs(token=TOKEN, max_upload_bytes=100))
    async with served(host) as fake:
        p = provider(fake.url, client)
        with pytest.raises(Rejected, match=message) as info:
            await p.upload(source(name, data), ItemMeta(), rel_path=name)
        assert info.value.status == 200
        assert (await fake.stats())["requests"] == 1  # not retried


async def test_auth_failures_carry_the_hosts_description(client: ApiClient) -> None:
    """A wrong or missing token: lolisafe's own words, HTTP 401, not retried."""
    async with served(DiscordImagesFake(Knobs(token=TOKEN, seed=2))) as fake:
        with pytest.raises(AuthError, match="Invalid token") as bad:
            await provider(fake.url, client, token="wrong-token-9c1d7e").list_page(None)
        with pytest.raises(AuthError, match="No token provided"):
            await provider(fake.url, client, token=None).upload(
                source("a.png", b"x"), ItemMeta(), rel_path="a.png"
            )
        assert (await fake.stats())["requests"] == 2
    assert bad.value.scope == "remote" and bad.value.status == 401


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("14 B", 14),
        ("0 B", 0),
        ("508 kB", 508_000),
        ("8.12 kB", 8_120),
        ("1.5 MB", 1_500_000),
        ("2 GB", 2_000_000_000),
        ("1 KiB", 1024),
        ("12 bytes", 12),
        ("508000", 508_000),
        (508000, 508_000),
        ("", None),
        ("big", None),
        ("-3 kB", None),
        (None, None),
        (True, None),
    ],
)
def test_parse_size(text: object, expected: int | None) -> None:
    """Human size text (pretty-bytes, powers of 1000) and plain byte counts -> bytes."""
    assert parse_size(text) == expected


# ---- a tiny scripted host: shapes the emulator does not produce -----------------------


class Scripted:
    """Answers every POST /api/upload and GET /api/uploads with a fixed reply."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.body = status, body
        self.seen: list[tuple[str, str | None, list[str]]] = []

    def make_app(self) -> web.Application:
        async def reply(request: web.Request) -> web.Response:
            fields: list[str] = []
            if request.method == "POST":
                form = await request.post()
                fields = list(form.keys())
            self.seen.append((request.path, request.headers.get("token"), fields))
            return web.json_response(self.body, status=self.status)

        app = web.Application()
        app.router.add_post("/api/upload", reply)
        app.router.add_get("/api/uploads", reply)
        return app


async def test_placeholder_upload_reply_shape(client: ApiClient) -> None:
    """The docs' placeholder {success, code, url} reply is read: name = code, url kept."""
    host = Scripted(200, {"success": True, "code": "abc.png", "url": "https://cdn.example/abc.png"})
    async with served(host) as fake:
        p = provider(fake.url, client)
        item = await p.upload(source("mine.png", b"\x89PNG..."), ItemMeta(), rel_path="d/mine.png")
    assert (item.remote_id, item.name, item.url) == ("abc.png", "abc.png", host.body["url"])
    assert item.size == len(b"\x89PNG...")
    assert host.seen == [("/api/upload", TOKEN, ["files[]"])]


@pytest.mark.parametrize(
    ("status", "body", "error", "requests"),
    [
        (200, {"success": False, "description": "Uploads are disabled"}, Rejected, 1),
        (403, {"success": False, "description": "Banned"}, AuthError, 1),
        (429, {"success": False, "description": "Rate limited"}, RateLimited, 5),
        (503, {"success": False, "description": "down"}, RemoteUnavailable, 0),
    ],
)
async def test_error_mapping(
    client: ApiClient, status: int, body: dict[str, Any], error: type[Exception], requests: int
) -> None:
    """One map: success:false -> Rejected, 401/403 -> AuthError, 429 retried then raised;
    a host answering nothing but 503 is retried for its outage budget, then given up on
    (0: as many requests as that took)."""
    host = Scripted(status, body)
    async with served(host) as fake:
        with pytest.raises(error, match=str(body["description"])):
            await provider(fake.url, client).list_page(None)
    assert len(host.seen) == requests if requests else len(host.seen) > 5


# ---- the CLI ----------------------------------------------------------------------------


class CountingFake(DiscordImagesFake):
    """The emulator, counting requests for stored files (downloads)."""

    def __init__(self, knobs: Knobs) -> None:
        super().__init__(knobs)
        self.file_gets = 0

    async def _file(self, request: web.Request) -> web.Response:
        self.file_gets += 1
        return await super()._file(request)


def di_config(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path / "cfg.toml",
        f'[remotes.di]\ntype = "discordimages"\nbase_url = "{url}"\ntoken_env = "DI_TOKEN"\n',
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_cli_backup_writes_each_image_once_with_sidecars(tmp_path: Path) -> None:
    """backup di: DIR writes every image once with a .json sidecar; a re-run downloads nothing;
    --include-non-images adds the .txt files."""
    host = CountingFake(Knobs(token=TOKEN, seed=12))
    out = tmp_path / "backup"
    env = {"DI_TOKEN": TOKEN}
    async with served(host) as fake:
        cfg = str(di_config(tmp_path, fake.url))
        proc = await run_cli_async("--config", cfg, "backup", "di:", str(out), "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["copied"] == 10
        images = {f.name: f for f in host.files() if f.is_image}
        written = {p.name: p for p in backup_files(out) if not p.name.endswith(".json")}
        assert set(written) == set(images)
        assert sorted(sha(p.read_bytes()) for p in written.values()) == sorted(
            sha(f.data) for f in images.values()
        )
        for name, f in images.items():
            side = json.loads((out / f"{name}.json").read_text())
            assert side["sha256"] == sha(f.data) and side["remote_id"] == str(f.id)
            assert side["metadata"]["created_at"] == f.timestamp
            assert side["metadata"]["tags"] == ([f.album] if f.album else [])
        assert len(backup_files(out)) == 20
        downloads = host.file_gets
        assert downloads == 10

        proc = await run_cli_async("--config", cfg, "backup", "di:", str(out), "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["copied"] == 0
        assert host.file_gets == downloads

        proc = await run_cli_async(
            "--config", cfg, "backup", "di:", str(out), "--include-non-images", "--json", env=env
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["copied"] == 2
        notes = sorted(p.name for p in out.glob("*.txt"))
        assert notes == sorted(f.name for f in host.files() if not f.is_image)
        assert all((out / f"{n}.json").exists() for n in notes)


async def test_cli_copy_folder_to_host(tmp_path: Path, image_tree: Path) -> None:
    """copy ./folder di: uploads every image of the folder (exit 0); a re-run uploads none;
    ls di: --json lists them."""
    host = DiscordImagesFake(Knobs(token=TOKEN))
    env = {"DI_TOKEN": TOKEN}
    async with served(host) as fake:
        cfg = str(di_config(tmp_path, fake.url))
        proc = await run_cli_async("--config", cfg, "copy", str(image_tree), "di:", env=env)
        assert proc.returncode == 0, proc.stderr
        assert (await fake.stats())["uploads"] == 12
        stored = sorted(sha(f.data) for f in host.files())
        local = sorted(sha(p.read_bytes()) for p in image_tree.rglob("img*"))
        assert stored == local
        proc = await run_cli_async("--config", cfg, "copy", str(image_tree), "di:", env=env)
        assert proc.returncode == 0, proc.stderr
        assert (await fake.stats())["uploads"] == 12
        proc = await run_cli_async("--config", cfg, "ls", "di:", "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        assert sorted(r["name"] for r in rows) == sorted(f.name for f in host.files())
        assert all(r["is_image"] and r["url"].startswith(fake.url) for r in rows)


async def test_paging_resume_survives_deletions_on_the_site(client: ApiClient) -> None:
    """60 files, 25 a page, newest first. A run stops after page 0 (cursor saved); then
    the 10 newest files are deleted on the site, so every older file moves up 10 places.
    Resuming from the saved cursor still hands out all 35 files not seen yet (page 1 by
    number alone would skip 10 of them), after one look back at the page before."""
    host = DiscordImagesFake(Knobs(token=TOKEN, seed=60), paging=True, delete=True)
    async with served(host) as fake:
        first = await provider(fake.url, client, paging=True).list_page(None)
        saved = first.next_cursor
        assert saved is not None
        seen = {i.remote_id for i in first.items}
        deleter = provider(fake.url, client, paging=True, delete=True)
        for item in first.items[:10]:
            await deleter.delete(item)
        later = provider(fake.url, client, paging=True)
        rest = [i.remote_id async for page, _c in later.iter_all(saved) for i in page.items]
    assert len(rest) == len(set(rest)) == 35
    assert not seen & set(rest)
