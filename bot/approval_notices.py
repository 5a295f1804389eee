"""What the approval flow shows in Slack: the cards, and what the thread and the requester are told.

Every text here is built with bot.slack_text: tool output, server errors and the model's reason are
untrusted (secrets redacted, escaped), so a result cannot ping the channel or disguise a link. The outcome
of a call to a `private_data` server goes to the requester alone (ephemeral in the thread, else a DM); the
cards, thread and mirror alike, and the thread's notice say only that it was sent privately (SPEC §6).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass

from approvals.policy import mention
from approvals.store import Approval, ApprovalStore, Status
from bot import cards
from bot.poster import PostError
from bot.services import Services
from bot.slack_text import Mrkdwn, code, link, ours, trusted
from registry_cache.snapshot import RegistryUnavailable
from registry_cache.view import private_data

__all__ = ["ApprovalNotices", "mentions"]

log = logging.getLogger(__name__)

SHOWN_RESULT_CHARS = 500  # of an outcome in the thread's notice; the card shows more
_LABELS = {Status.SUCCEEDED: "ran", Status.FAILED: "failed", Status.OUTCOME_UNKNOWN: "outcome unknown"}


def mentions(users: tuple[str, ...]) -> Mrkdwn:
    # approvals.policy.mention shows anything that is not a Slack user id as escaped text.
    return trusted(" ".join(mention(u) for u in users))


@dataclass
class ApprovalNotices:
    svc: Services
    store: ApprovalStore

    async def private(self, approval: Approval) -> bool:
        """Whether the approval's server keeps results to the requester (unknown counts as private)."""
        try:
            view = await self.svc.snapshot.view()
        except RegistryUnavailable:
            view = None
        return private_data(view, approval.server)

    async def post_cards(self, approval: Approval) -> None:
        layout = cards.approval_card(approval, now=time.time(), private=await self.private(approval))
        targets: list[tuple[str, str | None]] = [(approval.channel, approval.thread_ts)]
        mirror = self.svc.settings.approvals_channel
        if mirror and mirror != approval.channel:
            targets.append((mirror, None))
        for channel, thread_ts in targets:
            posted = await self.svc.poster.post(
                channel,
                text=layout.message.text,
                blocks=layout.message.blocks,
                thread_ts=thread_ts,
                marker=f"{approval.id}:card:{channel}",
            )
            await self.store.add_card(approval.id, posted.channel, posted.ts)
            if layout.arguments_file:
                await self.svc.poster.upload_text(
                    channel,
                    thread_ts or posted.ts,
                    filename=f"arguments-{approval.id}.json",
                    title=f"Full arguments of {approval.short_name}.{approval.tool}",
                    content=layout.arguments_file,
                    exact=True,
                )

    async def refresh_cards(self, approval_id: str) -> None:
        """Re-render every copy of the card from the record (idempotent; safe to retry)."""
        approval = await self.store.get(approval_id)
        if approval is None:
            return
        now, private = time.time(), await self.private(approval)
        message = (
            cards.approval_card(approval, now=now, private=private).message
            if approval.status == Status.PENDING
            else cards.decided_card(approval, now=now, private=private)
        )
        for card in approval.cards:
            try:
                await self.svc.poster.update(card.channel, card.ts, text=message.text, blocks=message.blocks)
            except PostError as exc:
                # The store is the truth; the sweeper re-renders dirty cards later (ACCEPTANCE 31).
                log.warning("card %s update failed (%s); will retry", approval.id, exc.error)
                await self.svc.redis.sadd("chatops:cards-dirty", approval.id)

    async def announce(
        self, approval: Approval, status: Status, detail: str, *, alert: bool, from_server: bool = True
    ) -> None:
        """Tell the thread how an approved action ended. What it returned goes to the requester alone when
        its server is marked private; the thread then learns only that it was sent."""
        prefix = ":rotating_light: " if alert or status == Status.OUTCOME_UNKNOWN else ""
        call, label = code(f"{approval.short_name}.{approval.tool}"), _LABELS[status]
        notify = mentions(approval.decided_by) if status == Status.OUTCOME_UNKNOWN else trusted("")
        more = " …" if len(detail) > SHOWN_RESULT_CHARS else ""
        result = ours(
            "{prefix}{call} {label}: {shown}{more}",
            prefix=prefix,
            call=call,
            label=label,
            shown=detail[:SHOWN_RESULT_CHARS],
            more=more,
        )
        if from_server and await self.private(approval):
            await self._tell_privately(approval, result)
            text = ours(
                "{prefix}{call} {label}; result sent privately to {who} (this server's data is private). "
                "{notify}",
                prefix=prefix,
                call=call,
                label=label,
                who=mentions((approval.requester,)),
                notify=notify,
            )
        else:
            text = ours("{result} {notify}", result=result, notify=notify)
        await self.say(approval, trusted(text.strip()), marker="result")

    async def say(self, approval: Approval, text: Mrkdwn, *, marker: str) -> None:
        try:
            await self.svc.poster.post(
                approval.channel, text=text, thread_ts=approval.thread_ts, marker=f"{approval.id}:{marker}"
            )
        except PostError as exc:
            log.warning("could not tell the thread about %s (%s)", approval.id, exc.error)

    async def tell_requester_to_reconnect(self, approval: Approval) -> None:
        url = await self.svc.linking.offer(approval.team, approval.requester)
        text = ours(
            "Your approved request {call} could not run because your account link has ended. "
            "{connect}, then ask again.",
            call=code(f"{approval.short_name}.{approval.tool}"),
            connect=link(url, "Connect again"),
        )
        with contextlib.suppress(PostError):  # the thread is told about the failure anyway
            await self.svc.poster.ephemeral(
                approval.channel, approval.requester, text=text, thread_ts=approval.thread_ts
            )

    async def _tell_privately(self, approval: Approval, text: Mrkdwn) -> None:
        """Ephemeral in the thread; when Slack refuses that (the requester left the channel), a DM."""
        try:
            await self.svc.poster.ephemeral(
                approval.channel, approval.requester, text=text, thread_ts=approval.thread_ts
            )
            return
        except PostError as exc:
            log.info(
                "private result of %s not shown in the thread (%s); sending a DM", approval.id, exc.error
            )
        try:
            await self.svc.poster.post(approval.requester, text=text, marker=f"{approval.id}:result-dm")
        except PostError as exc:
            log.warning("could not send the private result of %s (%s)", approval.id, exc.error)
