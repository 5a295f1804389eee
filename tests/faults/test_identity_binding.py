"""A person is their `sub`, and approved work is bound to its person and its server (SPEC §5, §6; ACCEPTANCE
45; issue 14 items 2, 3, 5, 10).

- A second Slack account of the requester cannot approve, and two Slack accounts of one person count once.
- An approved action runs as the person who asked or not at all: a Slack account relinked to another identity
  in the meantime fails it, and nobody else's token reaches a server. Workflow steps likewise.
- An approved action runs on the server it was approved for: an entry that now points elsewhere fails it.
- Rotating CHATOPS_SECRET_KEY to "new,old" keeps pending approvals runnable; dropping the old key refuses
  them.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from cryptography.fernet import Fernet

from approvals.store import Approval, Status
from bot.cards import REJECT_ACTION_ID
from bot.settings import Role, load_settings
from bot.web import build_web
from fixtures.mcp_airflow import INCIDENT_DAG
from fixtures.mcp_base import FixtureMcp
from fixtures.mcp_presto import build_presto_server
from fixtures.server import bind_loopback, start
from fixtures.slack_ingress import SlackIngress
from fixtures.world import SIGNING_SECRET
from registry_cache.snapshot import ATTEMPT_KEY, SNAPSHOT_KEY, VERSION_KEY
from tests.faults.conftest import Scenario, audit_records
from tests.faults.test_execution import proposed, proposer
from tests.scenarios.test_home import buttons, open_home
from tests.scenarios.test_workflows import oncall, runs

CHANNEL = "C0INCIDENT"
ALICE_AGAIN = "u-alice-recreated"  # Alice's account re-created at the provider: same email, another person
PRESTO = "io.example/presto"


def ask(s: Scenario, user: str = "U0ALICE") -> Approval:
    s.world.anthropic.set_default(proposer)
    mention = s.ingress.app_mention(user, CHANNEL, "kill the runaway backfill")
    s.ingress.post(mention)
    s.work()
    (approval,) = s.approvals(CHANNEL, mention.event["ts"])
    return approval


def kill_calls(s: Scenario) -> list[Any]:
    return s.world.servers["presto"].record.tool_calls("kill_query")


def relink_alice_as_another_person(s: Scenario) -> None:
    """U0ALICE connects again, and the provider now says she is someone else (a re-created account)."""
    s.world.idp.set_sub("alice", ALICE_AGAIN)
    s.link("alice")
    assert s.redis.hget("chatops:link:T0CHATOPS:U0ALICE", "sub") == ALICE_AGAIN.encode()


def requests_as(s: Scenario, sub: str) -> list[Any]:
    return [r for server in s.world.servers.values() for r in server.record.all() if r.sub == sub]


def start_run(s: Scenario, command: str, *, work: bool = True) -> None:
    oncall(s, "U0ALICE", command)
    s.runs_queued("U0ALICE")
    if work:
        s.work()


def registry_changed(s: Scenario) -> None:
    """The registry TTL passes: the next process to look fetches the registry again."""
    s.redis.delete(ATTEMPT_KEY, VERSION_KEY, SNAPSHOT_KEY)


def clicks(s: Scenario, approval: Approval) -> list[dict[str, Any]]:
    return [
        r
        for r in audit_records(s.redis)
        if r["kind"] == "approval_decision"
        and r["approval_id"] == approval.id
        and r["user"] != approval.requester
    ]


# ----- a person is their sub ------------------------------------------------------------------------------


def test_a_second_slack_account_of_the_requester_cannot_approve_their_request(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.link("alice", slack_user="U0ALICE2")  # her admin account, signed in as the same person
    approval = ask(s)
    s.click("U0ALICE2", approval)
    assert "someone else" in s.told("U0ALICE2", CHANNEL)[-1]
    assert s.approval(approval.id).approvals == ()
    assert s.approval(approval.id).status == Status.PENDING
    assert s.work() == 0
    assert kill_calls(s) == []
    (attempt,) = [r for r in audit_records(s.redis) if r["kind"] == "approval_decision"]
    assert (attempt["user"], attempt["sub"], attempt["outcome"]) == ("U0ALICE2", "u-alice", "denied")
    s.click("U0ALICE2", approval, REJECT_ACTION_ID, wait=False)  # nor reject it: no reason form opens
    assert "You asked for this" in s.told("U0ALICE2", CHANNEL, count=2)[-1]
    assert list(s.world.slack.views()) == []


def test_two_slack_accounts_of_one_person_count_once_toward_a_quorum_of_two(scenario: Scenario) -> None:
    s = scenario
    for person in ("bob", "alice", "carol"):
        s.link(person)
    s.link("alice", slack_user="U0ALICE2")
    approval = ask(s, user="U0BOB")
    assert approval.quorum == 2
    s.click("U0ALICE", approval)
    s.click("U0ALICE2", approval)
    assert "already" in s.told("U0ALICE2", CHANNEL)[-1].lower()
    pending = s.approval(approval.id)
    assert (pending.status, [v.sub for v in pending.approvals]) == (Status.PENDING, ["u-alice"])
    assert s.work() == 0
    assert kill_calls(s) == []
    s.click("U0CAROL", approval)
    s.work()
    assert s.approval(approval.id).status == Status.SUCCEEDED
    assert [c.sub for c in kill_calls(s)] == ["u-bob"]
    decisions = [(r["user"], r["sub"], r["outcome"]) for r in clicks(s, approval)]
    assert decisions == [
        ("U0ALICE", "u-alice", "pending"),
        ("U0ALICE2", "u-alice", "denied"),
        ("U0CAROL", "u-carol", "approved"),
    ]
    (ran,) = [
        r for r in audit_records(s.redis) if r["kind"] == "tool_call" and r["approval_id"] == approval.id
    ]
    assert ran["approvers"] == ["u-alice", "u-carol"]  # persons, not Slack accounts


def test_app_home_of_a_second_account_offers_neither_the_persons_own_request_nor_a_second_vote(
    scenario: Scenario,
) -> None:
    s = scenario
    for person in ("bob", "alice"):
        s.link(person)
    s.link("alice", slack_user="U0ALICE2")
    own = ask(s)
    bobs = ask(s, user="U0BOB")
    s.click("U0ALICE", bobs)  # 1 of 2, from her usual account
    view = open_home(s, "U0ALICE2")
    offered = {element.get("value") for _, element in buttons(view)}
    assert own.id not in offered
    assert bobs.id not in offered
    assert "You have approved this" in json.dumps(view["blocks"])


# ----- an approved action runs as the person who asked, or not at all --------------------------------------


def test_a_requester_relinked_to_another_identity_before_the_run_fails_it_and_nothing_runs(
    scenario: Scenario,
) -> None:
    s = scenario
    approval = proposed(s)
    s.click("U0BOB", approval)
    relink_alice_as_another_person(s)
    s.click("U0CAROL", approval)
    s.work()
    final = s.approval(approval.id)
    assert final.status == Status.FAILED
    assert final.outcome_detail == "the requester's Slack account is now linked to another identity"
    assert kill_calls(s) == []
    assert s.world.servers["presto"].ledger.count("kill_query") == 0
    assert [r for r in requests_as(s, ALICE_AGAIN) if r.rpc_method == "tools/call"] == []
    thread = " ".join(m.text for m in s.bot_messages(CHANNEL, approval.thread_ts))
    assert "now linked to another identity" in thread


def test_a_workflow_step_approved_after_its_starter_relinked_fails_and_the_run_ends(
    scenario: Scenario,
) -> None:
    s = scenario
    s.link("alice")
    s.link("bob")
    start_run(s, f"run restart-failed-dag dag_id={INCIDENT_DAG}")
    (run,) = runs(s, "U0ALICE")
    assert run.status == "waiting_approval"
    assert run.sub == "u-alice"
    relink_alice_as_another_person(s)
    approval = s.approval(run.approvals[0])
    s.click("U0BOB", approval)
    s.work()
    assert s.approval(approval.id).status == Status.FAILED
    assert "now linked to another identity" in s.approval(approval.id).outcome_detail
    assert s.world.servers["airflow"].ledger.count("clear_task_instances") == 0
    assert s.world.servers["airflow"].record.tool_calls("clear_task_instances") == []
    (run,) = runs(s, "U0ALICE")
    assert run.status == "failed"
    assert "now linked to another identity" in run.summary
    assert requests_as(s, ALICE_AGAIN) == []


def test_a_workflow_whose_starter_relinked_before_it_ran_does_nothing_at_all(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    start_run(s, "run incident-snapshot", work=False)
    relink_alice_as_another_person(s)
    s.work()
    (run,) = runs(s, "U0ALICE")
    assert run.status == "failed"
    assert run.summary == "Not run: the Slack account that started it is now linked to another identity."
    assert requests_as(s, ALICE_AGAIN) == []  # not even a listing under the other identity
    assert all(len(server.record.tool_calls()) == 0 for server in s.world.servers.values())


def test_a_workflow_whose_starter_relinks_mid_run_runs_no_further_step(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    spark, presto = s.world.servers["spark"], s.world.servers["presto"]
    entered = spark.knobs.hang("list_applications")  # the second of three read-only steps
    failures: list[BaseException] = []

    def relink_while_the_step_hangs() -> None:
        try:
            assert entered.wait(timeout=60), "the run never reached its second step"
            relink_alice_as_another_person(s)
        except BaseException as exc:
            failures.append(exc)
        finally:
            spark.knobs.release("list_applications")

    helper = threading.Thread(target=relink_while_the_step_hangs)
    helper.start()
    try:
        start_run(
            s, "run incident-snapshot"
        )  # the worker runs here, in this thread, while the helper relinks
    finally:
        helper.join(timeout=90)
        spark.knobs.release()
    assert not failures, failures
    (run,) = runs(s, "U0ALICE")
    assert run.status == "failed"
    assert "now linked to another identity" in run.summary
    assert len(spark.record.tool_calls("list_applications")) == 1
    assert presto.record.tool_calls("slow_queries") == []  # the third step never ran
    assert requests_as(s, ALICE_AGAIN) == []


# ----- an approval is bound to its server ------------------------------------------------------------------


@contextmanager
def lookalike_presto(s: Scenario) -> Iterator[tuple[FixtureMcp, str]]:
    """Another server (and its URL) offering Presto's tools, definitions and all, taking Presto's tokens."""
    sock = bind_loopback()
    fixture, _ = build_presto_server(
        s.world.resource("presto"), issuer=s.world.idp.issuer, jwks_url=s.world.idp.jwks_url
    )
    running = start(fixture.app, sock=sock)
    try:
        yield fixture, f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    finally:
        fixture.knobs.release()
        running.stop()


@pytest.mark.parametrize("change", ["url", "name"])
def test_an_approval_whose_server_now_points_elsewhere_fails_and_nothing_runs(
    scenario: Scenario, change: str
) -> None:
    s = scenario
    approval = proposed(s)
    assert (approval.server, approval.server_url) == (PRESTO, s.world.servers["presto"].url)
    assert approval.resource == s.world.resource("presto")
    with lookalike_presto(s) as (other, other_url):
        if change == "url":  # the same entry now names another remote
            s.world.registry.set_remote_url(PRESTO, other_url, resource=False)
        else:  # the short name `presto` now belongs to another entry
            moved = copy.deepcopy(s.world.registry.entry(PRESTO))
            moved["server"]["name"] = "io.elsewhere/presto"
            moved["server"]["remotes"] = [{"type": "streamable-http", "url": other_url}]
            s.world.registry.remove(PRESTO)
            s.world.registry.add(moved)
        registry_changed(s)
        s.click("U0BOB", approval)
        s.click("U0CAROL", approval)
        s.work()
        final = s.approval(approval.id)
        assert final.status == Status.FAILED
        assert final.outcome_detail == "the server changed since it was approved; ask again"
        assert other.record.tool_calls() == []
        assert other.ledger.count("kill_query") == 0
    assert kill_calls(s) == []


# ----- key rotation keeps pending work ---------------------------------------------------------------------


@contextmanager
def restarted_with_key(s: Scenario, secret_key: str) -> Iterator[Scenario]:
    """The web restarted with another CHATOPS_SECRET_KEY; `work_in_subprocess` starts workers with it."""
    env = {**s.env, "CHATOPS_SECRET_KEY": secret_key}
    settings = load_settings(Role.WEB_HTTP, env=env)
    sock = bind_loopback()
    web = start(build_web(settings, s.bot), sock=sock)
    ingress = SlackIngress(web.url, SIGNING_SECRET, slack=s.world.slack)
    try:
        yield replace(s, settings=settings, env=env, web=web, ingress=ingress)
    finally:
        ingress.close()
        web.stop()


def test_an_approval_made_before_a_key_rotation_runs_once_after_it(scenario: Scenario) -> None:
    s = scenario
    approval = proposed(s)  # sealed by a worker with the old key
    new_key = Fernet.generate_key().decode()
    with restarted_with_key(s, f"{new_key},{s.world.secret_key}") as after:
        after.click("U0BOB", approval)
        after.click("U0CAROL", approval)
        after.work_in_subprocess()
        assert after.approval(approval.id).status == Status.SUCCEEDED
        assert [c.sub for c in kill_calls(s)] == ["u-alice"]
        after.work_in_subprocess()
    assert s.world.servers["presto"].ledger.count("kill_query") == 1


def test_an_approval_sealed_under_a_key_no_longer_listed_is_refused_and_nothing_runs(
    scenario: Scenario,
) -> None:
    s = scenario
    approval = proposed(s)
    with restarted_with_key(s, Fernet.generate_key().decode()) as after:
        after.click("U0BOB", approval)
        after.click("U0CAROL", approval)
        after.work_in_subprocess()
        final = after.approval(approval.id)
    assert final.status == Status.FAILED
    assert final.outcome_detail == "refused to run: seal mismatch"
    assert kill_calls(s) == []
    assert s.world.servers["presto"].ledger.count("kill_query") == 0
