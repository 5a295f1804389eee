"""Real server.json documents from the official registry's repository, parsed end to end.

The sample (data/registry-sample.json) is what publishers actually wrote: current-schema entries, entries in
the pre-2025-09 snake_case shape, names without a namespace, remotes under keys the schema never had. The
governance overlay is what a company would add. One bad document must cost only itself.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from registry_cache.model import GOVERNANCE_KEY, OFFICIAL_KEY, parse_entries
from registry_cache.view import Person, RegistryView

DATA = Path(__file__).parent / "data"
SAMPLE = json.loads((DATA / "registry-sample.json").read_text())["servers"]
GOVERNANCE = json.loads((DATA / "registry-sample-governance.json").read_text())["governance"]
OLDER = ("io.github.domdomegg/airtable-mcp-server", "1.7.2")  # the registry marks only the newest latest


def registry_entries() -> list[dict[str, Any]]:
    """Each document in the registry API's envelope, as `GET /v0.1/servers` serves it."""
    entries = []
    for item in SAMPLE:
        server = item["server"]
        name = server.get("name")
        official = {"status": "active", "isLatest": (name, server.get("version")) != OLDER}
        meta: dict[str, Any] = {OFFICIAL_KEY: official}
        if isinstance(name, str) and name in GOVERNANCE:
            meta[GOVERNANCE_KEY] = GOVERNANCE[name]
        entries.append({"server": server, "_meta": meta})
    return entries


def test_the_sample_is_a_real_mix_of_a_few_dozen_documents() -> None:
    assert 30 <= len(SAMPLE) <= 60
    assert all(item["source"].startswith("modelcontextprotocol/registry ") for item in SAMPLE)
    assert sum("remotes" in item["server"] for item in SAMPLE) >= 10


def test_every_document_becomes_a_server_or_a_reason_and_nothing_raises() -> None:
    usable, skipped = parse_entries(registry_entries())
    names = {item["server"].get("name") for item in SAMPLE}
    assert {e.name for e in usable} | {s.name for s in skipped} == names
    assert all(s.reason for s in skipped)


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("io.github.getcyphrex/cyphrex-mcp", "https://mcp.cyphrex.io/mcp"),
        ("io.avax/avalanche-docs", "https://build.avax.network/api/mcp"),
        ("io.github.CSOAI-ORG/gspc", "https://councilof.ai/mcp"),
        ("io.github.BuyWhere/buywhere-mcp", "https://api.buywhere.ai/mcp"),
        # several remotes: the first streamable-http one, not an SSE one listed beside it
        (
            "com.aliyun/cloudmonitor",
            "https://openapi-mcp.cn-hangzhou.aliyuncs.com/s/Cms/cms/9fe79ff0bf5748e6923530c5097ec359/mcp",
        ),
    ],
)
def test_governed_servers_with_a_streamable_http_remote_are_offered_at_that_remote(
    name: str, url: str
) -> None:
    usable, _ = parse_entries(registry_entries())
    entry = {e.name: e for e in usable}[name]
    assert entry.url == url
    assert entry.governance.owner_team == GOVERNANCE[name]["owner_team"]


def test_the_overlay_decides_status_auth_and_tool_policy() -> None:
    usable, _ = parse_entries(registry_entries())
    view = RegistryView(usable)
    sre = Person("u-sre", "sre@example.com", frozenset({"sre"}))
    offered = {e.name for e in view.servers_for(sre, None)}
    assert "cariohca-ux/x402-btc-node" not in offered  # suspended by its owners
    assert {
        "io.github.getcyphrex/cyphrex-mcp",
        "com.aliyun/cloudmonitor",
        "io.avax/avalanche-docs",
    } <= offered
    assert "io.github.BuyWhere/buywhere-mcp" not in offered  # commerce only
    cloud = view.server("com.aliyun/cloudmonitor")
    assert cloud is not None
    assert cloud.governance.auth == "user"
    assert view.approval(cloud, "DeleteAlertRule", read_only_hint=True).required
    assert not view.approval(cloud, "DescribeMetricList", read_only_hint=None).required
    assert view.server("io.github.CSOAI-ORG/gspc") is not None
    assert view.server("io.github.CSOAI-ORG/gspc").deprecated  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("io.github.srotzin/hivegate", "governance"),  # a real remote, but nobody in the company vetted it
        ("io.decisionrules/mcp-server", "streamable-http"),  # SSE only
        ("io.github.domdomegg/airtable-mcp-server", "streamable-http"),  # packages only
        ("ai.dividen/mcp", "streamable-http"),  # `transport_type`, the pre-2025-09 key
        ("kbag", "namespace"),
        ("India MCP - GST Server", "namespace"),
    ],
)
def test_documents_the_bot_cannot_use_are_skipped_with_a_reason_that_says_why(name: str, why: str) -> None:
    _, skipped = parse_entries(registry_entries())
    reasons = {s.name: s.reason for s in skipped}
    assert why in reasons[name]


def test_a_remote_url_template_is_never_taken_literally() -> None:
    """The registry's own example (`https://{host}/mcp`, a required secret `Authorization`): usable only as
    the governance overlay fills it, and skipped with the reason without it; no usable URL is a template."""
    usable, _ = parse_entries(registry_entries())
    assert not any("{" in e.url or " " in e.url for e in usable)
    weather = {e.name: e for e in usable}["io.github.user/remote-weather"]
    assert weather.url == "https://api.example.com/mcp"
    assert [(h.name, h.env) for h in weather.headers] == [("Authorization", "CHATOPS_HEADER_REMOTE_WEATHER")]
    bare = [
        copy.deepcopy(e)
        for e in registry_entries()
        if e["server"].get("name") == "io.github.user/remote-weather"
    ]
    del bare[0]["_meta"][GOVERNANCE_KEY]["url_variables"]
    _, skipped = parse_entries(bare)
    assert "needs {host}" in skipped[0].reason
    del bare[0]["_meta"][GOVERNANCE_KEY]["headers"]
    bare[0]["_meta"][GOVERNANCE_KEY]["url_variables"] = {"host": "api.example.com"}
    _, skipped = parse_entries(bare)
    assert "header Authorization is required" in skipped[0].reason
