"""The scale-out test reuses the scenario world: fake Slack, model, IdP, registry and MCP servers, and a
private Redis, reset before each test. Its web and worker processes are its own (cluster.py)."""

from tests.scenarios.conftest import (  # noqa: F401  (fixtures, re-exported for this folder)
    Scenario,
    scenario,
    scenario_redis,
    scenario_web,
    scenario_world,
)
