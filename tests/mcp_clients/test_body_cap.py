"""What a server sends back is capped while it streams in, before anything parses it (issue 16)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Iterator

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from fixtures.server import RunningServer, serve
from mcp_clients.body_cap import BodyTooLarge, Breach
from mcp_clients.egress import outbound_client

CAP = 64 * 1024


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    async def small(_: Request) -> Response:
        return Response(b"x" * 1000, media_type="application/json")

    async def announced(_: Request) -> Response:
        return Response(b"x" * (CAP + 1), media_type="application/json")

    async def streamed(_: Request) -> StreamingResponse:
        async def pieces() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b"x" * 4096

        return StreamingResponse(pieces(), media_type="application/json")

    async def bomb(request: Request) -> Response:
        seen.append(request.headers.get("accept-encoding", ""))
        body = gzip.compress(b"x" * (CAP * 50))  # small on the wire, 50 times the cap once inflated
        return Response(body, media_type="application/json", headers={"Content-Encoding": "gzip"})

    seen: list[str] = []
    routes = [Route(f"/{f.__name__}", f) for f in (small, announced, streamed, bomb)]
    with serve(Starlette(routes=routes)) as running:
        running.seen = seen  # type: ignore[attr-defined]
        yield running


async def test_a_body_within_the_cap_is_read_whole(server: RunningServer) -> None:
    async with outbound_client(max_body_bytes=CAP) as http:
        assert len((await http.get(f"{server.url}/small")).content) == 1000


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("announced", f"announced {CAP + 1} bytes, more than 65536 bytes"),
        ("streamed", "sent more than 65536 bytes; not read further"),
        ("bomb", "sent a gzip-compressed answer, which could inflate past any size cap"),
    ],
)
async def test_a_body_past_the_cap_is_refused_with_the_reason_and_noted(
    server: RunningServer, path: str, why: str
) -> None:
    breach = Breach()
    async with outbound_client(max_body_bytes=CAP, breach=breach) as http:
        with pytest.raises(BodyTooLarge, match=why):
            await http.get(f"{server.url}/{path}")
    assert breach.message is not None
    assert why in breach.message
    assert breach.message.startswith("127.0.0.1 ")


async def test_capped_requests_ask_for_an_uncompressed_answer(server: RunningServer) -> None:
    async with outbound_client(max_body_bytes=CAP) as http, httpx2.AsyncClient() as plain:
        await plain.get(f"{server.url}/bomb")
        with pytest.raises(BodyTooLarge):
            await http.get(f"{server.url}/bomb")
    plain_asked, capped_asked = server.seen[-2:]  # type: ignore[attr-defined]
    assert "gzip" in plain_asked
    assert capped_asked == "identity"
