"""Signed payloads whose fields claim more than the signing user may (ACCEPTANCE 13 and attacker extras).

The signature proves the request came from Slack for `user.id`; everything else in a payload (button values,
a modal's private_metadata, extra fields) is the clicker's to forge. Decisions are made from server-side
state and the signed user alone.
"""

from __future__ import annotations

import json

from approvals.store import Approval, Status
from bot.cards import APPROVE_ACTION_ID, REJECT_CALLBACK_ID
from fixtures.mcp_airflow import INCIDENT_DAG
from fixtures.waiting import wait_until
from tests.faults.conftest import Scenario, audit_records
from tests.faults.test_execution import proposed
from tests.scenarios.test_workflows import runs

CHANNEL = "C0INCIDENT"


def attempts(s: Scenario, approval: Approval) -> int:
    return int(s.redis.llen(f"chatops:approval:{approval.id}:attempts"))


def test_self_approval_is_refused_audited_as_denied_and_queues_nothing(scenario: Scenario) -> None:
    s = scenario
    approval = proposed(s)
    s.click("U0ALICE", approval)
    assert "someone else" in s.told("U0ALICE", CHANNEL)[-1]
    assert s.approval(approval.id).status == Status.PENDING
    denied = [
        r
        for r in audit_records(s.redis)
        if r["kind"] == "approval_decision" and r["approval_id"] == approval.id
    ]
    assert [(r["outcome"], r["user"], "own_request" in r["detail"]) for r in denied] == [
        ("denied", "U0ALICE", True)
    ]
    assert s.work() == 0
    assert s.world.servers["presto"].ledger.count() == 0


def test_a_button_value_claiming_another_approver_is_not_an_approval_id(scenario: Scenario) -> None:
    s = scenario
    approval = proposed(s, quorum=2)
    for forged in (f"{approval.id} U0CAROL", f"{approval.id}:U0CAROL", json.dumps({"id": approval.id})):
        click = s.ingress.block_actions(
            "U0BOB", APPROVE_ACTION_ID, channel=CHANNEL, message_ts=s.card_ts(approval), value=forged
        )
        assert s.ingress.post(click).status == 200
    told = s.told("U0BOB", CHANNEL, count=3)
    assert all("can't find that request" in t for t in told)
    assert s.approval(approval.id).approvals == ()


def test_extra_user_fields_in_a_click_do_not_change_who_voted(scenario: Scenario) -> None:
    s = scenario
    approval = proposed(s, quorum=2)
    click = s.ingress.block_actions(
        "U0BOB", APPROVE_ACTION_ID, channel=CHANNEL, message_ts=s.card_ts(approval), value=approval.id
    )
    payload = dict(click.payload)
    payload.update(user_id="U0CAROL", approver="U0CAROL", on_behalf_of="U0CAROL")
    payload["actions"] = [{**payload["actions"][0], "user": "U0CAROL"}]
    forged = s.ingress._build("interactive", payload)  # signed by Slack as bob, with Carol's name added
    before = attempts(s, approval)
    assert s.ingress.post(forged).status == 200
    wait_until("the click", lambda: attempts(s, approval) > before)
    after = s.approval(approval.id)
    assert after.status == Status.PENDING  # quorum 2: bob's one vote, never bob's and carol's
    assert [v.user for v in after.approvals] == ["U0BOB"]
    assert s.work() == 0


def test_a_forged_reject_submission_by_someone_who_may_not_decide_changes_nothing(scenario: Scenario) -> None:
    s = scenario
    s.link("dave")  # linked, but not in presto-oncall
    approval = proposed(s)
    for user, metadata in (
        ("U0DAVE", approval.id),  # no modal was ever opened for dave: he posts the submission himself
        ("U0ALICE", approval.id),  # the requester rejecting her own request is fine for Slack, not for us
        ("U0DAVE", json.dumps({"approval": approval.id, "as": "U0BOB"})),
    ):
        submit = s.ingress.view_submission(
            user,
            callback_id=REJECT_CALLBACK_ID,
            private_metadata=metadata,
            values={"reason": {"reason_input": "forged"}},
        )
        assert s.ingress.post(submit).status == 200
    s.told("U0DAVE", CHANNEL)  # dave is told why (after his lazy listener ran)
    s.told("U0ALICE", CHANNEL)
    wait_until("the attempts to be recorded", lambda: attempts(s, approval) >= 2)
    after = s.approval(approval.id)
    assert after.status == Status.PENDING
    assert after.reject_reason in ("", None)
    assert s.work() == 0


def test_a_forged_workflow_modal_cannot_start_a_workflow_the_person_may_not_run(scenario: Scenario) -> None:
    s = scenario
    s.link("erin")  # ads-eng: no airflow
    metadata = json.dumps({"w": "restart-failed-dag", "c": CHANNEL, "t": None})
    submit = s.ingress.view_submission(
        "U0ERIN",
        callback_id="oncall_params",
        private_metadata=metadata,
        values={"param_dag_id": {"value": INCIDENT_DAG}},
    )
    assert s.ingress.post(submit).status == 200
    s.link("alice")  # something observable after erin's lazy listener: alice's run, which is allowed
    s.ingress.post(
        s.ingress.slash_command("U0ALICE", "/oncall", f"run restart-failed-dag dag_id={INCIDENT_DAG}")
    )
    wait_until("alice's run", lambda: runs(s, "U0ALICE") or None)
    s.work()
    assert runs(s, "U0ERIN") == []
    assert {c.sub for c in s.world.servers["airflow"].record.tool_calls()} == {"u-alice"}
