"""What people are told about an approval, as Slack mrkdwn (pure: values in, text out).

Written for an approver reading an ephemeral reply on a phone: one sentence that says why the click changed
nothing and what, if anything, to do next. Times are Slack date tokens, so each reader sees their own time
zone; the text after `|` is what older clients show. Group names come from the registry, so they are
escaped like any other text that is not ours.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from enum import StrEnum

from approvals.approval import Approval, ApprovalStatus, VoteResult
from bot.mrkdwn import escape

__all__ = [
    "ALREADY_DECIDED",
    "NOT_FOUND",
    "NOT_FOUND_ON_CARD",
    "OWN_REQUEST",
    "RECORDED_LATER",
    "RefusalText",
    "counted_text",
    "mention",
    "mentions",
    "progress_text",
    "refusal_text",
    "slack_time",
]

RECORDED_LATER = "Your approval is recorded. It will run as soon as my queue is reachable again."
OWN_REQUEST = "You asked for this; someone who may approve it has to decide."
NOT_FOUND = "I can't find that request."
NOT_FOUND_ON_CARD = "I can't find that request; it may have been made on another card."
ALREADY_DECIDED = "This request has already been decided."


class RefusalText(StrEnum):
    """One template per reason a click changes nothing (fields filled by `refusal_text`)."""

    OWN_REQUEST = "You asked for this, so someone else has to approve it."
    NOT_ELIGIBLE = "Only members of {groups} can approve this ({quorum} needed)."
    ALREADY_APPROVED = "Already approved by {who} at {when}."
    ALREADY_REJECTED = "Already rejected by {who} at {when}."
    EXPIRED = "This request expired at {when}; ask again if it is still needed."
    DUPLICATE = "You've already approved this; {count} of {quorum} approvals so far."
    NOT_LINKED = "Connect your account first so I can check your groups."
    NOT_REQUESTER = "Only the person who asked can withdraw this request."
    ALREADY_WITHDRAWN = "Already withdrawn by {who} at {when}."


def refusal_text(result: VoteResult | None, *, not_linked: bool = False) -> str:
    """Why this click was refused. `not_linked`: the clicker has no linked identity, so the store was not
    asked and there is no result (pass None)."""
    if not_linked:
        return RefusalText.NOT_LINKED.value
    if result is None:
        raise ValueError("a refusal needs the vote's result unless the clicker is not linked")
    a = result.approval
    if result.kind == "own_request":
        return RefusalText.OWN_REQUEST.value
    if result.kind == "not_eligible":
        return RefusalText.NOT_ELIGIBLE.format(groups=_groups(a.approver_groups), quorum=a.quorum)
    if result.kind == "not_requester":
        return RefusalText.NOT_REQUESTER.value
    if result.kind == "duplicate":
        return RefusalText.DUPLICATE.format(count=result.count, quorum=a.quorum)
    if result.kind == "expired" or (result.kind == "already_decided" and a.status is ApprovalStatus.EXPIRED):
        return RefusalText.EXPIRED.format(when=slack_time(a.expires_at))
    if result.kind == "already_decided":
        template = {
            ApprovalStatus.REJECTED: RefusalText.ALREADY_REJECTED,
            ApprovalStatus.WITHDRAWN: RefusalText.ALREADY_WITHDRAWN,
        }.get(a.status, RefusalText.ALREADY_APPROVED)
        return template.format(who=mentions(a.decided_by), when=slack_time(a.decided_at or a.created_at))
    raise ValueError(f"{result.kind!r} is not a refusal")


def counted_text(approval: Approval) -> str:
    """The reply to an approval that counted towards the quorum but did not complete it."""
    return f"Your approval is counted. {progress_text(approval)}"


def progress_text(approval: Approval) -> str:
    """Where the request stands, in one or two sentences (the card's status line)."""
    a = approval
    if a.status is ApprovalStatus.PENDING:
        needed = a.quorum - a.count
        if not a.approvals:
            return f"Waiting for {_approvals(a.quorum)} from {_groups(a.approver_groups)}."
        so_far = f"{a.count} of {a.quorum} approvals so far ({mentions(tuple(v.user for v in a.approvals))})"
        return f"{so_far}; waiting for {needed} more from {_groups(a.approver_groups)}."
    if a.status is ApprovalStatus.REJECTED:
        return f"Rejected by {mentions(a.decided_by)} at {slack_time(a.decided_at or a.created_at)}."
    if a.status is ApprovalStatus.WITHDRAWN:
        when = slack_time(a.decided_at or a.created_at)
        return f"Withdrawn by the requester ({mentions(a.decided_by)}) at {when}; nothing ran."
    if a.status is ApprovalStatus.EXPIRED:
        return f"Expired at {slack_time(a.expires_at)} with {a.count} of {_approvals(a.quorum)}; nothing ran."
    approved = f"Approved by {mentions(a.decided_by)} at {slack_time(a.decided_at or a.created_at)}"
    if a.status is ApprovalStatus.APPROVED:
        return f"{approved}; about to run."
    if a.status is ApprovalStatus.RUNNING:
        return f"{approved}; running since {slack_time(a.started_at or a.created_at)}."
    finished = slack_time(a.finished_at or a.created_at)
    if a.status is ApprovalStatus.SUCCEEDED:
        return f"{approved}; succeeded at {finished}."
    if a.status is ApprovalStatus.FAILED:
        return f"{approved}; failed at {finished}."
    # OUTCOME_UNKNOWN: the call may or may not have happened, so nobody should assume either way.
    return (
        f"{approved}; the outcome is unknown: the run stopped without reporting back "
        f"(noticed at {finished}). It will not be re-run on its own; check the system before asking again."
    )


def slack_time(epoch: float, fmt: str = "{time}") -> str:
    """A Slack date token: shown in the reader's time zone, with a UTC fallback for old clients."""
    fallback = time.strftime("%Y-%m-%d %H:%M UTC" if "date" in fmt else "%H:%M UTC", time.gmtime(epoch))
    return f"<!date^{int(epoch)}^{fmt}|{fallback}>"


def mention(user: str) -> str:
    """`<@U…>` for a Slack user id; anything else is shown as escaped text, never as a control sequence."""
    if user[:1] in ("U", "W") and user.isalnum() and user.isupper() and len(user) <= 32:
        return f"<@{user}>"
    return escape(user)


def mentions(users: Sequence[str]) -> str:
    """People as a phrase: "<@U1>", "<@U1> and <@U2>", "<@U1>, <@U2> and <@U3>" ("nobody" for none)."""
    shown = [mention(u) for u in users] or ["nobody"]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _groups(groups: Sequence[str]) -> str:
    names = [escape(g) for g in groups] or ["nobody"]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _approvals(n: int) -> str:
    return "1 approval" if n == 1 else f"{n} approvals"
