"""Socket Mode redelivery and refresh (ACCEPTANCE 11), against two `chatops serve --socket-mode` processes.

Slack may deliver one envelope to two connections and redeliver it with `retry_attempt=1`, and asks clients
to reconnect (`disconnect: refresh_requested`) whenever it rotates hosts. Every envelope must be acked by its
envelope_id before any work happens, the request handled once, and a pending approval must survive the
reconnect: the clicks that arrive over the new connections decide it and the action runs once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from approvals.store import Status
from bot.cards import APPROVE_ACTION_ID
from fixtures.anthropic_fake import Body, Reply, resumed, text, tool_use
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from fixtures.redis_proc import free_port
from fixtures.slack_socket import FakeSocketMode
from fixtures.waiting import wait_until
from fixtures.world import APP_TOKEN, BOT_TOKEN
from tests.faults.conftest import Scenario

CHANNEL = "C0INCIDENT"
CONNECT_SECONDS = 60  # two interpreters importing the whole bot on a busy 2-core machine


def proposer(body: Body) -> Reply:
    if resumed(body):
        return text("The backfill was killed.")
    return tool_use(
        "presto__kill_query", {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway"}, text_before="Kill it."
    )


@pytest.fixture
def socket_mode(scenario: Scenario) -> Iterator[FakeSocketMode]:
    with FakeSocketMode(scenario.world.slack) as server:
        yield server


@pytest.fixture
def two_web_processes(
    scenario: Scenario, socket_mode: FakeSocketMode
) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {**os.environ, **scenario.env, "CHATOPS_NETGUARD": "1"}
    env.pop("SLACK_SIGNING_SECRET", None)  # Socket Mode needs none
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--socket-mode"],
            env={**env, "PORT": str(free_port())},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        for _ in range(2)
    ]
    try:
        socket_mode.wait_for(lambda: len(socket_mode.connections()) == 2, timeout=CONNECT_SECONDS)
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def acked(socket_mode: FakeSocketMode, *envelopes: dict[str, Any], copies: int = 1) -> None:
    for envelope in envelopes:
        socket_mode.wait_for(lambda e=envelope: len(socket_mode.acks(e["envelope_id"])) >= copies, timeout=10)


def test_duplicated_and_redelivered_envelopes_are_acked_and_handled_once_across_a_refresh(
    scenario: Scenario, socket_mode: FakeSocketMode, two_web_processes: list[subprocess.Popen[bytes]]
) -> None:
    s = scenario
    for person in ("alice", "bob", "carol"):
        s.link(person)
    s.world.anthropic.set_default(proposer)
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "kill the runaway backfill")
    first = s.ingress.envelope(mention)
    assert socket_mode.push(first, duplicate=True) == socket_mode.connections()  # one envelope, both sockets
    redelivered = s.ingress.envelope(mention, retry_attempt=1, retry_reason="timeout")
    socket_mode.push(redelivered)
    acked(socket_mode, first, copies=2)
    acked(socket_mode, redelivered)
    # Acked by envelope_id, by both processes, before any work: no worker has run, the model was not asked.
    assert {a.connection for a in socket_mode.acks(first["envelope_id"])} == set(socket_mode.connections())
    assert s.world.anthropic.requests() == []
    s.work()
    (approval,) = s.approvals(CHANNEL, mention.event["ts"])  # three deliveries, one run, one card
    assert len(s.world.anthropic.requests()) == 1
    cards = [m for m in s.bot_messages(CHANNEL, mention.event["ts"]) if "Approve" in json.dumps(m.blocks)]
    assert len(cards) == 1

    # Slack rotates hosts while the approval is pending: both processes reconnect.
    opened = socket_mode.opened()
    socket_mode.disconnect("refresh_requested")
    socket_mode.wait_for(
        lambda: socket_mode.opened() >= opened + 2 and len(socket_mode.connections()) == 2, timeout=30
    )
    assert s.approval(approval.id).status == Status.PENDING

    for user in ("U0BOB", "U0CAROL"):
        click = s.ingress.block_actions(
            user, APPROVE_ACTION_ID, channel=CHANNEL, message_ts=s.card_ts(approval), value=approval.id
        )
        envelope = s.ingress.envelope(click)
        socket_mode.push(envelope, duplicate=True)  # a click delivered to both new connections
        acked(socket_mode, envelope, copies=2)
    wait_until("both votes", lambda: s.approval(approval.id).status == Status.APPROVED or None, timeout=15)
    s.settled(approval)
    s.work()
    assert s.approval(approval.id).status == Status.SUCCEEDED
    assert s.world.servers["presto"].ledger.count("kill_query") == 1
    s.work()
    assert s.world.servers["presto"].ledger.count("kill_query") == 1
    replies = [m for m in s.bot_messages(CHANNEL, mention.event["ts"]) if "was killed" in m.text]
    assert len(replies) == 1

    for proc in two_web_processes:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
        log = err.decode(errors="replace")
        assert APP_TOKEN not in log
        assert BOT_TOKEN not in log
