"""What the model is shown of a server's tools, and what a call gives back (SPEC §6).

`build_specs` is pure: from one registry view, one entry and its listing it decides which tools are offered
(enabled, not poisoned, with an input schema the Messages API accepts: mcp_clients/schemas.py), under which
name, with which approval rule; the gateway session records what was withheld and why. The fingerprint is
taken over the server's own definition; the model is shown its fitted schema, which takes the same
arguments. `render_result` flattens a tool result for the model, capped, saying so when cut.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mcp.types import CallToolResult, Tool

from mcp_clients.naming import ToolKey, fingerprint, model_tool_name, unique_names
from mcp_clients.poisoning import poisoned_tool
from mcp_clients.schemas import capped_description, model_schema
from registry_cache.model import ServerEntry
from registry_cache.view import ApprovalRule, RegistryView

__all__ = [
    "Built",
    "ToolOutcome",
    "ToolSpec",
    "build_specs",
    "describe_for_model",
    "render_result",
    "stale_specs",
    "uniquely_named",
]


@dataclass(frozen=True)
class ToolSpec:
    model_name: str
    server: str
    short_name: str
    owner_team: str
    tool: str
    description: str
    input_schema: Mapping[str, Any]
    read_only_hint: bool | None
    fingerprint: str
    approval: ApprovalRule
    minutes_saved: float
    deprecated: bool
    url: str  # the remote it was listed from and the audience of its tokens: what an approval binds
    resource: str
    private_data: bool = False  # results go to the requester only (governance `private_data`)

    @property
    def needs_approval(self) -> bool:
        return self.approval.required


@dataclass(frozen=True)
class ToolOutcome:
    ok: bool
    text: str  # what the model (and the audit preview) sees, already capped
    structured: Any = None
    truncated: bool = False
    latency_ms: float = 0.0
    # refused | auth | scope | unavailable | timeout | malformed | tool_error | protocol (see calling.py)
    error_kind: str | None = None


def describe_for_model(entry: ServerEntry, tool: Tool, note: str = "") -> str:
    origin = f"[{entry.short_name} MCP server, owned by {entry.governance.owner_team or 'unknown team'}"
    origin += ", DEPRECATED]" if entry.deprecated else "]"
    text = f"{origin} {tool.description or tool.title or tool.name}"
    return capped_description(f"{text} {note}" if note else text)


@dataclass(frozen=True)
class Built:
    """`build_specs`' answer: what may be offered, and what is withheld (model name -> (tool, why))."""

    specs: list[ToolSpec]
    poisoned: dict[str, tuple[str, str]] = field(default_factory=dict)
    unfit: dict[str, tuple[str, str]] = field(default_factory=dict)  # no input schema the model API takes


def build_specs(view: RegistryView, entry: ServerEntry, tools: Sequence[Tool]) -> Built:
    """What the model may be shown of `entry`'s tools, and what is withheld. Pure: the session records it."""
    built = Built([])
    for tool in tools:
        if not view.tool_enabled(entry, tool.name):
            continue
        name = model_tool_name(entry.name, entry.short_name, tool.name)
        poison = poisoned_tool(tool.title, tool.description, tool.input_schema or {})
        if poison is not None:
            built.poisoned[name] = (tool.name, poison)
            continue
        fitted = model_schema(tool.input_schema)
        if isinstance(fitted, str):
            built.unfit[name] = (tool.name, fitted)
            continue
        built.specs.append(_spec(view, entry, tool, name, *fitted))
    return built


def _spec(
    view: RegistryView, entry: ServerEntry, tool: Tool, name: str, shown: dict[str, Any], note: str
) -> ToolSpec:
    annotations = tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else {}
    read_only = tool.annotations.read_only_hint if tool.annotations else None
    schema = dict(tool.input_schema) if tool.input_schema else {"type": "object", "properties": {}}
    return ToolSpec(
        model_name=name,
        server=entry.name,
        short_name=entry.short_name,
        owner_team=entry.governance.owner_team,
        tool=tool.name,
        description=describe_for_model(entry, tool, note),
        input_schema=shown,
        read_only_hint=read_only,
        fingerprint=fingerprint(tool.name, tool.description or "", schema, annotations),
        approval=view.approval(entry, tool.name, read_only_hint=read_only),
        minutes_saved=view.minutes_saved(entry, tool.name),
        deprecated=entry.deprecated,
        private_data=entry.governance.private_data,
        url=entry.url,
        resource=entry.resource,
    )


def uniquely_named(
    specs: Sequence[ToolSpec], withheld: Iterable[ToolKey]
) -> tuple[list[ToolSpec], dict[ToolKey, str]]:
    """The specs whose name one tool has to itself (mcp_clients/naming.py), and why each other one is
    withheld. Tools already `withheld` (poisoned) count too, so a withheld tool's name never leads to
    another tool; a tool its server lists twice is withheld (which definition a call reaches is the
    server's guess)."""
    keys: dict[ToolKey, ToolSpec] = {}
    clashing: dict[ToolKey, str] = {}
    for spec in specs:
        key = ToolKey(spec.server, spec.short_name, spec.tool)
        if key in keys:
            clashing[key] = f"{spec.short_name} lists {spec.tool} more than once"
        keys[key] = spec
    clashing.update(unique_names([*keys, *withheld])[1])
    return [spec for key, spec in keys.items() if key not in clashing], clashing


def stale_specs(
    shown: Iterable[ToolSpec], live: Mapping[str, ToolSpec], withheld: Mapping[str, str], short_name: str
) -> dict[str, str]:
    """The tools `shown` from a remembered listing that may no longer be called now that the server was
    listed `live` (model name -> what the person is told): withheld since, gone, or defined otherwise."""
    stale: dict[str, str] = {}
    for spec in shown:
        now = live.get(spec.model_name)
        if spec.model_name in withheld:
            stale[spec.model_name] = (
                f"{spec.tool} was withheld: its definition on {short_name} changed "
                f"({withheld[spec.model_name]})."
            )
        elif now is None:
            stale[spec.model_name] = f"{spec.tool} is no longer offered by {short_name}."
        elif now.fingerprint != spec.fingerprint:
            stale[spec.model_name] = (
                f"The definition of {spec.tool} on {short_name} changed while I was working; "
                "ask again so I use the current one."
            )
    return stale


def render_result(result: CallToolResult, max_chars: int) -> tuple[str, bool]:
    """Flatten a tool result to text for the model, capped, saying so when cut."""
    parts: list[str] = []
    for block in result.content:
        text = getattr(block, "text", None)
        if isinstance(text, str):
            parts.append(text)
        else:
            parts.append(f"[{getattr(block, 'type', 'content')} omitted]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    text = "\n".join(parts)
    if len(text) <= max_chars:
        return text, False
    return text[:max_chars] + f"\n[output truncated: {max_chars} of {len(text)} characters shown]", True
