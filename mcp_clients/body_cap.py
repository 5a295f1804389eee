"""A size cap on what a server may send back, enforced while the body streams in, before anything parses it.

A server that answers a listing or a call with 2 GB (or with a gzip bomb) must cost the bot at most the cap:
the MCP SDK reads a JSON body whole and an SSE stream event by event, so without this the worker's memory is
the limit. `CappedStream` counts the bytes as they arrive and raises `BodyTooLarge` (an httpx2 stream error,
which the SDK turns into that one request's error) past `limit`; a declared `Content-Length` over it fails
at the first read. The cap counts bytes as they travel, so MCP requests ask for `identity` and a compressed
answer is refused outright: it could inflate past any cap after the count. `Breach` keeps what was refused,
for the error the person sees (the SDK's own message for an SSE stream cut short does not say why).

Errors: `BodyTooLarge(httpx2.StreamError)`, message "<host> sent more than N MiB; not read further".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx2

__all__ = ["DEFAULT_MAX_BODY_BYTES", "BodyTooLarge", "Breach", "CappedStream", "cap_response"]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


class BodyTooLarge(httpx2.StreamError):
    """A response body passed the cap; the message says whose and how large the cap is."""


@dataclass
class Breach:
    """The last refusal on one client, if any: read by whoever reports that client's failures."""

    message: str | None = None


def _cap_text(limit: int) -> str:
    return f"{limit / (1024 * 1024):g} MiB" if limit >= 1024 * 1024 else f"{limit} bytes"


class CappedStream(httpx2.AsyncByteStream):
    """`inner` up to `limit` bytes; past that (or at once, when `refused` says why) `BodyTooLarge`."""

    def __init__(
        self, inner: httpx2.AsyncByteStream, limit: int, host: str, breach: Breach, refused: str | None = None
    ) -> None:
        self._inner = inner
        self._limit = limit
        self._host = host
        self._breach = breach
        self._refused = refused

    def _refuse(self, why: str) -> BodyTooLarge:
        self._breach.message = f"{self._host} {why}; not read further"
        return BodyTooLarge(self._breach.message)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._refused is not None:
            raise self._refuse(self._refused)
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise self._refuse(f"sent more than {_cap_text(self._limit)}")
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


def cap_response(
    request: httpx2.Request, response: httpx2.Response, limit: int, breach: Breach
) -> httpx2.Response:
    """`response` (a transport's answer to `request`, not yet read) with its body behind the cap."""
    stream = response.stream
    assert isinstance(stream, httpx2.AsyncByteStream)
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    declared = response.headers.get("content-length", "")
    refused = None
    if encoding not in ("", "identity"):
        refused = f"sent a {encoding}-compressed answer, which could inflate past any size cap"
    elif declared.isdigit() and int(declared) > limit:
        refused = f"announced {declared} bytes, more than {_cap_text(limit)}"
    return httpx2.Response(
        status_code=response.status_code,
        headers=response.headers,
        stream=CappedStream(stream, limit, request.url.host, breach, refused),
        extensions=response.extensions,
    )
