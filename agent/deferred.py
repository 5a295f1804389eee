"""Deferred calls: a paused run's transcript while people decide, and the same transcript once they have.

As pydantic-ai's deferred tools do it: a run that proposes a sensitive call ends (`loop.Paused`), and its
transcript is stored with a placeholder result for every call that waits (`park`), so the thread stays a
conversation the API accepts while other turns run in it. Once every call is decided, `resume` puts each
call's actual outcome where its placeholder was, and the loop runs again from there. Nothing is narrated:
the model reads the real result, or why there is none, as the tool_result of the call it made.

    succeeded        -> the server's output
    failed           -> is_error: what was reported
    outcome_unknown  -> is_error: what was reported; the call is not to be run again
    rejected         -> is_error: who rejected it and why; not to be proposed again unless asked
    expired          -> is_error: nobody decided and nothing ran
    withdrawn        -> is_error: the requester took it back before a decision; nothing ran

Whatever a server said sits inside the untrusted-data delimiters (agent.prompt.wrap_tool_output), so no
output can read as our words; an approver's reason is a person's words, like the question itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from agent.prompt import wrap_tool_output
from agent.transcript import TOOL_OUTPUT_MAX_CHARS, cap_text

__all__ = ["DECIDED", "MOVED_ON", "WAITING", "Decided", "DecidedStatus", "outcome_result", "park", "resume"]

DecidedStatus = Literal["succeeded", "failed", "outcome_unknown", "rejected", "expired", "withdrawn"]

WAITING = (
    "Waiting for people to approve or reject this call; its result will replace this text. "
    "Do not call it again."
)
UNANSWERED = "No outcome was recorded for this call; treat its effect as unknown."
MOVED_ON = (
    "[Not typed by a person: people have decided on calls proposed earlier in this thread, and each "
    "result now stands in place of its placeholder above. Tell the person what happened and what is left "
    "to do.]"
)
DECIDED = (
    "[Not typed by a person: people have decided on calls proposed earlier in this thread. Tell the "
    "person what happened and what is left to do. The outcomes:]"
)


class Waiting(Protocol):
    """A call left to people (`agent.loop.PendingCall` fits)."""

    @property
    def tool_use_id(self) -> str: ...


@dataclass(frozen=True)
class Decided:
    """What became of one call a paused run left to people. `detail` is what the server reported (the
    call ran) or the reason given (rejected); `decided_by` names the people, as the model should."""

    tool_use_id: str
    server: str
    tool: str
    status: DecidedStatus
    detail: str = ""
    decided_by: tuple[str, ...] = ()


def park(
    messages: Sequence[Mapping[str, Any]], completed: Sequence[Mapping[str, Any]], pending: Sequence[Waiting]
) -> list[dict[str, Any]]:
    """The paused transcript with its last step answered: the results of the calls that did not wait, and a
    placeholder for each call in `pending` (any other call, which should not exist, as unknown)."""
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError("a paused transcript ends with the assistant message that proposed the calls")
    content = messages[-1].get("content")
    uses = [b for b in content if b.get("type") == "tool_use"] if isinstance(content, list) else []
    done = {str(b.get("tool_use_id")): dict(b) for b in completed}
    waiting = {p.tool_use_id for p in pending}
    results: list[dict[str, Any]] = []
    for block in uses:
        use_id = str(block.get("id"))
        if use_id in done:
            results.append(done[use_id])
        else:
            unknown = use_id not in waiting
            text = UNANSWERED if unknown else WAITING
            results.append(
                {"type": "tool_result", "tool_use_id": use_id, "content": text, "is_error": unknown}
            )
    return [*(dict(m) for m in messages), {"role": "user", "content": results}]


def outcome_result(decided: Decided, max_chars: int = TOOL_OUTPUT_MAX_CHARS) -> dict[str, Any]:
    """The tool_result block that answers a decided call."""
    by = ", ".join(decided.decided_by) or "nobody"
    reported = wrap_tool_output(
        decided.server, decided.tool, cap_text(decided.detail or "(nothing)", max_chars)[0]
    )
    ok, text = {
        "succeeded": (True, f"Approved by {by} and run. Its output:\n{reported}"),
        "failed": (False, f"Approved by {by}, but it did not succeed. What was reported:\n{reported}"),
        "outcome_unknown": (
            False,
            f"Approved by {by}; its outcome is unknown. Do not run it again; tell the person to check. "
            f"What was reported:\n{reported}",
        ),
        "rejected": (
            False,
            f"Rejected by {by}: {decided.detail or 'no reason given'}. "
            "Do not propose it again unless the person asks.",
        ),
        "expired": (False, "Expired without a decision; nothing ran."),
        "withdrawn": (
            False,
            "Withdrawn by the requester before anyone decided; nothing ran. "
            "Do not propose it again unless the person asks.",
        ),
    }[decided.status]
    return {"type": "tool_result", "tool_use_id": decided.tool_use_id, "content": text, "is_error": not ok}


def resume(saved: Sequence[Mapping[str, Any]], outcomes: Sequence[Decided]) -> list[dict[str, Any]]:
    """`saved` (a parked transcript, perhaps with later turns after it) with each decided call's
    placeholder replaced, in place, by its outcome: what the loop runs from to continue the paused turn.

    When the thread moved on after the pause, a short note after the last message makes the decisions the
    newest thing the model reads. An outcome whose call `saved` no longer holds (the conversation was
    lost) is told in that note rather than dropped."""
    by_id = {o.tool_use_id: o for o in outcomes}
    placed: set[str] = set()
    resumed: list[dict[str, Any]] = []
    last = -1
    for index, message in enumerate(saved):
        content = message.get("content")
        blocks: list[Any] = (
            list(content) if message.get("role") == "user" and isinstance(content, list) else []
        )
        answers = [str(b.get("tool_use_id")) for b in blocks if _answers(b, by_id)]
        if not answers:
            resumed.append(dict(message))
            continue
        blocks = [
            outcome_result(by_id[str(b.get("tool_use_id"))]) if _answers(b, by_id) else b for b in blocks
        ]
        placed.update(answers)
        resumed.append({**message, "content": blocks})
        last = index
    lost = [o for o in outcomes if o.tool_use_id not in placed]
    if lost or last != len(resumed) - 1:
        told = [f"`{o.server.split('/', 1)[-1]}.{o.tool}`: {outcome_result(o)['content']}" for o in lost]
        resumed.append({"role": "user", "content": "\n\n".join([DECIDED if lost else MOVED_ON, *told])})
    return resumed


def _answers(block: Any, by_id: Mapping[str, Decided]) -> bool:
    return (
        isinstance(block, Mapping)
        and block.get("type") == "tool_result"
        and str(block.get("tool_use_id")) in by_id
    )
