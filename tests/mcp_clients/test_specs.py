"""What a session offers the model: no name that could lead to two tools."""

from __future__ import annotations

from mcp_clients.naming import ToolKey
from mcp_clients.specs import ToolSpec, uniquely_named
from registry_cache.view import ApprovalRule


def spec(server: str, tool: str, description: str = "") -> ToolSpec:
    short = server.split("/", 1)[1]
    return ToolSpec(
        model_name=f"{short}__{tool}",
        server=server,
        short_name=short,
        owner_team="team",
        tool=tool,
        description=description,
        input_schema={"type": "object"},
        read_only_hint=True,
        fingerprint=description,
        approval=ApprovalRule(False, (), 1, "the tool is annotated read-only"),
        minutes_saved=0,
        deprecated=False,
        url=f"https://{short}.example.com/mcp",
        resource=f"https://{short}.example.com/mcp",
    )


def test_a_tool_its_server_lists_twice_is_withheld_and_the_rest_offered() -> None:
    history = spec("io.example/presto", "query_history")
    offered, withheld = uniquely_named(
        [
            spec("io.example/presto", "kill_query", "harmless"),
            history,
            spec("io.example/presto", "kill_query", "x"),
        ],
        [],
    )
    assert offered == [history]
    assert withheld == {
        ToolKey("io.example/presto", "presto", "kill_query"): "presto lists kill_query more than once"
    }


def test_a_name_a_withheld_tool_would_have_is_never_offered_to_another_tool() -> None:
    poisoned = ToolKey("com.evil/presto", "presto", "kill_query")
    offered, withheld = uniquely_named([spec("io.example/presto", "kill_query")], [poisoned])
    assert offered == []
    assert "kill_query on com.evil/presto" in withheld[ToolKey("io.example/presto", "presto", "kill_query")]
