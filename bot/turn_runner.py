"""The turn runner: one request answered in its thread, from the claim to the delivered answer.

It claims the turn and its thread, offers linking to an unlinked requester, refuses what it must, runs the
agent loop with the requester's tools, asks for approvals when the loop pauses, resumes a paused
conversation with what people decided, and delivers the answer (privately when it read private data).
`bot.jobs.run_turn` is its job entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from agent import loop
from agent.loop import Answer, Failed, Limits, Paused
from approvals.audit import AuditRecord
from approvals.turns import Conversation, Turn, base_attempt
from bot import blocks
from bot.approval_update import Incoming, approval_update
from bot.approval_wiring import approval_service
from bot.delivery import Delivery
from bot.events import MAX_INPUT_CHARS
from bot.home import remember_request
from bot.poster import Posted
from bot.progress import SlackProgress
from bot.queues import Queues
from bot.recovery import find_working, held_lease, working_marker
from bot.services import BotIdentity, Services
from bot.slack_text import untrusted
from bot.thread_memory import handed_to, registry_view, remembered
from bot.tool_audit import AuditedTools
from mcp_clients.gateway import Caller, GatewaySession
from mcp_clients.tokens import Identity
from registry_cache.snapshot import RegistryUnavailable

__all__ = ["Incoming", "TurnRunner"]

log = logging.getLogger(__name__)

T = TypeVar("T")
SIGNS_WAIT_MAX_SECONDS = 0.15  # the first sign stays well inside the second a person waits for (< 300 ms)
SEND_GRACE_SECONDS = 0.001


async def after_asking(asked: asyncio.Event, call: Awaitable[T]) -> T:
    """Slack's signs of life (the eyes, the working message) go out once the model has been asked. The
    model is the long pole, and every call on a loop delays the others: sent first, the signs held the
    first model request back by ~3 ms (bench/turn). The bound keeps the signs prompt when asking takes
    long (a live tool listing); every way out of a turn sets `asked`."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asked.wait(), SIGNS_WAIT_MAX_SECONDS)
    await asyncio.sleep(SEND_GRACE_SECONDS)  # the request's bytes leave before the signs' work starts
    return await call


@dataclass
class TurnRunner:
    svc: Services
    bot: BotIdentity
    queues: Queues

    async def run(self, turn_id: str, attempt: str) -> str:
        store = self.svc.store
        turn = await store.load(turn_id)
        if turn is None:
            return "missing"
        lease = float(self.svc.settings.turn_lease_seconds)
        if not await store.start(turn_id, attempt, lease):  # the claim, and a lease the sweep watches
            self.svc.metrics.inc("chatops_dedupe_hits_total", {"stage": "turn_claim"})
            return "duplicate"
        async with held_lease(store, turn_id, attempt, lease):
            return await self._claimed(turn, attempt)

    async def _claimed(self, turn: Turn, attempt: str) -> str:
        store = self.svc.store
        # App Home lists the person's recent requests, queued ones included; written while the thread's
        # run is claimed (each round trip before the first model request is waited for by the person).
        remembered = (
            remember_request(
                self.svc.redis, turn.team, turn.user, turn.id, turn.channel, turn.thread_ts, turn.text
            )
            if attempt == "first"
            else asyncio.sleep(0)
        )
        _, began = await asyncio.gather(remembered, store.begin_run(turn.thread, turn.id))
        if not began:
            await store.set_status(turn.id, "waiting_for_thread")
            return "queued behind another request in this thread"
        outcome, started = "error", time.monotonic()
        try:
            outcome = await self._run(turn, attempt)
            return outcome
        finally:
            label = outcome.replace(" ", "_")
            self.svc.metrics.inc("chatops_turns_total", {"outcome": label})
            self.svc.metrics.observe("chatops_turn_seconds", {"outcome": label}, time.monotonic() - started)
            nxt = await store.end_run(turn.thread, turn.id)
            if nxt:
                self.queues.enqueue_turn(nxt, "handoff")

    async def _run(self, turn: Turn, attempt: str) -> str:
        # The eyes are the first sign that the bot is on it; the answer does not wait for Slack to show them.
        resuming = attempt.startswith("resume-")
        asked = asyncio.Event()  # set when the model is first asked, and on every way out of the turn
        eyes = (
            None
            if resuming
            else asyncio.ensure_future(
                after_asking(asked, self.svc.poster.react(turn.channel, turn.ts, "eyes"))
            )
        )
        try:
            return await self._answer(turn, attempt, resuming, eyes, asked)
        finally:
            asked.set()
            if eyes is not None:
                await eyes  # never left running when the job's event loop closes

    async def _answer(
        self,
        turn: Turn,
        attempt: str,
        resuming: bool,
        eyes: asyncio.Future[None] | None,
        asked: asyncio.Event,
    ) -> str:
        poster, store = self.svc.poster, self.svc.store
        # Both at once: a request from someone not linked yet counts towards their per-minute limit too.
        identity, refusal = await asyncio.gather(
            self.svc.broker.identity(turn.team, turn.user),
            self._no_refusal() if resuming else self._refusal(turn),
        )
        if identity is None and resuming:
            await self._say(
                turn,
                "I can't continue: your account link has ended. Connect again and ask me.",
                marker=f"{attempt}:unlinked",
            )
            return "requester unlinked"
        if identity is None:
            url = await self.svc.linking.offer(turn.team, turn.user, waiting=turn.id)
            prompt = blocks.connect_prompt(
                url, reason="Your question needs the tools your account gives you access to."
            )
            await poster.ephemeral(
                turn.channel, turn.user, text=prompt.text, blocks=prompt.blocks, thread_ts=turn.thread_ts
            )
            await store.set_status(turn.id, "waiting_for_link")
            return "waiting for link"
        if refusal:
            await self._say(turn, refusal, marker="refused")
            await store.set_status(turn.id, "refused")
            return "refused"
        started = time.monotonic()
        working = blocks.working_message()
        # Posted while the tools are listed and the model thinks; progress waits for it, the model does not.
        placeholder = asyncio.ensure_future(
            after_asking(asked, self._working_message(turn, attempt, working))
        )

        async def placeholder_ts() -> str:
            return (await placeholder).ts

        progress = SlackProgress(poster, turn.channel, asyncio.ensure_future(placeholder_ts()), asked=asked)
        caller = Caller(turn.team, turn.user, turn.channel, identity)
        try:
            async with self.svc.gateway.session(caller) as session:
                try:  # the conversation is read while the tools are listed
                    _, conversation = await asyncio.gather(session.tools(), store.conversation(turn.thread))
                except RegistryUnavailable as exc:
                    asked.set()
                    await poster.update(turn.channel, (await placeholder).ts, text=untrusted(str(exc)))
                    await store.set_status(turn.id, "failed", reason="registry")
                    return "registry unavailable"
                incoming = await self._approval_update(turn, session) if resuming else None
                result = await self._loop(turn, identity, session, progress, incoming, conversation)
                if isinstance(result, Paused):
                    await self._request_approvals(turn, caller, session, result)
                private = (incoming is not None and incoming.private) or any(
                    (spec := session.spec(call.model_name)) is not None and spec.private_data
                    for call in result.calls
                )
                await self._report_withheld(turn, identity, session)
        finally:
            asked.set()
            await progress.settle()  # no late progress update may overwrite the answer
            posted = await placeholder
        seconds = time.monotonic() - started
        if private:
            await Delivery(poster).private(turn, posted.ts, result, seconds)
        else:
            await Delivery(poster).public(turn, posted.ts, result, seconds, attempt)
        if eyes is not None:
            await eyes
            await poster.react(turn.channel, turn.ts, "eyes", remove=True)
        await store.mark_bot_thread(turn.team, turn.channel, turn.thread_ts)
        kind = (
            "answered" if isinstance(result, Answer) else "paused" if isinstance(result, Paused) else "failed"
        )
        await store.set_status(turn.id, kind)
        return kind

    async def _report_withheld(self, turn: Turn, identity: Identity, session: GatewaySession) -> None:
        """A tool withheld from the model (a poisoned definition, or nobody may approve it) goes to the audit
        (where its owners' alerting reads), once a day per tool and reason, however many turns meet it."""
        for server, tool, reason in session.withheld.values():
            digest = hashlib.sha256(f"{server}|{tool}|{reason}".encode()).hexdigest()[:24]
            if not await self.svc.redis.set(f"chatops:withheld:{digest}", "1", nx=True, ex=86_400):
                continue
            await self.svc.audit.record(
                AuditRecord(
                    kind="tool_withheld",
                    outcome="denied",
                    request_id=turn.id,
                    team=turn.team,
                    channel=turn.channel,
                    thread_ts=turn.thread_ts,
                    user=turn.user,
                    sub=identity.sub,
                    server=server,
                    tool=tool,
                    detail=f"withheld from the model: {reason}",
                )
            )

    async def _working_message(self, turn: Turn, attempt: str, working: blocks.Message) -> Posted:
        """A recovery (its worker died) continues in the dead attempt's message: one answer in the thread."""
        if attempt != base_attempt(attempt):
            found = await find_working(self.svc.poster, turn, attempt)
            if found is not None:
                return found
        return await self.svc.poster.post(
            turn.channel,
            text=working.text,
            blocks=working.blocks,
            thread_ts=turn.thread_ts,
            marker=working_marker(turn.id, attempt),
        )

    async def _request_approvals(
        self, turn: Turn, caller: Caller, session: GatewaySession, paused: Paused
    ) -> None:
        flow = approval_service(self.svc, self.queues)
        for pending in paused.pending:
            spec = session.spec(pending.model_name)
            if spec is None:  # listed a moment ago; the loop only pauses on listed tools
                continue
            await flow.request(
                turn=turn,
                caller=caller,
                spec=spec,
                arguments=dict(pending.arguments),
                reason=pending.reason,
                tool_use_id=pending.tool_use_id,
                read_before=pending.read_before,
            )

    async def _approval_update(self, turn: Turn, session: GatewaySession) -> Incoming:
        """What people decided and what happened: the message that resumes a paused conversation."""
        store = self.svc.approvals
        return approval_update(await store.for_turn(turn.id), await registry_view(session))

    async def _no_refusal(self) -> str | None:
        return None

    async def _refusal(self, turn: Turn) -> str | None:
        if len(turn.text) > MAX_INPUT_CHARS:
            return (
                f"That message is {len(turn.text):,} characters; I take at most {MAX_INPUT_CHARS:,}. "
                "Please shorten it or attach the details as a file."
            )
        if not turn.text.strip():
            return "What would you like me to look into?"
        # A sliding minute (not minute buckets, which let a burst across a boundary through twice).
        key, now = f"chatops:rate:{turn.team}:{turn.user}", time.time()
        async with self.svc.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now - 60)
            pipe.zadd(key, {turn.id: now})
            pipe.zcard(key)
            pipe.expire(key, 120)
            count = (await pipe.execute())[2]
        if count > self.svc.settings.user_turns_per_minute:
            return "You've asked me a lot in the last minute. Give me a moment, then ask again."
        return None

    async def _loop(
        self,
        turn: Turn,
        identity: Identity,
        session: GatewaySession,
        progress: SlackProgress,
        incoming: Incoming | None,
        conversation: Conversation,
    ) -> Answer | Paused | Failed:
        svc = self.svc
        asked_at = len(conversation.messages)
        if incoming is None:
            asker = f"<@{turn.user}> ({identity.email or identity.sub})"
            conversation.messages.append({"role": "user", "content": f"{asker} asks:\n{turn.text}"})
        else:
            conversation.messages.append({"role": "user", "content": incoming.text})
            conversation.rejected.extend(d for d in incoming.rejected if d not in conversation.rejected)
        if turn.user not in conversation.users:
            conversation.users.append(turn.user)
        if svc.model is None:
            return Failed(
                "model_unavailable",
                "No model is configured for this deployment (ANTHROPIC_API_KEY).",
                conversation.messages,
                [],
                0,
                0,
                "",
            )
        limits = Limits(
            max_steps=svc.settings.max_steps,
            max_seconds=float(svc.settings.max_turn_seconds),
            max_output_tokens=svc.settings.max_output_tokens,
            tool_output_max_chars=svc.settings.tool_output_max_chars,
        )
        history = conversation.messages  # what the thread's memory keeps in full (bot.thread_memory)
        result = await loop.run(
            await handed_to(session, turn.channel, history),
            tools=AuditedTools(session, svc.audit, turn, identity),
            model=svc.model,
            limits=limits,
            progress=progress,
            rejected=frozenset(conversation.rejected),
        )
        conversation.messages = remembered(turn, session, result, history, asked_at, incoming)
        await svc.store.save_conversation(turn.thread, conversation)
        return result

    async def _say(self, turn: Turn, text: str, *, marker: str) -> None:
        message = blocks.error_message(text)
        await self.svc.poster.post(
            turn.channel,
            text=message.text,
            blocks=message.blocks,
            thread_ts=turn.thread_ts,
            marker=f"{turn.id}:{marker}",
        )
