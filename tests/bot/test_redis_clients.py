"""REDIS_URL naming Sentinels (bot.redis_clients): what is read from it, what is refused, and that a client
built from it reaches the primary and follows it through a failover."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from approvals.replication import NO_REPLICAS, NotReplicated, Replication, replicated
from bot.redis_check import warn_few_replicas
from bot.redis_clients import async_client, parse_sentinel_url, sync_client
from bot.settings import ConfigError, load_settings
from fixtures.redis_proc import RedisProc
from fixtures.redis_sentinel import SentinelCluster


def test_sentinels_service_database_and_credentials_are_read() -> None:
    url = "redis+sentinel://app:s%40cret@10.0.0.1:26379,sentinel-b,[::1]:26380/mymaster/3?socket_timeout=2"
    parsed = parse_sentinel_url(url)
    assert parsed.sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26379), ("::1", 26380))
    assert parsed.service == "mymaster"
    assert (parsed.node["db"], parsed.node["username"], parsed.node["password"]) == (3, "app", "s@cret")
    assert parsed.node["socket_timeout"] == 2.0
    assert "password" not in parsed.sentinel  # the data nodes' password is not the Sentinels'
    assert "s@cret" not in repr(parsed)


def test_tls_applies_to_sentinels_and_nodes_and_sentinels_may_have_their_own_password() -> None:
    parsed = parse_sentinel_url(
        "rediss+sentinel://:pw@h:26379/main?ssl_ca_certs=/ca.pem&sentinel_password=sp"
    )
    assert parsed.node["ssl"] is True
    assert parsed.node["ssl_ca_certs"] == "/ca.pem"
    assert parsed.sentinel == {"ssl": True, "ssl_ca_certs": "/ca.pem", "password": "sp"}
    assert parsed.node["password"] == "pw"
    assert parsed.node["db"] == 0


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://:hunter2@h:26379", "names no service"),
        ("redis+sentinel://:hunter2@/mymaster", "names no Sentinel"),
        ("redis+sentinel://:hunter2@h:port/mymaster", "is not host:port"),
        ("redis+sentinel://:hunter2@h:26379/mymaster/zero", "must be a number"),
        ("sentinel://:hunter2@h:26379/mymaster", "redis+sentinel://"),
    ],
)
def test_a_malformed_sentinel_url_is_named_in_one_line_without_its_password(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"REDIS_URL": url})
    assert str(caught.value).startswith("REDIS_URL: ")
    assert says in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_replicas_are_waited_for_under_sentinel_only_unless_set() -> None:
    sentinel = "redis+sentinel://h:26379/mymaster/0"
    assert load_settings(env={"REDIS_URL": sentinel}).redis_replication == Replication(1, 2000)
    assert load_settings(env={"REDIS_URL": "redis://h:6379/0"}).redis_replication == NO_REPLICAS
    both = {"REDIS_URL": "redis://h/0", "REDIS_MIN_REPLICAS": "2", "REDIS_REPLICA_WAIT_MS": "500"}
    assert load_settings(env=both).redis_replication == Replication(2, 500)


@pytest.fixture(scope="module")
def cluster() -> Iterator[SentinelCluster]:
    started = SentinelCluster().start()
    yield started
    started.stop()


def test_a_write_confirmed_by_the_replica_survives_the_failover(cluster: SentinelCluster) -> None:
    """Last in this module: it kills the primary."""
    sync = sync_client(cluster.url, socket_connect_timeout=0.5)

    async def write() -> None:
        client = async_client(cluster.url, max_connections=4, timeout=5)
        try:
            await replicated(client, Replication(1, 5000), lambda c: c.set("started", "yes"))
        finally:
            await client.aclose()

    asyncio.run(write())
    cluster.kill_primary()
    cluster.wait_for_promotion()
    assert sync.get("started") == b"yes"  # the same client, now talking to the promoted replica
    sync.set("after", "1")


def test_without_a_replica_the_wait_fails_and_says_so(redis_server: RedisProc) -> None:
    async def write() -> None:
        client = async_client(redis_server.url)
        try:
            await replicated(client, Replication(1, 50), lambda c: c.set("x", "1"))
        finally:
            await client.aclose()

    with pytest.raises(NotReplicated) as caught:
        asyncio.run(write())
    assert (caught.value.acked, caught.value.wanted, caught.value.result) == (0, 1, True)


def test_a_worker_is_warned_at_start_when_too_few_replicas_could_confirm(redis_server: RedisProc) -> None:
    client = sync_client(redis_server.url)
    assert warn_few_replicas(client, 0) is None  # a single Redis, nothing asked of it
    warning = warn_few_replicas(client, 1)
    assert warning is not None
    assert "0 connected replica(s)" in warning
    assert "REDIS_MIN_REPLICAS is 1" in warning
