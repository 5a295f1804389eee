"""Warm the client libraries once in the worker's parent, so every forked work-horse inherits them warm.

Importing anthropic and mcp is not enough: pydantic builds many of their models' validators lazily, on the
first response parsed (anthropic's `Message` alone took ~45 ms in a fresh fork), and every work-horse starts
from the parent's memory, so whatever the parent never did, each job pays for again. Here the parent runs
the real client paths once, with no network: the Messages API client against an `httpx2.MockTransport`
that returns a canned tool-use reply and a canned answer, and the mcp `Client` against a one-tool server
in memory (list, call). Nothing here talks to a real service, and a failure only costs the warm-up.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from typing import Any

import anthropic
import httpx2
from mcp import Client
from mcp.server import Server, ServerRequestContext
from mcp.types import (
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
    ToolAnnotations,
)

from llm.anthropic import AnthropicModel, make_client

__all__ = ["warm_up"]

log = logging.getLogger(__name__)

_TOOL = Tool(
    name="probe",
    description="A warm-up tool.",
    input_schema={"type": "object", "properties": {"limit": {"type": "integer"}}},
    annotations=ToolAnnotations(read_only_hint=True),
)


def _reply(content: list[dict[str, Any]], stop_reason: str) -> dict[str, Any]:
    return {
        "id": "msg_warmup",
        "type": "message",
        "role": "assistant",
        "model": "warm-up",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        # Every usage field a real reply carries: each optional one has a validator built on first sight.
        "usage": {
            "input_tokens": 1,
            "output_tokens": 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "standard",
        },
    }


def _messages_api(request: httpx2.Request) -> httpx2.Response:
    body = json.loads(request.content)
    if len(body["messages"]) == 1:
        use = {"type": "tool_use", "id": "toolu_warmup", "name": "w__probe", "input": {"limit": 1}}
        return httpx2.Response(200, json=_reply([{"type": "text", "text": "Looking."}, use], "tool_use"))
    return httpx2.Response(200, json=_reply([{"type": "text", "text": "Done."}], "end_turn"))


async def _warm_model() -> None:
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(_messages_api))
    client = make_client("warm-up", "http://warm-up.invalid", http_client=http, max_retries=0)
    model = AnthropicModel(client, "warm-up")
    tools = [{"name": "w__probe", "description": "d", "input_schema": dict(_TOOL.input_schema)}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": "warm up"}]
    first = await model.complete(system="s", messages=messages, tools=tools, max_tokens=16)
    messages.append({"role": "assistant", "content": list(first.content)})
    result = {"type": "tool_result", "tool_use_id": "toolu_warmup", "content": "ok", "is_error": False}
    messages.append({"role": "user", "content": [result]})
    await model.complete(system="s", messages=messages, tools=tools, max_tokens=16)
    await client.close()


async def _warm_mcp() -> None:
    async def list_tools(ctx: ServerRequestContext, params: PaginatedRequestParams | None) -> ListToolsResult:
        return ListToolsResult(tools=[_TOOL])

    async def call_tool(ctx: ServerRequestContext, params: CallToolRequestParams) -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text="ok")], structured_content={"rows": []})

    server = Server("warm-up", on_list_tools=list_tools, on_call_tool=call_tool)
    async with Client(server) as client:
        await client.list_tools()
        await client.call_tool("probe", {"limit": 1})


def warm_up() -> None:
    """Run the client paths once, then freeze the heap: objects that exist before the fork move to the
    collector's permanent generation, so a work-horse's collections never touch (and copy) their pages."""
    try:
        asyncio.run(_warm_model())
        asyncio.run(_warm_mcp())
    except (anthropic.AnthropicError, httpx2.HTTPError, RuntimeError, OSError) as exc:
        log.warning("warm-up skipped: %s", exc)  # each job then pays the cold start, nothing else changes
    gc.collect()
    gc.freeze()
