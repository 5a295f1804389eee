"""Block Kit builders: pure functions from values to Slack payloads (`Message`), validated by slack_sdk.

Limits honoured (Slack's documented ones, and the ones the fake Slack in `fixtures.slack` enforces):
50 blocks and 40,000 characters of fallback text per message, 3000 per section, 10 context elements,
and ~12,000 characters of cumulative block text per message (`msg_blocks_too_long`, undocumented; see
slackapi/bolt-js#2509). Long answers become several messages; nothing is silently cut. Button values only
ever carry ids, never text that came from a person, the model or a tool.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextActionsBlock,
    ContextBlock,
    FeedbackButtonObject,
    FeedbackButtonsElement,
    MarkdownTextObject,
    SectionBlock,
)

from bot.mrkdwn import escape, split_text
from bot.slack_text import Mrkdwn, trusted, untrusted

__all__ = [
    "CONNECT_ACTION_ID",
    "CONNECT_SERVER_ACTION_ID",
    "FEEDBACK_ACTION_ID",
    "RECONNECT_ACTION_ID",
    "STOP_ACTION_ID",
    "AnswerLayout",
    "Message",
    "ProgressLine",
    "answer_messages",
    "connect_prompt",
    "error_message",
    "feedback_actions",
    "parse_feedback_value",
    "progress_message",
    "reconnect_prompt",
    "server_connect_prompt",
    "stop_actions",
    "text_length",
    "working_message",
]

JSON = dict[str, Any]
FEEDBACK_ACTION_ID = "feedback"
STOP_ACTION_ID = "turn_stop"
CONNECT_ACTION_ID = "connect_account"
RECONNECT_ACTION_ID = "reconnect_account"
CONNECT_SERVER_ACTION_ID = "connect_server"
BLOCKS_TEXT_LIMIT = 12_000
TEXT_OBJECT_LIMIT = 3000
MAX_PROGRESS_LINES = 40
_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")
_PREVIEW_CHARS = 150


@dataclass(frozen=True)
class Message:
    """One chat.postMessage worth: `text` is the notification fallback, `blocks` what people see. Every
    builder here makes untrusted text safe itself (bot.slack_text.untrusted)."""

    text: Mrkdwn
    blocks: list[JSON]

    def as_kwargs(self) -> JSON:
        return {"text": self.text, "blocks": self.blocks}


@dataclass(frozen=True)
class AnswerLayout:
    """Messages to post, in order; `upload_full_text`: the caller also attaches the whole answer as a file."""

    messages: list[Message]
    upload_full_text: bool


@dataclass(frozen=True)
class ProgressLine:
    server_short: str
    tool: str
    state: Literal["running", "ok", "failed"]
    latency_ms: float | None = None
    detail: str | None = None  # what a running tool last reported of its progress (the server's words)


# ----- answers ---------------------------------------------------------------------------------------------


def answer_messages(
    answer: str,
    *,
    footer: str,
    feedback_id: str | None,
    already_safe: bool = False,
    overflow_threshold: int = 10,
    max_blocks: int = 50,
    section_limit: int = 3000,
    message_limit: int = 40_000,
    blocks_text_limit: int = BLOCKS_TEXT_LIMIT,
) -> AnswerLayout:
    """Every character of the answer, in as many messages as it takes; footer and 👍/👎 on the last one.

    Past `overflow_threshold` messages a thread becomes unreadable: then one message holds the start of the
    answer and a note, and `upload_full_text=True` tells the caller to attach the whole text as a file.
    """
    if max_blocks < 3 or section_limit > TEXT_OBJECT_LIMIT:
        raise ValueError("need room for a section, the footer and the feedback control")
    safe = trusted(answer) if already_safe else untrusted(answer)
    chunks = _chunks(safe, section_limit) or ["_(The answer was empty.)_"]
    trailer = _trailer(trusted(footer) if already_safe else untrusted(footer), feedback_id)
    # The fallback text counts towards the 40,000 as well; it is never longer than the preview.
    budget = min(blocks_text_limit, message_limit - _PREVIEW_CHARS - 20)
    if section_limit + text_length(trailer) > budget:
        raise ValueError("blocks_text_limit leaves no room for a full section next to the footer")
    messages = _pack([_section(c) for c in chunks], trailer, max_blocks, budget)
    if len(messages) <= overflow_threshold:
        return AnswerLayout(messages, upload_full_text=False)
    note = (
        f":page_facing_up: This answer is long ({len(safe):,} characters in {len(messages)} parts), so the "
        "full text is attached as a file in this thread. The start is shown above."
    )
    blocks = [_section(chunks[0]), _context(note), *trailer]
    return AnswerLayout([Message(_fallback(blocks, 1, 1), blocks)], upload_full_text=True)


def _pack(sections: list[JSON], trailer: list[JSON], max_blocks: int, budget: int) -> list[Message]:
    def fits(blocks: list[JSON]) -> bool:
        return len(blocks) <= max_blocks and text_length(blocks) <= budget

    groups: list[list[JSON]] = [[]]
    for section in sections:
        if groups[-1] and not fits([*groups[-1], section]):
            groups.append([])
        groups[-1].append(section)
    last = groups[-1]
    if not fits(last + trailer):
        # Earlier messages stay full: only the last section moves, and it fits beside the trailer (checked).
        groups[-1:] = [last[:-1], last[-1:]]
    groups[-1] = groups[-1] + trailer
    total = len(groups)
    return [Message(_fallback(g, i, total), g) for i, g in enumerate(groups, start=1)]


def parse_feedback_value(value: str) -> tuple[Literal["up", "down"], str] | None:
    """Read back what `answer_messages` put in a feedback button: the direction and the feedback id."""
    direction, _, feedback_id = value.partition(":")
    if direction not in ("up", "down") or not _ID.fullmatch(feedback_id):
        return None
    return ("up" if direction == "up" else "down"), feedback_id


def _chunks(safe: str, limit: int) -> list[str]:
    # Slack trims blank lines around a section anyway; a whitespace-only section is rejected outright.
    return [c.strip("\n") for c in split_text(safe, limit) if c.strip()]


def _section(text: str) -> JSON:
    # verbatim: Slack must not auto-link or resolve mentions in untrusted text; links were made explicit.
    # expand: long answers are read in full, not behind "see more".
    return SectionBlock(text=MarkdownTextObject(text=text, verbatim=True), expand=True).to_dict()


def _context(text: str) -> JSON:
    return ContextBlock(elements=[MarkdownTextObject(text=text, verbatim=True)]).to_dict()


def _trailer(footer: str, feedback_id: str | None) -> list[JSON]:
    blocks: list[JSON] = []
    if footer.strip():
        text = footer if len(footer) <= TEXT_OBJECT_LIMIT else footer[: TEXT_OBJECT_LIMIT - 1] + "…"
        blocks.append(_context(text))
    if feedback_id is not None:
        blocks.append(feedback_actions(feedback_id))
    return blocks


def feedback_actions(feedback_id: str, *, subject: Literal["answer", "result"] = "answer") -> JSON:
    """Slack's AI-app feedback control under an answer (`feedback_id` its turn's id) or a workflow run's
    result (the run's id); the clicked button's value says which way and for what (bot.feedback_listeners)."""
    feedback_id = _checked_id(feedback_id)
    element = FeedbackButtonsElement(
        action_id=FEEDBACK_ACTION_ID,
        positive_button=FeedbackButtonObject(
            text="👍", accessibility_label=f"This {subject} was helpful", value=f"up:{feedback_id}"
        ),
        negative_button=FeedbackButtonObject(
            text="👎", accessibility_label=f"This {subject} was not helpful", value=f"down:{feedback_id}"
        ),
    )
    return ContextActionsBlock(elements=[element]).to_dict()


def _fallback(blocks: list[JSON], index: int, total: int) -> Mrkdwn:
    """A short plain preview for notifications; the blocks carry the content (already made safe)."""
    first = next((b["text"]["text"] for b in blocks if b.get("type") == "section"), "")
    flat = _preview(str(first)) or "Answer"
    return trusted(flat if total == 1 else f"({index}/{total}) {flat}")


def _preview(safe: str) -> str:
    flat = " ".join(re.sub(r"```|[*_~`]", "", safe).split())
    if len(flat) > _PREVIEW_CHARS:
        cut = flat.rfind(" ", 0, _PREVIEW_CHARS)
        flat = flat[: cut if cut > 0 else _PREVIEW_CHARS]
        flat = re.sub(r"<[^>]*$|&[a-z]*$", "", flat) + "…"  # no half link or half entity
    return flat


def text_length(node: object) -> int:
    """Cumulative text the way Slack counts it for msg_blocks_too_long: every "text" string, nested."""
    if isinstance(node, dict):
        return sum(len(v) if k == "text" and isinstance(v, str) else text_length(v) for k, v in node.items())
    if isinstance(node, list):
        return sum(text_length(v) for v in node)
    return 0


def _checked_id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError("button values carry ids only")
    return value


# ----- status, prompts, errors -----------------------------------------------------------------------------

_STATE_EMOJI = {"running": ":hourglass_flowing_sand:", "ok": ":white_check_mark:", "failed": ":x:"}


def working_message(text: str = "On it…", *, stop_id: str | None = None) -> Message:
    safe = untrusted(text)
    section = _section(f":hourglass_flowing_sand: {safe}"[:TEXT_OBJECT_LIMIT])
    return Message(trusted(_preview(safe) or "On it…"), [section, *_stop(stop_id)])


def stop_actions(turn_id: str) -> JSON:
    """The running turn's Stop button; its value is the turn's id, every decision is made server-side."""
    button = {
        "type": "button",
        "action_id": STOP_ACTION_ID,
        "text": {"type": "plain_text", "text": "Stop"},
        "style": "danger",
        "value": turn_id,
    }
    return {"type": "actions", "block_id": "turn_stop", "elements": [button]}


def _stop(stop_id: str | None) -> list[JSON]:
    return [stop_actions(stop_id)] if stop_id and _ID.fullmatch(stop_id) else []


def progress_message(
    lines: Sequence[ProgressLine], *, stop_id: str | None = None, head: Sequence[Mrkdwn] = ()
) -> Message:
    """One compact line per tool call, newest last, at most 40 lines plus a count of the rest; `head`
    (the model's plan, already safe: bot.plan_display) above them."""
    shown = [*head, *(_progress_line(line) for line in lines[:MAX_PROGRESS_LINES])]
    if len(lines) > MAX_PROGRESS_LINES:
        shown.append(f"…and {len(lines) - MAX_PROGRESS_LINES} more")
    body = "\n".join(shown) or ":hourglass_flowing_sand: Working…"
    blocks = [*(_section(c) for c in _chunks(body, TEXT_OBJECT_LIMIT)), *_stop(stop_id)]
    done = sum(1 for line in lines if line.state != "running")
    return Message(trusted(f"Working: {done} of {len(lines)} tool calls finished"), blocks)


def _progress_line(line: ProgressLine) -> str:
    # Names come from MCP servers, so they are escaped and kept short enough for 40 lines to stay compact.
    server, tool = (
        untrusted(_short(line.server_short), markdown=False),
        untrusted(_short(line.tool), markdown=False),
    )
    text = f"{_STATE_EMOJI[line.state]} {server} · `{tool}`"
    if line.latency_ms is not None and line.state != "running":
        ms = line.latency_ms
        text += f" ({ms:.0f} ms)" if ms < 10_000 else f" ({ms / 1000:.1f} s)"
    if line.detail and line.state == "running":
        text += f" — {untrusted(_short(line.detail, 120), markdown=False)}"
    return text


def _short(name: str, most: int = 60) -> str:
    name = name.replace("`", "'").replace("\n", " ")
    return name if len(name) <= most else name[: most - 1] + "…"


def connect_prompt(url: str, *, reason: str) -> Message:
    """Ephemeral: why the person must link their account, and a button that starts it."""
    text = (
        "*Connect your account to continue*\n"
        f"{untrusted(reason)}\n"
        "I act with your own company identity, so I can only see and do what you can. "
        "Once you've connected, I'll answer your waiting request — no need to ask again."
    )
    return _prompt(text, "Connect your account", url, CONNECT_ACTION_ID, "Connect your account to continue")


def reconnect_prompt(url: str, *, why: str) -> Message:
    text = (
        "*Please reconnect your account*\n"
        f"{untrusted(why)}\n"
        "I act with your own company identity, and the link to it needs renewing before I can continue."
    )
    return _prompt(text, "Reconnect your account", url, RECONNECT_ACTION_ID, "Please reconnect your account")


def server_connect_prompt(url: str, *, short_name: str, step_up: bool) -> Message:
    """Ephemeral: a server with its own sign-in that the person has yet to connect (or grant more access
    to), and a "Connect <server>" button. `short_name` is the registry's: shown as code, never as mrkdwn."""
    name = escape(_short(short_name, 40))
    what = f"grant `{name}` more access" if step_up else f"connect your account at `{name}`"
    title = f"Grant {name} more access to continue" if step_up else f"Connect {name} to continue"
    text = (
        f"*{title}*\n"
        f"Your question needs `{name}`, which has its own sign-in: {what} once, and I'll use its tools as "
        "you there (and only there). Once you've connected, I'll answer your waiting request — no need to "
        "ask again."
    )
    label = f"Connect {_short(short_name, 40)}"[:75]  # plain text: Slack shows it as is
    return _prompt(text, label, url, CONNECT_SERVER_ACTION_ID, title)


def _prompt(text: str, label: str, url: str, action_id: str, fallback: str) -> Message:
    if not re.fullmatch(r"https?://\S+", url):
        raise ValueError("the connect link must be an http(s) URL")
    section = _section(text[:TEXT_OBJECT_LIMIT])
    button = ButtonElement(text=label, url=url, action_id=action_id, style="primary")
    return Message(trusted(fallback), [section, ActionsBlock(elements=[button]).to_dict()])


def error_message(text: str) -> Message:
    """A visible failure. Up to 12,000 characters are shown; any more is said, not silently dropped.
    `text` is untrusted unless it is `Mrkdwn` (our wording, with its mentions and links)."""
    safe = untrusted(text)
    chunks = _chunks(f":warning: {safe}", TEXT_OBJECT_LIMIT)
    shown: list[str] = []
    for chunk in chunks:
        if sum(map(len, shown)) + len(chunk) > BLOCKS_TEXT_LIMIT - 200:
            break
        shown.append(chunk)
    blocks = [_section(c) for c in shown]
    if len(shown) < len(chunks):
        hidden = sum(map(len, chunks[len(shown) :]))
        more = f"…{hidden:,} more characters of this error are not shown."
        blocks.append(_context(more))
    return Message(_fallback(blocks, 1, 1), blocks)
