"""One escaping path to Slack (issue 14 item 8), walked path by path with a hostile payload.

Every text that reaches Slack from a tool, a server's error, a workflow step or the model carries
`HOSTILE`: a broadcast, a ping, a link whose label is another address, and an AWS key. Each row of `PATHS`
names one way the bot posts, the scenario that makes it post, and how to find that post among what the fake
Slack recorded. For every row the post must exist and show the payload as text ("evil" is visible), and no
recorded call (messages, updates, ephemerals, views, response_url replies, uploaded files) may hold any of
the control sequences. Alice is never part of these scenarios, so `<@U0ALICE>` can only come from the payload.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import redis as sync_redis

from approvals.store import Status
from bot.queues import Queues
from bot.wiring import Wiring
from fixtures.anthropic_fake import Body, Reply, resumed, text, tool_results, tool_use
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from fixtures.slack import Call
from fixtures.waiting import wait_until
from tests.faults.conftest import Scenario, with_services

HOSTILE = "<!channel> <@U0ALICE> <https://evil|https://good> AKIAIOSFODNN7EXAMPLE"
# Arguments shaped like a credential never get as far as a card (ACCEPTANCE 20), so they carry the rest.
HOSTILE_ARG = "<!channel> <@U0ALICE> <https://evil|https://good>"
CONTROL = ("<!channel>", "<@U0ALICE>", "<https://evil|", "AKIAIOSFODNN7EXAMPLE")
CHANNEL = "C0INCIDENT"


# ----- what the fake Slack recorded ------------------------------------------------------------------------


def recorded(s: Scenario) -> list[tuple[Call, str]]:
    """Every recorded call with its arguments as text; an upload's file content counts as its arguments."""
    calls = [(c, json.dumps(c.args, ensure_ascii=False)) for c in s.world.slack.calls()]
    files = [
        (Call("file", {}, {}, 0.0, 0.0, 200, {}), s.world.slack.file_content(f.id).decode())
        for f in s.world.slack.files()
    ]
    return calls + files


def marker(call: Call) -> str:
    return str(((call.args.get("metadata") or {}).get("event_payload") or {}).get("marker") or "")


def shows(blob: str) -> bool:
    return "evil" in blob


Select = Callable[[Call, str], bool]


def method(name: str, *needles: str) -> Select:
    return lambda call, blob: call.method == name and all(n in blob for n in needles)


def marked(suffix: str) -> Select:
    return lambda call, blob: call.method == "chat.postMessage" and marker(call).endswith(suffix)


# ----- scenarios -------------------------------------------------------------------------------------------


def ask(s: Scenario, script: Callable[[Body], Reply], user: str = "U0ERIN") -> str:
    s.world.anthropic.set_default(script)
    mention = s.ingress.app_mention(user, CHANNEL, "look into it")
    s.ingress.post(mention)
    s.work()
    return str(mention.event["ts"])


def answers_with(reply: str) -> Callable[[Body], Reply]:
    return lambda body: text(reply)


def kill_proposer(query_id: str = RUNAWAY_QUERY_ID) -> Callable[[Body], Reply]:
    def script(body: Body) -> Reply:
        said = json.dumps(body["messages"][-1], ensure_ascii=False)
        if resumed(body) or tool_results(body):
            return text("What I was told: " + said[:2500])  # a naive model repeats what it read
        args = {"query_id": query_id, "reason": HOSTILE_ARG}
        return tool_use("presto__kill_query", args, text_before=f"Killing it because {HOSTILE}")

    return script


def link(s: Scenario, *people: str) -> None:
    for person in people:
        s.link(person)


def propose_kill(s: Scenario, query_id: str = RUNAWAY_QUERY_ID) -> str:
    """Carol asks; one approval from bob will do (presto-oncall is alice, bob and carol: alice stays out)."""
    s.world.registry.patch_governance("io.example/presto", {"tools": {"kill_query": {"quorum": 1}}})
    link(s, "carol", "bob")  # after the registry changes: linking reads (and shares) the registry
    return ask(s, kill_proposer(query_id), user="U0CAROL")


def approve(s: Scenario, ts: str) -> None:
    (approval,) = s.approvals(CHANNEL, ts)
    s.click("U0BOB", approval)
    s.work()


def sweep(s: Scenario) -> None:
    s.redis.delete("chatops:sweep-scheduled")
    Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_sweep_now()
    s.work()


def an_answer(s: Scenario) -> None:
    link(s, "erin")
    ask(s, answers_with(f"Found it: {HOSTILE}"))


def a_long_answer(s: Scenario) -> None:
    link(s, "erin")
    part = f"{HOSTILE} " + "lorem ipsum dolor sit amet " * 100
    ask(s, answers_with("\n\n".join(f"Part {i}: {part}" for i in range(60))))


def a_private_answer(s: Scenario) -> None:
    s.world.registry.patch_governance("io.example/presto", {"private_data": True})
    link(s, "erin")

    def script(body: Body) -> Reply:
        if tool_results(body):
            return text(f"Private finding: {HOSTILE}")
        return tool_use("presto__query_history", {"limit": 5}, text_before="Checking.")

    ask(s, script)


def an_approval(s: Scenario) -> None:
    s.settings = s.settings.model_copy(update={"approvals_channel": "C0APPROVALS"})
    s.world.servers["presto"].knobs.inject("kill_query", HOSTILE)
    ts = propose_kill(s)
    (approval,) = s.approvals(CHANNEL, ts)
    s.click("U0CAROL", approval)  # a refused click: your own request
    s.told("U0CAROL", CHANNEL)
    s.ingress.post(s.ingress.app_home_opened("U0BOB"))  # bob may approve it: his Home lists it
    wait_until("bob's Home", lambda: s.world.slack.home_view("U0BOB"))
    approve(s, ts)
    assert s.approval(approval.id).status == Status.SUCCEEDED


def a_private_approval(s: Scenario) -> None:
    s.world.registry.patch_governance("io.example/presto", {"private_data": True})
    s.world.servers["presto"].knobs.inject("kill_query", HOSTILE)
    approve(s, propose_kill(s))


def a_failed_action(s: Scenario) -> None:
    ts = propose_kill(s, query_id=HOSTILE_ARG)  # the server's error repeats the id it was given
    approve(s, ts)
    assert s.approvals(CHANNEL, ts)[0].status == Status.FAILED


def an_action_whose_worker_died(s: Scenario) -> None:
    (approval,) = s.approvals(CHANNEL, propose_kill(s))
    s.click("U0BOB", approval)  # approved; its job is queued but no worker takes it yet

    async def started_then_lost(svc: Wiring) -> None:  # as if a worker took it and died mid-call
        assert await svc.approvals.start(approval.id, lease_seconds=60) is not None

    with_services(s, started_then_lost)
    s.redis.zadd("chatops:approvals:running", {approval.id: 1.0})
    s.redis.hset(f"chatops:approval:{approval.id}", "lease_until", json.dumps(1.0))
    sweep(s)
    assert s.approval(approval.id).status == Status.OUTCOME_UNKNOWN


def an_expired_request(s: Scenario) -> None:
    (approval,) = s.approvals(CHANNEL, propose_kill(s))
    s.redis.hset(f"chatops:approval:{approval.id}", "expires_at", json.dumps(1.0))
    s.redis.zadd("chatops:approvals:pending", {approval.id: 1.0})
    sweep(s)
    assert s.approval(approval.id).status == Status.EXPIRED


def oncall(s: Scenario, user: str, command: str) -> None:
    assert s.ingress.post(s.ingress.slash_command(user, "/oncall", command, channel=CHANNEL)).status == 200


def a_workflow_that_finishes(s: Scenario) -> None:
    link(s, "carol")
    s.world.servers["airflow"].knobs.inject("list_dag_runs", HOSTILE)
    oncall(s, "U0CAROL", "run restart-failed-dag dag_id=hourly_clickstream")  # no failed run: one step
    s.runs_queued("U0CAROL")
    s.work()


def a_workflow_that_fails(s: Scenario) -> None:
    link(s, "carol")
    oncall(s, "U0CAROL", f'run restart-failed-dag dag_id="{HOSTILE_ARG}"')  # airflow repeats the unknown id
    s.runs_queued("U0CAROL")
    s.work()
    oncall(s, "U0CAROL", "status")
    oncall(s, "U0CAROL", "run <https://evil|https://good>")  # refused: not a workflow name
    wait_until("both replies", lambda: len(s.world.slack.calls("response_url")) >= 3 or None)


# ----- the table -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Path:
    name: str
    scenario: Callable[[Scenario], None]
    select: Select


PATHS = [
    Path("answer", an_answer, method("chat.update", "Found it")),
    Path("answer overflow message", a_long_answer, method("chat.update", "attached as a file")),
    Path("answer overflow file", a_long_answer, lambda call, blob: call.method == "file"),
    Path("private answer", a_private_answer, method("chat.postEphemeral", "Private finding")),
    Path("approval card in the thread", an_approval, lambda c, b: marker(c).endswith(f":card:{CHANNEL}")),
    Path("approval card mirrored", an_approval, lambda c, b: marker(c).endswith(":card:C0APPROVALS")),
    Path("decided card", an_approval, method("chat.update", "Approved, succeeded")),
    Path("approved-action result", an_approval, marked(":result")),
    Path("answer after the approval", an_approval, method("chat.update", "What I was told")),
    Path("App Home", an_approval, method("views.publish", "Waiting on your approval")),
    Path("ephemeral refusal of a click", an_approval, method("chat.postEphemeral", "someone else has to")),
    Path("private approved-action result", a_private_approval, method("chat.postEphemeral", "kill_query")),
    Path("failure notice", a_failed_action, marked(":result")),
    Path("failed card", a_failed_action, method("chat.update", "Approved, failed")),
    Path("outcome-unknown notice", an_action_whose_worker_died, marked(":unknown")),
    Path("outcome-unknown card", an_action_whose_worker_died, method("chat.update", "outcome unknown")),
    Path("expiry notice", an_expired_request, marked(":expired")),
    Path("expired card", an_expired_request, method("chat.update", "Expired")),
    Path("workflow progress", a_workflow_that_finishes, method("chat.update", "list_dag_runs")),
    Path("workflow result", a_workflow_that_finishes, method("chat.update", "Done")),
    Path("workflow failure", a_workflow_that_fails, method("chat.update", "failed")),
    Path("/oncall status", a_workflow_that_fails, method("response_url", "restart-failed-dag")),
    Path("/oncall refusal", a_workflow_that_fails, method("response_url", "is not a workflow name")),
]
# Paths whose text holds no hostile payload (ours, about a call that never reached a server): they must
# exist and be clean, but cannot show "evil" themselves.
WITHOUT_PAYLOAD = {
    "outcome-unknown notice",
    "expiry notice",
    "ephemeral refusal of a click",
    "workflow result",
}
SCENARIOS = list(dict.fromkeys(p.scenario for p in PATHS))


@pytest.mark.parametrize("scenario_of", SCENARIOS, ids=[f.__name__ for f in SCENARIOS])
def test_every_posting_path_keeps_control_sequences_and_secrets_out_of_slack(
    scenario: Scenario, scenario_of: Callable[[Scenario], None]
) -> None:
    scenario_of(scenario)
    sent = recorded(scenario)
    for path in (p for p in PATHS if p.scenario is scenario_of):
        found = [blob for call, blob in sent if path.select(call, blob)]
        assert found, f"{path.name}: nothing was posted this way"
        if path.name not in WITHOUT_PAYLOAD:
            assert any(shows(blob) for blob in found), f"{path.name}: the payload never reached it"
        for blob in found:
            assert [c for c in CONTROL if c in blob] == [], f"{path.name}: {blob[:400]}"
    leaked = [(call.method, c) for call, blob in sent for c in CONTROL if c in blob]
    assert leaked == []
