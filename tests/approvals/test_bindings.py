"""An approved action runs on the server it was approved for: same name, URL and resource (SPEC §6)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from approvals.bindings import SERVER_CHANGED, server_problem
from mcp_clients.gateway import ToolSpec
from registry_cache.view import ApprovalRule
from tests.approvals.test_policy import approval

URL = "https://presto.mcp.example.com/mcp"

SPEC = ToolSpec(
    model_name="presto__kill_query",
    server="io.example/presto",
    short_name="presto",
    owner_team="data-platform",
    tool="kill_query",
    description="Kill a query",
    input_schema={"type": "object"},
    read_only_hint=False,
    fingerprint="f" * 64,
    approval=ApprovalRule(True, ("presto-oncall",), 1, "registry policy"),
    minutes_saved=5.0,
    deprecated=False,
    url=URL,
    resource="api://presto",
)
APPROVAL = approval(server_url=URL, resource="api://presto")


def test_the_server_it_was_approved_for_may_run_it() -> None:
    assert server_problem(APPROVAL, SPEC) is None


@pytest.mark.parametrize(
    "moved",
    [
        {"server": "io.elsewhere/presto"},  # the short name now belongs to another entry
        {"url": "https://presto-b.mcp.example.com/mcp"},  # the entry names another remote
        {"resource": "api://presto-b"},  # its tokens would be for another audience
    ],
)
def test_another_name_url_or_resource_refuses_the_run(moved: dict[str, str]) -> None:
    assert server_problem(APPROVAL, replace(SPEC, **moved)) == SERVER_CHANGED
