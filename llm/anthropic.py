"""The Messages API behind the agent's `Model` port (the loop itself knows no SDK).

Retries belong to the SDK: it backs off on 429/5xx/529, honours `retry-after`, and obeys
`x-should-retry: false`, which the API sends with a spend-limit 429 (waiting cannot help until someone
raises the limit). Whatever still fails becomes the one error the loop understands,
`agent.errors.ModelUnavailable`; its message is written for the person in Slack, and the SDK details go to
the log here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import anthropic
import httpx2

from agent.caching import TTL, cached_request
from agent.errors import ModelUnavailable, UnavailableKind
from agent.usage import Usage
from llm.streaming import StreamedReply, read_stream

__all__ = ["AnthropicModel", "ModelReplyData", "make_client"]

log = logging.getLogger(__name__)

# Long reads are normal (a 4k-token answer takes a while); the loop's wall-clock cap bounds the total.
DEFAULT_TIMEOUT = httpx2.Timeout(120.0, connect=5.0)


@dataclass(frozen=True)
class ModelReplyData:
    """A `ModelReply`: content blocks as plain dicts, ready to store and to send back."""

    content: tuple[dict[str, Any], ...]
    stop_reason: str | None
    input_tokens: int
    output_tokens: int
    # The same call split the way it is billed (cache writes and reads apart).
    usage: Usage = field(default_factory=Usage)


def make_client(
    api_key: str,
    base_url: str | None = None,
    *,
    http_client: httpx2.AsyncClient | None = None,
    max_retries: int = 3,
    timeout: float | httpx2.Timeout = DEFAULT_TIMEOUT,
) -> anthropic.AsyncAnthropic:
    """An AsyncAnthropic with our retry and timeout policy (pass a shared `http_client` to reuse TLS)."""
    return anthropic.AsyncAnthropic(
        api_key=api_key,
        base_url=base_url,
        http_client=http_client,
        max_retries=max_retries,
        timeout=timeout,
    )


# Usage and billing limits: no retry helps until a person acts (the SDK does not retry these either).
_SPEND_LIMIT = (
    anthropic.EnforcedSpendLimitReachedError,
    anthropic.ContractSpendLimitReachedError,
    anthropic.LinkedOrganizationSpendLimitReachedError,
    anthropic.PaymentRequiredError,
)


def _classify(exc: anthropic.AnthropicError) -> UnavailableKind:
    # Order matters: the spend-limit error is a RateLimitError, and a timeout is a connection error.
    if isinstance(exc, anthropic.APIStatusError):
        if isinstance(exc, _SPEND_LIMIT) or "spend_limit" in (exc.error_code or ""):
            return "spend_limit"
        if isinstance(exc, anthropic.RateLimitError):
            return "rate_limited"
        if isinstance(exc, anthropic.OverloadedError):
            return "overloaded"
        return "error"
    if isinstance(exc, anthropic.APITimeoutError):
        return "timeout"
    if isinstance(exc, anthropic.APIConnectionError):
        return "connection"
    return "error"


def _usage(value: Any) -> int:
    return value if isinstance(value, int) else 0


class AnthropicModel:
    """`Model` over the Messages API: `messages.create`, or `messages.stream` when the caller wants the
    text as it is written (`on_text`); either way the loop gets the whole message at the end."""

    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        model: str,
        *,
        on_result: Callable[[str, int, int, float], None] | None = None,
        on_usage: Callable[[Usage], None] | None = None,
        caching: bool = True,
        tools_ttl: TTL = "5m",
    ) -> None:
        self.client = client
        self.model = model
        self._on_result = on_result  # (outcome, input tokens, output tokens, seconds), for metrics
        self._on_usage = on_usage  # each answered call's bill, for metrics
        # caching=False sends the request as it was before prompt caching (bench's baseline).
        self.caching = caching
        self.tools_ttl: TTL = tools_ttl

    async def complete(
        self,
        *,
        system: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        max_tokens: int,
        on_text: Callable[[str], Awaitable[None]] | None = None,
    ) -> ModelReplyData:
        started = time.monotonic()
        cached = cached_request(system, tools, tools_ttl=self.tools_ttl) if self.caching else None
        request: dict[str, Any] = {
            "model": self.model,
            "system": cached.system if cached and cached.system else system,
            # The transcript is plain JSON-shaped dicts; the SDK's TypedDicts describe the same shape.
            "messages": list(messages),
            "tools": (cached.tools if cached else list(tools)) if tools else anthropic.omit,
            "cache_control": cached.cache_control if cached else anthropic.omit,
            "max_tokens": max_tokens,
        }
        try:
            if on_text is None:
                data = _data(await cast(Any, self.client.messages).create(**request))
            else:
                data = _streamed_data(await read_stream(self.client, request, on_text))
        except anthropic.AnthropicError as exc:
            kind = _classify(exc)
            status = getattr(exc, "status_code", None)
            request_id = getattr(exc, "request_id", None)
            log.warning(
                "model call failed: %s (%s, status=%s, request_id=%s)",
                kind,
                type(exc).__name__,
                status,
                request_id,
            )
            if self._on_result is not None:
                self._on_result(kind, 0, 0, time.monotonic() - started)
            raise ModelUnavailable(kind) from exc
        if self._on_usage is not None:
            self._on_usage(data.usage)
        if self._on_result is not None:
            self._on_result("ok", data.input_tokens, data.output_tokens, time.monotonic() - started)
        return data


def _data(reply: Any) -> ModelReplyData:
    usage = reply.usage
    return ModelReplyData(
        # exclude_none: the SDK adds optional fields as null, which the API need not see echoed back.
        # warnings=False: a malformed tool input is the loop's to report to the model, not a log warning.
        content=tuple(b.model_dump(mode="json", exclude_none=True, warnings=False) for b in reply.content),
        stop_reason=reply.stop_reason,
        # Cached input still counts against the conversation's budget.
        input_tokens=_usage(usage.input_tokens)
        + _usage(usage.cache_creation_input_tokens)
        + _usage(usage.cache_read_input_tokens),
        output_tokens=_usage(usage.output_tokens),
        usage=Usage.from_api(usage.model_dump(mode="json", warnings=False)),
    )


def _streamed_data(reply: StreamedReply) -> ModelReplyData:
    usage = reply.usage
    return ModelReplyData(
        content=tuple(reply.content),
        stop_reason=reply.stop_reason,
        input_tokens=sum(
            _usage(usage.get(k))
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        ),
        output_tokens=_usage(usage.get("output_tokens")),
        usage=Usage.from_api(usage),
    )
