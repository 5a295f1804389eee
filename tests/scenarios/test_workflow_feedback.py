"""Feedback on a workflow run's result (SPEC §7, issue 19 item 4): the result carries the feedback buttons, a
👎 on the run takes its minutes (the workflow's own and its steps' calls) out of the calibrated hours in
`chatops stats` while the owners' estimate stays, the workflow is rated beside its estimate like a tool, and
the reason given after the 👎 is listed there for the owners."""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.models.blocks import Block

from approvals.impact import WORKFLOWS_SERVER
from approvals.workflow_runs import WorkflowRun
from bot.blocks import FEEDBACK_ACTION_ID
from bot.feedback_listeners import REASON_CALLBACK_ID
from fixtures.waiting import wait_until
from tests.approvals.test_impact import cells
from tests.scenarios.conftest import Scenario
from tests.scenarios.test_operating import chatops
from tests.scenarios.test_workflows import CHANNEL, oncall, runs


def snapshot(s: Scenario) -> WorkflowRun:
    """Alice runs the read-only incident-snapshot workflow to its end."""
    s.link("alice")
    oncall(s, "U0ALICE", "run incident-snapshot")
    s.runs_queued("U0ALICE")
    s.work()
    (run,) = runs(s, "U0ALICE")
    assert run.status == "succeeded", run.summary
    return run


def feedback_values(blocks: list[dict[str, Any]]) -> list[str]:
    return [
        element[side]["value"]
        for block in blocks
        if block["type"] == "context_actions"
        for element in block["elements"]
        if element["type"] == "feedback_buttons"
        for side in ("positive_button", "negative_button")
    ]


def thumbs_down(s: Scenario, user: str, run: WorkflowRun, reason: str) -> None:
    """`user` clicks 👎 on the run's result and says why in the modal that opens."""
    assert run.message_ts is not None
    click = s.ingress.block_actions(
        user, FEEDBACK_ACTION_ID, channel=CHANNEL, message_ts=run.message_ts, value=f"down:{run.id}"
    )
    assert s.ingress.post(click).status == 200
    (opened,) = s.world.slack.wait_for_calls("views.open")
    view = opened.args["view"]
    assert view["private_metadata"] == run.id
    (block,) = [b for b in view["blocks"] if b["type"] == "input"]
    submit = s.ingress.view_submission(
        user,
        callback_id=REASON_CALLBACK_ID,
        private_metadata=run.id,
        values={block["block_id"]: {block["element"]["action_id"]: reason}},
    )
    assert s.ingress.post(submit).status == 200
    wait_until("the reason to be stored", lambda: s.redis.hget(f"chatops:feedback-reason:{run.id}", user))


def calibrated(out: str) -> tuple[str, str]:
    """(owners' estimate, calibrated) hours of this month in `chatops stats`."""
    *_, row = cells(out, "Calibrated by feedback", "20")  # this month's row is the last
    return row[1].strip(), row[2].strip()


def test_a_workflow_result_carries_feedback_buttons_for_its_run(scenario: Scenario) -> None:
    s = scenario
    run = snapshot(s)
    assert run.message_ts is not None
    message = s.world.slack.message(CHANNEL, run.message_ts)
    assert message is not None
    assert "Done" in str(message.blocks)
    for block in message.blocks:
        parsed = Block.parse(block)  # slack_sdk's block models accept what Slack was sent
        assert parsed is not None
        parsed.validate_json()
    assert feedback_values(message.blocks) == [f"up:{run.id}", f"down:{run.id}"]


def test_a_thumbs_down_on_a_run_lowers_the_calibrated_hours_and_its_reason_is_listed(
    scenario: Scenario,
) -> None:
    s = scenario
    run = snapshot(s)
    before = chatops(s, "stats")
    # The owners' estimate: the workflow's 15 minutes, and its steps' calls (presto 5, spark 10, airflow 0).
    assert calibrated(before) == ("0.50", "0.50")  # nobody has rated the run yet
    assert "Never ran the Spark step" not in before

    thumbs_down(s, "U0ALICE", run, "Never ran the Spark step\x1b[2J; token=xoxb-123-secret")
    after = chatops(s, "stats")
    assert calibrated(after) == ("0.50", "0.00")  # the run's own minutes and its steps' calls are out
    rated = {r[2].strip(): r[3:] for r in cells(after, "per tool", "20") if r[1].strip() == WORKFLOWS_SERVER}
    assert [c.strip() for c in rated["incident-snapshot"]] == ["15", "0% of 1"]
    [reason] = cells(after, "Why answers and runs", "20")
    assert "workflow incident-snapshot" in reason[2]
    assert reason[3].startswith("Never ran the Spark step")
    assert "\x1b" not in after  # a reason cannot drive the operator's terminal
    assert "xoxb-123-secret" not in after

    raw = chatops(s, "stats", "--json")  # the same, for a dashboard
    assert "xoxb-123-secret" not in raw
    month = json.loads(raw)["months"][-1]
    assert (month["hours_saved"], month["calibrated_hours"]) == (0.5, 0.0)
    [run_row] = [t for t in month["tools"] if t["server"] == WORKFLOWS_SERVER]
    assert (run_row["tool"], run_row["estimate_minutes"], run_row["rated"], run_row["helpful_rate"]) == (
        "incident-snapshot",
        15,
        1,
        0,
    )
    [listed] = month["unhelpful_reasons"]
    assert listed["about"][0] == "workflow incident-snapshot"
    assert listed["reason"].startswith("Never ran the Spark step")
    assert "\x1b" not in listed["reason"]
