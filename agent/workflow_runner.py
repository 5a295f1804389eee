"""Runs a canned workflow step by step through the `Tools` port, ending as a value.

    preflight    every step's tool is listed for this person, no step is withheld (`withheld`: step id ->
                 why, from the bot), and every argument that does not wait on an earlier result is valid,
                 before anything runs                                   -> WorkflowFailed("preflight")
    each step    `when` false -> skipped; render args -> WorkflowFailed("render"); check them against the
                 tool's schema -> WorkflowFailed("invalid_args"); needs approval -> WorkflowPaused;
                 else call -> WorkflowFailed("step_failed") on failure, or on to the next step
    all done     -> WorkflowDone

Like the agent loop, a run never waits on a human: a step that needs approval returns `WorkflowPaused` with
the exact arguments; the bot persists `RunState` (JSON), creates the approval, and calls `run_workflow`
again with the state and the approved call's outcome (or `declined`), which records it and goes on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol

from agent.ports import ToolInfo, ToolResult, Tools
from agent.workflow import RenderError, Step, Workflow, render_args, render_when, validate_args

__all__ = [
    "RunState",
    "StepProgress",
    "StepRecord",
    "WorkflowDone",
    "WorkflowFailed",
    "WorkflowPaused",
    "WorkflowResult",
    "preflight",
    "run_workflow",
]

log = logging.getLogger(__name__)

SUMMARY_CHARS = 300
FailKind = Literal["preflight", "render", "invalid_args", "step_failed", "rejected", "expired"]
Declined = tuple[Literal["rejected", "expired"], str]  # (what happened, the reason people gave)


class StepProgress(Protocol):
    """What people see while a workflow runs."""

    async def step_started(self, step_id: str, call: str) -> None: ...
    async def step_finished(self, step_id: str, ok: bool, summary: str) -> None: ...


@dataclass(frozen=True)
class StepRecord:
    step_id: str
    call: str
    status: Literal["ok", "failed", "skipped", "rejected", "expired"]
    summary: str  # the first line of the tool's text, or why it did not run
    arguments: dict[str, Any] | None = None
    approved: bool = False  # ran after people approved it
    latency_ms: float = 0.0


@dataclass
class RunState:
    """Where a run is: JSON-serialisable so the bot can persist it across an approval."""

    results: dict[str, Any] = field(default_factory=dict)  # step id -> result (None when skipped)
    next_index: int = 0
    log: list[StepRecord] = field(default_factory=list)
    pending_args: dict[str, Any] | None = None  # the rendered arguments of the step waiting for approval

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, default=str)

    @classmethod
    def from_json(cls, text: str) -> RunState:
        raw = json.loads(text)
        records = [StepRecord(**r) for r in raw.get("log", [])]
        return cls(raw.get("results", {}), int(raw.get("next_index", 0)), records, raw.get("pending_args"))


@dataclass(frozen=True)
class WorkflowDone:
    state: RunState


@dataclass(frozen=True)
class WorkflowPaused:
    """A step that waits for people: create an approval for exactly `rendered_args` on `tool`."""

    state: RunState
    step: Step
    rendered_args: dict[str, Any]
    tool: ToolInfo
    reason: str  # for the approval card: which workflow and step proposes this call


@dataclass(frozen=True)
class WorkflowFailed:
    kind: FailKind
    step_id: str | None
    message: str  # says plainly what happened, for the person who ran it
    state: RunState


WorkflowResult = WorkflowDone | WorkflowPaused | WorkflowFailed


def _short(server: str) -> str:
    return server.rsplit("/", 1)[-1]  # SPEC §8: the part of the registry name after the `/`


def _resolve(step: Step, infos: Sequence[ToolInfo]) -> ToolInfo | str:
    """The tool a step calls, or why it cannot be called."""
    # Matched on the whole "<short>.<tool>": a short name or a tool name may itself contain a dot.
    found = [i for i in infos if f"{_short(i.server)}.{i.tool}" == step.call]
    if len(found) == 1:
        return found[0]
    if not found:
        return f"step `{step.id}`: {step.call} is not available to you"
    servers = ", ".join(sorted(i.server for i in found))
    return f"step `{step.id}`: {step.call} is ambiguous (offered by {servers})"


def _check(
    workflow: Workflow,
    params: Mapping[str, Any],
    infos: Sequence[ToolInfo],
    start: int,
    withheld: Mapping[str, str],
) -> list[str]:
    problems: list[str] = []
    for step in workflow.steps[start:]:
        if step.id in withheld:
            problems.append(f"step `{step.id}`: {step.call} is withheld: {withheld[step.id]}")
            continue
        info = _resolve(step, infos)
        if isinstance(info, str):
            problems.append(info)
            continue
        # Arguments that read earlier results are judged just before their step; the rest are judged now.
        static = replace(step, args={k: v for k, v in step.args.items() if k not in step.result_args})
        try:
            rendered = render_args(static, params, {})
        except RenderError as exc:
            problems.append(f"step `{step.id}`: {exc}")
            continue
        found = validate_args(rendered, info.input_schema, pending=step.result_args)
        problems.extend(f"step `{step.id}`: {p}" for p in found)
    return problems


async def preflight(
    workflow: Workflow, params: Mapping[str, Any], tools: Tools, withheld: Mapping[str, str] | None = None
) -> list[str]:
    """What stops this person running `workflow` with `params`, found before any step runs."""
    return _check(workflow, params, list(await tools.tools()), 0, withheld or {})


def _value(text: str, structured: Any) -> Any:
    """What later steps read as `steps.<id>.result`: structured content, else JSON text, else the text."""
    if structured is not None:
        return structured
    if text.strip()[:1] in ("{", "["):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _summary(text: str) -> str:
    # The first line, unless it says nothing (pretty-printed JSON starts with a lone "{"): then collapse all.
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    flat = first if sum(c.isalnum() for c in first) >= 3 else " ".join(text.split())
    return flat if len(flat) <= SUMMARY_CHARS else flat[: SUMMARY_CHARS - 1] + "…"


# Over 60 lines on purpose: the run is one state machine (resume, each step, pause, finish) kept on one screen
# as agent.loop keeps the agent loop; its pieces (_resolve, _check, _decided, _call) are already apart.
async def run_workflow(
    workflow: Workflow,
    params: Mapping[str, Any],
    *,
    tools: Tools,
    progress: StepProgress,
    state: RunState | None = None,
    approved_outcome: tuple[bool, str, Any] | None = None,
    declined: Declined | None = None,
    withheld: Mapping[str, str] | None = None,
) -> WorkflowResult:
    """Run (or resume) `workflow` with typed `params` until it is done, paused or failed.

    To resume after an approval, pass the saved `state` and either `approved_outcome` (ok, text, structured
    result of the approved call, as executed by the bot) or `declined` (rejected or expired, and why).
    `withheld` names the steps that may not run for this person (step id -> why): the run fails before any
    step runs, saying why.
    """
    st = RunState(dict(s.results), s.next_index, list(s.log), s.pending_args) if (s := state) else RunState()
    if approved_outcome is not None or declined is not None:
        ended = await _decided(workflow, st, approved_outcome, declined, progress)
        if ended is not None:
            return ended
    infos = list(await tools.tools())
    problems = _check(workflow, params, infos, st.next_index, withheld or {})
    if problems:
        what = "The rest of this workflow" if st.next_index else "This workflow"
        message = f"{what} cannot run:\n" + "\n".join(f"• {p}" for p in problems)
        return WorkflowFailed("preflight", None, message, st)
    while st.next_index < len(workflow.steps):
        step = workflow.steps[st.next_index]
        info = _resolve(step, infos)
        assert not isinstance(info, str)  # preflight checked every remaining step
        try:
            if not render_when(step, params, st.results):
                st.results[step.id] = None
                st.log.append(StepRecord(step.id, step.call, "skipped", "skipped: its `when` is false"))
                await progress.step_finished(step.id, True, "skipped")
                st.next_index += 1
                continue
            args = render_args(step, params, st.results)
        except RenderError as exc:
            return WorkflowFailed("render", step.id, f"Step `{step.id}` could not be prepared: {exc}", st)
        problems = validate_args(args, info.input_schema)
        if problems:
            message = f"Step `{step.id}` ({step.call}) has invalid arguments: " + "; ".join(problems)
            return WorkflowFailed("invalid_args", step.id, message, st)
        if info.needs_approval or step.approval_required:
            st.pending_args = args
            reason = f"Step `{step.id}` of workflow `{workflow.name}` ({workflow.description})"
            return WorkflowPaused(st, step, args, info, reason)
        await progress.step_started(step.id, step.call)
        result = await _call(tools, info, args)
        summary = _summary(result.text)
        st.log.append(StepRecord(step.id, step.call, "ok" if result.ok else "failed", summary, args,
                                 latency_ms=result.latency_ms))  # fmt: skip
        await progress.step_finished(step.id, result.ok, summary)
        if not result.ok:
            message = f"Step `{step.id}` ({step.call}) failed: {_summary(result.text) or result.error_kind}"
            return WorkflowFailed("step_failed", step.id, message, st)
        # The port has no `structured`; the gateway's ToolOutcome does, so it is read when present.
        st.results[step.id] = _value(result.text, getattr(result, "structured", None))
        st.next_index += 1
    return WorkflowDone(st)


async def _decided(
    workflow: Workflow,
    st: RunState,
    outcome: tuple[bool, str, Any] | None,
    declined: Declined | None,
    progress: StepProgress,
) -> WorkflowFailed | None:
    """Record what people decided about the waiting step (and, if approved, its outcome)."""
    if st.pending_args is None or st.next_index >= len(workflow.steps):
        raise ValueError("nothing is waiting for approval in this run state")
    step, args = workflow.steps[st.next_index], st.pending_args
    st.pending_args = None
    if declined is not None:
        kind, why = declined
        st.log.append(StepRecord(step.id, step.call, kind, why, args))
        verb = "was rejected" if kind == "rejected" else "expired before anyone decided"
        return WorkflowFailed(
            kind, step.id, f"Step `{step.id}` ({step.call}) {verb}" + (f": {why}" if why else "."), st
        )
    assert outcome is not None
    ok, text, structured = outcome
    st.log.append(StepRecord(step.id, step.call, "ok" if ok else "failed", _summary(text), args, True))
    await progress.step_finished(step.id, ok, _summary(text))
    if not ok:
        return WorkflowFailed(
            "step_failed", step.id, f"Step `{step.id}` ({step.call}) failed: {_summary(text)}", st
        )
    st.results[step.id] = _value(text, structured)
    st.next_index += 1
    return None


@dataclass(frozen=True)
class _Text:
    """A ToolResult for a port that raised."""

    text: str
    ok: bool
    error_kind: str
    latency_ms: float
    truncated: bool = False


async def _call(tools: Tools, info: ToolInfo, args: dict[str, Any]) -> ToolResult:
    started = time.perf_counter()
    try:
        return await tools.call(info.model_name, args)
    except Exception:  # the port promises not to raise; if it does, the step fails instead of the worker
        log.warning("tool %s raised", info.model_name, exc_info=True)
        latency = (time.perf_counter() - started) * 1000
        return _Text("The tool failed unexpectedly.", ok=False, error_kind="crashed", latency_ms=latency)
