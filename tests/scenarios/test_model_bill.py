"""The model's bill in operation (issue 20 item 4): after a real question, the audit holds the turn's usage as
the Messages API billed it, `chatops stats` and /metrics count it, App Home shows the person their own, and
`doctor` reports the last hour's cache hit ratio."""

from __future__ import annotations

import json

import httpx2
from prometheus_client.parser import text_string_to_metric_families

from agent.usage import Usage
from tests.scenarios.conftest import Scenario
from tests.scenarios.test_doctor import doctor, line
from tests.scenarios.test_home import open_home
from tests.scenarios.test_operating import ask_alice, chatops


def billed(s: Scenario) -> Usage:
    """What the fake Messages API billed, summed over every answered request."""
    total = Usage()
    for request in s.world.anthropic.requests():
        if request.status == 200:
            total += Usage.from_api(request.response["usage"])
    return total


def test_the_turns_usage_is_audited_as_billed_and_counted_everywhere(scenario: Scenario) -> None:
    s = scenario
    ask_alice(s)
    sent = billed(s)
    assert sent.prompt > 0
    assert sent.output > 0

    records = [json.loads(x) for x in chatops(s, "audit", "export", "--user", "U0ALICE").splitlines()]
    [usage] = [r for r in records if r["kind"] == "model_usage"]
    assert usage["usage"] == sent.as_dict()
    assert usage["server"] == "io.example/presto"
    assert usage["sub"] == "u-alice"

    out = chatops(s, "stats")
    by_server = out.split("Model usage by server", 1)[1].split("\n\n", 1)[0]
    [presto] = [x.split() for x in by_server.splitlines() if "io.example/presto" in x]
    assert presto[2] == "1"  # month, server, turns
    assert presto[6] == f"{sent.output:,}"

    families = {f.name: f for f in text_string_to_metric_families(httpx2.get(f"{s.web.url}/metrics").text)}
    tokens = {x.labels["kind"]: x.value for x in families["chatops_model_billed_tokens"].samples}
    assert tokens.get("output") == sent.output
    assert (
        tokens.get("cache_read", 0) + tokens.get("cache_write_5m", 0) + tokens.get("input", 0) == sent.prompt
    )

    home = json.dumps(open_home(s, "U0ALICE"))
    assert "Your model usage this month" in home
    assert f"{sent.prompt + sent.output:,} tokens" in home

    report = line(doctor(s), "model cache")
    assert report.startswith("ok ")
    assert "of the input of 1 turns in the last hour was read from the cache" in report
