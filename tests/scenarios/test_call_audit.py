"""Each tool call is audited when it returns: a worker that dies later in the turn leaves no executed call
without its record, and the recovery's re-run gets a record of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from fixtures.waiting import wait_until
from tests.processes import kill_worker
from tests.scenarios.conftest import Scenario
from tests.scenarios.test_recovery import CHANNEL, answerer


def tool_call_records(s: Scenario) -> list[dict[str, object]]:
    records = [json.loads(f[b"record"]) for _, f in s.redis.xrange("chatops:audit")]
    return [r for r in records if r["kind"] == "tool_call" and r["tool"] == "query_history"]


def test_a_call_made_before_the_worker_died_keeps_its_audit_record(scenario: Scenario) -> None:
    s = scenario
    s.link("alice")
    presto = s.world.servers["presto"]
    s.world.anthropic.set_default(answerer)
    entered = presto.knobs.hang("query_history")
    assert s.ingress.post(s.ingress.app_mention("U0ALICE", CHANNEL, "what ran last night?")).status == 200
    env = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=env, start_new_session=True)
    try:
        assert entered.wait(30)  # the tool call is in flight
        s.world.anthropic.hang()  # the model's next answer will not come
        presto.knobs.release("query_history")
        s.world.anthropic.wait_for_requests(2, timeout=30)  # the call returned; the worker asks the model
        (record,) = wait_until("the call's audit record", lambda: tool_call_records(s) or None)
        kill_worker(worker)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        s.world.anthropic.release()
    assert record["outcome"] == "succeeded"
    assert record["user"] == "U0ALICE"
    assert len(presto.record.tool_calls("query_history")) == 1  # one call made, one record
