"""Tool listings screened tool by tool before the MCP SDK reads them (SPEC §6 "Totality").

The SDK validates a `tools/list` answer as a whole: one tool with a non-object `inputSchema` fails the page,
and every good tool of that server with it. `ListingScreen` sits between the transport and the SDK (it wraps
the `Transport` a `Client` is given): it notes the ids of the `tools/list` requests going out, and in each
answer to one it checks every tool against the protocol's own schema for the negotiated version (and the
2026-07-28 `x-mcp-header` rule, under which the SDK would drop a tool silently). A tool that fails is taken
out of the answer and kept in `withheld` (name -> why). A page that is wrong beyond single tools (`tools` not
a list, a malformed cursor, not an object at all) becomes a JSON-RPC error saying so: that server's listing
fails with the reason, and nothing else does.

Calls are not screened here: the SDK raises for a malformed `tools/call` result in the caller's task, where
the gateway turns it into an outcome (mcp_clients/calling.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

from mcp.client import Transport
from mcp.shared.inbound import find_invalid_x_mcp_header
from mcp.shared.message import SessionMessage
from mcp.types import Tool
from mcp_types import methods
from mcp_types.jsonrpc import ErrorData, JSONRPCError, JSONRPCRequest, JSONRPCResponse
from mcp_types.version import LATEST_HANDSHAKE_VERSION, MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

__all__ = ["MALFORMED_LISTING", "ListingScreen"]

MALFORMED_LISTING = -32603  # an internal error, as the SDK reports any answer it cannot use
_MOST_WITHHELD = 200  # a listing of a million broken tools keeps the reasons of the first few hundred


def _problem(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = first["loc"]
    where = ".".join(str(p) for p in (loc[2:] if loc[:1] == ("tools",) else loc)) or "tool"
    return f"{where}: {first['msg']}"


class ListingScreen:
    def __init__(self) -> None:
        self.withheld: dict[str, str] = {}  # tool name -> why it was taken out of the listing
        self.version: Callable[[], str] = lambda: LATEST_HANDSHAKE_VERSION  # set once connected
        self._listing_ids: set[str | int] = set()

    def wrap(self, transport: Transport) -> Transport:
        return _screened(transport, self)

    def sent(self, item: SessionMessage) -> None:
        message = item.message
        if isinstance(message, JSONRPCRequest) and message.method == "tools/list":
            self._listing_ids.add(message.id)

    def received(self, item: SessionMessage | Exception) -> SessionMessage | Exception:
        if not isinstance(item, SessionMessage):
            return item
        message = item.message
        if not isinstance(message, JSONRPCResponse) or message.id not in self._listing_ids:
            return item
        self._listing_ids.discard(message.id)
        page = self._screened_page(message.result)
        if isinstance(page, str):
            error = ErrorData(code=MALFORMED_LISTING, message=f"malformed tools/list answer: {page}")
            return SessionMessage(JSONRPCError(jsonrpc="2.0", id=message.id, error=error), item.metadata)
        reply = JSONRPCResponse(jsonrpc="2.0", id=message.id, result=page)
        return SessionMessage(reply, item.metadata)

    def _screened_page(self, result: dict[str, Any]) -> dict[str, Any] | str:
        """The page with only the tools that pass, or why the page itself is unusable."""
        tools = result.get("tools")
        if not isinstance(tools, list):
            return f"tools is {type(tools).__name__}, not a list"
        version = self.version()
        try:  # the page around its tools (cursor, cache hints, _meta), on its own
            methods.validate_server_result("tools/list", version, {**result, "tools": []})
        except ValidationError as exc:
            first = exc.errors()[0]
            return f"{'.'.join(str(p) for p in first['loc']) or 'result'}: {first['msg']}"
        except (KeyError, ValueError):  # a version this SDK has no schema for: the SDK decides alone
            return result
        kept = []
        for index, tool in enumerate(tools):
            why = _tool_problem(result, tool, version)
            if why is None:
                kept.append(tool)
            elif len(self.withheld) < _MOST_WITHHELD:
                name = tool.get("name") if isinstance(tool, dict) else None
                label = name if isinstance(name, str) and name else f"(tool #{index} without a name)"
                self.withheld[label] = why
        return {**result, "tools": kept}


def _tool_problem(page: dict[str, Any], tool: Any, version: str) -> str | None:
    """Why this one tool of `page` cannot be read, or None."""
    if not isinstance(tool, dict):
        return f"a listed tool is {type(tool).__name__}, not an object"
    try:
        methods.validate_server_result("tools/list", version, {**page, "tools": [tool]})
        Tool.model_validate(tool, by_name=False)
    except ValidationError as exc:
        return _problem(exc)
    except (KeyError, ValueError, RecursionError):
        return "its definition cannot be read"
    if version in MODERN_PROTOCOL_VERSIONS and (bad := find_invalid_x_mcp_header(tool.get("inputSchema"))):
        return bad
    return None


class _Read:
    """The transport's read stream, each item screened on the way to the SDK."""

    def __init__(self, inner: Any, screen: ListingScreen) -> None:
        self._inner = inner
        self._screen = screen

    @property
    def last_context(self) -> Any:  # the SDK reads the sender's context here (contextvars propagation)
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        return self._screen.received(await self._inner.receive())

    def __aiter__(self) -> _Read:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        return self._screen.received(await self._inner.__anext__())

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _Read:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        result: bool | None = await self._inner.__aexit__(kind, exc, tb)
        return result


class _Write:
    """The transport's write stream, noting which requests are listings."""

    def __init__(self, inner: Any, screen: ListingScreen) -> None:
        self._inner = inner
        self._screen = screen

    async def send(self, item: SessionMessage, /) -> None:
        self._screen.sent(item)
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _Write:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        result: bool | None = await self._inner.__aexit__(kind, exc, tb)
        return result


@asynccontextmanager
async def _screened(transport: Transport, screen: ListingScreen) -> AsyncIterator[tuple[_Read, _Write]]:
    async with transport as (read, write):
        yield _Read(read, screen), _Write(write, screen)
