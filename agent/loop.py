"""The Claude tool-use loop, as a small explicit state machine.

Each step asks the model once, then goes by its stop reason:

    end_turn / other  -> Answer                      refusal    -> Failed("refusal")
    max_tokens        -> Answer with a note           pause_turn -> send the content back, next step
    tool_use          -> each call is refused locally (unknown tool, bad input, rejected before),
                         answered locally (find_tools, share_plan: agent.plan), pending (needs
                         approval) or run now (read-only, concurrently); then Paused if any call is
                         pending, else the results go back and the next step runs

A run ends as a value: it never waits on a human (a pause is `Paused`: agent.deferred parks its transcript
and resumes it with the real outcomes once people decided) and never raises for tool or model failures:
those are `is_error` results the model reads, or `Failed`. Step, wall-clock and token caps bound every run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.errors import ModelUnavailable
from agent.outcomes import Answer, CallRecord, Failed, Limits, Paused, PendingCall, Result
from agent.plan import PLAN_TOOL, PLAN_TOOL_NAME, SHOWN, Plan, PlanStep, last_stated, read_plan
from agent.ports import Model, ModelReply, Progress, Stop, ToolInfo, Tools
from agent.prompt import SYSTEM_PROMPT
from agent.redaction import CREDENTIAL_REFUSAL, contains_credential, redact_value
from agent.stopping import Stopped, unless_stopped
from agent.tool_search import ToolContext
from agent.transcript import (
    call_digest,
    cap_text,
    compact,
    elide_old_turns,
    estimate_tokens,
    text_of,
    tool_result,
)
from agent.usage import Usage

__all__ = [
    "Answer",
    "CallRecord",
    "Failed",
    "Limits",
    "Paused",
    "PendingCall",
    "Result",
    "run",
    "tool_params",
]

log = logging.getLogger(__name__)

NOTE_COMPACTED = "older tool output was removed to fit the budget"
NOTE_CUT = "the answer was cut at the output limit"
NOTE_TRUNCATED = "some tool output was too long and was cut before the model read it"
LOW_WATER = 0.75  # share of the budget a compacted transcript is brought down to


@dataclass
class _Run:
    """The mutable state of one run; the public results are frozen snapshots of it."""

    messages: list[dict[str, Any]]
    limits: Limits
    clock: Callable[[], float]
    deadline: float
    start: int  # index of the first message this run added
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    usage: Usage = field(default_factory=Usage)
    calls: list[CallRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plan: Plan | None = None  # as the model last stated it

    def left(self) -> float:
        return max(0.0, self.deadline - self.clock())

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def cap(self) -> str | None:
        """Which cap forbids another model call, if any."""
        if self.steps >= self.limits.max_steps:
            return "step_cap"
        if self.input_tokens + self.output_tokens >= self.limits.max_total_tokens:
            return "token_cap"
        return "time_cap" if self.left() <= 0 else None

    def partial(self) -> str:
        said = (
            text_of(m.get("content")) for m in self.messages[self.start :] if m.get("role") == "assistant"
        )
        return "\n\n".join(t for t in said if t)

    def _common(self) -> dict[str, Any]:
        return {
            "messages": list(self.messages),
            "calls": list(self.calls),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "usage": self.usage,
        }

    def answer(self, text: str) -> Answer:
        return Answer(text=text, notes=list(self.notes), **self._common())

    def stopped(self, who: str) -> Failed:
        partial = self.partial()
        said = f"Stopped by {who}."
        return self.failed("stopped", f"{said} What I had found so far:\n{partial}" if partial else said)

    def failed(self, kind: str, message: str | None = None) -> Failed:
        partial = self.partial()
        if message is None:
            stopped = {
                "step_cap": f"I stopped after {self.steps} steps without reaching an answer",
                "token_cap": f"I stopped after using {self.input_tokens + self.output_tokens} tokens, "
                "this request's limit, without reaching an answer",
                "time_cap": f"I stopped after {self.limits.max_seconds:g} seconds without reaching an answer",
            }[kind]
            message = f"{stopped}; here is what I found so far:\n{partial}" if partial else f"{stopped}."
        return Failed(kind=kind, message=message, partial_text=partial, **self._common())


def tool_params(tools: Iterable[ToolInfo]) -> list[dict[str, Any]]:
    """The tools as the model is shown them (the Messages API's `tools`)."""
    return [
        {"name": t.model_name, "description": t.description, "input_schema": dict(t.input_schema)}
        for t in tools
    ]


async def run(
    messages: list[dict[str, Any]],
    *,
    tools: Tools,
    model: Model,
    limits: Limits,
    progress: Progress,
    rejected: frozenset[str] = frozenset(),
    clock: Callable[[], float] = time.monotonic,
    system: str = SYSTEM_PROMPT,
    stop: Stop | None = None,
) -> Result:
    """Run the loop from `messages` (ending with a user message) until an answer, a pause or a cap."""
    st = _Run([dict(m) for m in messages], limits, clock, clock() + limits.max_seconds, len(messages))
    try:
        async with asyncio.timeout(st.left()):
            listed = list(await tools.tools())
    except TimeoutError:
        return st.failed("time_cap")
    infos = {t.model_name: t for t in listed}
    specs = tool_params(listed)
    context = ToolContext.build(
        specs,
        {t.model_name: t.server for t in listed},
        mode=limits.tool_search,
        threshold=limits.tool_search_threshold,
        history=st.messages,
    )
    # Deferred definitions stay out of the context, so the budget counts what is sent up front.
    budget = limits.budget_tokens - estimate_tokens([system, _offered(context)])
    if (plan := last_stated(st.messages)) is not None:  # a turn resumed after approval shows its plan
        st.plan = plan
        await progress.plan(plan)
    while True:
        if (cap := st.cap()) is not None:
            return st.failed(cap)
        if stop is not None and (who := await stop.check()) is not None:
            return st.stopped(who)
        _fit_budget(st, budget)
        reply = await _ask(st, model, system, context, progress, stop)
        if isinstance(reply, Failed):
            return reply
        content = [dict(b) for b in reply.content]
        uses = [b for b in content if b.get("type") == "tool_use"]
        if reply.stop_reason == "tool_use" and uses and stop is not None and (who := await stop.check()):
            return st.stopped(who)  # the last safe point before tools run: none is cut half-way
        if reply.stop_reason == "tool_use" and uses:
            st.messages.append({"role": "assistant", "content": content})
            paused = await _tool_step(st, uses, text_of(content), infos, tools, progress, rejected, context)
            if paused is not None:
                return paused
            continue
        if reply.stop_reason == "pause_turn":  # a long server-side turn: sending it back lets it go on
            st.messages.append({"role": "assistant", "content": content})
            continue
        result = _final(st, content, reply.stop_reason)
        if isinstance(result, Answer):
            await _plan_over(st, progress)
        return result


def _offered(context: ToolContext) -> list[dict[str, Any]]:
    """The next request's tools: a plan is worth stating only where there is something to investigate."""
    tools = context.request_tools()
    return [*tools, PLAN_TOOL] if context.specs else tools


async def _local(
    st: _Run, context: ToolContext, progress: Progress, use_id: str, name: str, args: Any
) -> dict[str, Any] | None:
    """The result of a tool this process answers itself, or None for every other tool."""
    if context.is_local_search(name):  # it only widens what the model is shown
        return tool_result(use_id, "", name, context.find(args), True)
    if name == PLAN_TOOL_NAME:  # it only shows people the model's plan
        return await _share_plan(st, progress, use_id, args)
    return None


async def _share_plan(st: _Run, progress: Progress, use_id: str, args: Any) -> dict[str, Any]:
    """Answer a `share_plan` call: show the plan (a malformed one is an error the model reads)."""
    plan = read_plan(args)
    if isinstance(plan, str):
        return tool_result(use_id, "", PLAN_TOOL_NAME, plan, False)
    st.plan = plan
    await progress.plan(plan)
    return tool_result(use_id, "", PLAN_TOOL_NAME, SHOWN, True)


async def _plan_over(st: _Run, progress: Progress) -> None:
    """The model answered: the step it was on is over, so no step of its plan keeps spinning. Steps it
    never began stay pending (it says so itself, or it had no need of them)."""
    if st.plan is None or all(s.status != "in_progress" for s in st.plan.steps):
        return
    steps = tuple(
        PlanStep(s.title, "complete" if s.status == "in_progress" else s.status) for s in st.plan.steps
    )
    st.plan = Plan(st.plan.title, steps)
    await progress.plan(st.plan)


def _fit_budget(st: _Run, budget: int) -> None:
    """Keep the transcript under the request's token budget (never the question or the last answer)."""
    if estimate_tokens(st.messages) <= budget:
        return
    # Down to a low-water mark, not just under the cap: the prefix then stays the same (and cached)
    # for the next steps and turns, instead of changing on every request once the thread is full.
    target = int(budget * LOW_WATER)
    st.messages, dropped = compact(st.messages, target)
    st.messages, elided = elide_old_turns(st.messages, target, st.limits.budget_tokens)
    if dropped or elided:
        st.note(NOTE_COMPACTED)


async def _ask(
    st: _Run, model: Model, system: str, context: ToolContext, progress: Progress, stop: Stop | None
) -> ModelReply | Failed:
    """One model request within the run's time, raced against a Stop; its usage counted."""
    await progress.thinking()
    asking = model.complete(
        system=system,
        messages=st.messages,
        tools=_offered(context),
        max_tokens=st.limits.max_output_tokens,
        on_text=progress.text,
    )
    try:
        async with asyncio.timeout(st.left()):
            reply = await (asking if stop is None else unless_stopped(asking, stop))
    except TimeoutError:
        return st.failed("time_cap")
    except ModelUnavailable as exc:
        return st.failed("model_unavailable", exc.message)
    if isinstance(reply, Stopped):
        return st.stopped(reply.who)
    st.steps += 1
    st.input_tokens += reply.input_tokens
    st.output_tokens += reply.output_tokens
    st.usage += getattr(reply, "usage", None) or Usage(input=reply.input_tokens, output=reply.output_tokens)
    return reply


def _final(st: _Run, content: list[dict[str, Any]], stop_reason: str | None) -> Answer | Failed:
    """The run's end on a reply that asks for no tool: an answer, or why there is none."""
    # A final message keeps no tool_use: one cut off at max_tokens has no result and never will.
    final = [b for b in content if b.get("type") != "tool_use"]
    if final:
        st.messages.append({"role": "assistant", "content": final})
    text = text_of(final)
    if stop_reason == "refusal":
        return st.failed("refusal", text or "The model declined to help with this request.")
    if stop_reason == "max_tokens":
        if not text:
            return st.failed(
                "token_cap",
                f"The reply hit the output limit of {st.limits.max_output_tokens} tokens before any answer.",
            )
        st.note(NOTE_CUT)
    return st.answer(text or st.partial() or "I have nothing further to add.")


async def _tool_step(
    st: _Run,
    uses: list[dict[str, Any]],
    reason: str,
    infos: Mapping[str, ToolInfo],
    tools: Tools,
    progress: Progress,
    rejected: frozenset[str],
    context: ToolContext,
) -> Paused | Failed | None:
    """Answer every tool_use of the last assistant message; a value when the run must end here."""
    if (cap := st.cap()) is not None:  # no model call would read the results, so run nothing
        note = "Not run: this request reached its limit before the call could be made."
        results = [tool_result(str(b.get("id")), "", str(b.get("name")), note, False) for b in uses]
        st.messages.append({"role": "user", "content": results})
        return st.failed(cap)
    done: dict[str, dict[str, Any]] = {}
    pending: list[PendingCall] = []
    runnable: list[tuple[str, ToolInfo, dict[str, Any], str]] = []
    for block in uses:
        use_id, name, args = str(block.get("id")), str(block.get("name")), block.get("input")
        info = infos.get(name)
        if (local := await _local(st, context, progress, use_id, name, args)) is not None:
            done[use_id] = local
        elif info is None:  # not listed to this person here: refused locally, nothing reaches a server
            done[use_id] = tool_result(
                use_id, "", name, f"Tool {name!r} is not available to you here.", False
            )
        elif not isinstance(args, dict):
            done[use_id] = tool_result(
                use_id, info.server, info.tool, "The arguments must be a JSON object.", False
            )
        elif contains_credential(json.dumps(args, ensure_ascii=False)):
            # Never sent, never shown on an approval card: a credential in arguments is exfiltration.
            log.warning("call of %s refused locally: its arguments look like a credential", name)
            done[use_id] = tool_result(use_id, info.server, info.tool, CREDENTIAL_REFUSAL, False)
            # The block is already in the transcript: keep the credential out of what is stored and resent.
            block["input"] = redact_value(args)
        elif (digest := call_digest(name, args)) in rejected:
            msg = "This exact call was rejected earlier; not proposing it again unless the user asks."
            done[use_id] = tool_result(use_id, info.server, info.tool, msg, False)
        elif info.needs_approval:
            read = tuple(dict.fromkeys(f"{c.server.split('/', 1)[-1]}.{c.tool}" for c in st.calls if c.ok))
            pending.append(
                PendingCall(
                    use_id, name, info.server, info.tool, args, reason, info.fingerprint, digest, read
                )
            )
        else:
            runnable.append((use_id, info, args, digest))
    ran = await asyncio.gather(*(_call(st, tools, progress, info, args, d) for _, info, args, d in runnable))
    for (use_id, info, _, _), (record, text) in zip(runnable, ran, strict=True):
        st.calls.append(record)
        done[use_id] = tool_result(use_id, info.server, info.tool, text, record.ok)
    completed = [done[i] for i in (str(b.get("id")) for b in uses) if i in done]
    if pending:
        return Paused(pending=pending, completed=completed, **st._common())
    st.messages.append({"role": "user", "content": completed})
    return None


async def _call(
    st: _Run, tools: Tools, progress: Progress, info: ToolInfo, args: dict[str, Any], digest: str
) -> tuple[CallRecord, str]:
    await progress.tool_started(info.server, info.tool)
    started, scope = time.perf_counter(), asyncio.timeout(st.left())
    try:
        async with scope:
            result = await tools.call(info.model_name, args)
        ok, text, kind, cut = result.ok, result.text, result.error_kind, result.truncated
        latency = result.latency_ms
    except Exception as exc:  # the port promises not to raise; if it does, the model reads an error instead
        ok, cut, latency = False, False, (time.perf_counter() - started) * 1000
        if isinstance(exc, TimeoutError) and scope.expired():  # our time cap, not the tool's own error
            kind = "timeout"
            text = "The call did not finish before this request's time limit; its outcome is unknown."
        else:
            log.warning("tool %s raised", info.model_name, exc_info=True)
            kind, text = "crashed", "The tool failed unexpectedly."
    text, capped = cap_text(text, st.limits.tool_output_max_chars)
    if cut or capped:
        st.note(NOTE_TRUNCATED)
    await progress.tool_finished(info.server, info.tool, ok, latency)
    record = CallRecord(
        info.model_name, info.server, info.tool, args, ok, kind, latency, digest, cut or capped
    )
    return record, text
