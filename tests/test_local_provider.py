"""The local-folder provider's own upload: the same staged, never-overwriting write."""

from __future__ import annotations

from pathlib import Path

from imgsync.config import RemoteConfig
from imgsync.fakehosts.images import make_png
from imgsync.hashing import digest_bytes
from imgsync.models import ItemMeta, UploadSource
from imgsync.providers.base import ProviderContext
from imgsync.providers.local import LocalProvider


def _src(data: bytes) -> UploadSource:
    d = digest_bytes(data)
    return UploadSource(
        name="a.png", size=len(data), sha256=d.sha256, md5=d.md5, mime="image/png", data=data
    )


async def test_upload_keeps_paths_and_never_overwrites(tmp_path: Path) -> None:
    """An upload lands at its relative path; other bytes at that name get ``name (1)``;
    the same bytes again keep the existing file."""
    root = tmp_path / "folder"
    provider = LocalProvider(RemoteConfig(name="f", type="local", path=root), ProviderContext())
    one, two = make_png(6, 6, 1), make_png(6, 6, 2)
    first = await provider.upload(_src(one), ItemMeta(created_at=1_000_000.0), rel_path="sub/a.png")
    assert first.remote_id == "sub/a.png" and (root / "sub" / "a.png").read_bytes() == one
    assert (root / "sub" / "a.png").stat().st_mtime == 1_000_000.0
    second = await provider.upload(_src(two), ItemMeta(), rel_path="sub/a.png")
    assert second.remote_id == "sub/a (1).png" and (root / "sub" / "a (1).png").read_bytes() == two
    again = await provider.upload(_src(one), ItemMeta(), rel_path="sub/a.png")
    assert again.remote_id == "sub/a.png"
    assert sorted(p.name for p in (root / "sub").iterdir()) == ["a (1).png", "a.png"]
