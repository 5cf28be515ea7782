"""Registry meta-tests: every registered remote type is complete and says the truth.

A remote type is registered by one line in ``imgsync.providers.REGISTRY``; these tests
fail when anything else it needs is missing: its ``ProviderInfo``, its emulator module,
its documented block in ``config.example.toml``, its README row, features that agree
with the methods the class implements, and a constructor that does no I/O.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from imgsync.config import RemoteConfig, parse_config
from imgsync.errors import ConfigError
from imgsync.fakehosts import emulator_factory, emulators
from imgsync.fakehosts.common import FakeHostBase, Knobs
from imgsync.http import ApiClient
from imgsync.providers import REGISTRY, kinds, provider_class, provider_info
from imgsync.providers.base import Provider, ProviderContext, ProviderInfo

ROOT = Path(__file__).resolve().parents[1]
KINDS = kinds()


def _example_blocks() -> dict[str, list[tuple[str, dict[str, Any], str]]]:
    """type -> [(remote name, its TOML table, its text with comments)] in the example."""
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    chunks = re.split(r"(?m)^(?=\[)", text)
    out: dict[str, list[tuple[str, dict[str, Any], str]]] = {}
    for name, table in data.get("remotes", {}).items():
        chunk = next(c for c in chunks if c.startswith(f"[remotes.{name}]"))
        out.setdefault(table["type"], []).append((name, table, chunk))
    return out


def test_the_registry_lists_each_type_once_under_its_own_kind() -> None:
    assert len(set(KINDS)) == len(KINDS) == len(REGISTRY)
    for kind in KINDS:
        cls = provider_class(kind)
        assert isinstance(cls.__dict__.get("info"), ProviderInfo), f"{kind}: no info of its own"
        assert cls.info.kind == cls.kind == kind
        assert cls.info.description and cls.description == cls.info.description
        assert provider_info(kind) is cls.info


def test_every_provider_module_is_registered() -> None:
    """A provider class (one with its own ``info``) in imgsync/providers/ that is missing
    from REGISTRY would never be usable: the one line is not optional."""
    import importlib
    import pkgutil

    import imgsync.providers as package

    declared: dict[str, str] = {}
    for mod in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"imgsync.providers.{mod.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, Provider)
                and value.__module__ == module.__name__
                and isinstance(value.__dict__.get("info"), ProviderInfo)
            ):
                declared[value.info.kind] = f"{module.__name__}:{value.__name__}"
    assert declared == REGISTRY


@pytest.mark.parametrize("kind", KINDS)
def test_every_http_type_names_an_existing_emulator(kind: str) -> None:
    """A type that talks to a host has an emulator under that name in imgsync.fakehosts."""
    info = provider_info(kind)
    if info.base_url == "none":
        assert info.emulator is None, f"{kind} is not an HTTP host but names an emulator"
        return
    assert info.emulator is not None, f"{kind} talks HTTP but names no emulator"
    assert info.emulator in emulators(), f"no imgsync/fakehosts/{info.emulator}.py with create()"
    host = emulator_factory(info.emulator)(Knobs(token="t0ken"), **info.emulator_options)
    assert isinstance(host, FakeHostBase)


@pytest.mark.parametrize("kind", KINDS)
def test_every_type_has_a_documented_example_block(kind: str) -> None:
    """config.example.toml has a [remotes.*] block of this type that shows every option
    (set or commented out) and nothing the type does not declare."""
    blocks = _example_blocks().get(kind)
    assert blocks, f"config.example.toml has no [remotes.NAME] block with type = {kind!r}"
    info = provider_info(kind)
    declared = {spec.name for spec in info.option_specs}
    shown = " ".join(chunk for _name, _table, chunk in blocks)
    for option in declared:
        assert re.search(rf"(?m)^#?\s*{option}\s*=", shown), f"{kind}: {option} undocumented"
    common = {"type", "base_url", "token", "token_env", "token_file", "description", "path"}
    for _name, table, _chunk in blocks:
        assert set(table) - common <= declared


@pytest.mark.parametrize("kind", KINDS)
def test_every_type_has_a_readme_row(kind: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"(?m)^\| `{kind}` \|", readme), f"README's host table has no `{kind}` row"


@pytest.mark.parametrize("kind", KINDS)
def test_the_readme_row_states_the_declared_default_limit(kind: str) -> None:
    """The docs cannot drift from the declared rates (Gyazo's docstring once did): the
    README row's last column names every default rate, or "none" when there is none."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = re.search(rf"(?m)^\| `{kind}` \|.*\|[ \t]*$", readme)
    assert row is not None
    limit = row.group(0).rstrip(" |").rsplit("|", 1)[1].replace(",", "").strip()
    rates = set(provider_info(kind).default_limits.values())
    if rates:
        assert all(rate in limit for rate in rates), f"{kind}: README says {limit!r}"
    else:
        assert limit.startswith("none"), f"{kind}: README says {limit!r}, declared none"


@pytest.mark.parametrize("kind", KINDS)
def test_declared_features_agree_with_the_methods(kind: str) -> None:
    """can_list <=> list_page, can_get <=> get, can_delete <=> delete are implemented."""
    cls = provider_class(kind)
    feats = cls.features
    for flag, method in (("can_list", "list_page"), ("can_get", "get"), ("can_delete", "delete")):
        implemented = getattr(cls, method) is not getattr(Provider, method)
        assert getattr(feats, flag) == implemented, f"{kind}: {flag} vs {method}"


@pytest.mark.parametrize("kind", KINDS)
def test_options_are_typed_documented_and_have_defaults(kind: str) -> None:
    info = provider_info(kind)
    assert dataclasses.is_dataclass(info.options)
    for spec in info.option_specs:
        assert spec.doc, f"{kind}.{spec.name} has no doc"
        assert spec.default is None or spec.problem(spec.default) is None
    info.read_options(info.full_options)  # the conformance options are valid


@pytest.mark.parametrize("kind", KINDS)
def test_config_validates_options_from_the_declaration(kind: str) -> None:
    """Unknown keys, wrong types and values out of range are config errors naming the key;
    the declared defaults reach the provider."""
    info = provider_info(kind)
    base: dict[str, Any] = {"type": kind}
    if info.path:
        base["path"] = "/tmp/x"
    if info.base_url == "required":
        base["base_url"] = "https://img.example"
    if info.token == "required":
        base["token"] = "t0ken-value"
    cfg = parse_config({"remotes": {"r": base}})
    provider = provider_class(kind)(cfg.remotes["r"], ProviderContext())
    assert provider.options == info.options()
    with pytest.raises(ConfigError, match=r"remotes\.r\.no_such_key: unknown key"):
        parse_config({"remotes": {"r": {**base, "no_such_key": 1}}})
    for spec in info.option_specs:
        wrong: list[object] = [] if str in spec.types else ["text"]
        if spec.range is not None:
            wrong += [spec.range[0] - 1, spec.range[1] + 1]
        if spec.choices is not None:
            wrong.append("not-a-choice")
        for value in wrong:
            with pytest.raises(ConfigError, match=rf"remotes\.r\.{spec.name}: must be"):
                parse_config({"remotes": {"r": {**base, spec.name: value}}})
    if info.token == "required":
        without = {k: v for k, v in base.items() if k != "token"}
        with pytest.raises(ConfigError, match="needs a credential"):
            parse_config({"remotes": {"r": without}})
    if info.token == "none":
        with pytest.raises(ConfigError, match="takes no credential"):
            parse_config({"remotes": {"r": {**base, "token": "t0ken-value"}}})
    if info.base_url == "required":
        without = {k: v for k, v in base.items() if k != "base_url"}
        with pytest.raises(ConfigError, match="needs base_url"):
            parse_config({"remotes": {"r": without}})


def test_an_unknown_type_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"remotes": {"r": {"type": "flickr"}}})
    assert all(kind in str(info.value) for kind in KINDS)


_IO_EVENTS = ("open", "socket.", "os.mkdir", "os.scandir", "os.listdir", "subprocess.")
_guard: list[list[str]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _guard and event.startswith(_IO_EVENTS):
        _guard[-1].append(event)


sys.addaudithook(_audit)


@contextmanager
def _no_io() -> Iterator[list[str]]:
    seen: list[str] = []
    _guard.append(seen)
    try:
        yield seen
    finally:
        _guard.pop()


@pytest.mark.parametrize("kind", KINDS)
async def test_constructing_a_provider_does_no_io(kind: str, tmp_path: Path) -> None:
    info = provider_info(kind)
    cls = provider_class(kind)
    remote = RemoteConfig(
        name="r",
        type=kind,
        path=tmp_path / "absent" if info.path else None,
        base_url="http://127.0.0.1:9" if info.base_url != "none" else None,
        token="t0ken-value" if info.token != "none" else None,
        options=dict(info.full_options),
    )
    async with ApiClient() as http:
        with _no_io() as seen:
            cls(remote, ProviderContext(http=http if info.base_url != "none" else None))
    assert seen == []
    assert not (tmp_path / "absent").exists()


def test_remotes_types_shows_every_type_from_its_declaration(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from imgsync.cli import main

    assert main(["remotes", "--types", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [t["type"] for t in shown] == list(KINDS)
    for t in shown:
        info = provider_info(t["type"])
        assert [o["name"] for o in t["options"]] == [s.name for s in info.option_specs]
        assert t["token"] == info.token and t["base_url"] == info.base_url
    assert main(["remotes", "--types"]) == 0
    text = capsys.readouterr().out
    assert "per_page = 100: an integer [1-100]; listing page size" in text


def test_remotes_shows_each_remotes_effective_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from imgsync.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[remotes.gy]\ntype = "gyazo"\ntoken_env = "GY_T"\nper_page = 7\n'
        '[remotes.di]\ntype = "discordimages"\ntoken_env = "GY_T"\n'
    )
    cfg.chmod(0o600)
    os.environ["GY_T"] = "secret-token-value-77"
    try:
        assert main(["--config", str(cfg), "remotes", "--json"]) == 0
    finally:
        del os.environ["GY_T"]
    out = capsys.readouterr().out
    assert "secret-token-value-77" not in out
    shown = {r["name"]: r for r in json.loads(out)}
    assert shown["gy"]["options"]["per_page"] == 7
    assert shown["gy"]["options"]["access_policy"] is None
    assert shown["gy"]["base_url"] == "https://api.gyazo.com"
    assert shown["di"]["features"]["delete"] is False  # the option is off: masked
