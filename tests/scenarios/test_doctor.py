"""`chatops doctor` (SPEC §3): checks every setting against the live services and says plainly what is
wrong, one line per check (ok, warn, BAD, or skip naming the setting it needs), exiting non-zero when
anything is BAD; `--json` for monitoring."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from approvals import turn_queue
from bot.queues import AGENT, QUEUE_NAMES
from fixtures.waiting import wait_until
from tests.scenarios.conftest import Scenario
from tests.scenarios.test_turn_pool import worker_process

CHECKS = ("settings for web", "settings for worker", "Redis", "workers", "workflows", "registry")
MORE_CHECKS = ("identity provider", "model", "Slack")


def doctor(s: Scenario, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1", **overrides}
    env = {k: v for k, v in env.items() if v != "<unset>"}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "doctor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def line(done: subprocess.CompletedProcess[str], check: str) -> str:
    (found,) = [x for x in done.stdout.splitlines() if x[5:].startswith(f"{check}:")]
    return found


def workers_listening(s: Scenario) -> bool:
    rq = all(s.redis.scard(f"rq:workers:{name}") > 0 for name in QUEUE_NAMES if name != AGENT)
    return rq and turn_queue.live_slots(s.redis) > 0


def test_a_healthy_deployment_passes_every_check(scenario: Scenario) -> None:
    with worker_process(scenario):
        wait_until("the worker to listen on every queue", lambda: workers_listening(scenario), timeout=90)
        done = doctor(scenario)
    assert done.returncode == 0, done.stdout
    for check in CHECKS + MORE_CHECKS:
        if check != "Redis":
            assert line(done, check).startswith("ok   "), done.stdout
    # The test Redis keeps nothing on disk: it works, and doctor says what a crash would cost.
    assert line(done, "Redis").startswith("warn Redis: Redis appendonly is off")
    assert done.stdout.strip().endswith("all good, 1 warning(s)")


def test_no_worker_listening_is_a_problem_even_with_nothing_waiting(scenario: Scenario) -> None:
    done = doctor(scenario)
    assert done.returncode == 1
    assert line(done, "workers").startswith("BAD  workers: ")
    assert "chatops-agent: 0 turn slots, 0 waiting" in line(done, "workers")
    assert "start `chatops worker`" in line(done, "workers")


def test_every_check_has_a_line_and_a_missing_setting_skips_what_needs_it(scenario: Scenario) -> None:
    done = doctor(scenario, OAUTH_ISSUER="<unset>", ANTHROPIC_API_KEY="<unset>", SLACK_BOT_TOKEN="<unset>")
    for check in CHECKS + MORE_CHECKS:
        line(done, check)  # exactly one line each
    assert line(done, "identity provider") == "skip identity provider: skipped: needs OAUTH_ISSUER"
    assert line(done, "model") == "skip model: skipped: needs ANTHROPIC_API_KEY"
    assert line(done, "Slack") == "skip Slack: skipped: needs SLACK_BOT_TOKEN"
    settings = line(done, "settings for worker")
    assert settings.startswith("BAD  settings for worker: SLACK_BOT_TOKEN: is required; OAUTH_ISSUER")
    assert "ANTHROPIC_API_KEY: is required" in settings  # every missing setting at once
    assert done.returncode == 1


def test_json_output_has_every_check_for_monitoring(scenario: Scenario) -> None:
    done = doctor(scenario, "--json")
    report = json.loads(done.stdout)
    assert report["ok"] is False  # no worker runs
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert list(statuses) == [
        "settings for web",
        "settings for worker",
        "Redis",
        "workers",
        "model cache",
        "Slack",
        "registry",
        "identity provider",
        "model",
        "workflows",
    ]
    assert statuses["workers"] == "BAD"
    assert statuses["Redis"] == "warn"
    assert statuses["Slack"] == "ok"
    assert done.returncode == 1


def test_each_broken_service_is_named_and_the_rest_still_checked(scenario: Scenario) -> None:
    scenario.world.slack.revoke("xoxb-not-the-token")
    done = doctor(
        scenario,
        REGISTRY_URL="http://127.0.0.1:9/v0/servers",
        ANTHROPIC_API_KEY="sk-ant-not-the-key",
        SLACK_BOT_TOKEN="xoxb-not-the-token",
    )
    assert done.returncode == 1
    assert line(done, "registry").startswith("BAD")
    assert line(done, "model") == "BAD  model: ANTHROPIC_API_KEY was not accepted"
    assert line(done, "Slack") == "BAD  Slack: SLACK_BOT_TOKEN: Slack refused it (token_revoked)"
    assert line(done, "Redis").startswith("warn ")  # the others are still checked, and work
    assert line(done, "identity provider").startswith("ok ")
    assert "4 problem(s) found" in done.stdout  # and no worker listens
    assert "sk-ant-not-the-key" not in done.stdout + done.stderr  # secrets never printed
    assert "xoxb-not-the-token" not in done.stdout + done.stderr


def test_questions_waiting_with_no_worker_to_answer_them_are_reported(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    assert s.ingress.post(s.ingress.app_mention("U0ALICE", "C0DATAENG", "anyone there?")).status == 200
    done = doctor(s)
    assert done.returncode == 1
    assert "chatops-agent: 0 turn slots, 1 waiting" in line(done, "workers")
    assert "start `chatops worker`" in line(done, "workers")


def test_a_registry_or_provider_at_a_metadata_address_is_refused_however_it_is_written(
    scenario: Scenario,
) -> None:
    done = doctor(scenario, REGISTRY_URL="http://2852039166/", OAUTH_ISSUER="http://0xA9FEA9FE")
    assert done.returncode == 1
    registry = line(done, "registry")
    assert registry.startswith("BAD")
    assert "169.254.169.254, a link-local cloud metadata address" in registry
    assert line(done, "identity provider").startswith("BAD")
    assert "netguard" not in done.stdout  # refused by the bot's own rule, before any connection was tried


def test_servers_claiming_one_resource_are_both_shown_unusable_by_doctor_and_registry(
    scenario: Scenario,
) -> None:
    collector = scenario.world.registry.entry("io.example/presto")
    collector["server"]["name"] = "com.evil/collector"
    collector["server"]["remotes"] = [{"type": "streamable-http", "url": "http://127.0.0.1:9/collector/mcp"}]
    scenario.world.registry.add(collector)  # its governance still claims presto's resource
    done = doctor(scenario)
    registry = done.stdout[done.stdout.index("registry:") :]
    assert "skipped io.example/presto: resource" in registry
    assert "also claimed by com.evil/collector" in registry
    assert "skipped com.evil/collector: resource" in registry
    env = {**os.environ, **scenario.env, "CHATOPS_NETGUARD": "1"}
    listing = subprocess.run(
        [sys.executable, "-m", "bot.cli", "registry"], env=env, capture_output=True, text=True, timeout=120
    )
    assert listing.returncode == 0, listing.stderr
    assert not any(line.startswith("io.example/presto ") for line in listing.stdout.splitlines())
    assert "skipped io.example/presto: resource" in listing.stdout
    assert "also claimed by io.example/presto" in listing.stdout


def test_malformed_entries_are_listed_and_a_server_whose_header_variable_is_unset_is_bad(
    scenario: Scenario,
) -> None:
    scenario.world.registry.add_poisoned("remotes-not-list", "islatest-string")
    scenario.world.registry.patch_governance(
        "io.example/statuspage", {"headers": {"X-Api-Key": "CHATOPS_HEADER_STATUSPAGE"}}
    )
    done = doctor(scenario, CHATOPS_HEADER_STATUSPAGE="")
    assert line(done, "registry").startswith("ok  "), done.stdout  # set, even if empty: callable
    env = {k: v for k, v in os.environ.items() if k != "CHATOPS_HEADER_STATUSPAGE"}
    unset = subprocess.run(
        [sys.executable, "-m", "bot.cli", "doctor"],
        env={**env, **scenario.env, "CHATOPS_NETGUARD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    registry = unset.stdout[unset.stdout.index("registry:") :]
    assert line(unset, "registry").startswith("BAD")
    assert "cannot call io.example/statuspage: header X-Api-Key needs the environment variable" in registry
    assert "skipped io.example.poison/remotes-not-list: remotes must be a list, not int" in registry
    assert "skipped io.example.poison/islatest-string: isLatest must be true or false" in registry
    assert unset.returncode == 1
