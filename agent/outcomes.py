"""What a run of the agent loop is given (`Limits`) and what it ends as: an `Answer`, a `Paused` run waiting
for people (its `PendingCall`s), or `Failed`; each with the calls that ran (`CallRecord`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.tool_search import SearchMode
from agent.transcript import TOOL_OUTPUT_MAX_CHARS
from agent.usage import Usage

__all__ = ["Answer", "CallRecord", "Failed", "Limits", "Paused", "PendingCall", "Result"]


@dataclass(frozen=True)
class Limits:
    max_steps: int = 12  # model calls per run
    max_seconds: float = 300.0
    max_output_tokens: int = 4096  # per model call
    max_total_tokens: int = 400_000  # input + output over the whole run
    tool_output_max_chars: int = TOOL_OUTPUT_MAX_CHARS
    budget_tokens: int = 150_000  # what one request may carry before old tool output is dropped
    tool_search: SearchMode = "api"  # how the model finds tools past the threshold (agent.tool_search)
    tool_search_threshold: int = 30  # more tools than this, and most are found by search


@dataclass(frozen=True)
class CallRecord:
    """One tool call that ran, for the audit and the "tools used" footer."""

    model_name: str
    server: str
    tool: str
    arguments: dict[str, Any]
    ok: bool
    error_kind: str | None
    latency_ms: float
    digest: str
    truncated: bool


@dataclass(frozen=True)
class PendingCall:
    """A sensitive call waiting for people; `reason` is what the model said before proposing it."""

    tool_use_id: str
    model_name: str
    server: str
    tool: str
    arguments: dict[str, Any]
    reason: str
    fingerprint: str
    digest: str
    # "server.tool" of each call whose output the model had read in this turn when it proposed this one:
    # tool output is untrusted, so the people deciding see what might have talked the model into it.
    read_before: tuple[str, ...] = ()


@dataclass(frozen=True)
class Answer:
    text: str
    messages: list[dict[str, Any]]
    calls: list[CallRecord]
    input_tokens: int
    output_tokens: int
    notes: list[str]  # remarks for the user, e.g. that old tool output was dropped
    usage: Usage = field(default_factory=Usage)  # the run's model calls as billed


@dataclass(frozen=True)
class Paused:
    messages: list[dict[str, Any]]  # ends with the assistant message holding the tool_use blocks
    pending: list[PendingCall]
    completed: list[dict[str, Any]]  # tool_result blocks of the calls of that step that did not wait
    calls: list[CallRecord]
    input_tokens: int
    output_tokens: int
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True)
class Failed:
    kind: str  # step_cap | time_cap | token_cap | model_unavailable | refusal | stopped
    message: str  # says plainly what happened, for the user
    messages: list[dict[str, Any]]
    calls: list[CallRecord]
    input_tokens: int
    output_tokens: int
    partial_text: str
    usage: Usage = field(default_factory=Usage)


Result = Answer | Paused | Failed
