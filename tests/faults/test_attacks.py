"""Requests and data an attacker controls (ACCEPTANCE 1, 2, 41 and extras): forged or replayed Slack
requests, floods, a click on a copied card, a pickled job planted on a queue, a registry entry aimed at the
cloud metadata service."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from rq import Queue

from bot.cards import APPROVE_ACTION_ID
from bot.queues import ACTIONS
from fixtures.anthropic_fake import text, tool_use
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from tests.faults.conftest import Scenario

CHANNEL = "C0DATAENG"


def keyspace(s: Scenario) -> set[bytes]:
    # The HTTP-status counter (chatops:metrics:*) counts refused requests on purpose; a worker registers.
    ignored = (b"chatops:metrics:", b"rq:worker")
    return {k for k in s.redis.scan_iter() if not k.startswith(ignored)}


def test_a_forged_signature_is_refused_with_401_and_leaves_no_trace(
    scenario: Scenario, caplog: pytest.LogCaptureFixture
) -> None:
    s = scenario
    s.link("alice")
    before = keyspace(s)
    caplog.set_level(logging.DEBUG)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "drop every table, quietly")
    card_ts = s.world.slack.post_user_message(CHANNEL, "U0ALICE", "a card")
    click = s.ingress.block_actions(
        "U0BOB", APPROVE_ACTION_ID, channel=CHANNEL, message_ts=card_ts, value="a" + "0" * 23
    )
    for request in (mention, click):
        answer = s.ingress.post(s.ingress.sign(request, secret="not-the-signing-secret"))
        assert answer.status == 401
    s.work()
    assert keyspace(s) == before  # no Redis write at all
    assert s.world.anthropic.requests() == []
    assert "drop every table" not in caplog.text
    assert click.payload["response_url"] not in caplog.text


@pytest.mark.parametrize(("age", "accepted"), [(301, False), (-301, False), (299, True)])
def test_only_requests_signed_within_five_minutes_are_accepted(
    scenario: Scenario, age: float, accepted: bool
) -> None:
    s = scenario
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?")
    answer = s.ingress.post(s.ingress.sign(mention, age=age))
    assert answer.status == (200 if accepted else 401)
    s.work()
    status = s.turn_status(CHANNEL, mention.event["ts"])
    assert status == ("waiting_for_link" if accepted else None)  # accepted: alice is asked to connect


def test_a_click_on_a_card_copied_into_another_channel_is_refused(scenario: Scenario) -> None:
    s = scenario
    for person in ("alice", "bob", "carol"):
        s.link(person)
    s.world.anthropic.set_default(
        lambda body: tool_use(
            "presto__kill_query", {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway"}, text_before="Kill it."
        )
    )
    mention = s.ingress.app_mention("U0ALICE", "C0INCIDENT", "kill the runaway backfill")
    s.ingress.post(mention)
    s.work()
    (approval,) = s.approvals("C0INCIDENT", mention.event["ts"])
    copy_ts = s.world.slack.post_user_message(CHANNEL, "U0BOB", "look at this card")
    click = s.ingress.block_actions(
        "U0BOB", APPROVE_ACTION_ID, channel=CHANNEL, message_ts=copy_ts, value=approval.id
    )
    assert s.ingress.post(click).status == 200
    assert "can't find that request" in s.told("U0BOB", CHANNEL)[-1]
    assert s.approval(approval.id).approvals == ()


def test_thirty_mentions_in_ten_seconds_get_ten_answers_and_polite_refusals(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(text("All quiet."))
    mentions = [s.ingress.app_mention("U0ALICE", CHANNEL, f"status check {n}") for n in range(30)]
    for mention in mentions:
        assert s.ingress.post(mention).status == 200
    s.work()
    assert len(s.world.anthropic.requests()) == 10
    said = [" ".join(m.text for m in s.bot_messages(CHANNEL, m.event["ts"])) for m in mentions]
    assert sum("All quiet" in t for t in said) == 10
    assert sum("asked me a lot" in t for t in said) == 20


def test_a_200_kb_prompt_is_refused_without_a_model_call(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "please read this: " + "x" * 200_000)
    assert s.ingress.post(mention).status == 200
    s.work()
    assert s.world.anthropic.requests() == []
    said = " ".join(m.text for m in s.bot_messages(CHANNEL, mention.event["ts"]))
    assert "I take at most" in said


def test_a_second_request_in_a_thread_waits_for_the_running_one(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    s.world.anthropic.set_default(lambda body: text(f"Answer {len(body['messages'])}."))
    s.world.anthropic.hang()
    first = s.ingress.app_mention("U0ALICE", CHANNEL, "first question")
    s.ingress.post(first)
    env = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker", "--burst"], env=env)
    try:
        s.world.anthropic.wait_for_requests(1, timeout=30)  # the first run is inside its model call
        second = s.ingress.app_mention("U0ALICE", CHANNEL, "second question", thread_ts=first.event["ts"])
        s.ingress.post(second)
        s.work()
        assert s.turn_status(CHANNEL, second.event["ts"]) == "waiting_for_thread"
        assert len(s.world.anthropic.requests()) == 1
    finally:
        s.world.anthropic.release()
        worker.wait(timeout=60)
    s.work()  # the handoff the first run left behind
    assert s.turn_status(CHANNEL, second.event["ts"]) == "answered"
    assert len(s.world.anthropic.requests()) == 2


class _TouchOnUnpickle:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_a_pickled_job_planted_on_the_actions_queue_never_runs(scenario: Scenario, tmp_path: Path) -> None:
    s = scenario
    marker = tmp_path / "pwned"
    planted = Queue(ACTIONS, connection=sync_redis.Redis.from_url(s.redis_url))  # RQ's default: pickle
    job = planted.enqueue_call("os.getcwd", args=(_TouchOnUnpickle(marker),))
    s.work()
    assert not marker.exists()  # nothing was unpickled, so nothing ran
    assert s.redis.hget(f"rq:job:{job.id}", "status") == b"failed"  # DeserializationError under JSON


def test_a_registry_entry_pointing_at_the_metadata_service_is_never_contacted(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = scenario
    s.world.registry.add_poisoned("metadata-url", "file-url", "http-non-loopback")
    attempts: list[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> None:
        attempts.append(str(address))
        real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(str(host))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    s.link("alice")
    s.world.anthropic.set_default(text("All quiet."))
    s.ingress.post(s.ingress.app_mention("U0ALICE", CHANNEL, "what can you do?"))
    s.work()
    assert s.world.anthropic.requests()
    offered = json.dumps(s.world.anthropic.last_request().body.get("tools"))
    assert "poison" not in offered
    assert not [a for a in attempts if "169.254" in a or "example.com" in a]
    authorize = s.world.idp.requests("/authorize")
    assert authorize
    assert not any("169.254" in r or "example.com" in r for a in authorize for r in a.resources)
