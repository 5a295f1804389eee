"""Every Redis client the bot builds, from REDIS_URL: the web, the workers, RQ and its scheduler, the CLI.

REDIS_URL is one of
- `redis://`, `rediss://` (TLS), `unix://`: one server, as redis-py reads them;
- `redis+sentinel://[user:password@]host:26379,host2:26379/mymaster[/db][?options]`: ask these Sentinels
  where the primary of `mymaster` is. Each connection asks again whenever it (re)connects, and a connection
  that finds its server demoted to a replica drops itself, so after a failover every process reaches the
  new primary by itself, without a restart (redis-py's Sentinel connection pools).
- `rediss+sentinel://...`: the same over TLS, to the Sentinels and to the data nodes alike (a forged
  Sentinel answer could otherwise point the bot at a server of an attacker's choice); the TLS options of a
  `rediss://` URL (`ssl_ca_certs=`, `ssl_certfile=`, ...) apply to both.

The URL's user and password are the data nodes' (as in a `redis://` URL). Sentinels that require their own
password get it as `sentinel_password=` (and `sentinel_username=`) in the query; other query options
(`socket_timeout=`, ...) apply to both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlencode

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.connection import parse_url
from redis.sentinel import Sentinel

__all__ = ["SENTINEL_SCHEMES", "SentinelUrl", "async_client", "parse_sentinel_url", "sync_client"]

SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
DEFAULT_SENTINEL_PORT = 26379
_SENTINEL_AUTH = ("sentinel_password", "sentinel_username")


@dataclass(frozen=True)
class SentinelUrl:
    """A `redis+sentinel://` URL taken apart. `node` are the data nodes' connection options, `sentinel` the
    Sentinels' (both hold the password: never log or repr this)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    node: dict[str, Any]
    sentinel: dict[str, Any]

    def __repr__(self) -> str:
        return f"SentinelUrl(sentinels={self.sentinels!r}, service={self.service!r})"


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Raises ValueError with a message that never contains the password."""
    scheme, _, rest = url.partition("://")
    tls = scheme == "rediss+sentinel"
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    sentinels = tuple(_host_port(h) for h in hosts.split(",") if h)
    if not sentinels:
        raise ValueError("names no Sentinel (redis+sentinel://host:26379,host2:26379/mymaster/0)")
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise ValueError("names no service after the Sentinels (redis+sentinel://host:26379/mymaster/0)")
    if db and not db.isdigit():
        raise ValueError("the database after the service name must be a number")
    pairs = parse_qsl(query, keep_blank_values=False)
    auth = {k: v for k, v in pairs if k in _SENTINEL_AUTH}
    others = urlencode([(k, v) for k, v in pairs if k not in _SENTINEL_AUTH])
    # redis-py's own parser reads the options and credentials, exactly as for a redis:// URL.
    at = f"{userinfo}@" if userinfo else ""
    node: dict[str, Any] = parse_url(  # type: ignore[no-untyped-call]
        f"{'rediss' if tls else 'redis'}://{at}127.0.0.1/{db or 0}?{others}"
    )
    for key in ("host", "port", "connection_class"):
        node.pop(key, None)
    if tls:
        node["ssl"] = True  # the Sentinel pools pick their TLS connection class from this
    sentinel = {k: v for k, v in node.items() if k.startswith(("socket_", "ssl"))}
    sentinel.update({k.removeprefix("sentinel_"): v for k, v in auth.items()})
    return SentinelUrl(sentinels, unquote(service), node, sentinel)


def _host_port(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":") if not text.endswith("]") else (text, "", "")
    if not colon:
        host, port = text, str(DEFAULT_SENTINEL_PORT)
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise ValueError(f"Sentinel address {text!r} is not host:port")
    return unquote(host.strip("[]")), int(port)


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEMES)


def sync_client(url: str, **options: Any) -> redis.Redis:
    """A client for the primary that REDIS_URL names (RQ, the workers, the CLI). `options` as redis-py's."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **options)
    parsed = parse_sentinel_url(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        parsed.sentinels, sentinel_kwargs={**parsed.sentinel, **_socket(options)}, **parsed.node
    )
    return cast(redis.Redis, sentinel.master_for(parsed.service, **options))  # type: ignore[no-untyped-call]


def async_client(url: str, *, max_connections: int | None = None, **options: Any) -> aioredis.Redis:
    """The async client (the web process and every job). With `max_connections`, commands wait up to
    `timeout` seconds for a free connection instead of failing at once (a burst of events)."""
    if not is_sentinel(url):
        if max_connections is None:
            return aioredis.Redis.from_url(url, **options)
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, **options)
        return aioredis.Redis(connection_pool=pool)
    parsed = parse_sentinel_url(url)
    sentinel = AsyncSentinel(  # type: ignore[no-untyped-call]
        parsed.sentinels, sentinel_kwargs={**parsed.sentinel, **_socket(options)}, **parsed.node
    )
    if max_connections is not None:
        # Waits for a free connection like the BlockingConnectionPool above, and asks the Sentinels.
        options = {
            "connection_pool_class": _BlockingSentinelPool,
            "max_connections": max_connections,
            **options,
        }
    return cast(aioredis.Redis, sentinel.master_for(parsed.service, **options))


def _socket(options: dict[str, Any]) -> dict[str, Any]:
    # A short connect timeout asked of the primary applies to asking the Sentinels too.
    return {k: v for k, v in options.items() if k.startswith("socket_")}


class _BlockingSentinelPool(AsyncSentinelPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (it asks where the primary is) that waits for a free connection like the
    BlockingConnectionPool the web process uses against a single Redis."""
