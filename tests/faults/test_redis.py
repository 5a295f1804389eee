"""Redis down, full or unsafe (ACCEPTANCE 6, 35, 36): nothing is decided or run without a durable record,
and the people involved are told."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis as sync_redis

from approvals.store import APPROVED_KEY, Status
from bot.approval_listeners import COULD_NOT_RECORD
from bot.cards import APPROVE_ACTION_ID
from bot.queues import Queues
from bot.redis_check import UnsafeRedis, judge, require_safe_redis
from fixtures.anthropic_fake import Body, Reply, resumed, text, tool_results, tool_use
from fixtures.mcp_presto import RUNAWAY_QUERY_ID
from fixtures.redis_proc import RedisProc, free_port
from fixtures.waiting import wait_until
from tests.faults.conftest import Scenario, audit_records, scenario_on
from tests.scenarios.test_turn_pool import worker_process

CHANNEL = "C0INCIDENT"
DURABLE = ("--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction")  # README's


def agent(body: Body) -> Reply:
    question = next(m["content"] for m in body["messages"] if isinstance(m["content"], str))
    if tool_results(body) or resumed(body):
        return text("Answered.")
    if "kill" in question:
        return tool_use(
            "presto__kill_query", {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway"}, text_before="Kill it."
        )
    return text("Nothing is running.")


@pytest.fixture
def durable_redis() -> Iterator[RedisProc]:
    server = RedisProc(extra_args=DURABLE).start()
    yield server
    server.stop()


def fill(client: sync_redis.Redis) -> None:
    for n in range(10_000):
        client.set(f"filler:{n}", "x" * 4096)


def start_worker(env: dict[str, str], redis: RedisProc) -> subprocess.CompletedProcess[bytes]:
    full = {**os.environ, **env, "REDIS_URL": redis.url, "CHATOPS_NETGUARD": "1"}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "worker", "--burst"], env=full, capture_output=True, timeout=60
    )


def start_web(env: dict[str, str], redis: RedisProc) -> subprocess.CompletedProcess[bytes]:
    """`chatops serve`, expected to stop at start (the test fails on the timeout otherwise)."""
    full = {**os.environ, **env, "REDIS_URL": redis.url, "PORT": str(free_port()), "CHATOPS_NETGUARD": "1"}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve"], env=full, capture_output=True, timeout=60
    )


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "allkeys-random", "volatile-lfu"])
def test_every_evicting_policy_is_a_reason_to_refuse(policy: str) -> None:
    problems, _ = judge({"maxmemory-policy": policy, "appendonly": "yes"})
    assert problems
    assert judge({"maxmemory-policy": "noeviction", "appendonly": "yes"}) == ([], [])


def test_the_worker_refuses_to_start_on_a_redis_that_evicts_keys(scenario: Scenario) -> None:
    policy = "allkeys-lru"
    evicting = RedisProc(extra_args=("--maxmemory", "64mb", "--maxmemory-policy", policy)).start()
    try:
        started = start_worker(scenario.env, evicting)
        assert started.returncode == 2
        assert f"maxmemory-policy is {policy}" in started.stderr.decode()
        assert sync_redis.Redis.from_url(evicting.url).keys("rq:*") == []  # it never registered or polled
    finally:
        evicting.stop()


def test_the_web_refuses_to_start_on_a_redis_that_evicts_keys_with_one_line(scenario: Scenario) -> None:
    evicting = RedisProc(extra_args=("--maxmemory", "64mb", "--maxmemory-policy", "volatile-lru")).start()
    try:
        started = start_web(scenario.env, evicting)
    finally:
        evicting.stop()
    assert started.returncode == 2
    said = started.stderr.decode().strip().splitlines()
    assert said == [
        "chatops: configuration error: REDIS_URL: Redis maxmemory-policy is volatile-lru: "
        "it may evict approvals; set noeviction"
    ]


def test_the_worker_starts_on_a_redis_without_persistence_with_a_warning(scenario: Scenario) -> None:
    ephemeral = RedisProc().start()  # save "", appendonly no, noeviction: a crash loses, never brings back
    try:
        started = start_worker(scenario.env, ephemeral)
    finally:
        ephemeral.stop()
    assert started.returncode == 0, started.stderr.decode()[-1000:]
    assert "appendonly is off" in started.stderr.decode()


RDB_ONLY = "Redis keeps RDB snapshots without appendonly"


def test_rdb_snapshots_without_aof_are_a_reason_to_refuse() -> None:
    problems, _ = judge({"maxmemory-policy": "noeviction", "appendonly": "no", "save": "3600 1 300 100"})
    assert [p for p in problems if p.startswith(RDB_ONLY)]
    assert judge({"maxmemory-policy": "noeviction", "appendonly": "yes", "save": "3600 1"}) == ([], [])
    problems, warnings = judge({"maxmemory-policy": "noeviction", "appendonly": "no", "save": ""})
    assert problems == []
    assert warnings


def test_the_worker_and_the_web_refuse_an_rdb_only_redis(scenario: Scenario) -> None:
    """Redis's default configuration: snapshots, no AOF. After a crash it would come back with approvals
    minutes old, APPROVED again though their actions already ran (ACCEPTANCE 35)."""
    rdb_only = RedisProc(extra_args=("--save", "60 1")).start()
    try:
        worker = start_worker(scenario.env, rdb_only)
        web = start_web(scenario.env, rdb_only)
        keys = sync_redis.Redis.from_url(rdb_only.url).keys("rq:*")
    finally:
        rdb_only.stop()
    assert worker.returncode == 2
    assert RDB_ONLY in worker.stderr.decode()
    assert web.returncode == 2
    (said,) = web.stderr.decode().strip().splitlines()
    assert said.startswith(f"chatops: configuration error: REDIS_URL: {RDB_ONLY}")
    assert keys == []  # the worker never registered or polled


def test_the_web_check_refuses_an_evicting_redis_and_passes_a_durable_one(durable_redis: RedisProc) -> None:
    evicting = RedisProc(extra_args=("--maxmemory-policy", "allkeys-lru")).start()

    def check(url: str) -> list[str]:  # the web process checks with its queues' connection, as the worker
        client = sync_redis.Redis.from_url(url)
        try:
            return require_safe_redis(client)
        finally:
            client.close()

    try:
        with pytest.raises(UnsafeRedis, match="allkeys-lru"):
            check(evicting.url)
    finally:
        evicting.stop()
    assert check(durable_redis.url) == []


def test_a_decision_survives_a_redis_kill_and_runs_once(scenario: Scenario, durable_redis: RedisProc) -> None:
    with scenario_on(scenario, durable_redis) as s:
        for person in ("alice", "bob", "carol"):
            s.link(person)
        s.world.anthropic.set_default(agent)
        mention = s.ingress.app_mention("U0ALICE", CHANNEL, "kill the runaway backfill")
        s.ingress.post(mention)
        s.work()
        (approval,) = s.approvals(CHANNEL, mention.event["ts"])
        s.click("U0BOB", approval)
        s.click("U0CAROL", approval)
        durable_redis.kill()  # kill -9, right after the decision (its job may or may not be queued)
        durable_redis.start()
        assert s.approval(approval.id).status == Status.APPROVED
        if s.redis.zscore(APPROVED_KEY, approval.id) is not None:
            s.redis.zadd(APPROVED_KEY, {approval.id: time.time() - 120})  # past the sweeper's grace
        Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_sweep_now()
        s.work()
        Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_sweep_now()
        s.work()
        assert s.approval(approval.id).status == Status.SUCCEEDED
        assert s.world.servers["presto"].ledger.count("kill_query") == 1
        ran = [
            r for r in audit_records(s.redis) if r["kind"] == "tool_call" and r["approval_id"] == approval.id
        ]
        durable_redis.kill()  # and again right after the run: its record must survive as well
        durable_redis.start()
        assert s.approval(approval.id).status == Status.SUCCEEDED
        assert [r for r in audit_records(s.redis) if r["kind"] == "tool_call"] == ran
        assert len(ran) == 1
        Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_sweep_now()
        Queues(sync_redis.Redis.from_url(s.redis_url)).enqueue_action(approval.id)
        s.work()
        assert s.world.servers["presto"].ledger.count("kill_query") == 1


def test_with_redis_down_an_event_gets_503_and_its_redelivery_is_answered_once(
    scenario: Scenario, durable_redis: RedisProc
) -> None:
    with scenario_on(scenario, durable_redis) as s:
        s.link("alice")
        s.world.anthropic.set_default(agent)
        mention = s.ingress.app_mention("U0ALICE", "C0DATAENG", "is anything running on presto?")
        durable_redis.kill()
        refused = s.ingress.post(mention)
        assert refused.status == 503
        assert "x-slack-no-retry" not in {k.lower() for k in refused.headers}
        durable_redis.start()
        for retry in (1, 2):
            assert s.ingress.post(s.ingress.sign(mention, retry_num=retry)).status == 200
        s.work()
        assert s.ingress.post(s.ingress.sign(mention, retry_num=3)).status == 200
        s.work()
        answers = [
            m
            for m in s.bot_messages("C0DATAENG", mention.event["ts"])
            if "Nothing is running" in str(m.blocks)
        ]
        assert len(answers) == 1
        assert len(s.world.anthropic.requests()) == 1


def test_a_click_while_redis_is_down_is_acked_told_and_records_nothing(
    scenario: Scenario, durable_redis: RedisProc
) -> None:
    with scenario_on(scenario, durable_redis) as s:
        for person in ("alice", "bob"):
            s.link(person)
        s.world.anthropic.set_default(agent)
        mention = s.ingress.app_mention("U0ALICE", CHANNEL, "kill the runaway backfill")
        s.ingress.post(mention)
        s.work()
        (approval,) = s.approvals(CHANNEL, mention.event["ts"])
        durable_redis.kill()
        click = s.ingress.block_actions(
            "U0BOB", APPROVE_ACTION_ID, channel=CHANNEL, message_ts=s.card_ts(approval), value=approval.id
        )
        assert s.ingress.post(click).status == 200
        assert COULD_NOT_RECORD in s.told("U0BOB", CHANNEL)
        durable_redis.start()
        after = s.approval(approval.id)
        assert after.status == Status.PENDING
        assert after.approvals == ()
        assert s.redis.llen(f"chatops:approval:{approval.id}:attempts") == 0
        assert s.work() == 0
        assert s.world.servers["presto"].ledger.count("kill_query") == 0


def test_a_full_redis_fails_closed_and_the_approver_is_told(scenario: Scenario) -> None:
    full = RedisProc(extra_args=("--maxmemory-policy", "noeviction")).start()
    try:
        with scenario_on(scenario, full) as s:
            for person in ("alice", "bob", "carol"):
                s.link(person)
            s.world.anthropic.set_default(agent)
            mention = s.ingress.app_mention("U0ALICE", CHANNEL, "kill the runaway backfill")
            s.ingress.post(mention)
            s.work()
            (approval,) = s.approvals(CHANNEL, mention.event["ts"])
            s.click("U0BOB", approval)  # one of two votes, recorded while there is room
            client = s.redis
            client.config_set("maxmemory", int(client.info("memory")["used_memory"]) // 2)  # already over
            with pytest.raises(sync_redis.exceptions.ResponseError, match="maxmemory"):
                fill(client)
            click = s.ingress.block_actions(
                "U0CAROL",
                APPROVE_ACTION_ID,
                channel=CHANNEL,
                message_ts=s.card_ts(approval),
                value=approval.id,
            )
            assert s.ingress.post(click).status == 200
            assert COULD_NOT_RECORD in s.told("U0CAROL", CHANNEL)
            refused = s.ingress.post(s.ingress.app_mention("U0ALICE", "C0DATAENG", "anything running?"))
            assert refused.status == 503  # Slack will retry once there is room
            client.config_set("maxmemory", 0)  # room again: still nothing was decided, so nothing runs
            s.work()
            assert s.approval(approval.id).status == Status.PENDING
            assert len(s.approval(approval.id).approvals) == 1
            assert s.world.servers["presto"].ledger.count("kill_query") == 0
    finally:
        full.stop()


def test_a_running_worker_lives_through_a_redis_restart_and_answers_after_it(
    scenario: Scenario, durable_redis: RedisProc
) -> None:
    """Its turn pool and forking worker retry their connections; nobody has to restart them."""
    with scenario_on(scenario, durable_redis) as s:
        s.link("alice")
        s.world.anthropic.set_default(agent)

        def ask(question: str) -> str:
            mention = s.ingress.app_mention("U0ALICE", "C0DATAENG", question)
            assert s.ingress.post(mention).status == 200
            return str(mention.event["ts"])

        def answered(ts: str) -> bool:
            return any("Nothing is running" in str(m.blocks) for m in s.bot_messages("C0DATAENG", ts))

        with worker_process(s) as worker:
            before = ask("is anything running on presto?")
            wait_until("the first answer", lambda: answered(before), timeout=60)
            durable_redis.kill()
            durable_redis.start()
            after = ask("and now, after the restart?")
            wait_until("the answer after the restart", lambda: answered(after), timeout=60)
            assert worker.poll() is None  # the same worker process, never restarted
