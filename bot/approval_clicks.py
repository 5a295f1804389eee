"""Approve, Reject and Withdraw clicks in Slack words (SPEC §6 "Who may approve", §7): the approval service
decides from server-side state (approvals.service), this says to the clicker what came of it.

The texts are ephemeral replies to one person: empty when the card itself shows what happened.
"""

from __future__ import annotations

from approvals.service import ApprovalService, Click
from bot.approval_text import (
    ALREADY_DECIDED,
    NOT_FOUND,
    NOT_FOUND_ON_CARD,
    OWN_REQUEST,
    RECORDED_LATER,
    counted_text,
    refusal_text,
)
from flows.linking import Linking

__all__ = ["ApprovalClicks"]

_CANNOT_REJECT = {"unknown": NOT_FOUND, "decided": ALREADY_DECIDED, "own_request": OWN_REQUEST}


class ApprovalClicks:
    def __init__(self, service: ApprovalService, links: Linking) -> None:
        self.service = service
        self._links = links

    async def vote(self, approval_id: str, *, user: str, channel: str, message_ts: str) -> str:
        """An Approve click on the card at (`channel`, `message_ts`); the reply for the clicker."""
        click = await self.service.vote(approval_id, user=user, channel=channel, message_ts=message_ts)
        if click.approval is None:
            return NOT_FOUND_ON_CARD
        if click.vote is None:
            url = await self._links.offer(click.approval.team, user)
            return f"{refusal_text(None, not_linked=True)} <{url}|Connect your account>"
        kind = click.vote.kind
        if not click.followed_up:
            return RECORDED_LATER if kind == "approved" else ""
        if kind == "approved":
            return ""
        if kind == "counted":
            return counted_text(click.vote.approval)
        return refusal_text(click.vote)

    async def reject(self, approval_id: str, *, user: str, reason: str) -> str:
        """A submitted reason modal; the reply for the clicker."""
        return _rejected(await self.service.reject(approval_id, user=user, reason=reason))

    async def withdraw(self, approval_id: str, *, user: str) -> str:
        """A Withdraw click; the reply for the clicker (empty when every card now shows it)."""
        click = await self.service.withdraw(approval_id, user=user)
        if click.approval is None or click.vote is None:
            return NOT_FOUND
        return "" if click.vote.kind == "withdrawn" else refusal_text(click.vote)

    async def may_reject(self, approval_id: str, *, user: str) -> str | None:
        """Why this person cannot reject, before asking them for a reason (None: they may try)."""
        block = await self.service.may_reject(approval_id, user=user)
        return None if block is None else _CANNOT_REJECT[block]


def _rejected(click: Click) -> str:
    if click.approval is None:
        return NOT_FOUND
    if click.vote is None:
        return refusal_text(None, not_linked=True)
    return "" if click.vote.kind == "rejected" else refusal_text(click.vote)
