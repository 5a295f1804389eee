"""A tool withheld from the model (a poisoned definition, or a sensitive tool nobody may approve) is reported
to the audit, where its owners' alerting reads: once per tool and reason, not once per turn that meets it."""

from __future__ import annotations

import json
from typing import Any

from fixtures.anthropic_fake import Body, Reply, text, tool_names, tool_results, tool_use
from fixtures.mcp_small import INCIDENT_ID
from registry_cache.view import NOBODY_MAY_APPROVE
from tests.scenarios.conftest import Scenario

CHANNEL = "C0DATAENG"


def withheld_records(s: Scenario) -> list[dict[str, Any]]:
    return s.audit("tool_withheld")


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


def test_a_sensitive_tool_that_nobody_may_approve_is_withheld_with_its_reason(scenario: Scenario) -> None:
    """statuspage.post_update is not read-only and the registry names nobody who may approve it: it is not
    offered, a call the model makes anyway is refused locally, and the turn still answers."""
    s = scenario
    s.link("alice")

    def script(body: Body) -> Reply:
        if not tool_results(body):
            update = {"incident_id": INCIDENT_ID, "message": "Cause identified."}
            return tool_use("statuspage__post_update", update, text_before="Posting an update.")
        return text("I could not post the update.")

    s.world.anthropic.set_default(script)
    mention = s.ingress.app_mention("U0ALICE", "C0INCIDENT", "post an update to the status page")
    s.ingress.post(mention)
    s.work()
    first = s.world.anthropic.requests()[0]
    offered = set(tool_names(first.body))
    assert "statuspage__post_update" not in offered
    assert "statuspage__current_incidents" in offered  # only the unapprovable tool goes, not its server
    assert s.world.servers["statuspage"].ledger.count("post_update") == 0
    assert s.approvals("C0INCIDENT", mention.event["ts"]) == []
    assert s.turn_status("C0INCIDENT", mention.event["ts"]) == "answered"
    thread = " ".join(m.text for m in s.bot_messages("C0INCIDENT", mention.event["ts"]))
    assert "could not post the update" in thread
    (record,) = withheld_records(s)
    assert (record["server"], record["tool"], record["outcome"]) == (
        "io.example/statuspage",
        "post_update",
        "denied",
    )
    assert NOBODY_MAY_APPROVE in str(record["detail"])
