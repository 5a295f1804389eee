"""`chatops registry`: what the registry offers, including what is withheld from the model and why."""

from __future__ import annotations

import pytest

from bot.registry_cli import show_registry
from bot.settings import load_settings
from fixtures.registry import FakeRegistry, dead_urls
from fixtures.server import serve
from registry_cache.view import NOBODY_MAY_APPROVE

NAMES = ("PRESTO_URL", "SPARK_URL", "AIRFLOW_URL", "LEDGER_URL", "STATUSPAGE_URL", "HIVE_URL", "SEARCH_URL")
URLS = dead_urls(NAMES)


def lines_of(out: str, server: str) -> list[str]:
    """The server's own line and its tools' lines."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(server))
    rest = lines[start + 1 :]
    end = next((i for i, line in enumerate(rest) if not line.startswith("    ")), len(rest))
    return lines[start : start + 1 + end]


async def test_a_sensitive_tool_nobody_may_approve_is_shown_as_withheld_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = FakeRegistry.from_file(urls=URLS)
    registry.patch_governance("io.example/statuspage", {"tools": {"post_update": {"approval": "required"}}})
    with serve(registry.app) as server:
        settings = load_settings(env={"REGISTRY_URL": server.url})
        assert await show_registry(settings, as_who=None, channel=None) == 0
    out = capsys.readouterr().out
    statuspage = lines_of(out, "io.example/statuspage")
    (post_update,) = [line for line in statuspage if line.strip().startswith("post_update")]
    assert f"WITHHELD: {NOBODY_MAY_APPROVE}" in post_update
    assert any("(tools needing approval)" in line and NOBODY_MAY_APPROVE in line for line in statuspage)
    presto = lines_of(out, "io.example/presto")  # approvers are named: nothing of presto is withheld
    assert not any("withheld" in line.lower() for line in presto)
