"""A streamed Messages API reply, read event by event into the same plain-dict reply a whole one gives.

The SDK's own accumulator (`messages.stream`) parses tool input while it streams and raises on input that
is valid JSON but not readable piecewise (a bare string): a whole reply hands such input to the loop, which
tells the model its arguments must be an object. Reading the raw events keeps both paths alike: text
deltas go to `on_text` as they arrive, tool input is parsed once its block is complete.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

import anthropic

__all__ = ["StreamedReply", "read_stream"]


class StreamedReply:
    """What `read_stream` gathered: content blocks as dicts, the stop reason and the usage fields."""

    def __init__(self) -> None:
        self.content: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.usage: dict[str, Any] = {}
        self._json: dict[int, str] = {}

    def start(self, message: Any) -> None:
        self.usage.update(_plain(message.usage))

    def open(self, index: int, block: Any) -> None:
        while len(self.content) <= index:
            self.content.append({})
        self.content[index] = _plain(block)
        if self.content[index].get("type") in ("tool_use", "server_tool_use"):
            self._json[index] = ""

    def add(self, index: int, delta: Any) -> str:
        """Apply one delta; the text it adds to a text block ("" for anything else)."""
        block = self.content[index]
        if delta.type == "text_delta":
            block["text"] = block.get("text", "") + delta.text
            return str(delta.text)
        if delta.type == "input_json_delta":
            self._json[index] = self._json.get(index, "") + delta.partial_json
        elif delta.type == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.thinking
        elif delta.type == "signature_delta":
            block["signature"] = delta.signature
        elif delta.type == "citations_delta":
            block.setdefault("citations", []).append(_plain(delta.citation))
        return ""

    def close(self, index: int) -> None:
        if index in self._json:
            raw = self._json.pop(index)
            try:
                self.content[index]["input"] = json.loads(raw) if raw else {}
            except ValueError:  # the loop reports arguments that are not an object to the model
                self.content[index]["input"] = raw

    def end(self, delta: Any, usage: Any) -> None:
        self.stop_reason = delta.stop_reason
        self.usage.update({k: v for k, v in _plain(usage).items() if v is not None})


def _plain(value: Any) -> dict[str, Any]:
    dumped = value.model_dump(mode="json", exclude_none=True, warnings=False)
    return cast(dict[str, Any], dumped)


async def read_stream(
    client: anthropic.AsyncAnthropic, request: dict[str, Any], on_text: Callable[[str], Awaitable[None]]
) -> StreamedReply:
    reply = StreamedReply()
    stream = await cast(Any, client.messages).create(**request, stream=True)
    async with stream:
        async for event in stream:
            if event.type == "message_start":
                reply.start(event.message)
            elif event.type == "content_block_start":
                reply.open(event.index, event.content_block)
            elif event.type == "content_block_delta":
                if said := reply.add(event.index, event.delta):
                    await on_text(said)
            elif event.type == "content_block_stop":
                reply.close(event.index)
            elif event.type == "message_delta":
                reply.end(event.delta, event.usage)
    return reply
