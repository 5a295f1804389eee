"""Approval cards and the reject modal: pure Block Kit builders (SPEC §7, ACCEPTANCE 13, 24–29).

A card shows everything an approver needs to decide from a phone: who asked, which server (and who owns it),
which tool, the agent's stated reason (labelled as the model's words), every argument, who may approve and
how many are needed, when it expires, and short digests that tie the card to the stored record. Text from
the model, an approver or a server (reason, reject reason, outcome) is made safe by bot.slack_text.untrusted;
the outcome of a call to a `private_data` server is never drawn: the card says it was sent privately.

Arguments are never silently cut. A value too long for a card (over 2,500 characters, or more than the card
can hold next to the other facts) shows its first 200 characters and its length, and `arguments_file` holds
the whole arguments as JSON for the caller to attach in the thread. The argument layout depends only on facts
fixed at creation, so a later `decided_card` shortens exactly the same values as the card that had the file.
Button values carry the approval id only (Habit 5); the click is judged from server-side state.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    InputBlock,
    MarkdownTextObject,
    PlainTextInputElement,
    SectionBlock,
)
from slack_sdk.models.views import View

from approvals.policy import FINAL_OUTCOMES
from approvals.store import Approval, ApprovalStatus
from bot.approval_text import mention, progress_text, slack_time
from bot.blocks import BLOCKS_TEXT_LIMIT, TEXT_OBJECT_LIMIT, Message, text_length
from bot.mrkdwn import escape, split_text
from bot.slack_text import untrusted

__all__ = [
    "APPROVE_ACTION_ID",
    "REASON_ACTION_ID",
    "REASON_BLOCK_ID",
    "REJECT_ACTION_ID",
    "REJECT_CALLBACK_ID",
    "REJECT_MODAL_CALLBACK_ID",
    "WITHDRAW_ACTION_ID",
    "CardLayout",
    "approval_card",
    "decided_card",
    "reject_modal",
]

JSON = dict[str, Any]
APPROVE_ACTION_ID = "approval_approve"
REJECT_ACTION_ID = "approval_reject"
WITHDRAW_ACTION_ID = "approval_withdraw"  # on the thread's card; only the requester's click counts
REJECT_MODAL_CALLBACK_ID = "approval_reject_modal"
REJECT_CALLBACK_ID = REJECT_MODAL_CALLBACK_ID  # the short name the listeners use
REASON_BLOCK_ID = "reason"
REASON_ACTION_ID = "reason_input"
REASON_MAX_CHARS = 1000
MAX_BLOCKS = 50
LONG_VALUE = 2500  # longer values are always shortened, whatever room is left
PREVIEW_CHARS = 200
LINE_LIMIT = TEXT_OBJECT_LIMIT - 100  # one argument line, escaped, with room for the fences around it
# Room kept for what changes after posting (status word, status line, reject reason or outcome detail,
# buttons); the arguments get what the fixed facts leave, so every version of a card lays them out alike.
STATUS_RESERVE = 2800
_APPROVAL_ID = re.compile(r"a[0-9a-f]{23}")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_HEADS = {
    ApprovalStatus.PENDING: (":raising_hand:", "Approval needed"),
    ApprovalStatus.APPROVED: (":white_check_mark:", "Approved"),
    ApprovalStatus.RUNNING: (":hourglass_flowing_sand:", "Approved, running"),
    ApprovalStatus.SUCCEEDED: (":white_check_mark:", "Approved, succeeded"),
    ApprovalStatus.FAILED: (":x:", "Approved, failed"),
    ApprovalStatus.OUTCOME_UNKNOWN: (":warning:", "Approved, outcome unknown"),
    ApprovalStatus.REJECTED: (":no_entry:", "Rejected"),
    ApprovalStatus.EXPIRED: (":hourglass:", "Expired"),
    ApprovalStatus.WITHDRAWN: (":leftwards_arrow_with_hook:", "Withdrawn"),
}


@dataclass(frozen=True)
class CardLayout:
    """The card, and (when some value did not fit) the full arguments as JSON to attach in the thread."""

    message: Message
    arguments_file: str | None


def approval_card(
    approval: Approval,
    *,
    now: float,
    private: bool = False,
    withdraw: bool = False,
    notes: tuple[str, ...] = (),
) -> CardLayout:
    """The card with live Approve/Reject buttons, or, once the request is closed, the decided card.
    `private`: the server is marked `private_data`, so its outcome goes to the requester alone.
    `withdraw`: also a Withdraw button (the thread's card, where the requester is). `notes`: our own mrkdwn
    lines shown above the buttons (where the request was made, a reminder)."""
    shown = _as_of(approval, now)
    args_blocks, complete = _argument_blocks(approval)
    live = shown.status is ApprovalStatus.PENDING
    blocks = [*_facts(shown), *args_blocks, *_status(shown, private), _digests(approval)]
    if live:
        blocks += [ContextBlock(elements=[_md(n)]).to_dict() for n in notes]
        blocks.append(_buttons(approval.id, withdraw=withdraw))
    return CardLayout(_message(shown, blocks), None if complete else _pretty(approval.arguments))


def decided_card(approval: Approval, *, now: float, private: bool = False) -> Message:
    """The same facts without buttons, plus who decided, when, and the outcome (or, when `private`, that
    the outcome was sent to the requester alone)."""
    shown = _as_of(approval, now)
    if shown.status is ApprovalStatus.PENDING:
        raise ValueError("a pending approval is shown with approval_card")
    args_blocks, _ = _argument_blocks(approval)
    return _message(shown, [*_facts(shown), *args_blocks, *_status(shown, private), _digests(approval)])


def reject_modal(approval_id: str) -> JSON:
    """Asks the rejecter why; the reason reaches the requester, the audit and the model (ACCEPTANCE 28)."""
    view = View(
        type="modal",
        callback_id=REJECT_MODAL_CALLBACK_ID,
        private_metadata=_checked_id(approval_id),
        title="Reject request",
        submit="Reject",
        close="Cancel",
        blocks=[
            InputBlock(
                block_id=REASON_BLOCK_ID,
                label="Why are you rejecting this?",
                hint="The requester and the assistant will see this reason.",
                optional=False,
                element=PlainTextInputElement(
                    action_id=REASON_ACTION_ID, multiline=True, max_length=REASON_MAX_CHARS
                ),
            )
        ],
    )
    view.validate_json()
    return view.to_dict()


# ----- the parts of a card ---------------------------------------------------------------------------------


def _as_of(approval: Approval, now: float) -> Approval:
    # Until the sweeper gets to it, a request past its expiry still reads PENDING in the store; the card
    # must not offer buttons that would only be refused.
    if approval.status is ApprovalStatus.PENDING and now >= approval.expires_at:
        return dataclasses.replace(approval, status=ApprovalStatus.EXPIRED)
    return approval


def _facts(a: Approval) -> list[JSON]:
    """Everything fixed when the request was made (the headline's status word aside)."""
    tool, server = _code(a.tool), _name(a.short_name or a.server)
    emoji, word = _HEADS[a.status]
    head = f"{emoji} *{word}*: {tool} on *{server}*"
    if a.source == "workflow":
        origin = f"workflow run {_code(a.workflow_run_id)}, step {_code(a.step_id)}"
    else:
        origin = "the assistant" + (f" ({_name(a.model_name)})" if a.model_name else "")
    fields = [
        f"*Requested by*\n{mention(a.requester)}\n{_name(a.requester_email)}",
        f"*Server*\n{_code(a.server)}\nowner: {_name(a.owner_team) or 'unknown'}",
        f"*Tool*\n{tool}",
        f"*Who can approve*\n{_groups(a.approver_groups)} · {a.quorum} needed",
        f"*Expires*\n{slack_time(a.expires_at, '{date_short_pretty} {time}')}",
        f"*Proposed by*\n{origin}",
    ]
    if a.identity == "service":  # approvers must know the call does not carry the requester's own rights
        fields.append("*Runs as*\nthe service identity (the bot's own credentials), not the requester")
    label = "*Reason given by the assistant* (its own words; check the arguments)"
    if a.source == "workflow":
        label = "*Reason*"
    reason = _clipped(untrusted(a.reason), 1500) if a.reason.strip() else "_(no reason given)_"
    if a.read_before:
        read = ", ".join(_code(name.strip()) for name in a.read_before.split(",")[:10])
        reason += f"\n:warning: Proposed after reading tool output (untrusted data) from {read}."
    return [
        SectionBlock(text=_md(head), fields=[MarkdownTextObject(text=f) for f in fields]).to_dict(),
        _section(f"{label}\n{reason}"),
    ]


def _status(a: Approval, private: bool) -> list[JSON]:
    blocks = [_section(_clipped(progress_text(a), 1000))]
    if a.status is ApprovalStatus.REJECTED:
        why = _clipped(untrusted(a.reject_reason), 1200) if a.reject_reason.strip() else "_(none given)_"
        blocks.append(_section(f"*Reason for rejecting:* {why}"))
    elif private and a.status in FINAL_OUTCOMES and a.outcome_source != "bot":
        sent = f"*Result:* sent privately to {mention(a.requester)}: this server's data is private."
        blocks.append(_section(sent))
    elif a.outcome_detail.strip():
        blocks.append(_section(f"*Details:* {_clipped(untrusted(a.outcome_detail), 1200)}"))
    return blocks


def _digests(a: Approval) -> JSON:
    text = (
        f"Approval {_code(a.id)} · arguments sha256 {_code(a.args_sha256[:12])}"
        f" · tool fingerprint {_code(a.fingerprint[:12])}"
    )
    return ContextBlock(elements=[_md(text)]).to_dict()


def _buttons(approval_id: str, *, withdraw: bool = False) -> JSON:
    value = _checked_id(approval_id)
    approve = ButtonElement(text="Approve", action_id=APPROVE_ACTION_ID, value=value, style="primary")
    reject = ButtonElement(text="Reject", action_id=REJECT_ACTION_ID, value=value, style="danger")
    elements = [approve, reject]
    if withdraw:
        elements.append(ButtonElement(text="Withdraw", action_id=WITHDRAW_ACTION_ID, value=value))
    return ActionsBlock(block_id="approval_actions", elements=elements).to_dict()


def _message(a: Approval, blocks: list[JSON]) -> Message:
    # The notification text is plain: no mentions or date tokens, which would ping or render oddly there.
    where = f"{a.tool[:80]} on {(a.short_name or a.server)[:80]}"
    text = f"{_HEADS[a.status][1]}: {where}, requested by {a.requester_email[:80]}"
    total = text_length(blocks)
    if len(blocks) > MAX_BLOCKS or total > BLOCKS_TEXT_LIMIT:
        raise RuntimeError(f"bug: card layout exceeded Slack's limits ({len(blocks)} blocks, {total} chars)")
    return Message(untrusted(text, markdown=False), blocks)


# ----- arguments -------------------------------------------------------------------------------------------


@dataclass
class _Row:
    key: str  # as shown (plain or JSON-quoted), not yet escaped for Slack
    value: str  # JSON, invisible characters spelled out
    size: int  # the value's length as people think of it: characters of a string, else of its JSON
    short: bool = False


def _argument_blocks(a: Approval) -> tuple[list[JSON], bool]:
    """Sections listing every argument, and whether all values are shown in full."""
    fixed = [*_facts(dataclasses.replace(a, status=ApprovalStatus.PENDING)), _digests(a)]
    budget = BLOCKS_TEXT_LIMIT - text_length(fixed) - STATUS_RESERVE
    most = MAX_BLOCKS - len(fixed) - 4  # status, detail, buttons, and one spare
    rows = [_row(k, v) for k, v in sorted(a.arguments.items())]
    for row in rows:
        row.short = row.short or row.size > LONG_VALUE or len(escape(_line(row))) > LINE_LIMIT
    blocks = _pack(rows, len(rows))

    def fits(candidate: list[JSON]) -> bool:
        return len(candidate) <= most and text_length(candidate) <= budget

    while not fits(blocks):
        longest = max(
            (r for r in rows if not r.short and len(r.value) > PREVIEW_CHARS),
            key=lambda r: len(escape(r.value)),
            default=None,
        )
        if longest is None:
            break
        longest.short = True
        blocks = _pack(rows, len(rows))
    listed = len(rows)
    while not fits(blocks) and listed > 0:
        # More keys than a card can hold: say how many are left out; the file has all of them.
        listed -= max(1, listed // 10)
        blocks = _pack(rows, listed)
    return blocks, listed == len(rows) and not any(r.short for r in rows)


def _row(key: str, value: Any) -> _Row:
    shown_key = key if _PLAIN_KEY.fullmatch(key) else _spell_out(json.dumps(key, ensure_ascii=False))
    cut_key = len(shown_key) > PREVIEW_CHARS
    if cut_key:
        shown_key = shown_key[:PREVIEW_CHARS] + f"… ({len(key):,}-character key)"
    text = _spell_out(json.dumps(value, ensure_ascii=False, sort_keys=True))
    # A cut key can only be read in full in the file, so its value is treated as shortened too.
    return _Row(shown_key, text, len(value) if isinstance(value, str) else len(text), short=cut_key)


def _line(row: _Row) -> str:
    if not row.short:
        return f"{row.key}: {row.value}"
    return f"{row.key}: {row.value[:PREVIEW_CHARS]}… ({row.size:,} chars; full value in the attached file)"


def _pack(rows: list[_Row], listed: int) -> list[JSON]:
    title = f"*Arguments* ({len(rows)})" if rows else "*Arguments:* none"
    lines = [escape(_line(r)) for r in rows[:listed]]
    if listed < len(rows):
        lines.append(f"…and {len(rows) - listed} more arguments: all of them are in the attached file")
    texts: list[str] = [title]
    for line in lines:
        if texts[-1].endswith("```") and len(texts[-1]) + len(line) + 1 <= TEXT_OBJECT_LIMIT:
            texts[-1] = texts[-1][:-3] + line + "\n```"
        else:
            texts.append(f"```\n{line}\n```")
    if len(texts) > 1 and len(texts[0]) + len(texts[1]) + 1 <= TEXT_OBJECT_LIMIT:
        texts[:2] = [texts[0] + "\n" + texts[1]]
    return [_section(t) for t in texts]


def _spell_out(text: str) -> str:
    """Make every character visible: invisible and control characters (and the backtick, which would end
    the code block) become JSON escapes, so a value cannot hide text from the approver."""
    out = []
    for ch in text:
        if ch == "`" or unicodedata.category(ch) in _INVISIBLE:
            code = ord(ch)
            if code > 0xFFFF:
                code -= 0x10000
                out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
            else:
                out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def _pretty(arguments: Mapping[str, Any]) -> str:
    return json.dumps(arguments, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ----- small helpers ---------------------------------------------------------------------------------------


def _md(text: str) -> MarkdownTextObject:
    # verbatim: nothing in a card is auto-linked or resolved except what we wrote as <…> ourselves.
    return MarkdownTextObject(text=text, verbatim=True)


def _section(text: str) -> JSON:
    return SectionBlock(text=_md(text), expand=True).to_dict()


def _name(text: str, most: int = 80) -> str:
    """A short name from the registry or a person: cut to `most`, one line, escaped."""
    flat = " ".join(text.split())
    return untrusted(flat if len(flat) <= most else flat[: most - 1] + "…", markdown=False)


def _code(text: str) -> str:
    return "`" + _name(text.replace("`", "'")) + "`" if text else "_(none)_"


def _groups(groups: tuple[str, ...]) -> str:
    # Bounded so the field stays under Slack's 2,000 characters even when every character needs escaping.
    names = [_name(g, 40) for g in groups[:8]]
    more = f" and {len(groups) - 8} more" if len(groups) > 8 else ""
    return " or ".join(names) + more if names else "nobody"


def _clipped(safe: str, most: int) -> str:
    """Safe mrkdwn cut at a boundary split_text accepts, saying how much is not shown."""
    if len(safe) <= most:
        return safe
    head = split_text(safe, most - 60)[0]
    return f"{head} … ({len(safe) - len(head):,} more characters not shown)"


def _checked_id(approval_id: str) -> str:
    if not _APPROVAL_ID.fullmatch(approval_id):
        raise ValueError("button values and modal metadata carry approval ids only")
    return approval_id
