"""A tool withheld for a poisoned definition is reported to the audit, where its owners' alerting reads: once
per definition and reason, not once per turn that meets it."""

from __future__ import annotations

import json

from fixtures.anthropic_fake import text
from tests.scenarios.conftest import Scenario

CHANNEL = "C0DATAENG"


def withheld_records(s: Scenario) -> list[dict[str, object]]:
    records = [json.loads(fields[b"record"]) for _, fields in s.redis.xrange("chatops:audit")]
    return [r for r in records if r["kind"] == "tool_withheld"]


def test_a_poisoned_tool_is_audited_once_for_its_owners(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.servers["presto"].knobs.poison("query_history")
    s.world.anthropic.set_default(lambda body: text("Nothing to add."))
    for question in ("which presto queries are running?", "and now?"):
        s.ingress.post(s.ingress.app_mention("U0ALICE", CHANNEL, question))
        s.work()
    (record,) = withheld_records(s)
    assert (record["server"], record["tool"], record["outcome"]) == (
        "io.example/presto",
        "query_history",
        "denied",
    )
    assert "withheld" in record["detail"]
    assert "<IMPORTANT>" not in json.dumps(record)  # the hostile text itself is not replayed anywhere
