"""Answering one claimed request: admission → identity (or a Connect link) → tools → loop → approvals →
delivery.

The requester's tools are listed with their identity in this channel, the loop runs over the thread's
memory as this person may be handed it, a pause asks people to approve, and the answer goes to the thread
(or to the requester alone when it used private data). A paused turn comes back here as a "resume-…"
attempt once every approval has an outcome: the loop then continues from the paused step with the calls'
real results (agent.resume). The signs of life (the eyes, the working message) go out once the model has
been asked (`after_asking`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from agent import loop, resume
from agent.attachments import FileRef, Read, load_refs, question_content
from agent.loop import Answer, Failed, Limits, Paused, Result
from agent.plan import Plan
from agent.ports import Model, Tools
from approvals.model_bill import UsageBook
from approvals.stops import TurnStops
from approvals.turns import Conversation, Turn, TurnStore
from flows.access import ToolAccess
from flows.admission import Admission
from flows.connecting import CONNECTED_ATTEMPT, ConnectingTools, connected_note
from flows.decisions import Decisions, decisions
from flows.ports import ApprovalRequests, Attachments, Refusal, SettlingProgress, TurnApprovals, TurnOutput
from flows.server_questions import ServerQuestions
from flows.stopping import ServersInUse, StopWatch
from flows.thread_memory import handed_to, registry_view, remembered
from flows.tool_audit import TurnAudit
from mcp_clients.gateway import Caller, GatewaySession
from mcp_clients.questions import Attention
from mcp_clients.tokens import Identity
from registry_cache.snapshot import RegistryUnavailable

__all__ = ["TurnAnswer", "after_asking"]

T = TypeVar("T")
SIGNS_WAIT_MAX_SECONDS = 0.15  # the first sign stays well inside the second a person waits for (< 300 ms)
SEND_GRACE_SECONDS = 0.001
NO_MODEL = "No model is configured for this deployment (ANTHROPIC_API_KEY)."


async def after_asking(asked: asyncio.Event, call: Awaitable[T]) -> T:
    """Slack's signs of life (the eyes, the working message) go out once the model has been asked. The
    model is the long pole, and every call on a loop delays the others: sent first, the signs held the
    first model request back by ~3 ms (bench/turn). The bound keeps the signs prompt when asking takes
    long (a live tool listing); every way out of a turn sets `asked`."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asked.wait(), SIGNS_WAIT_MAX_SECONDS)
    await asyncio.sleep(SEND_GRACE_SECONDS)  # the request's bytes leave before the signs' work starts
    return await call


class _Asking:
    """The edge's progress, which also marks the moment the model is first asked, and which stops passing
    on the model's words once it has read a `private_data` server: those go to the requester alone, with
    the answer (words written before such a call cannot have come from it)."""

    def __init__(self, progress: SettlingProgress, asked: asyncio.Event) -> None:
        self._progress = progress
        self._asked = asked
        self.private: frozenset[tuple[str, str]] = frozenset()  # (server, tool) of private_data tools
        self.muted = False

    async def thinking(self) -> None:
        self._asked.set()
        await self._progress.thinking()

    async def text(self, delta: str) -> None:
        if not self.muted:
            await self._progress.text(delta)

    async def tool_started(self, server: str, tool: str) -> None:
        self.muted = self.muted or (server, tool) in self.private
        await self._progress.tool_started(server, tool)

    async def tool_finished(self, server: str, tool: str, ok: bool, latency_ms: float) -> None:
        await self._progress.tool_finished(server, tool, ok, latency_ms)

    async def plan(self, plan: Plan) -> None:
        if not self.muted:  # a plan is the model's words too: one stated after private data may quote it
            await self._progress.plan(plan)

    async def tool_progress(
        self, server: str, tool: str, progress: float, total: float | None, message: str | None
    ) -> None:
        await self._progress.tool_progress(server, tool, progress, total, message)

    async def settle(self) -> None:
        await self._progress.settle()


class TurnAnswer:
    """Its ports: the turn store, the Slack edge (`output`), the requester's tool access, the approval
    service (`approvals`: asking) and its records (`decided`: a paused turn's outcomes), and the model
    (None when no key is configured); admission, the audit of tools and the loop's limits are its policy."""

    def __init__(
        self,
        store: TurnStore,
        output: TurnOutput,
        access: ToolAccess,
        approvals: ApprovalRequests,
        decided: TurnApprovals,
        *,
        model: Model | None,
        admission: Admission,
        audit: TurnAudit,
        limits: Limits,
        stops: TurnStops | None = None,
        bill: UsageBook | None = None,
        questions: ServerQuestions | None = None,
        files: Attachments | None = None,
    ) -> None:
        self._files = files  # None: attached files are not read (each is refused)
        self._stops = stops  # Stop requests, from any process; None: no Stop
        self._store = store
        self._output = output
        self._access = access
        self._approvals = approvals
        self._decided = decided
        self._model = model
        self._admission = admission
        self._audit = audit
        self._limits = limits
        self._bill = bill  # the turn's model usage: audit, running totals (approvals.model_bill)
        self._questions = questions  # None: servers' questions are not offered (nobody to ask)

    async def remember(self, turn: Turn) -> None:
        await self._output.remember(turn)

    async def answer(self, turn: Turn, attempt: str) -> str:
        # The eyes are the first sign that the bot is on it; the answer does not wait for Slack to show them.
        resuming = attempt.startswith("resume-")
        asked = asyncio.Event()  # set when the model is first asked, and on every way out of the turn
        eyes = (
            None if resuming else asyncio.ensure_future(after_asking(asked, self._output.eyes(turn, on=True)))
        )
        try:
            return await self._admitted(turn, attempt, resuming, eyes, asked)
        finally:
            asked.set()
            if eyes is not None:
                await eyes  # never left running when the job's event loop closes

    async def _admitted(
        self,
        turn: Turn,
        attempt: str,
        resuming: bool,
        eyes: asyncio.Future[None] | None,
        asked: asyncio.Event,
    ) -> str:
        # Both at once: a request from someone not linked yet counts towards their per-minute limit too.
        identity, refusal = await asyncio.gather(
            self._access.identity(turn.team, turn.user),
            _nothing() if resuming else self._admission.refusal(turn),
        )
        if identity is None and resuming:
            await self._output.refuse(turn, Refusal("unlinked"), marker=f"{attempt}:unlinked")
            return "requester unlinked"
        if identity is None:
            url = await self._access.link_offer(turn.team, turn.user, waiting=turn.id)
            await self._output.connect(turn, url)
            await self._store.set_status(turn.id, "waiting_for_link")
            return "waiting for link"
        if refusal is not None:
            await self._output.refuse(turn, refusal, marker="refused")
            await self._store.set_status(turn.id, "refused")
            return "refused"
        return await self._work(turn, attempt, identity, resuming, eyes, asked)

    async def _work(
        self,
        turn: Turn,
        attempt: str,
        identity: Identity,
        resuming: bool,
        eyes: asyncio.Future[None] | None,
        asked: asyncio.Event,
    ) -> str:
        started = time.monotonic()
        # Put up while the tools are listed and the model thinks; progress waits for it, the model does not.
        working = asyncio.ensure_future(after_asking(asked, self._output.working(turn, attempt)))
        progress = _Asking(self._output.progress(turn, working), asked)
        caller = Caller(turn.team, turn.user, turn.channel, identity)
        asking = (
            self._questions.for_turn(turn, until=started + self._limits.max_seconds)
            if self._questions
            else None
        )
        attention = Attention(questions=asking, progress=progress.tool_progress)
        # The session's connections close once the answer is out: closing them is nobody's wait.
        async with contextlib.AsyncExitStack() as held:
            try:
                session = await held.enter_async_context(self._access.session(caller, attention))
                try:  # the conversation is read while the tools are listed
                    listed, conversation = await asyncio.gather(
                        session.tools(), self._store.conversation(turn.thread)
                    )
                except RegistryUnavailable as exc:
                    asked.set()
                    await self._output.unavailable(turn, await working, str(exc))
                    await self._store.set_status(turn.id, "failed", reason="registry")
                    return "registry unavailable"
                decided = await self._decisions(turn, session) if resuming else None
                progress.private = frozenset((t.server, t.tool) for t in listed if t.private_data)
                progress.muted = decided is not None and bool(decided.private)
                asker = f"<@{turn.user}> ({identity.email or identity.sub})"
                audited: Tools = self._audit.tools(session, turn, identity)
                if self._stops is not None:  # who else may stop it depends on the servers it calls
                    audited = ServersInUse(audited, session, self._stops, turn.id)
                tools = ConnectingTools(audited, session, asker)
                again = attempt.startswith(CONNECTED_ATTEMPT)
                result = await self._loop(turn, asker, tools, session, progress, decided, conversation, again)
                if isinstance(result, Paused):
                    await self._request_approvals(turn, caller, session, result)
                private = (decided is not None and bool(decided.private)) or any(
                    (spec := session.spec(call.model_name)) is not None and spec.private_data
                    for call in result.calls
                )
                await self._audit.withheld(turn, identity, session)
            finally:
                asked.set()
                await progress.settle()  # no late progress update may overwrite the answer
                ts = await working
            seconds = time.monotonic() - started
            await self._output.deliver(turn, ts, result, seconds, attempt, private=private)
        await self._billed(turn, identity, result)  # after the answer: the person does not wait for it
        return await self._finish(turn, tools, result, eyes)

    async def _finish(
        self, turn: Turn, tools: ConnectingTools, result: Result, eyes: asyncio.Future[None] | None
    ) -> str:
        """What follows the answer: Connect offers, the eyes off, the thread marked, the turn's status."""
        # After the answer that says why. A paused turn goes on after its approvals instead of re-running.
        waiting = "" if isinstance(result, Paused) else turn.id
        for server, needed in tools.requested.items():
            url = await self._access.server_offer(turn.team, turn.user, server, waiting=waiting)
            await self._output.connect_server(turn, needed.short_name, url, step_up=needed.step_up)
        if eyes is not None:
            await eyes
            await self._output.eyes(turn, on=False)
        await self._store.mark_bot_thread(turn.team, turn.channel, turn.thread_ts)
        kind = (
            "answered"
            if isinstance(result, Answer)
            else "paused"
            if isinstance(result, Paused)
            else "stopped"
            if result.kind == "stopped"
            else "failed"
        )
        await self._store.set_status(turn.id, kind)
        return kind

    async def _decisions(self, turn: Turn, session: GatewaySession) -> Decisions:
        """What people decided on this paused turn's calls, and what became of them."""
        return decisions(await self._decided.for_turn(turn.id), await registry_view(session))

    async def _billed(self, turn: Turn, identity: Identity, result: Result) -> None:
        if self._bill is None:
            return
        # A paused turn's cost belongs to the servers it asked to act on, too.
        servers = [c.server for c in result.calls]
        servers += [p.server for p in result.pending] if isinstance(result, Paused) else []
        await self._bill.record(turn, identity.sub, result.usage, servers)

    async def _request_approvals(
        self, turn: Turn, caller: Caller, session: GatewaySession, paused: Paused
    ) -> None:
        for pending in paused.pending:
            spec = session.spec(pending.model_name)
            if spec is None:  # listed a moment ago; the loop only pauses on listed tools
                continue
            await self._approvals.request(
                turn=turn,
                caller=caller,
                spec=spec,
                arguments=dict(pending.arguments),
                reason=pending.reason,
                tool_use_id=pending.tool_use_id,
                read_before=pending.read_before,
            )

    async def _loop(
        self,
        turn: Turn,
        asker: str,
        tools: ConnectingTools,
        session: GatewaySession,
        progress: _Asking,
        decided: Decisions | None,
        conversation: Conversation,
        again: bool,
    ) -> Result:
        if decided is None:
            # Asked again once a server is connected: the question is in the memory already.
            said = connected_note(asker) if again else f"{asker} asks:\n{turn.text}"
            content = said if again else await self._with_files(turn, said)
            conversation.messages.append({"role": "user", "content": content})
            asked_at = len(conversation.messages) - 1
        else:  # the paused step's placeholders become the calls' real results
            conversation.messages = resume(conversation.messages, decided.outcomes)
            conversation.rejected.extend(d for d in decided.rejected if d not in conversation.rejected)
            asked_at = len(conversation.messages)
        if turn.user not in conversation.users:
            conversation.users.append(turn.user)
        if self._model is None:
            return Failed("model_unavailable", NO_MODEL, conversation.messages, [], 0, 0, "")
        history = conversation.messages  # what the thread's memory keeps in full (flows.thread_memory)
        result = await loop.run(
            await handed_to(session, turn.channel, history),
            tools=tools,
            model=self._model,
            limits=self._limits,
            progress=progress,
            rejected=frozenset(conversation.rejected),
            stop=StopWatch(self._stops, turn.id) if self._stops is not None else None,
        )
        private = decided.private if decided is not None else frozenset()
        conversation.messages = remembered(turn, session, result, history, asked_at, private)
        await self._store.save_conversation(turn.thread, conversation)
        return result

    async def _with_files(self, turn: Turn, said: str) -> str | list[dict[str, Any]]:
        """The question with the files attached to it, read (those that cannot be are named in the thread)."""
        refs = load_refs(turn.files)
        if not refs:
            return said
        reads: list[Read] = []
        refused: list[tuple[FileRef, str]] = [(ref, "unreadable") for ref in refs]
        if self._files is not None:
            reads, refused = await self._files.read(refs)
        if refused:
            await self._output.files_refused(turn, refused)
        return question_content(said, reads)


async def _nothing() -> None:
    return None
