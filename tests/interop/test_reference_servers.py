"""The reference MCP servers, driven through the gateway: what is offered, what runs, what needs approval."""

from __future__ import annotations

import json

from agent.loop import tool_params
from fixtures.anthropic_tools import tools_problem
from mcp_clients.gateway import Gateway, ToolSpec
from tests.interop.conftest import RUNBOOK, Peers, caller


async def listed(gateway: Gateway, *groups: str) -> dict[str, ToolSpec]:
    async with gateway.session(caller(*groups)) as session:
        tools = await session.tools()
        assert session.unavailable == {}
    return {t.model_name: t for t in tools}


async def test_every_reference_server_lists_its_tools_through_the_gateway(gateway: Gateway) -> None:
    tools = await listed(gateway, "sre")
    assert {
        "everything__echo",
        "everything__get-sum",
        "memory__search_nodes",
        "memory__create_entities",
    } <= set(tools)
    assert {"filesystem__read_text_file", "filesystem__write_file", "filesystem__list_directory"} <= set(
        tools
    )
    assert "owned by sre, DEPRECATED" in tools["filesystem__read_text_file"].description


async def test_registry_groups_and_switches_decide_what_is_offered(gateway: Gateway) -> None:
    tools = await listed(gateway, "data-eng")
    assert not any(name.startswith("memory__") for name in tools)  # memory is for sre only
    assert "everything__echo" in tools
    assert "everything__get-env" not in tools  # it prints the server's environment: disabled by its owners


async def test_annotations_decide_approval_where_the_registry_is_silent(gateway: Gateway) -> None:
    tools = await listed(gateway, "sre")
    runs_at_once = [
        "everything__echo",  # readOnlyHint: true
        "everything__get-sum",
        "memory__search_nodes",
        "memory__open_nodes",
        "filesystem__read_text_file",
        "filesystem__list_directory",
        "filesystem__search_files",
    ]
    needs_approval = [
        "everything__toggle-subscriber-updates",  # readOnlyHint: false, destructiveHint: false
        "everything__gzip-file-as-resource",
        "memory__create_entities",
        "memory__delete_entities",  # destructiveHint: true
        "filesystem__write_file",
        "filesystem__move_file",
        "filesystem__create_directory",
    ]
    assert [n for n in runs_at_once if tools[n].needs_approval] == []
    assert [n for n in needs_approval if not tools[n].needs_approval] == []
    assert tools["filesystem__write_file"].approval.quorum == 2
    assert tools["filesystem__write_file"].approval.approver_groups == ("sre-leads",)
    for spec in tools.values():  # and no tool escaped the rule
        if spec.approval.why.startswith("the tool is"):
            assert spec.needs_approval == (spec.read_only_hint is not True), spec.model_name


async def test_the_registry_overrides_annotations_both_ways(gateway: Gateway) -> None:
    tools = await listed(gateway, "sre")
    assert tools["memory__read_graph"].read_only_hint is True
    assert tools["memory__read_graph"].needs_approval  # approval: required
    assert tools["everything__toggle-simulated-logging"].read_only_hint is False
    assert not tools["everything__toggle-simulated-logging"].needs_approval  # approval: never


async def test_read_only_tools_run_through_the_gateway_and_answer(gateway: Gateway, peers: Peers) -> None:
    async with gateway.session(caller("sre")) as session:
        await session.tools()
        echo = await session.call("everything__echo", {"message": "is ingest lagging?"})
        total = await session.call("everything__get-sum", {"a": 19, "b": 23})
        runbook = await session.call(
            "filesystem__read_text_file", {"path": str(peers.runbooks / "ingest-lag.md")}
        )
        listing = await session.call("filesystem__list_directory", {"path": str(peers.runbooks)})
        graph = await session.call("memory__search_nodes", {"query": "ingest"})
    for outcome in (echo, total, runbook, listing, graph):
        assert outcome.ok, outcome.text
    assert "is ingest lagging?" in echo.text
    assert "42" in total.text
    assert runbook.text.strip() == RUNBOOK.strip()
    assert "ingest-lag.md" in listing.text
    assert json.loads(graph.text) == {"entities": [], "relations": []}


async def test_a_server_refusing_a_path_is_a_tool_error_not_a_crash(gateway: Gateway) -> None:
    async with gateway.session(caller("sre")) as session:
        await session.tools()
        outside = await session.call("filesystem__read_text_file", {"path": "/etc/hostname"})
    assert not outside.ok
    assert outside.error_kind == "tool_error"
    assert "outside allowed directories" in outside.text


async def test_every_tool_of_the_reference_servers_is_one_the_messages_api_accepts(gateway: Gateway) -> None:
    async with gateway.session(caller("sre")) as session:
        tools = await session.tools()
        unfit = {name: why for name, (_, _, why) in session.withheld.items() if "model API" in why}
    assert len(tools) >= 20
    assert tools_problem(tool_params(tools)) is None
    assert unfit == {}
