"""What the approval service shows in Slack (approvals.ports.ApprovalNotices): the cards, and what the thread
and the requester are told.

Every text here is built with bot.slack_text: tool output, server errors and the model's reason are
untrusted (secrets redacted, escaped), so a result cannot ping the channel or disguise a link. The outcome
of a call to a `private_data` server goes to the requester alone (ephemeral in the thread, else a DM); the
cards, thread and mirror alike, and the thread's notice say only that it was sent privately (SPEC §6).
Posting is best effort: the record in the store is the truth, and a card whose redraw failed is redrawn by
the sweep (ACCEPTANCE 31).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

from approvals.approval import Approval, ApprovalStatus
from approvals.store import ApprovalStore
from bot import cards
from bot.approval_text import mention
from bot.approver_notices import ApproverNotices
from bot.poster import Poster, PostError
from bot.slack_text import Mrkdwn, code, link, ours, trusted
from flows.linking import Linking
from mcp_clients.tokens import Identity
from registry_cache.snapshot import SharedSnapshot

__all__ = ["ApprovalNotices"]

log = logging.getLogger(__name__)

SHOWN_RESULT_CHARS = 500  # of an outcome in the thread's notice; the card shows more
STALE_REDRAWS = 50  # cards redrawn per sweep
Status = ApprovalStatus
_LABELS = {Status.SUCCEEDED: "ran", Status.FAILED: "failed", Status.OUTCOME_UNKNOWN: "outcome unknown"}


def _pings(users: tuple[str, ...]) -> Mrkdwn:
    # bot.approval_text.mention shows anything that is not a Slack user id as escaped text.
    return trusted(" ".join(mention(u) for u in users))


class ApprovalNotices:
    def __init__(
        self,
        poster: Poster,
        store: ApprovalStore,
        registry: SharedSnapshot,
        links: Linking,
        *,
        mirror_channel: str | None,
    ) -> None:
        """`mirror_channel`: where every card is also posted (APPROVALS_CHANNEL), if anywhere."""
        self._poster = poster
        self._store = store
        self._links = links
        self._mirror = mirror_channel
        self._approvers = ApproverNotices(poster, store, registry)

    async def show_request(self, approval: Approval) -> None:
        private = await self._private(approval)
        targets: list[tuple[str, str | None]] = [(approval.channel, approval.thread_ts)]
        if self._mirror and self._mirror != approval.channel:
            targets.append((self._mirror, None))
        for channel, thread_ts in targets:
            # The Withdraw button only where the requester asked: the thread's card.
            layout = cards.approval_card(
                approval, now=time.time(), private=private, withdraw=thread_ts is not None
            )
            posted = await self._poster.post(
                channel,
                text=layout.message.text,
                blocks=layout.message.blocks,
                thread_ts=thread_ts,
                marker=f"{approval.id}:card:{channel}",
            )
            await self._store.add_card(approval.id, posted.channel, posted.ts)
            if layout.arguments_file:
                await self._poster.upload_text(
                    channel,
                    thread_ts or posted.ts,
                    filename=f"arguments-{approval.id}.json",
                    title=f"Full arguments of {approval.short_name}.{approval.tool}",
                    content=layout.arguments_file,
                    exact=True,
                )

    async def show_decision(self, approval_id: str) -> None:
        """Re-render every copy of the card from the record (idempotent; safe to retry)."""
        approval = await self._store.get(approval_id)
        if approval is None:
            return
        now, private = time.time(), await self._private(approval)
        pending = approval.status == Status.PENDING
        elsewhere = any(c.channel != approval.channel for c in approval.cards)
        away = (await self._approvers.where_asked(approval),) if pending and elsewhere else ()
        for card in approval.cards:
            thread = card.channel == approval.channel
            message = (
                cards.approval_card(
                    approval, now=now, private=private, withdraw=thread, notes=() if thread else away
                ).message
                if pending
                else cards.decided_card(approval, now=now, private=private)
            )
            try:
                await self._poster.update(card.channel, card.ts, text=message.text, blocks=message.blocks)
            except PostError as exc:
                log.warning("card %s update failed (%s); will retry", approval.id, exc.error)
                await self._store.redraw_later(approval.id)

    async def show_to_approvers(self, approval: Approval, approvers: Sequence[Identity]) -> None:
        await self._approvers.show_to_approvers(
            approval, approvers, skip=tuple(c for c in (approval.channel, self._mirror) if c)
        )

    async def say_nobody_eligible(self, approval: Approval) -> None:
        await self._approvers.say_nobody_eligible(approval)

    async def remind(self, approval: Approval) -> None:
        await self._approvers.remind(approval)

    async def escalate(self, approval: Approval) -> None:
        await self._approvers.escalate(approval)

    async def redraw_stale(self) -> None:
        for approval_id in await self._store.take_stale_cards(STALE_REDRAWS):
            await self.show_decision(approval_id)

    async def announce_outcome(
        self, approval: Approval, status: Status, detail: str, *, alert: bool, from_server: bool
    ) -> None:
        """Tell the thread how an approved action ended. What it returned goes to the requester alone when
        its server is marked private; the thread then learns only that it was sent."""
        prefix = ":rotating_light: " if alert or status == Status.OUTCOME_UNKNOWN else ""
        call, label = code(f"{approval.short_name}.{approval.tool}"), _LABELS[status]
        notify = _pings(approval.decided_by) if status == Status.OUTCOME_UNKNOWN else trusted("")
        more = " …" if len(detail) > SHOWN_RESULT_CHARS else ""
        result = ours(
            "{prefix}{call} {label}: {shown}{more}",
            prefix=prefix,
            call=call,
            label=label,
            shown=detail[:SHOWN_RESULT_CHARS],
            more=more,
        )
        if from_server and await self._private(approval):
            await self._tell_privately(approval, result)
            text = ours(
                "{prefix}{call} {label}; result sent privately to {who} (this server's data is private). "
                "{notify}",
                prefix=prefix,
                call=call,
                label=label,
                who=_pings((approval.requester,)),
                notify=notify,
            )
        else:
            text = ours("{result} {notify}", result=result, notify=notify)
        await self._say(approval, trusted(text.strip()), marker="result")

    async def say_expired(self, approval: Approval) -> None:
        text = ours(
            "The request to run {call} expired without a decision; nothing was run.",
            call=code(f"{approval.short_name}.{approval.tool}"),
        )
        await self._say(approval, text, marker="expired")

    async def say_outcome_unknown(self, approval: Approval) -> None:
        text = ours(
            ":rotating_light: {call} was running when its worker stopped. Its outcome is "
            "unknown and it will not be re-run automatically; please check. {people}",
            call=code(f"{approval.short_name}.{approval.tool}"),
            people=_pings((approval.requester, *approval.decided_by)),
        )
        await self._say(approval, text, marker="unknown")

    async def tell_requester_to_reconnect(self, approval: Approval) -> None:
        url = await self._links.offer(approval.team, approval.requester)
        text = ours(
            "Your approved request {call} could not run because your account link has ended. "
            "{connect}, then ask again.",
            call=code(f"{approval.short_name}.{approval.tool}"),
            connect=link(url, "Connect again"),
        )
        with contextlib.suppress(PostError):  # the thread is told about the failure anyway
            await self._poster.ephemeral(
                approval.channel, approval.requester, text=text, thread_ts=approval.thread_ts
            )

    async def _private(self, approval: Approval) -> bool:
        return await self._approvers.private(approval)

    async def _say(self, approval: Approval, text: Mrkdwn, *, marker: str) -> None:
        try:
            await self._poster.post(
                approval.channel, text=text, thread_ts=approval.thread_ts, marker=f"{approval.id}:{marker}"
            )
        except PostError as exc:
            log.warning("could not tell the thread about %s (%s)", approval.id, exc.error)

    async def _tell_privately(self, approval: Approval, text: Mrkdwn) -> None:
        """Ephemeral in the thread; when Slack refuses that (the requester left the channel), a DM."""
        try:
            await self._poster.ephemeral(
                approval.channel, approval.requester, text=text, thread_ts=approval.thread_ts
            )
            return
        except PostError as exc:
            log.info(
                "private result of %s not shown in the thread (%s); sending a DM", approval.id, exc.error
            )
        try:
            await self._poster.post(approval.requester, text=text, marker=f"{approval.id}:result-dm")
        except PostError as exc:
            log.warning("could not send the private result of %s (%s)", approval.id, exc.error)
