import socket

import httpx2
import pytest

from fixtures.server import serve


def test_loopback_servers_are_reachable() -> None:
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with serve(app) as server:
        assert httpx2.get(server.url + "/").text == "ok"


def test_outbound_internet_is_refused() -> None:
    with pytest.raises(OSError, match="netguard"):
        socket.create_connection(("93.184.216.34", 443), timeout=2)
    with pytest.raises(OSError, match="netguard"):
        socket.getaddrinfo("api.anthropic.com", 443)
