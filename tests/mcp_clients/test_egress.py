"""Outbound connections are checked on the address actually connected to, after DNS (SPEC §6 "URLs").

Through the real httpx2 client. There is no DNS here: names resolve through an injected resolver, and the
test suite's netguard refuses both resolving a non-loopback name and connecting to a non-loopback address,
so a request that succeeds to `registry.internal.test` can only have gone to the address that was checked,
and a refusal that names its reason came from the guard, not from netguard.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from fixtures.server import RunningServer, serve
from mcp_clients.egress import Resolver, outbound_client


class Hits:
    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def hits() -> Hits:
    return Hits()


@pytest.fixture
def loopback(hits: Hits) -> Iterator[RunningServer]:
    async def hello(_: Request) -> PlainTextResponse:
        hits.count += 1
        return PlainTextResponse("hello")

    with serve(Starlette(routes=[Route("/", hello)])) as server:
        yield server


def resolving(table: dict[str, Sequence[str]]) -> Resolver:
    async def resolve(host: str, port: int) -> Sequence[str]:
        return table[host]

    return resolve


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://2852039166/latest/meta-data", "metadata"),
        ("http://0xA9FEA9FE/latest/meta-data", "metadata"),
        ("http://169.254.43518/latest/meta-data", "metadata"),
        ("http://[::ffff:169.254.169.254]/latest/meta-data", "metadata"),
        ("http://[::ffff:a9fe:a9fe]/latest/meta-data", "metadata"),
        ("http://169.254.10.1/", "link-local"),
        ("http://0/", "unspecified"),
    ],
)
async def test_every_spelling_of_a_forbidden_address_is_refused_before_connecting(
    url: str, reason: str
) -> None:
    async with outbound_client(timeout=5) as http:
        with pytest.raises(httpx2.ConnectError, match=f"{reason}.*not connecting"):
            await http.get(url)


async def test_a_name_that_resolves_to_the_metadata_service_is_refused(loopback: RunningServer) -> None:
    resolver = resolving({"mcp.evil.test": ["169.254.169.254"]})
    async with outbound_client(resolver=resolver, timeout=5) as http:
        with pytest.raises(httpx2.ConnectError, match="mcp.evil.test resolves to 169.254.169.254"):
            await http.get(f"http://mcp.evil.test:{loopback.port}/")


async def test_one_forbidden_address_among_good_ones_refuses_the_name(
    loopback: RunningServer, hits: Hits
) -> None:
    resolver = resolving({"mcp.mixed.test": ["127.0.0.1", "fe80::1"]})
    async with outbound_client(resolver=resolver, timeout=5) as http:
        with pytest.raises(httpx2.ConnectError, match="link-local"):
            await http.get(f"http://mcp.mixed.test:{loopback.port}/")
    assert hits.count == 0


async def test_the_connection_goes_to_the_address_that_was_checked(
    loopback: RunningServer, hits: Hits
) -> None:
    resolver = resolving({"registry.internal.test": ["127.0.0.1"]})
    async with outbound_client(resolver=resolver, timeout=5) as http:
        answer = await http.get(f"http://registry.internal.test:{loopback.port}/")
    assert (answer.status_code, answer.text, hits.count) == (200, "hello", 1)


async def test_a_name_that_rebinds_is_checked_again_on_the_next_connection(
    loopback: RunningServer, hits: Hits
) -> None:
    answers = [["127.0.0.1"], ["169.254.169.254"]]

    async def rebinding(host: str, port: int) -> Sequence[str]:
        return answers.pop(0)

    async with outbound_client(resolver=rebinding, timeout=5) as http:
        close = {"Connection": "close"}  # so the next request opens (and resolves) a new connection
        assert (await http.get(f"http://rebind.test:{loopback.port}/", headers=close)).is_success
        with pytest.raises(httpx2.ConnectError, match="metadata"):
            await http.get(f"http://rebind.test:{loopback.port}/")
    assert hits.count == 1
