"""Helpers over the transcript: the Messages API message list as plain dicts.

The transcript is stored between turns (and across an approval pause) as JSON, so everything here works on
plain dicts and never mutates its input.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agent.plan import PLAN_TOOL_NAME
from agent.prompt import withhold_output, wrap_tool_output

__all__ = [
    "DROPPED_OUTPUT",
    "TOOL_OUTPUT_MAX_CHARS",
    "call_digest",
    "canonical_json",
    "cap_text",
    "compact",
    "elide_old_turns",
    "estimate_tokens",
    "text_of",
    "tool_result",
    "withhold",
    "withhold_results",
    "withhold_servers",
]

DROPPED_OUTPUT = "[older tool output removed to keep this conversation within its budget]"
CHARS_PER_TOKEN = 4  # a rough, conservative ratio; budgets only need the right order of magnitude
TOOL_OUTPUT_MAX_CHARS = 20_000


def canonical_json(value: Any, *, lenient: bool = False) -> str:
    """The one serialisation digests and records use: sorted keys, no spaces, UTF-8 kept. Strict by default
    (a value that is not plain JSON raises TypeError: an approval's arguments must be); `lenient` writes
    anything else as its str() (previews, and digests of what a model or server sent)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str if lenient else None
    )


def call_digest(tool_name: str, arguments: Mapping[str, Any]) -> str:
    """Identifies one exact call (tool + arguments) so a rejected call is recognised if proposed again."""
    body = {"tool": tool_name, "arguments": dict(arguments)}
    return hashlib.sha256(canonical_json(body, lenient=True).encode()).hexdigest()


# What an image costs counted as characters: the Messages API bills an image by its pixels (about 1,600
# tokens at most once it is scaled down), not by its base64 bytes, which would count a 2 MB screenshot as
# ~700k tokens and make compaction throw away every tool result to fit it.
IMAGE_CHARS = 1_600 * CHARS_PER_TOKEN


def _chars(value: Any) -> int:
    dumped = json.dumps(value, ensure_ascii=False, default=str)
    if '"image"' not in dumped:  # the common case: one C-speed scan, no walk
        return len(dumped)
    return len(dumped) - sum(max(0, n - IMAGE_CHARS) for n in _image_data_sizes(value))


def _image_data_sizes(value: Any) -> list[int]:
    """The length of each base64 image's data inside `value` (message content, JSON-shaped)."""
    if isinstance(value, Mapping):
        source = value.get("source")
        data = source.get("data") if isinstance(source, Mapping) else None
        if value.get("type") == "image" and isinstance(data, str):
            return [len(data)]
        return [n for v in value.values() for n in _image_data_sizes(v)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in _image_data_sizes(v)]
    return []


def estimate_tokens(value: Any) -> int:
    """About how many tokens `value` costs the model (JSON characters / 4)."""
    return _chars(value) // CHARS_PER_TOKEN


def text_of(content: Any) -> str:
    """The text blocks of one message's content, joined and stripped."""
    if isinstance(content, str):
        return content.strip()
    if not isinstance(content, Sequence):
        return ""
    parts = [str(b.get("text", "")) for b in content if isinstance(b, Mapping) and b.get("type") == "text"]
    return "\n".join(p for p in parts if p.strip()).strip()


def compact(messages: Sequence[Mapping[str, Any]], budget_tokens: int) -> tuple[list[dict[str, Any]], int]:
    """Fit the transcript into `budget_tokens` by replacing the oldest tool output with a short note.

    Only the content of tool_result blocks changes, so every tool_use keeps its tool_result and the API
    still accepts the history. The last user message (the question or the results the model is about to
    read) is never touched. Returns the new list and how many results were replaced; when the budget cannot
    be met this way the transcript is returned as compact as it can be.
    """
    out = [dict(m) for m in messages]
    chars = _chars(out)
    budget_chars = budget_tokens * CHARS_PER_TOKEN
    if chars <= budget_chars:
        return out, 0
    last_user = max((i for i, m in enumerate(out) if m.get("role") == "user"), default=len(out))
    dropped = 0
    for i in range(last_user):
        content = out[i].get("content")
        if out[i].get("role") != "user" or not isinstance(content, list):
            continue
        blocks: list[Any] = list(content)
        for j, block in enumerate(blocks):
            if chars <= budget_chars:
                break
            if not isinstance(block, Mapping) or block.get("type") != "tool_result":
                continue
            if block.get("content") == DROPPED_OUTPUT:
                continue
            chars -= _chars(block.get("content")) - _chars(DROPPED_OUTPUT)
            blocks[j] = {**block, "content": DROPPED_OUTPUT}
            dropped += 1
        out[i]["content"] = blocks
        if chars <= budget_chars:
            break
    return out, dropped


def elided_note(budget_tokens: int) -> str:
    return f"[earlier message elided: this conversation is kept under {budget_tokens:,} tokens per request]"


def elide_old_turns(
    messages: Sequence[Mapping[str, Any]], budget_tokens: int, cap_tokens: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """When dropping tool output was not enough (a long thread of words): the oldest messages' text becomes
    a note that states the cap, oldest first, until the transcript fits `budget_tokens`. The question being
    answered (the last user message) and the answer before it are never touched, and tool_use blocks stay
    so every tool_result keeps its pair. `cap_tokens` is the cap the note states (default the budget)."""
    out = [dict(m) for m in messages]
    budget_chars = budget_tokens * CHARS_PER_TOKEN
    chars = _chars(out)
    if chars <= budget_chars:
        return out, 0
    note = elided_note(cap_tokens or budget_tokens)
    # The question being answered: the last user message that is not tool results (a turn's later steps
    # end with results, the question stays further up).
    question = max((i for i, m in enumerate(out) if _is_question(m)), default=len(out))
    last_answer = max((i for i in range(question) if out[i].get("role") == "assistant"), default=question)
    elided = 0
    for i in range(last_answer):
        if chars <= budget_chars:
            break
        content = out[i].get("content")
        if isinstance(content, str):
            new: Any = note
        elif isinstance(content, list):
            new = [
                {**b, "text": note} if isinstance(b, Mapping) and b.get("type") == "text" else b
                for b in content
            ]
        else:
            continue
        if new == content:
            continue
        chars -= _chars(content) - _chars(new)
        out[i]["content"] = new
        elided += 1
    if chars > budget_chars:  # what is left of old turns still grows with the thread: drop whole turns
        out, gone = _drop_oldest_turns(out, budget_chars, last_answer, note)
        elided += gone
    return out, elided


def _is_question(message: Mapping[str, Any]) -> bool:
    content = message.get("content")
    results = isinstance(content, list) and any(
        isinstance(b, Mapping) and b.get("type") == "tool_result" for b in content
    )
    return message.get("role") == "user" and not results


def _drop_oldest_turns(
    out: list[dict[str, Any]], budget_chars: int, keep_from: int, note: str
) -> tuple[list[dict[str, Any]], int]:
    """Drop the oldest turns whole (from a question to the next question, so tool_use and tool_result
    stay paired), starting the transcript with a note saying how many messages were dropped."""
    starts = [i for i, m in enumerate(out) if 0 < i <= keep_from and _is_question(m)]
    cut = 0
    for start in starts:
        cut = start
        if _chars(out[start:]) + len(note) + 80 <= budget_chars:
            break
    if not cut:
        return out, 0
    told = {"role": "user", "content": f"{note} ({cut} earlier messages of this thread left out)"}
    return [told, *out[cut:]], cut


def tool_result(use_id: str, server: str, tool: str, text: str, ok: bool) -> dict[str, Any]:
    """A tool_result block; its text always sits inside the untrusted-data delimiter."""
    content = wrap_tool_output(server, tool, text)
    return {"type": "tool_result", "tool_use_id": use_id, "content": content, "is_error": not ok}


def cap_text(text: str, max_chars: int) -> tuple[str, bool]:
    """At most `max_chars` of `text`, saying how much was cut so neither model nor user is misled."""
    if len(text) <= max_chars:
        return text, False
    return text[:max_chars] + f"\n[output truncated: {max_chars} of {len(text)} characters shown]", True


def withhold(
    messages: Sequence[Mapping[str, Any]], private_tools: set[str], *, since: int, note: str
) -> list[dict[str, Any]]:
    """The transcript as a shared thread may keep it: from message `since` on (this turn), the results of
    calls to `private_tools` and the assistant's text (its plans too: agent.plan) are replaced by `note`,
    so nobody who asks later in the thread gets private data back through the model."""
    private_ids: set[str] = set()
    kept: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        content = message.get("content")
        if index < since or not isinstance(content, list):
            kept.append(dict(message))
            continue
        blocks: list[dict[str, Any]] = []
        for block in content:
            kind = block.get("type")
            if kind == "tool_use" and block.get("name") in private_tools:
                private_ids.add(str(block.get("id")))
                blocks.append(dict(block))
            elif kind == "tool_result" and str(block.get("tool_use_id")) in private_ids:
                blocks.append({**block, "content": note})
            elif kind == "text" and message.get("role") == "assistant":
                blocks.append({**block, "text": note})
            elif kind == "tool_use" and block.get("name") == PLAN_TOOL_NAME:
                blocks.append({**block, "input": {"withheld": note}})
            else:
                blocks.append(dict(block))
        kept.append({**message, "content": blocks})
    return kept


def withhold_results(
    messages: Sequence[Mapping[str, Any]], use_ids: set[str], note: str
) -> list[dict[str, Any]]:
    """The transcript with the result of each call in `use_ids`, wherever it stands, replaced by `note` (the
    outcome of a private server's approved action, kept from the thread's memory)."""

    def kept(block: Any) -> Any:
        answers = isinstance(block, Mapping) and block.get("type") == "tool_result"
        return {**block, "content": note} if answers and str(block.get("tool_use_id")) in use_ids else block

    return [
        {**m, "content": [kept(b) for b in content]}
        if m.get("role") == "user" and isinstance(content := m.get("content"), list)
        else dict(m)
        for m in messages
    ]


def withhold_servers(
    messages: Sequence[Mapping[str, Any]], may_see: Callable[[str], bool], note: Callable[[str], str]
) -> list[dict[str, Any]]:
    """The transcript as one person may be handed it: the output of every server `may_see` refuses (in tool
    results, the outcomes of approved actions among them) becomes `note(server)`. What the
    assistant said stays: those answers were posted where everyone in the thread could read them."""

    def scrub(content: Any) -> Any:
        if isinstance(content, str):
            return withhold_output(content, may_see, note)
        if not isinstance(content, list):
            return content
        blocks: list[Any] = []
        for block in content:
            if isinstance(block, Mapping) and block.get("type") == "text":
                blocks.append({**block, "text": withhold_output(str(block.get("text", "")), may_see, note)})
            elif isinstance(block, Mapping) and block.get("type") == "tool_result":
                blocks.append({**block, "content": scrub(block.get("content"))})
            else:
                blocks.append(block)
        return blocks

    return [
        {**m, "content": scrub(m.get("content"))} if m.get("role") == "user" else dict(m) for m in messages
    ]
