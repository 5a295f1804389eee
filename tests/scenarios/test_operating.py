"""Operating the bot (SPEC §4 /metrics, §9): after a real question, the audit export shows what ran without
secrets, `chatops stats` counts it, and /metrics answers for the whole deployment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx2
from prometheus_client.parser import text_string_to_metric_families

from approvals.turns import turn_id_for
from bot.queues import QUEUE_NAMES
from fixtures.slack import TEAM_ID
from fixtures.waiting import wait_until
from tests.scenarios.conftest import Scenario
from tests.scenarios.test_asking import CHANNEL, investigator

SECRET_VARIABLES = (
    "SLACK_BOT_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_APP_TOKEN",
    "ANTHROPIC_API_KEY",
    "OAUTH_CLIENT_SECRET",
    "CHATOPS_SECRET_KEY",
)


def chatops(s: Scenario, *args: str) -> str:
    env = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def ask_alice(s: Scenario) -> str:
    s.link("alice")
    s.world.anthropic.set_default(investigator)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?")
    assert s.ingress.post(mention).status == 200
    s.work()
    return str(mention.event["ts"])


def test_the_audit_export_shows_alices_tool_call_without_secrets(scenario: Scenario) -> None:
    s = scenario
    ask_alice(s)
    out = chatops(s, "audit", "export", "--user", "U0ALICE")
    records = [json.loads(line) for line in out.splitlines()]
    calls = [r for r in records if r["kind"] == "tool_call"]
    assert len(calls) == 1
    call = calls[0]
    assert (call["server"], call["tool"], call["outcome"]) == (
        "io.example/presto",
        "query_history",
        "succeeded",
    )
    assert call["sub"] == "u-alice"
    assert len(call["args_sha256"]) == 64
    assert call["stream_id"]
    assert {r["user"] for r in records} == {"U0ALICE"}
    for variable in SECRET_VARIABLES:
        for secret in s.env.get(variable, "").split(","):
            assert not secret or secret not in out, f"{variable} leaked into the audit export"
    assert "Bearer" not in out
    assert "eyJ" not in out  # no JWT (access or ID token) in any field
    assert chatops(s, "audit", "export", "--user", "U0BOB") == ""
    assert chatops(s, "audit", "export", "--server", "presto", "--outcome", "failed") == ""


def test_stats_count_the_call_and_the_feedback(scenario: Scenario) -> None:
    s = scenario
    ts = ask_alice(s)
    turn_id = turn_id_for(TEAM_ID, CHANNEL, ts)
    click = s.ingress.block_actions("U0ALICE", "feedback", channel=CHANNEL, value=f"up:{turn_id}")
    assert s.ingress.post(click).status == 200
    wait_until("the feedback to be stored", lambda: s.redis.hget(f"chatops:feedback:{turn_id}", "U0ALICE"))

    out = chatops(s, "stats")
    by_server = out.split("By server", 1)[1].split("\n\n", 1)[0]
    [presto] = [line.split() for line in by_server.splitlines() if "io.example/presto" in line]
    assert presto[2:4] == ["1", "1"]  # month, server, invocations, active users, hours saved
    by_month = out.split("Impact by month", 1)[1].split("\n\n", 1)[0].splitlines()
    assert by_month[-1].split()[1:3] == ["1", "1"]  # this month: one invocation, one active user
    assert by_month[-1].split()[-1] == "1/0"  # 👍 1, 👎 0


def test_metrics_answer_for_the_deployment(scenario: Scenario) -> None:
    s = scenario
    ask_alice(s)
    answer = httpx2.get(f"{s.web.url}/metrics", timeout=10)
    assert answer.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    depth = families["chatops_queue_depth"]
    assert depth.type == "gauge"
    assert {sample.labels["queue"] for sample in depth.samples} == set(QUEUE_NAMES)
    assert all(sample.value == 0 for sample in depth.samples)  # s.work() drained every queue
    assert families["chatops_metrics_store_up"].samples[0].value == 1
    assert "chatops_tool_calls" in families
    assert "chatops_approvals_pending" in families
