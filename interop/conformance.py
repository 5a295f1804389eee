"""`make interop`: the official MCP conformance suite's client scenarios against this project's client.

Every client scenario the pinned suite lists is run, one at a time, against `interop.conformance_client`
(which drives `mcp_clients.connection.Connection`). The suite writes each scenario's checks to
`interop/results/`; a scenario passes when at least one check succeeded and none failed. The output is one
line per scenario, `<scenario>: PASS` or `<scenario>: FAIL (<why>)`, then `N passed, M failed`.

The exit status is 0 only when every scenario in REQUIRED passed. The others are shown as measured.
The authorization scenarios (`auth/*`) are played by the bot's own per-server OAuth code (see
`interop.conformance_auth`), with one private redis-server for the run holding its tokens and state.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fixtures.npm_peers import INTEROP_DIR, PeersMissing, node_binary, package_file
from fixtures.redis_proc import RedisProc

__all__ = ["REQUIRED", "Outcome", "judge", "main"]

# The one list of scenarios that must pass: the client scenarios (issue 16), and the authorization ones
# played by mcp_clients.server_oauth through interop.conformance_auth (issue 17).
REQUIRED = (
    "initialize",
    "tools_call",
    "sse-retry",
    "elicitation-sep1034-client-defaults",
    "auth/metadata-default",
    "auth/metadata-var1",
    "auth/metadata-var2",
    "auth/metadata-var3",
    "auth/basic-cimd",
    "auth/pre-registration",
    "auth/scope-from-www-authenticate",
    "auth/scope-from-scopes-supported",
    "auth/scope-omitted-when-undefined",
    "auth/scope-step-up",
    "auth/scope-retry-limit",
    "auth/token-endpoint-auth-basic",
    "auth/token-endpoint-auth-post",
    "auth/token-endpoint-auth-none",
    "auth/resource-mismatch",
    "auth/2025-03-26-oauth-metadata-backcompat",
    "auth/2025-03-26-oauth-endpoint-fallback",
    "auth/client-credentials-basic",
    "auth/client-credentials-jwt",
    "auth/offline-access-scope",
    "auth/offline-access-not-supported",
    "auth/cross-app-access-complete-flow",  # enterprise-managed authorization (server_oauth_enterprise)
)

SUITE = ("@modelcontextprotocol/conformance", "dist/index.js")
RESULTS = INTEROP_DIR / "results"
SCENARIO_TIMEOUT_MS = 20_000  # the suite's own bound on one client run
RUN_TIMEOUT_SECONDS = 120.0  # ours on one scenario, suite start-up and teardown included
_LISTED = re.compile(r"^\s+- (\S+)")


@dataclass(frozen=True)
class Outcome:
    scenario: str
    passed: bool
    why: str = ""

    def line(self, required: bool) -> str:
        if self.passed:
            return f"{self.scenario}: PASS"
        note = "" if required else "not required yet: "
        return f"{self.scenario}: FAIL ({note}{self.why})"


def judge(scenario: str, checks: Any, client_output: str = "") -> Outcome:
    """PASS when at least one check succeeded and none failed; else the first failure, in a few words."""
    if not isinstance(checks, list) or not checks:
        said = client_output.strip().splitlines()[-1:] or ["no output"]
        return Outcome(scenario, False, f"no checks recorded; client said: {said[0][:160]}")
    statuses = [c.get("status") if isinstance(c, dict) else None for c in checks]
    failures = [c for c in checks if isinstance(c, dict) and c.get("status") == "FAILURE"]
    if failures:
        first = failures[0]
        what = first.get("errorMessage") or first.get("description") or first.get("id") or "a check failed"
        more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
        return Outcome(scenario, False, f"{str(what)[:200]}{more}")
    if "SUCCESS" not in statuses:
        return Outcome(scenario, False, "no check succeeded")
    return Outcome(scenario, True)


def client_scenarios(node: Path, suite: Path) -> list[str]:
    listed = subprocess.run(
        [str(node), str(suite), "list", "--client"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=True,
    )
    return [m.group(1) for m in map(_LISTED.match, listed.stdout.splitlines()) if m]


def run_scenario(node: Path, suite: Path, scenario: str, env: dict[str, str] | None = None) -> Outcome:
    out = RESULTS / scenario.replace("/", "_")
    client = f"{shlex.quote(sys.executable)} -m interop.conformance_client"
    argv = [str(node), str(suite), "client", "--command", client, "--scenario", scenario]
    argv += ["--timeout", str(SCENARIO_TIMEOUT_MS), "-o", str(out)]
    try:
        subprocess.run(
            argv,
            cwd=INTEROP_DIR.parent,  # so that `-m interop.conformance_client` imports this checkout
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=RUN_TIMEOUT_SECONDS,
            check=False,  # the suite's exit status folds in scenarios we judge ourselves
            env=env,
        )
    except subprocess.TimeoutExpired:
        return Outcome(scenario, False, f"the suite did not finish within {RUN_TIMEOUT_SECONDS:.0f} s")
    found = sorted(out.rglob("checks.json"))
    if not found:
        return Outcome(scenario, False, "the suite wrote no results")
    stdout = found[-1].with_name("stdout.txt")
    said = stdout.read_text(errors="replace") if stdout.exists() else ""
    try:
        checks = json.loads(found[-1].read_text())
    except ValueError:
        checks = None
    return judge(scenario, checks, said)


def main(argv: Sequence[str] = ()) -> int:
    """`argv`: scenario names to run (default: every client scenario of the suite)."""
    try:
        node, suite = node_binary(), package_file(*SUITE)
    except PeersMissing as exc:
        print(f"interop: {exc}", file=sys.stderr)
        return 2
    shutil.rmtree(RESULTS, ignore_errors=True)
    scenarios = client_scenarios(node, suite)
    if argv:
        unknown = sorted(set(argv) - set(scenarios))
        if unknown:
            print(f"interop: not scenarios of this suite: {', '.join(unknown)}", file=sys.stderr)
            return 2
        scenarios = [s for s in scenarios if s in argv]
    ordered = [s for s in REQUIRED if s in scenarios] + [s for s in scenarios if s not in REQUIRED]
    missing = [s for s in REQUIRED if s not in scenarios and not argv]
    outcomes = [Outcome(s, False, "not in this version of the suite") for s in missing]
    for outcome in outcomes:
        print(outcome.line(True), flush=True)
    # One private Redis for every authorization scenario's tokens and state (the client's own code keeps
    # them there); each scenario's person and server are new to it.
    redis = RedisProc().start() if any(s.startswith("auth/") for s in ordered) else None
    env = {**os.environ, "CHATOPS_CONFORMANCE_REDIS_URL": redis.url} if redis else None
    try:
        for scenario in ordered:
            outcome = run_scenario(node, suite, scenario, env)
            print(outcome.line(scenario in REQUIRED), flush=True)
            outcomes.append(outcome)
    finally:
        if redis is not None:
            redis.stop()
    passed = sum(o.passed for o in outcomes)
    required = [o for o in outcomes if o.scenario in REQUIRED]
    required_failed = [o.scenario for o in required if not o.passed]
    print(f"required: {len(required) - len(required_failed)} of {len(required)} passed; results in {RESULTS}")
    print(f"{passed} passed, {len(outcomes) - passed} failed")
    return 1 if required_failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
