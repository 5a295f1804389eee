"""A tool is called only at the remote it was listed from (SPEC §6: a moved server keeps no trust)."""

from __future__ import annotations

import pytest

from mcp_clients import gateway
from tests.mcp_clients.conftest import Env


async def test_a_call_after_the_entry_moved_to_another_url_is_refused_locally(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway, "VIEW_REUSE_SECONDS", 0.0)  # each call reads the registry afresh
    spark = env.world.servers["spark"]
    async with env.gateway.session(await env.caller("alice")) as session:
        assert "spark__failed_stages" in {t.model_name for t in await session.tools()}
        env.world.registry.set_remote_url("io.example/spark", "http://127.0.0.1:9/mcp", resource=False)
        await env.gateway.snapshot.refresh_now()
        outcome = await session.call("spark__failed_stages", {"app_id": "application_1764036000000_0042"})
    assert (outcome.ok, outcome.error_kind) == (False, "refused")
    assert "changed its URL or resource" in outcome.text
    assert spark.record.tool_calls() == []
