"""The client the MCP conformance suite drives: this project's own `Connection`, not a bare SDK client.

The suite starts one test server per scenario and runs `python -m interop.conformance_client <url>` with
`MCP_CONFORMANCE_SCENARIO` set. Whatever the scenario, the client does what the bot does with a server:
open a connection (no token: these servers are `auth: none`), list every page of tools, and call each tool
once with arguments built from its input schema. Form elicitations are accepted with the schema's defaults,
as a person who leaves the form as it is would; URL elicitations are declined (nobody is there to open the
link). It prints what happened and exits non-zero when the connection or a call failed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from typing import Any

from mcp.client import ClientRequestContext
from mcp.types import ElicitRequestFormParams, ElicitRequestParams, ElicitResult, ErrorData, Tool

from interop.conformance_auth import run_auth
from mcp_clients.connection import BearerFlow, ConnectError, Connection
from mcp_clients.elicitation import with_defaults
from mcp_clients.specs import render_result

__all__ = ["accept_with_defaults", "main", "sample_arguments"]

CALL_TIMEOUT_SECONDS = 20.0
MAX_PAGES = 20  # the gateway's own bound on tools/list paging

_SAMPLES: dict[str, Any] = {"string": "conformance", "integer": 1, "number": 1, "boolean": True}


def sample_arguments(tool: Tool) -> dict[str, Any]:
    """A value for every required argument: its default, its first enum member, or one of its type."""
    schema = tool.input_schema if isinstance(tool.input_schema, Mapping) else {}
    properties = schema.get("properties")
    required = schema.get("required")
    if not isinstance(properties, Mapping) or not isinstance(required, list):
        return {}
    arguments: dict[str, Any] = {}
    for name in required:
        field = properties.get(name)
        if not isinstance(name, str) or not isinstance(field, Mapping):
            continue
        enum = field.get("enum")
        if "default" in field:
            arguments[name] = field["default"]
        elif isinstance(enum, list) and enum:
            arguments[name] = enum[0]
        else:
            arguments[name] = _SAMPLES.get(str(field.get("type")), "conformance")
    return arguments


async def accept_with_defaults(
    context: ClientRequestContext, params: ElicitRequestParams
) -> ElicitResult | ErrorData:
    del context
    if isinstance(params, ElicitRequestFormParams):
        return ElicitResult(action="accept", content=with_defaults(params.requested_schema, {}))
    return ElicitResult(action="decline")


async def _no_token() -> str | None:
    return None


async def _nothing() -> None:
    return None


async def run(url: str) -> int:
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    if scenario.startswith("auth/"):
        return await run_auth(url, scenario, use_server)
    connection = Connection(
        url, BearerFlow(_no_token, _nothing), timeout=CALL_TIMEOUT_SECONDS, elicitation=accept_with_defaults
    )
    try:
        return await use_server(connection)
    except ConnectError as exc:
        print(f"connection failed: {exc}")
        return 1
    except Exception as exc:  # the suite reads our output: say what broke instead of a traceback
        print(f"failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        await connection.close()


async def use_server(connection: Connection) -> int:
    """What the bot does with a server: list every page of tools, call each once. Raises what the connection
    raises (the authorization scenarios act on it); a tool's own error counts as a failure."""
    failed = 0
    client = await connection.open()
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    print(f"connected ({client.protocol_version}); {len(tools)} tools")
    for tool in tools:
        result = await client.call_tool(
            tool.name, sample_arguments(tool), read_timeout_seconds=CALL_TIMEOUT_SECONDS
        )
        text, _ = render_result(result, 500)
        failed += bool(result.is_error)
        print(f"{tool.name}: {'error' if result.is_error else 'ok'}: {text}")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m interop.conformance_client <server-url>", file=sys.stderr)
        return 2
    print(f"scenario: {os.environ.get('MCP_CONFORMANCE_SCENARIO', '(not set)')}")
    return asyncio.run(run(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
