"""What a server says to the person during a call, beyond the result: questions, progress and log messages.

- **Questions** (MCP elicitation, form and URL modes): a connection declares the `elicitation` capability
  only when it is given `Questions` to put them to (a person who can answer: a turn, not an approved action
  running alone). The SDK's callback becomes a `Question`; whatever `Questions.ask` does (a form in Slack,
  an answer from another process, no answer in time), the server gets an `ElicitResult`: an accepted form
  carries the schema's own defaults for what the person left empty (mcp_clients/elicitation.py), and a
  failure to ask is a cancel, never an exception in the server's session.
- **Progress** (`notifications/progress` for a call): handed to `Attention.progress` with the server and
  tool it is about.
- **Log messages** (`notifications/message`): the bot's own log at debug, secrets redacted, cut short; never
  Slack or the model. Servers on the 2026-07-28 protocol send them only when asked, so they are asked only
  while this module's logger shows debug.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from mcp.client import ClientRequestContext
from mcp.client.session import ElicitationFnT, LoggingFnT
from mcp.shared.dispatcher import ProgressFnT
from mcp.types import (
    ElicitRequestParams,
    ElicitRequestURLParams,
    ElicitResult,
    ErrorData,
    LoggingLevel,
    LoggingMessageNotificationParams,
)

from agent.redaction import redact_secrets
from mcp_clients.elicitation import FormValue, with_defaults

__all__ = [
    "Attention",
    "Question",
    "Questions",
    "Reply",
    "calling",
    "elicitation_callback",
    "log_level",
    "progress_callback",
    "server_log",
]

log = logging.getLogger(__name__)

LOG_MESSAGE_MAX_CHARS = 2000
# The tool whose call is under way in this task: a question asked during it names it (on the 2026-07-28
# protocol the question is answered in the calling task; an older server's push arrives elsewhere: None).
calling: ContextVar[str | None] = ContextVar("calling", default=None)


@dataclass(frozen=True)
class Question:
    """A server's question to the person whose call it is. Every text in it is the server's: untrusted."""

    server: str  # how people name the server (its short name)
    tool: str | None  # the call it came during, when known
    mode: Literal["form", "url"]
    message: str
    schema: Mapping[str, Any] | None = None  # form mode: the requested JSON schema
    url: str | None = None  # url mode: where the person is sent
    elicitation_id: str | None = None  # url mode


@dataclass(frozen=True)
class Reply:
    action: Literal["accept", "decline", "cancel"]
    content: Mapping[str, FormValue] | None = None  # an accepted form's fields, as the person gave them


class Questions(Protocol):
    async def ask(self, question: Question) -> Reply:
        """The person's reply; no answer in time is a cancel."""


ProgressHook = Callable[[str, str, float, float | None, str | None], Awaitable[None]]


@dataclass(frozen=True)
class Attention:
    """Who hears a server during one caller's calls. None: not offered (no capability is declared)."""

    questions: Questions | None = None
    progress: ProgressHook | None = None  # (server, tool, progress, total, message)


def question_of(server: str, params: ElicitRequestParams) -> Question:
    if isinstance(params, ElicitRequestURLParams):
        url, key = params.url, params.elicitation_id
        return Question(server, calling.get(), "url", params.message, url=url, elicitation_id=key)
    return Question(server, calling.get(), "form", params.message, schema=params.requested_schema)


def elicitation_callback(server: str, questions: Questions) -> ElicitationFnT:
    """The SDK's elicitation callback for `server`, asking `questions`. Never raises."""

    async def answer(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        question = question_of(server, params)
        try:
            reply = await questions.ask(question)
        except Exception:  # asking failed (Slack, Redis): the server hears a cancel, the turn goes on
            log.warning("a question from %s could not be put to the person", server, exc_info=True)
            return ElicitResult(action="cancel")
        if reply.action != "accept":
            return ElicitResult(action=reply.action)
        if question.mode == "url":
            return ElicitResult(action="accept")  # the person went there and said they were done
        return ElicitResult(action="accept", content=with_defaults(question.schema, reply.content))

    return answer


def progress_callback(attention: Attention | None, server: str, tool: str) -> ProgressFnT | None:
    hook = attention.progress if attention is not None else None
    if hook is None:
        return None

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        try:
            await hook(server, tool, progress, total, message)
        except Exception:  # progress is a courtesy: it never fails the call it describes
            log.debug("progress of %s on %s not shown", tool, server, exc_info=True)

    return progress


def server_log(server: str) -> LoggingFnT:
    """A server's log messages, to this module's logger at debug: redacted, one line, cut short."""

    async def received(params: LoggingMessageNotificationParams) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        try:
            data = params.data if isinstance(params.data, str) else json.dumps(params.data, default=str)
        except (TypeError, ValueError):
            data = repr(params.data)
        text, _ = redact_secrets(" ".join(data.split()))
        if len(text) > LOG_MESSAGE_MAX_CHARS:
            text = text[: LOG_MESSAGE_MAX_CHARS - 1] + "…"
        name = redact_secrets(str(params.logger or ""))[0][:80]
        log.debug("server %s says (%s%s): %s", server, params.level, f", {name}" if name else "", text)

    return received


def log_level() -> LoggingLevel | None:
    """What to ask servers on the 2026-07-28 protocol for: log messages only while someone reads them."""
    return "debug" if log.isEnabledFor(logging.DEBUG) else None
