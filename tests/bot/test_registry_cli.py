"""`chatops registry`: what the registry offers, including what is withheld from the model and why."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from bot.registry_cli import show_registry
from bot.settings import load_settings
from fixtures.registry import FakeRegistry, dead_urls
from fixtures.server import serve
from mcp_clients.listing import ListingCache
from registry_cache.view import NOBODY_MAY_APPROVE

NAMES = ("PRESTO_URL", "SPARK_URL", "AIRFLOW_URL", "LEDGER_URL", "STATUSPAGE_URL", "HIVE_URL", "SEARCH_URL")
URLS = dead_urls(NAMES)


def lines_of(out: str, server: str) -> list[str]:
    """The server's own line and its tools' lines."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(server))
    rest = lines[start + 1 :]
    end = next((i for i, line in enumerate(rest) if not line.startswith("    ")), len(rest))
    return lines[start : start + 1 + end]


async def test_a_sensitive_tool_nobody_may_approve_is_shown_as_withheld_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = FakeRegistry.from_file(urls=URLS)
    registry.patch_governance("io.example/statuspage", {"tools": {"post_update": {"approval": "required"}}})
    with serve(registry.app) as server:
        settings = load_settings(env={"REGISTRY_URL": server.url})
        assert await show_registry(settings, as_who=None, channel=None) == 0
    out = capsys.readouterr().out
    statuspage = lines_of(out, "io.example/statuspage")
    (post_update,) = [line for line in statuspage if line.strip().startswith("post_update")]
    assert f"WITHHELD: {NOBODY_MAY_APPROVE}" in post_update
    assert any("(tools needing approval)" in line and NOBODY_MAY_APPROVE in line for line in statuspage)
    presto = lines_of(out, "io.example/presto")  # approvers are named: nothing of presto is withheld
    assert not any("withheld" in line.lower() for line in presto)


async def test_malformed_entries_are_listed_with_their_reasons_and_the_rest_still_shown(
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = FakeRegistry.from_file(urls=URLS)
    registry.add_poisoned("remotes-not-list", "meta-not-object", "islatest-string", "url-template")
    registry.add("not an entry")  # type: ignore[arg-type]
    with serve(registry.app) as server:
        settings = load_settings(env={"REGISTRY_URL": server.url})
        assert await show_registry(settings, as_who=None, channel=None) == 0
    out = capsys.readouterr().out
    for line in (
        "skipped io.example.poison/remotes-not-list: remotes must be a list, not int",
        "skipped io.example.poison/meta-not-object: _meta must be an object, not str",
        "skipped io.example.poison/islatest-string: isLatest must be true or false, not 'false'",
        "skipped io.example.poison/url-template: the remote URL template needs {tenant}",
        "skipped (unnamed): entry is not an object but str",
    ):
        assert line in out
    assert lines_of(out, "io.example/presto")


async def test_a_server_whose_header_variable_is_unset_here_is_shown_as_not_callable_without_any_value(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = FakeRegistry.from_file(urls=URLS)
    registry.patch_governance("io.example/statuspage", {"headers": {"X-Api-Key": "CHATOPS_HEADER_STATUS"}})
    with serve(registry.app) as server:
        settings = load_settings(env={"REGISTRY_URL": server.url})
        monkeypatch.delenv("CHATOPS_HEADER_STATUS", raising=False)
        await show_registry(settings, as_who=None, channel=None)
        unset = lines_of(capsys.readouterr().out, "io.example/statuspage")[0]
        monkeypatch.setenv("CHATOPS_HEADER_STATUS", "k-0123456789")
        await show_registry(settings, as_who=None, channel=None)
        out = capsys.readouterr().out
    assert "headers=X-Api-Key<-CHATOPS_HEADER_STATUS" in unset
    assert "CANNOT CALL HERE: header X-Api-Key needs the environment variable CHATOPS_HEADER_STATUS" in unset
    assert "CANNOT CALL HERE" not in lines_of(out, "io.example/statuspage")[0]
    assert "k-0123456789" not in out


async def test_tools_a_servers_last_listing_withheld_are_shown_with_the_reason_and_nothing_of_theirs_raw(
    capsys: pytest.CaptureFixture[str], aredis: aioredis.Redis, redis_url: str
) -> None:
    registry = FakeRegistry.from_file(urls=URLS)
    statuspage = registry.entry("io.example/statuspage")["server"]["remotes"][0]["url"]
    key = ListingCache.withheld_key("io.example/statuspage", statuspage)
    await ListingCache(aredis).put_withheld(
        key, {"bad\x1b[2J": "its server lists it malformed (inputSchema.type)"}
    )
    with serve(registry.app) as server:
        settings = load_settings(env={"REGISTRY_URL": server.url, "REDIS_URL": redis_url})
        assert await show_registry(settings, as_who=None, channel=None) == 0
    out = capsys.readouterr().out
    (bad,) = [line for line in lines_of(out, "io.example/statuspage") if "its last listing" in line]
    assert "bad?[2J" in bad
    assert "WITHHELD (its last listing): its server lists it malformed (inputSchema.type)" in bad
    assert "\x1b" not in out
