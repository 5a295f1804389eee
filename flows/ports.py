"""The ports the flows own: what a flow needs from the world, as small Protocols.

The Slack edge (bot/) implements the output ports and says things in its own words: a flow says what
happened (a request was refused, and why; an answer is ready; a turn could not finish), never how it looks.
The composition root hands each flow the few ports it uses; the turn store (approvals.turns) is passed as
it is, and the approval service, the approval store, the token broker and the gateway satisfy the small
Protocols below structurally.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from agent.attachments import FileRef, Read
from agent.loop import Result
from agent.ports import Progress
from approvals.store import Approval
from approvals.turns import Turn
from mcp_clients.gateway import Caller, GatewaySession, ToolSpec
from mcp_clients.questions import Attention
from mcp_clients.tokens import Identity

__all__ = [
    "ApprovalRequests",
    "Attachments",
    "Counters",
    "CurrentIdentities",
    "Identities",
    "LinkOffers",
    "RecoveryOutput",
    "Refusal",
    "ServerOffers",
    "Sessions",
    "SettlingProgress",
    "TurnApprovals",
    "TurnOutput",
    "TurnSchedule",
]


@dataclass(frozen=True)
class Refusal:
    """Why a request is not run; the edge words it. `size` and `limit` are characters (`too_long`)."""

    reason: Literal["too_long", "empty", "rate_limited", "unlinked"]
    size: int = 0
    limit: int = 0


class SettlingProgress(Progress, Protocol):
    async def settle(self) -> None:
        """Wait for the update in flight, so none lands after the answer."""

    async def tool_progress(
        self, server: str, tool: str, progress: float, total: float | None, message: str | None
    ) -> None:
        """A running tool's own progress report (MCP `notifications/progress`)."""


class Attachments(Protocol):
    """The files attached to a question, downloaded (bot.attachments.SlackFiles)."""

    async def read(self, refs: Sequence[FileRef]) -> tuple[list[Read], list[tuple[FileRef, str]]]:
        """The files the model can be given, and those refused with why ("type", "host", "too_large",
        "too_many", "unreadable", "not_image")."""


class TurnOutput(Protocol):
    """A turn as its requester sees it: signs of life, the working message, progress, the answer."""

    async def remember(self, turn: Turn) -> None:
        """Note the request where its person looks for their recent requests."""

    async def eyes(self, turn: Turn, *, on: bool) -> None:
        """Show (or take back) the sign that the bot is on it."""

    async def working(self, turn: Turn, attempt: str) -> str:
        """Put up the message the answer will replace (a recovery takes over its dead attempt's); its id."""

    def progress(self, turn: Turn, working: Awaitable[str]) -> SettlingProgress:
        """Progress shown in the working message, once it is up."""

    async def unavailable(self, turn: Turn, working: str, reason: str) -> None:
        """The registry could not be read: the working message says why (`reason` is its error's text)."""

    async def deliver(
        self, turn: Turn, working: str, result: Result, seconds: float, attempt: str, *, private: bool
    ) -> None:
        """The answer, a pause or a failure, in place of the working message (to the requester alone when
        `private`: the thread is told only that an answer was given)."""

    async def connect(self, turn: Turn, url: str) -> None:
        """Ask the requester, alone, to link their account at `url`."""

    async def refuse(self, turn: Turn, refusal: Refusal, *, marker: str) -> None:
        """Say in the thread why this request is not run (once per `marker`)."""

    async def connect_server(self, turn: Turn, short_name: str, url: str, *, step_up: bool) -> None:
        """Ask the requester, alone, to connect (or grant more access to) a server of theirs at `url`."""

    async def files_refused(self, turn: Turn, refused: Sequence[tuple[FileRef, str]]) -> None:
        """Say in the thread which attached files were not read, and why (the question is still answered)."""


class RecoveryOutput(Protocol):
    async def gave_up(self, turn: Turn, attempt: str, tries: int) -> None:
        """Tell the thread that the request could not finish after `tries` cut-short attempts."""


class TurnSchedule(Protocol):
    """Runs a turn later, on any worker (bot.queues.Queues)."""

    def enqueue_turn(self, turn_id: str, attempt: str = "first") -> str: ...


class Counters(Protocol):
    """Operational metrics (bot.metrics.Metrics)."""

    def inc(self, name: str, labels: Mapping[str, Any] | None = None, value: float = 1.0) -> None: ...
    def observe(self, name: str, labels: Mapping[str, Any] | None, seconds: float) -> None: ...


class Identities(Protocol):
    """Linked identities (mcp_clients.tokens.TokenBroker)."""

    async def identity(self, team: str, user: str) -> Identity | None: ...


class CurrentIdentities(Identities, Protocol):
    """Linked identities whose groups are re-read for a decision (mcp_clients.tokens.TokenBroker)."""

    async def current_identity(self, team: str, user: str) -> Identity:
        """Groups no older than 5 minutes; raises mcp_clients.tokens.TokenUnavailable."""


class LinkOffers(Protocol):
    """Connect links (the linking flow): `waiting` is a request answered once the person links."""

    async def offer(self, team: str, user: str, *, waiting: str | None = None) -> str: ...


class ServerOffers(Protocol):
    """ "Connect <server>" links for `auth: oauth` servers (flows.server_linking): `waiting` is a request
    answered again once the person has connected."""

    async def offer(self, team: str, user: str, server: str, *, waiting: str | None = None) -> str: ...


class Sessions(Protocol):
    """Gateway sessions, one per caller and turn (mcp_clients.gateway.Gateway)."""

    def session(self, caller: Caller, attention: Attention | None = None) -> GatewaySession: ...


class ApprovalRequests(Protocol):
    """Asking people to approve a call (the approval service)."""

    async def request(
        self,
        *,
        turn: Turn,
        caller: Caller,
        spec: ToolSpec,
        arguments: dict[str, Any],
        reason: str,
        tool_use_id: str,
        read_before: tuple[str, ...] = (),
    ) -> object: ...


class TurnApprovals(Protocol):
    """A turn's approvals as recorded (approvals.store.ApprovalStore)."""

    async def for_turn(self, turn_id: str) -> Sequence[Approval]: ...
