"""Token hygiene (ACCEPTANCE 38, SPEC §5 "Secrets"): after a full run with DEBUG logging, including failures,
no credential the bot ever held or saw appears in its logs, Redis (RQ jobs, failed jobs, audit), what it sent
to the model, or what it wrote to Slack."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from approvals.turn_queue import STREAM, job_key
from bot.cards import APPROVE_ACTION_ID
from bot.logs import JsonLines, setup_logging
from fixtures.anthropic_fake import Body, Reply, resumed, text, tool_results, tool_use
from fixtures.idp import DEFAULT_CLIENT_SECRET
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from fixtures.waiting import wait_until
from fixtures.world import ANTHROPIC_KEY, APP_TOKEN, BOT_TOKEN, SIGNING_SECRET
from tests.faults.conftest import Scenario, redis_dump

CHANNEL = "C0INCIDENT"
SHAPES = re.compile(r"\bxox[abposre]-[A-Za-z0-9-]+|\bxapp-[A-Za-z0-9-]+|\bsk-ant-[A-Za-z0-9_-]{8,}")


def agent(body: Body) -> Reply:
    question = next(m["content"] for m in body["messages"] if isinstance(m["content"], str))
    if tool_results(body) or resumed(body):
        return text("Done; here is what the tools said.")
    if "kill" in question:
        return tool_use(
            "presto__kill_query", {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway"}, text_before="Kill it."
        )
    return tool_use("presto__query_history", {"state": "RUNNING", "limit": 5})


@pytest.fixture
def debug_logs() -> Iterator[io.StringIO]:
    """The product's own log setup at DEBUG, captured as the JSON lines it would write."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    noisy = {
        name: logging.getLogger(name).level
        for name in (
            "httpx2",
            "httpx",
            "httpcore",
            "slack_sdk",
            "slack_bolt",
            "mcp",
            "urllib3",
            "uvicorn.access",
        )
    }
    setup_logging("DEBUG")
    # httpx2's transport logs as "httpcore2", which setup_logging does not quiet yet (see the report: one line
    # for bot/logs.py). Here it would log the test's own browser following the IdP's redirect with ?code=.
    logging.getLogger("httpcore2").setLevel(logging.WARNING)
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonLines())
    root.addHandler(handler)
    yield buffer
    root.handlers[:], root.level = saved
    for name, level in noisy.items():
        logging.getLogger(name).setLevel(level)


def test_no_credential_leaks_anywhere_after_a_full_run_with_failures(
    scenario: Scenario, debug_logs: io.StringIO
) -> None:
    s = scenario
    for person in ("alice", "bob", "carol"):
        s.link(person)
    s.world.anthropic.set_default(agent)
    presto = s.world.servers["presto"]

    # A read-only question, with the server rejecting the first token (refresh, retry).
    presto.knobs.fail_auth(1)
    s.ingress.post(s.ingress.app_mention("U0ALICE", CHANNEL, "which presto queries are running?"))
    s.work()
    # A sensitive call, approved by two people, executed by a separate worker process at DEBUG.
    mention = s.ingress.app_mention("U0ALICE", CHANNEL, "kill the runaway backfill")
    s.ingress.post(mention)
    s.work()
    (approval,) = s.approvals(CHANNEL, mention.event["ts"])
    clicks = [
        s.ingress.block_actions(
            user, APPROVE_ACTION_ID, channel=CHANNEL, message_ts=s.card_ts(approval), value=approval.id
        )
        for user in ("U0BOB", "U0CAROL")
    ]
    for n, click in enumerate(clicks, start=1):
        assert s.ingress.post(click).status == 200
        wait_until("the click", lambda n=n: s.redis.llen(f"chatops:approval:{approval.id}:attempts") >= n)
    env = {**os.environ, **s.env, "CHATOPS_NETGUARD": "1", "LOG_LEVEL": "DEBUG"}
    s.redis.delete("chatops:sweep-scheduled")
    worker = subprocess.run(
        [sys.executable, "-m", "bot.cli", "worker", "--burst"], env=env, capture_output=True, timeout=120
    )
    assert worker.returncode == 0, worker.stderr[-2000:]
    assert presto.ledger.count("kill_query") == 1
    # A turn whose job fails outright: Slack keeps answering 5xx.
    s.world.slack.fail_next("chat.postMessage", status=503, times=50)
    s.world.slack.fail_next("chat.startStream", status=503, times=50)  # streamed or not
    s.ingress.post(s.ingress.app_mention("U0BOB", CHANNEL, "which presto queries are running?"))
    s.work()
    turn_jobs = [k.decode() for k in s.redis.scan_iter(match=job_key("*"))]
    failed = [k for k in turn_jobs if s.redis.hget(k, "status") == b"failed"]
    assert failed, "the failure path did not run"

    # Every credential that existed during the run.
    secrets = {BOT_TOKEN, APP_TOKEN, SIGNING_SECRET, ANTHROPIC_KEY, DEFAULT_CLIENT_SECRET, s.world.secret_key}
    for server in s.world.servers.values():
        secrets |= {r.authorization.removeprefix("Bearer ") for r in server.record.all() if r.authorization}
    for request in s.world.idp.requests("/token"):
        secrets |= {v for k, v in request.params if k in ("code", "refresh_token", "code_verifier")}
    secrets |= set(s.world.idp.store.refresh)
    secrets |= {c.payload["response_url"] for c in clicks} | {c.payload["trigger_id"] for c in clicks}
    secrets = {x for x in secrets if x and len(x) >= 12}
    assert len(secrets) > 10

    redis = s.redis
    stores: dict[str, str] = {
        "logs (web and in-process worker)": debug_logs.getvalue(),
        "logs (worker process)": worker.stderr.decode(errors="replace"),
        "anthropic requests": json.dumps([r.body for r in s.world.anthropic.requests(None)]),
        "slack calls": json.dumps([c.args for c in s.world.slack.calls()]),
        "slack files": json.dumps(
            [(f.content or b"").decode(errors="replace") for f in s.world.slack.files()]
        ),
        "audit": repr(redis.xrange("chatops:audit")),
    }
    jobs = [k.decode() for k in redis.scan_iter(match="rq:job:*")]
    assert jobs
    stores["rq jobs"] = repr([redis.hgetall(k) for k in jobs if redis.type(k) == b"hash"])
    stores["turn jobs"] = repr([redis.hgetall(k) for k in turn_jobs] + [redis.xrange(STREAM)])
    stores["all of redis"] = redis_dump(redis)
    assert "debug" in stores["logs (worker process)"] or "info" in stores["logs (worker process)"]

    leaks = [(where, secret[:12]) for where, blob in stores.items() for secret in secrets if secret in blob]
    leaks += [(where, m.group(0)[:12]) for where, blob in stores.items() for m in SHAPES.finditer(blob)]
    assert leaks == []
    sealed = redis.hget("chatops:link:T0CHATOPS:U0ALICE", "refresh")
    assert sealed is not None
    assert sealed.startswith(b"gAAAAA")  # stored refresh tokens are ciphertext
