"""Scale-out: two web processes and three workers on one Redis; a burst of questions, approvals and workflows
spread over both webs; one web and one worker SIGKILLed in the middle of it.

What a user would notice, checked at the end: every request is answered exactly once in its thread, every
approved action ran once (never more than it was approved), nothing was lost (every question answered,
every workflow finished), and every tool call that ran has exactly one terminal audit record.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import redis as sync_redis
import redis.asyncio as aioredis

from approvals.store import Approval, ApprovalStore, Status
from approvals.turns import RUNNING_KEY, turn_id_for
from approvals.workflow_runs import WorkflowRun, WorkflowRunStore
from bot.cards import APPROVE_ACTION_ID
from bot.queues import Queues
from fixtures.anthropic_fake import Body, Reply, first_user_text, resumed, text, tool_results, tool_use
from fixtures.mcp_airflow import INCIDENT_DAG
from fixtures.slack import TEAM_ID
from fixtures.slack_ingress import SlackIngress, SlackRequest
from fixtures.waiting import wait_until
from fixtures.world import SIGNING_SECRET
from tests.scaleout.cluster import Cluster, Web, running_cluster
from tests.scenarios.conftest import Scenario

ASKS = "C0DATAENG"
INCIDENTS = "C0INCIDENT"
TAG = re.compile(r"\[(sc-[\w-]+)\]")
LEASE_SECONDS = 4  # short, so the dead worker's turn is noticed within the test
HOLD_SECONDS = 20.0  # the victim's first model answer: long after its worker is dead
ASKERS = ("U0ALICE", "U0BOB", "U0CAROL", "U0ERIN")
FIXERS = ("U0ALICE", "U0CAROL", "U0ALICE")  # data-eng: they may ask for Airflow changes
VICTIM = "sc-victim"


class Model:
    """The model fake's standing behaviour, by the tag in each question: a read-only look then an answer;
    a DAG pause that needs approval, then a report of its outcome; the victim's first answer never comes
    in time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.firsts: Counter[str] = Counter()

    def __call__(self, body: Body) -> Reply:
        match = TAG.search(first_user_text(body))
        tag = match.group(1) if match else "?"
        if resumed(body):
            return text(f"Told about the outcome for {tag}.")
        if tag.startswith("sc-fix"):
            return tool_use(
                "airflow__pause_dag", {"dag_id": INCIDENT_DAG}, text_before="Pausing stops new failing runs."
            )
        if tool_results(body):
            return text(f"Answer for {tag}: one query is running.")
        with self._lock:
            self.firsts[tag] += 1
            first = self.firsts[tag] == 1
        if tag == VICTIM and first:
            return text("Answer from the attempt whose worker died.", delay=HOLD_SECONDS)
        return tool_use("presto__query_history", {"limit": 1})


def approvals_of(redis_url: str, turn_id: str) -> list[Approval]:
    async def load() -> list[Approval]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await ApprovalStore(client, seal_key=b"x" * 32).for_turn(turn_id)
        finally:
            await client.aclose()

    return asyncio.run(load())


def carded(redis_url: str, turn_id: str) -> list[Approval] | None:
    """The turn's approvals once their cards are posted (the record lists where)."""
    return [a for a in approvals_of(redis_url, turn_id) if a.cards] or None


def runs_of(redis_url: str, users: tuple[str, ...]) -> list[WorkflowRun]:
    async def load() -> list[WorkflowRun]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            store = WorkflowRunStore(client)
            return [r for u in users for r in await store.recent(TEAM_ID, u, limit=20)]
        finally:
            await client.aclose()

    return asyncio.run(load())


def click(web: Web, approval: Approval) -> None:
    """Bob (airflow-admins, so an eligible approver) clicks Approve on the approval's card."""
    card_ts = next(x.ts for x in approval.cards if x.channel == approval.channel)
    request = web.ingress.block_actions(
        "U0BOB", APPROVE_ACTION_ID, channel=approval.channel, message_ts=card_ts, value=approval.id
    )
    assert web.ingress.post(request).status == 200


def audit_records(c: Cluster) -> list[dict[str, object]]:
    entries: Any = c.redis.xrange("chatops:audit")  # redis-py types stream replies loosely
    return [json.loads(v[b"record"]) for _, v in entries]


def test_two_webs_three_workers_a_burst_and_two_deaths_lose_and_repeat_nothing(scenario: Scenario) -> None:
    s = scenario
    model = Model()
    s.world.anthropic.set_default(model)
    with running_cluster(s.world, s.redis_url, webs=2, workers=3, lease=LEASE_SECONDS) as c:
        web_a, web_b = c.webs
        for person, web in (("alice", web_a), ("bob", web_b), ("carol", web_a), ("erin", web_b)):
            c.link(person, web)
        builder = SlackIngress(web_a.url, SIGNING_SECRET, slack=s.world.slack)  # one ts sequence for all

        # Workflows, started on both webs (slash commands are not retried by Slack: each must be taken).
        commands = [
            ("U0ALICE", "run incident-snapshot", web_a),
            ("U0CAROL", "run incident-snapshot", web_a),
            ("U0BOB", "run incident-snapshot", web_b),
            ("U0ALICE", f"run restart-failed-dag dag_id={INCIDENT_DAG}", web_b),
        ]
        for user, command, web in commands:
            assert (
                web.ingress.post(builder.slash_command(user, "/oncall", command, channel=INCIDENTS)).status
                == 200
            )
        people = ("U0ALICE", "U0BOB", "U0CAROL")
        wait_until("the workflows to be queued", lambda: len(runs_of(s.redis_url, people)) == 4 or None)

        restart = wait_until(
            "the workflow's approval card",
            lambda: next(
                (
                    a
                    for r in runs_of(s.redis_url, people)
                    if r.workflow == "restart-failed-dag" and r.approvals
                    for a in [s.approval(r.approvals[0])]
                    if a.cards
                ),
                None,
            ),
            timeout=45,
        )
        click(web_a, restart)  # on the web that will die: the decision must survive it
        wait_until("the click to be decided", lambda: s.approval(restart.id).status != Status.PENDING)

        # The burst: questions (one of them the victim) and requests needing approval, alternating webs.
        mentions: list[tuple[str, str, SlackRequest]] = []  # (tag, channel, request)
        for i in range(12):
            tag = VICTIM if i == 1 else f"sc-ask-{i:02d}"
            user = ASKERS[i % len(ASKERS)]
            mentions.append(
                (tag, ASKS, builder.app_mention(user, ASKS, f"[{tag}] which queries are running?"))
            )
        for i, user in enumerate(FIXERS):
            tag = f"sc-fix-{i:02d}"
            mentions.append(
                (tag, INCIDENTS, builder.app_mention(user, INCIDENTS, f"[{tag}] pause the failing DAG"))
            )
        with ThreadPoolExecutor(max_workers=6) as pool:
            futures: list[Future[tuple[object, list[str]]]] = []
            for n, (_, _, request) in enumerate(mentions):
                futures.append(pool.submit(c.deliver, request, web_a if n % 2 == 0 else web_b))
                if n == 6:
                    c.kill_web(web_a)  # mid-burst: deliveries to it fail and are redelivered to web_b
            victim_job = turn_id_for(TEAM_ID, ASKS, mentions[1][2].event["ts"])
            wait_until(
                "the victim's question to reach the model",
                lambda: any(VICTIM in first_user_text(r.body) for r in s.world.anthropic.requests()),
                timeout=30,
            )
            c.kill_worker_running(victim_job)  # waiting for the model, mid-turn
            tried = [f.result(timeout=60)[1] for f in futures]
        assert any(len(t) > 1 for t in tried), "no delivery needed a retry: web_a died too late"
        # Deliveries web_a acknowledged before it died, retried anyway (Slack saw no ack in time).
        for n, t in enumerate(tried):
            if t == ["web-0"]:
                assert c.redeliver(mentions[n][2], web_b).status == 200

        # Approvals: bob (airflow-admins) approves every card, on the web that is left.
        fix_turns = [turn_id_for(TEAM_ID, INCIDENTS, r.event["ts"]) for tag, _, r in mentions if "fix" in tag]
        cards: list[Approval] = []
        for turn_id in fix_turns:
            cards += wait_until(
                "an approval card",
                functools.partial(carded, s.redis_url, turn_id),
                timeout=45,
            )
        for approval in cards:
            click(web_b, approval)
        cards.append(restart)

        # The dead worker's turn: its lease lapses and the sweep (every 30 s; now, here) takes it over.
        victim_lease = f"{victim_job}|first"
        wait_until("the victim's lease to lapse", lambda: _lapsed(c, victim_lease), timeout=30)
        Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_sweep_now()

        def answered(tag: str, channel: str, ts: str) -> bool:
            final = "Told about the outcome for" if "fix" in tag else "Answer for"
            return any(f"{final} {tag}" in m.text for m in s.bot_messages(channel, ts))

        def everything_done() -> bool:
            runs = runs_of(s.redis_url, people)
            return all(answered(t, ch, r.event["ts"]) for t, ch, r in mentions) and all(
                r.status in ("succeeded", "failed", "rejected", "expired") for r in runs
            )

        try:
            wait_until("every request to be answered", everything_done, timeout=60)
        except TimeoutError:
            missing = [
                (t, [m.text[:120] for m in s.bot_messages(ch, r.event["ts"])])
                for t, ch, r in mentions
                if not answered(t, ch, r.event["ts"])
            ]
            runs = [(r.workflow, r.status) for r in runs_of(s.redis_url, people)]
            raise AssertionError(f"unanswered: {missing}; workflows: {runs}; logs in {c.logs}") from None
        _check_threads(s, mentions)
        _check_actions(s, cards)
        _check_workflows(s, people)
        _check_audit(s, c)
        assert model.firsts[VICTIM] == 2  # its question was asked again once, after the worker died
        assert all(n == 1 for tag, n in model.firsts.items() if tag != VICTIM), model.firsts
        # Every attempt let go of its lease (the last ones may still be saying goodbye to Slack).
        wait_until("every turn lease to be released", lambda: c.redis.zcard(RUNNING_KEY) == 0)


def _lapsed(c: Cluster, member: str) -> bool:
    score = c.redis.zscore(RUNNING_KEY, member)
    return score is not None and score < time.time()


def _check_threads(s: Scenario, mentions: list[tuple[str, str, SlackRequest]]) -> None:
    """Exactly one answer per request; no "working" message left; no message posted twice."""
    for tag, channel, request in mentions:
        messages = s.bot_messages(channel, request.event["ts"])
        texts = [m.text for m in messages]
        final = f"Told about the outcome for {tag}" if "fix" in tag else f"Answer for {tag}"
        assert sum(final in t for t in texts) == 1, (tag, texts)
        assert not any(t.startswith("On it") for t in texts), (tag, texts)
        markers = [((m.metadata or {}).get("event_payload") or {}).get("marker") for m in messages]
        assert len([x for x in markers if x]) == len({x for x in markers if x}), (tag, markers)
        if "fix" in tag:
            assert sum("pause_dag` ran" in t for t in texts) == 1, (tag, texts)
        else:
            assert len(messages) == 1, (tag, texts)  # the victim too: its recovery reused its message


def _check_actions(s: Scenario, cards: list[Approval]) -> None:
    """Every approved action ran exactly once, as its approval, and nothing ran without one."""
    final = [s.approval(a.id) for a in cards]
    assert [a.status for a in final] == [Status.SUCCEEDED] * len(final), [(a.tool, a.status) for a in final]
    airflow = s.world.servers["airflow"].ledger
    performed = Counter(e["key"] for e in airflow.entries())
    assert performed == Counter(a.id for a in final)  # one per approval: never more, never without one


def _check_workflows(s: Scenario, people: tuple[str, ...]) -> None:
    runs = runs_of(s.redis_url, people)
    assert len(runs) == 4
    for run in runs:
        assert run.status == "succeeded", (run.workflow, run.status, run.summary)
        assert run.message_ts is not None
        message = s.world.slack.message(INCIDENTS, run.message_ts)
        assert message is not None
        assert "Done" in json.dumps(message.blocks)


def _check_audit(s: Scenario, c: Cluster) -> None:
    """Every tool call the MCP servers saw has exactly one terminal audit record, and approved ones name
    their approval."""
    records = [r for r in audit_records(c) if r["kind"] == "tool_call"]
    assert all(r["outcome"] in ("succeeded", "failed", "outcome_unknown") for r in records)
    audited = Counter((str(r["server"]).split("/", 1)[-1], str(r["tool"])) for r in records)
    seen: Counter[tuple[str, str]] = Counter()
    for name, server in s.world.servers.items():
        for call in server.record.tool_calls():
            seen[(name, str(call.tool))] += 1
    assert audited == seen
    by_approval = Counter(str(r["approval_id"]) for r in records if r.get("approval_id"))
    assert all(n == 1 for n in by_approval.values()), by_approval
