"""The approval card pushed to the people who can give it (SPEC §7, issue 18): a DM to each linked person who
may approve (one per person per request, updated in place afterwards), the server's or tool's
`approvals_channel`, a reminder at half the TTL, the `escalation_channel` late, and, when nobody eligible is
linked, the thread told at once whom to ask.

Everything goes through the one Poster (Slack's rate limits, exactly-once posts by marker). "At most one DM
per person per request" is a Redis marker per (request, person's sub) set before posting, so a retried job
or a second worker never sends another. Each copy is recorded as one of the request's cards, so the click
on it is accepted and the decision redraws it (bot.approval_notices.show_decision).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from approvals.approval import Approval
from approvals.store import ApprovalStore
from bot import cards
from bot.approval_text import progress_text, slack_time
from bot.blocks import Message
from bot.poster import Poster, PostError
from bot.slack_text import Mrkdwn, code, link, ours, trusted, untrusted
from mcp_clients.tokens import Identity
from registry_cache.snapshot import RegistryUnavailable, SharedSnapshot
from registry_cache.view import private_data

__all__ = ["ApproverNotices", "Places", "is_dm"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Places:
    """Where the registry says this request's cards also go, and whom to ask about its server."""

    approvals_channel: str = ""
    escalation_channel: str = ""
    owner_team: str = ""
    support_channel: str = ""


def is_dm(channel: str) -> bool:
    return channel.startswith("D")  # Slack's direct-message conversation ids


def channel_ref(channel: str) -> Mrkdwn:
    """A channel as the registry names it: a link for a channel id, else its name as plain text."""
    bare = channel.lstrip("#")
    if bare[:1] in ("C", "G") and bare.isalnum() and bare.isupper():
        return trusted(f"<#{bare}>")
    return untrusted(channel, markdown=False)


class ApproverNotices:
    def __init__(self, poster: Poster, store: ApprovalStore, registry: SharedSnapshot) -> None:
        self._poster = poster
        self._store = store
        self._registry = registry

    async def places(self, approval: Approval) -> Places:
        try:
            view = await self._registry.view()
        except RegistryUnavailable:
            return Places(owner_team=approval.owner_team)
        entry = view.server(approval.server)
        if entry is None:
            return Places(owner_team=approval.owner_team)
        gov = entry.governance
        tool = gov.tools.get(approval.tool)
        return Places(
            approvals_channel=(tool.approvals_channel if tool else None) or gov.approvals_channel,
            escalation_channel=(tool.escalation_channel if tool else None) or gov.escalation_channel,
            owner_team=gov.owner_team or approval.owner_team,
            support_channel=gov.support_channel,
        )

    async def where_asked(self, approval: Approval) -> str:
        """A line for the copies away from the thread: a link to where the request was made."""
        thread_card = next((c for c in approval.cards if c.channel == approval.channel), None)
        url = await self._poster.permalink(
            approval.channel, thread_card.ts if thread_card else approval.thread_ts
        )
        where = link(url, "in this thread") if url and url.startswith("http") else trusted("in a thread")
        return ours("Requested {where}. You get this because you may approve it.", where=where)

    async def show_to_approvers(
        self, approval: Approval, approvers: Sequence[Identity], *, skip: Sequence[str] = ()
    ) -> None:
        """A DM to each approver (once per person), and the card in the `approvals_channel` unless it is one
        of `skip` (the thread's channel, the mirror) where the card already is."""
        fresh = await self._store.get(approval.id) or approval  # with the thread card's place
        private = await self.private(approval)
        dm = cards.approval_card(
            fresh, now=time.time(), private=private, notes=(await self.where_asked(fresh),)
        )
        for person in approvers:
            if not await self._store.first_notice(approval.id, f"dm:{person.sub}"):
                continue  # this person already has their DM for this request
            await self._post(approval, person.user, dm.message, marker=f"{approval.id}:card:dm:{person.user}")
        channel = (await self.places(approval)).approvals_channel
        if channel and channel not in skip:
            layout = cards.approval_card(fresh, now=time.time(), private=private)
            await self._post(approval, channel, layout.message, marker=f"{approval.id}:card:{channel}")

    async def remind(self, approval: Approval) -> None:
        """The approvers' DM cards, updated in place with a reminder (once: no new messages, no storm)."""
        if not await self._store.first_notice(approval.id, "remind"):
            return
        note = ours(
            ":bell: *Reminder:* this still needs a decision. It expires at {when}.",
            when=trusted(slack_time(approval.expires_at)),
        )
        notes = (await self.where_asked(approval), note)
        layout = cards.approval_card(
            approval, now=time.time(), private=await self.private(approval), notes=notes
        )
        for card in approval.cards:
            if is_dm(card.channel):
                try:
                    await self._poster.update(
                        card.channel, card.ts, text=layout.message.text, blocks=layout.message.blocks
                    )
                except PostError as exc:
                    log.warning("reminder for %s not shown (%s)", approval.id, exc.error)

    async def escalate(self, approval: Approval) -> None:
        channel = (await self.places(approval)).escalation_channel
        if not channel or not await self._store.first_notice(approval.id, "escalate"):
            return
        note = ours(
            ":rotating_light: *Escalated:* still pending and it expires at {when}. {progress}",
            when=trusted(slack_time(approval.expires_at)),
            progress=trusted(progress_text(approval)),
        )
        notes = (await self.where_asked(approval), note)
        layout = cards.approval_card(
            approval, now=time.time(), private=await self.private(approval), notes=notes
        )
        await self._post(approval, channel, layout.message, marker=f"{approval.id}:card:escalation")

    async def say_nobody_eligible(self, approval: Approval) -> None:
        places = await self.places(approval)
        ask = ours("its owners, {team}", team=code(places.owner_team)) if places.owner_team else trusted("")
        if places.support_channel:
            ask = ours(
                "{ask} in {channel}",
                ask=ask or trusted("the server's owners"),
                channel=channel_ref(places.support_channel),
            )
        where = (
            ours(" The card is also in {channel}.", channel=channel_ref(places.approvals_channel))
            if places.approvals_channel
            else trusted("")
        )
        text = ours(
            ":warning: Nobody who may approve {call} has connected their account here yet "
            "({groups} can approve it), so nobody was sent it.{where} Ask {who} to find an approver, "
            "who can then click Approve on the card above.",
            call=code(f"{approval.short_name}.{approval.tool}"),
            groups=untrusted(" or ".join(approval.approver_groups), markdown=False),
            where=where,
            who=ask or trusted("the server's owners"),
        )
        try:
            await self._poster.post(
                approval.channel, text=text, thread_ts=approval.thread_ts, marker=f"{approval.id}:nobody"
            )
        except PostError as exc:
            log.warning("could not tell the thread that nobody may approve %s (%s)", approval.id, exc.error)

    async def _post(self, approval: Approval, channel: str, message: Message, *, marker: str) -> None:
        try:
            posted = await self._poster.post(channel, text=message.text, blocks=message.blocks, marker=marker)
        except PostError as exc:
            log.warning("approval %s card not sent to %s (%s)", approval.id, channel, exc.error)
            return
        await self._store.add_card(approval.id, posted.channel, posted.ts)

    async def private(self, approval: Approval) -> bool:
        """Whether the approval's server keeps results to the requester (unknown counts as private)."""
        try:
            view = await self._registry.view()
        except RegistryUnavailable:
            view = None
        return private_data(view, approval.server)
