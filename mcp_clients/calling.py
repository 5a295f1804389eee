"""One tool call on one connection, and what it came to: every ending is a value, never an exception.

`call_tool` returns an `Ended`; the gateway adds the latency and feeds its breaker. The kinds
(`ToolOutcome.error_kind`) say what a person and the approval record need to know:

    auth | scope     the server refused this person's credentials (nothing ran)
    connect          this person must connect the server (again) first (nothing ran)
    unavailable      the server could not be reached (nothing ran)
    timeout          no answer within the call timeout: the call was made, its effect is unknown
    malformed        the server answered, but not with a tool result the bot can read (wrong types,
                     not JSON, past the size cap, an unexpected failure while reading it): the call was
                     made and its effect is unknown; the text carries the raw reason
    protocol         the server answered with a JSON-RPC error (the tool did not run)
    tool_error       the tool ran and reported an error

`CALL_MADE_EFFECT_UNKNOWN` is what an approved action records as OUTCOME_UNKNOWN, never as "not run".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp import Client, MCPError
from mcp.shared.dispatcher import ProgressFnT
from mcp.types import CallToolResult, RequestParamsMeta
from mcp_types.jsonrpc import PARSE_ERROR, REQUEST_TIMEOUT
from pydantic import ValidationError

from mcp_clients.connection import ConnectError, Connection
from mcp_clients.questions import calling
from mcp_clients.specs import render_result
from mcp_clients.tokens import TokenUnavailable

__all__ = ["CALL_MADE_EFFECT_UNKNOWN", "IDEMPOTENCY_META_KEY", "AuthFailure", "Ended", "call_tool"]

log = logging.getLogger(__name__)

SEND_FIRST_SECONDS = 0.001  # the call's request leaves before the output check is compiled beside it

IDEMPOTENCY_META_KEY = "io.chatops/idempotency-key"
CALL_MADE_EFFECT_UNKNOWN = frozenset({"timeout", "malformed"})
# Kinds that say nothing against the server's health: its breaker is not fed by them.
HEALTHY_KINDS = frozenset({"tool_error", "scope", "auth", "connect"})
# What to tell the person when a failure was for want of their own token or scope (gateway_auth.py), or None.
AuthFailure = Callable[[BaseException], Awaitable[tuple[str, str] | None]]


@dataclass(frozen=True)
class Ended:
    ok: bool
    text: str
    kind: str | None = None
    structured: Any = None
    truncated: bool = False


async def call_tool(
    conn: Connection,
    server: str,
    tool: str,
    arguments: Mapping[str, Any],
    *,
    timeout: float,
    max_chars: int,
    idempotency_key: str | None,
    auth_failure: AuthFailure,
    progress: ProgressFnT | None = None,
) -> Ended:
    """Call `tool` (named as its server knows it) on `conn`; `server` is how people name the server.
    `progress` hears the server's progress notifications for this call."""
    calling.set(tool)  # a question the server asks during this call names it (mcp_clients/questions.py)
    try:
        client = await conn.open()
        meta: RequestParamsMeta | None = None
        if idempotency_key:
            meta = RequestParamsMeta()
            meta[IDEMPOTENCY_META_KEY] = idempotency_key  # type: ignore[literal-required]
        compiling = asyncio.ensure_future(_compile_output_check(client, tool))
        try:
            result = await client.call_tool(
                tool, dict(arguments), read_timeout_seconds=timeout, meta=meta, progress_callback=progress
            )
        finally:
            compiling.cancel()  # when the answer came first, the SDK's own check compiled it
            with contextlib.suppress(asyncio.CancelledError):
                await compiling
    except TokenUnavailable as exc:
        return Ended(False, *(await auth_failure(exc) or (str(exc), "auth")))
    except ConnectError as exc:
        return Ended(
            False, *(await auth_failure(exc) or (f"{server} could not be reached: {exc}", "unavailable"))
        )
    except MCPError as exc:
        mine = await auth_failure(exc)
        return (
            Ended(False, *mine)
            if mine is not None
            else _refused_or_unreadable(conn, server, tool, exc, timeout)
        )
    except OSError as exc:
        return Ended(False, f"{server} could not be reached ({type(exc).__name__}).", "unavailable")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "result"
        return _unreadable(server, tool, f"not a valid tool result ({where}: {first['msg']})")
    except (
        Exception
    ) as exc:  # the SDK's own checks (output schema, unexpected result kinds) and anything else
        log.warning("call of %s on %s ended unexpectedly", tool, server, exc_info=True)
        return _unreadable(server, tool, f"{type(exc).__name__}: {str(exc)[:300]}")
    return _ended(result, max_chars)


async def _compile_output_check(client: Client, tool: str) -> None:
    """The SDK checks a tool's result against its output schema with a validator it compiles once per
    connection (~5 ms of CPU: the schema is first checked against its meta-schema) once the result is in.
    A turn's connections are its own, so every turn paid that between the tool's answer and the next model
    request (bench/turn). Checking an empty result while the call is out compiles it then, off that path;
    the check of the real result reuses it. The empty result's own verdict means nothing and is dropped."""
    await asyncio.sleep(SEND_FIRST_SECONDS)
    with contextlib.suppress(Exception):
        await client.session.validate_tool_result(tool, CallToolResult(content=[], structured_content={}))


def _ended(result: CallToolResult, max_chars: int) -> Ended:
    text, cut = render_result(result, max_chars)
    if result.is_error:
        return Ended(False, text, "tool_error", truncated=cut)
    return Ended(True, text, structured=result.structured_content, truncated=cut)


def _unreadable(server: str, tool: str, why: str) -> Ended:
    return Ended(
        False,
        f"{server} answered the call of {tool} with something the bot cannot read ({why}); "
        "the call was made, so its effect is unknown.",
        "malformed",
    )


def _refused_or_unreadable(conn: Connection, server: str, tool: str, exc: MCPError, timeout: float) -> Ended:
    if conn.auth.insufficient_scope:
        return Ended(
            False,
            f"{server} says your account lacks the scope for {tool}. "
            "Ask its owners for access, then connect again.",
            "scope",
        )
    if conn.auth.last_status == 401:
        return Ended(False, f"{server} did not accept your credentials. Connect again.", "auth")
    if exc.code == REQUEST_TIMEOUT:
        return Ended(
            False, f"{tool} did not finish within {timeout:.0f} s; its outcome is unknown.", "timeout"
        )
    if conn.breach.message is not None:  # the size cap cut the answer (for an SSE stream, the SDK says less)
        return _unreadable(server, tool, conn.breach.message)
    if exc.code == PARSE_ERROR:  # what the SDK says of a body that is not JSON-RPC
        return _unreadable(server, tool, exc.message.splitlines()[0][:300] if exc.message else "not JSON")
    return Ended(False, f"{server} failed: {exc.message}", "protocol")
