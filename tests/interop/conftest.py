"""The reference MCP servers from the npm registry, on loopback, registered in a registry with governance.

server-everything speaks Streamable HTTP itself; server-memory and server-filesystem are stdio servers
behind the stdio-to-HTTP bridge, as a company would front them. All three are `auth: none` (they take no
tokens), so nothing here asks the identity provider for one: the provider points at a closed port.
Without `interop/node_modules` every test here fails and says to run `make interop-setup`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet

from fixtures.npm_peers import (
    FILESYSTEM,
    MEMORY,
    NodePeer,
    PeersMissing,
    node_binary,
    package_file,
    start_bridged,
    start_everything,
)
from fixtures.registry import FakeRegistry
from fixtures.server import serve
from mcp_clients.gateway import Breaker, Caller, Gateway
from mcp_clients.provider import Provider
from mcp_clients.sealing import Sealer
from mcp_clients.tokens import Identity, TokenBroker
from registry_cache.client import fetch_all
from registry_cache.snapshot import SharedSnapshot

DATA = Path(__file__).parent / "data"
TEAM = "T0CHATOPS"
CLOSED_ISSUER = "http://127.0.0.1:9"  # the discard port: a token request would fail at once, and loudly
RUNBOOK = "Restart the ingest workers one at a time; wait for lag < 1 min between each.\n"


@dataclass
class Peers:
    everything: NodePeer
    memory: NodePeer
    filesystem: NodePeer
    runbooks: Path

    def urls(self) -> dict[str, str]:
        return {
            "EVERYTHING_URL": self.everything.url,
            "MEMORY_URL": self.memory.url,
            "FILESYSTEM_URL": self.filesystem.url,
        }


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    missing = None
    try:
        node_binary()
        for package in (MEMORY, FILESYSTEM):
            package_file(*package)
    except PeersMissing as exc:
        missing = str(exc)
    if missing is not None:  # a failure, not a skip: CI must never pass without its real peers
        pytest.fail(missing, pytrace=False)
    logs = tmp_path_factory.mktemp("peers")
    runbooks = tmp_path_factory.mktemp("runbooks")
    (runbooks / "ingest-lag.md").write_text(RUNBOOK)
    started: list[NodePeer] = []
    try:
        started.append(start_everything(logs))
        memory_file = {"MEMORY_FILE_PATH": str(logs / "memory.jsonl")}
        started.append(start_bridged("server-memory", MEMORY, [], logs, memory_file))
        started.append(start_bridged("server-filesystem", FILESYSTEM, [str(runbooks)], logs))
        yield Peers(*started, runbooks=runbooks)
    finally:
        for peer in started:
            peer.stop()


@pytest.fixture
async def gateway(peers: Peers, aredis: aioredis.Redis) -> AsyncIterator[Gateway]:
    registry = FakeRegistry.from_file(DATA / "reference-registry.json", urls=peers.urls())
    with serve(registry.app) as registry_server:
        async with httpx2.AsyncClient() as http:
            provider = Provider(http, CLOSED_ISSUER, "chatops", "unused")
            broker = TokenBroker(aredis, provider, Sealer([Fernet.generate_key().decode()]))
            snapshot = SharedSnapshot(
                aredis, lambda: fetch_all(http, registry_server.url), ttl_seconds=60, stale_max_seconds=900
            )
            yield Gateway(snapshot, broker, breaker=Breaker())


def caller(*groups: str, sub: str = "u-sam") -> Caller:
    identity = Identity(TEAM, "U0SAM", sub, "sam@example.com", frozenset(groups), time.time(), ())
    return Caller(TEAM, "U0SAM", "C0OPS", identity)
