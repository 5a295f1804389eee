"""The agent's ports: what the loop needs from the outside world, as small Protocols it owns.

The loop imports no Slack, Redis, RQ or MCP code. The tool gateway (mcp_clients) satisfies `Tools`
structurally; the Slack side satisfies `Progress`; `llm.anthropic` adapts the Messages API to `Model`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from agent.plan import Plan

__all__ = ["Model", "ModelReply", "Progress", "Stop", "ToolInfo", "ToolResult", "Tools"]


class ToolInfo(Protocol):
    """One tool the caller may use, as listed for this turn."""

    @property
    def model_name(self) -> str: ...  # the name the model calls it by (presto__kill_query)
    @property
    def server(self) -> str: ...  # registry name (io.example/presto)
    @property
    def tool(self) -> str: ...  # the MCP tool name (kill_query)
    @property
    def description(self) -> str: ...
    @property
    def input_schema(self) -> Mapping[str, Any]: ...
    @property
    def needs_approval(self) -> bool: ...
    @property
    def fingerprint(self) -> str: ...


class ToolResult(Protocol):
    @property
    def ok(self) -> bool: ...
    @property
    def text(self) -> str: ...  # already capped by the gateway; the loop caps again as a backstop
    @property
    def truncated(self) -> bool: ...
    @property
    def error_kind(self) -> str | None: ...
    @property
    def latency_ms(self) -> float: ...


class Tools(Protocol):
    async def tools(self) -> Sequence[ToolInfo]: ...
    async def call(self, model_name: str, arguments: Mapping[str, Any]) -> ToolResult: ...


class ModelReply(Protocol):
    """The parts of a Messages API response the loop uses."""

    @property
    def content(self) -> Sequence[Mapping[str, Any]]: ...  # blocks as plain dicts (text, tool_use, ...)
    @property
    def stop_reason(self) -> str | None: ...
    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...


class Model(Protocol):
    async def complete(
        self,
        *,
        system: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        max_tokens: int,
        on_text: Callable[[str], Awaitable[None]] | None = None,
    ) -> ModelReply:
        """`on_text`, when given, is handed the reply's text as it is written (it must not raise)."""
        ...


class Progress(Protocol):
    """What people see while the loop works. Implementations throttle; the loop just reports."""

    async def thinking(self) -> None: ...
    async def text(self, delta: str) -> None: ...  # the model's words as they come (a streamed reply)
    async def tool_started(self, server: str, tool: str) -> None: ...
    async def tool_finished(self, server: str, tool: str, ok: bool, latency_ms: float) -> None: ...
    async def plan(self, plan: Plan) -> None: ...  # the model stated (or restated) its plan (agent.plan)


class Stop(Protocol):
    """A person's request to stop the run, from wherever it was made. `who` says who, in the words the
    result shows them by."""

    async def check(self) -> str | None:
        """Who asked to stop, if anyone has yet (the loop asks at each safe point)."""

    async def wait(self) -> str:
        """Return once someone asks to stop (the loop races a pending model call against it)."""
