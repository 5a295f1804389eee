"""An approved action runs on the server it was approved for: same name, URL and resource (SPEC §6)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from approvals.store import Approval, args_sha256
from bot.bindings import SERVER_CHANGED, server_problem
from mcp_clients.gateway import ToolSpec
from registry_cache.view import ApprovalRule

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
APPROVAL = Approval(
    id="a" + "0" * 23,
    turn_id="t1",
    team="T0CHATOPS",
    channel="C0INCIDENT",
    thread_ts="1764040000.000100",
    requester="U0ALICE",
    requester_sub="u-alice",
    requester_email="alice@example.com",
    server="io.example/presto",
    short_name="presto",
    owner_team="data-platform",
    tool="kill_query",
    arguments={"query_id": "q1"},
    args_sha256=args_sha256({"query_id": "q1"}),
    fingerprint="f" * 64,
    reason="runaway",
    approver_groups=("presto-oncall",),
    created_at=1.0,
    expires_at=2.0,
    seal="s",
    server_url=URL,
    resource="api://presto",
)


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
