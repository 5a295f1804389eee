"""Deployment-wide metrics in Redis (SPEC §4 /metrics): written by any process, sync or async, rendered in
one scrape with HELP/TYPE; derived from audit records; and never a reason for a request to fail."""

from __future__ import annotations

import socket
import time

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from approvals.audit import Audit, AuditRecord
from approvals.store import PENDING_KEY
from approvals.turn_queue import GROUP, SLOTS_KEY, STREAM
from approvals.turns import RUNNING_KEY as TURNS_RUNNING_KEY
from bot.metrics import FAMILIES, Metrics, RedisCollector, SyncMetrics, metrics_from_audit, scrape
from bot.queues import ACTIONS, AGENT, QUEUE_NAMES


def parse(body: bytes) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def value(family: Metric, name: str, **labels: str) -> float:
    found = [s.value for s in family.samples if s.name == name and s.labels == labels]
    assert len(found) == 1, f"{name}{labels} not in {family.samples}"
    return found[0]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again on return: nothing listens, a Redis that is down


async def test_web_and_worker_writes_show_up_in_one_scrape(aredis: aioredis.Redis, redis_url: str) -> None:
    web = Metrics(aioredis.Redis.from_url(redis_url))  # the web process, async
    worker = SyncMetrics(redis.Redis.from_url(redis_url))  # a worker on another machine, sync
    web.inc("chatops_ingress_events_total", {"outcome": "queued"})
    web.inc("chatops_ingress_events_total", {"outcome": "queued"})
    web.inc("chatops_ingress_events_total", {"outcome": "duplicate"})
    worker.inc("chatops_turns_total", {"outcome": "answered"})
    worker.inc("chatops_model_tokens_total", {"direction": "input"}, 1200)
    web.observe("chatops_tool_call_seconds", {"server": "io.example/presto", "tool": "query_history"}, 0.3)
    worker.observe("chatops_tool_call_seconds", {"server": "io.example/presto", "tool": "query_history"}, 7.0)
    worker.observe("chatops_tool_call_seconds", {"server": "io.example/presto", "tool": "query_history"}, 999)
    await web.flush()

    families = parse(await scrape(aredis))
    ingress = families["chatops_ingress_events"]
    assert (ingress.type, ingress.documentation) == ("counter", FAMILIES["chatops_ingress_events_total"].help)
    assert value(ingress, "chatops_ingress_events_total", outcome="queued") == 2
    assert value(ingress, "chatops_ingress_events_total", outcome="duplicate") == 1
    assert value(families["chatops_turns"], "chatops_turns_total", outcome="answered") == 1
    assert value(families["chatops_model_tokens"], "chatops_model_tokens_total", direction="input") == 1200

    latency = families["chatops_tool_call_seconds"]
    assert latency.type == "histogram"
    labels = {"server": "io.example/presto", "tool": "query_history"}
    assert value(latency, "chatops_tool_call_seconds_bucket", le="0.25", **labels) == 0
    assert value(latency, "chatops_tool_call_seconds_bucket", le="0.5", **labels) == 1  # cumulative
    assert value(latency, "chatops_tool_call_seconds_bucket", le="10.0", **labels) == 2
    assert value(latency, "chatops_tool_call_seconds_bucket", le="300.0", **labels) == 2
    assert value(latency, "chatops_tool_call_seconds_bucket", le="+Inf", **labels) == 3
    assert value(latency, "chatops_tool_call_seconds_count", **labels) == 3
    assert value(latency, "chatops_tool_call_seconds_sum", **labels) == pytest.approx(1006.3)
    # Every declared family is rendered, even before anything was counted, so dashboards never go blank.
    assert {f"{n.removesuffix('_total')}" for n in FAMILIES} <= set(families)
    await web._redis.aclose()


async def test_live_gauges_read_queues_and_pending_approvals(aredis: aioredis.Redis) -> None:
    for job in ("job-1", "job-2", "job-3"):
        await aredis.xadd(STREAM, {"turn": job, "attempt": "first", "job": job})
    await aredis.xgroup_create(STREAM, GROUP, id="0")
    await aredis.xreadgroup(GROUP, "a-pool", {STREAM: ">"}, count=1)  # taken: running, no longer waiting
    await aredis.zadd(PENDING_KEY, {"a1": time.time(), "a2": time.time()})
    families = parse(await scrape(aredis))
    depth = families["chatops_queue_depth"]
    assert depth.type == "gauge"
    assert {s.labels["queue"]: s.value for s in depth.samples} == {
        q: (2 if q == AGENT else 0) for q in QUEUE_NAMES
    }
    assert value(families["chatops_approvals_pending"], "chatops_approvals_pending") == 2
    assert value(families["chatops_metrics_store_up"], "chatops_metrics_store_up") == 1


async def test_live_gauges_show_turns_running_against_the_slots_of_live_pools(aredis: aioredis.Redis) -> None:
    """Saturation at a glance: turns in progress (their leases) and the turn slots known to be alive."""
    await aredis.zadd(TURNS_RUNNING_KEY, {"t1|first": time.time() + 60, "t2|recover-1": time.time() + 60})
    await aredis.zadd(SLOTS_KEY, {"a.1": time.time() + 30, "a.2": time.time() + 30, "a.3": time.time() + 30})
    await aredis.zadd(SLOTS_KEY, {"dead.1": time.time() - 1})  # its heartbeat lapsed: not alive
    await aredis.sadd(f"rq:workers:{ACTIONS}", "rq:worker:forking")  # not a turn slot
    families = parse(await scrape(aredis))
    assert value(families["chatops_turns_running"], "chatops_turns_running") == 2
    assert value(families["chatops_turn_slots"], "chatops_turn_slots") == 3


async def test_labels_are_normalised_and_unknown_metrics_dropped(aredis: aioredis.Redis) -> None:
    metrics = Metrics(aredis)
    metrics.inc("chatops_tool_calls_total", {"server": "s", "outcome": "failed", "extra": "ignored"})
    metrics.inc("chatops_no_such_metric_total", {"x": "y"})
    metrics.inc("chatops_queue_depth", {"queue": "q"})  # live gauges are not written
    await metrics.flush()
    calls = parse(await scrape(aredis))["chatops_tool_calls"]
    assert [s.labels for s in calls.samples] == [{"server": "s", "tool": "", "outcome": "failed"}]
    assert await aredis.keys("chatops:metrics:chatops_no_such*") == []


async def test_a_burst_of_writes_is_coalesced_into_one_increment_per_series(aredis: aioredis.Redis) -> None:
    await aredis.config_resetstat()
    metrics = Metrics(aredis)
    for _ in range(500):
        metrics.inc("chatops_registry_cache_total", {"event": "hit"})
    metrics.registry_event("stale")
    metrics.model_result("ok", 100, 20, 1.5)
    await metrics.flush()
    # hit, stale, requests{ok}, latency bucket+sum+count, tokens input+output: 8 increments, not 507.
    assert (await aredis.info("commandstats"))["cmdstat_hincrbyfloat"]["calls"] == 8
    families = parse(await scrape(aredis))
    cache = families["chatops_registry_cache"]
    assert value(cache, "chatops_registry_cache_total", event="hit") == 500
    assert value(cache, "chatops_registry_cache_total", event="stale") == 1
    assert value(families["chatops_model_requests"], "chatops_model_requests_total", outcome="ok") == 1
    tokens = families["chatops_model_tokens"]
    assert value(tokens, "chatops_model_tokens_total", direction="output") == 20


async def test_a_redis_outage_never_raises_from_a_writer_or_the_scrape(closed_port: int) -> None:
    down_url = f"redis://127.0.0.1:{closed_port}/0"
    async_client = aioredis.Redis.from_url(down_url, retry=None, socket_connect_timeout=0.5)
    metrics = Metrics(async_client)
    metrics.inc("chatops_turns_total", {"outcome": "answered"})
    metrics.observe("chatops_turn_seconds", {"outcome": "answered"}, 1.0)
    await metrics.flush()  # the write failed inside; nothing surfaces
    metrics.inc("chatops_turns_total", {"outcome": "answered"})  # paused after the failure: dropped at once
    await metrics.flush()

    sync = SyncMetrics.from_url(down_url)
    started = time.monotonic()
    sync.inc("chatops_turns_total", {"outcome": "failed"})
    sync.inc("chatops_turns_total", {"outcome": "failed"})  # no second attempt while paused
    assert time.monotonic() - started < 2.0

    families = parse(await scrape(async_client))
    assert value(families["chatops_metrics_store_up"], "chatops_metrics_store_up") == 0
    await async_client.aclose()


def test_the_sync_collector_works_in_a_registry_of_its_own(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    SyncMetrics(client).inc("chatops_approvals_total", {"outcome": "approved"})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(client))
    families = parse(generate_latest(registry))
    assert value(families["chatops_approvals"], "chatops_approvals_total", outcome="approved") == 1
    client.close()


def test_audit_records_imply_tool_call_approval_and_minutes_saved_samples() -> None:
    presto = {"server": "io.example/presto", "tool": "query_history"}
    ok = AuditRecord(kind="tool_call", outcome="succeeded", latency_ms=250, minutes_saved=5, **presto)
    assert metrics_from_audit(ok) == [
        ("chatops_tool_calls_total", {**presto, "outcome": "succeeded"}, 1.0),
        ("chatops_tool_call_seconds", presto, 0.25),
        ("chatops_minutes_saved_total", presto, 5.0),
    ]
    lost = AuditRecord(kind="tool_call", outcome="outcome_unknown", **presto)
    assert metrics_from_audit(lost.to_json()) == [
        ("chatops_tool_calls_total", {**presto, "outcome": "outcome_unknown"}, 1.0)
    ]
    run = AuditRecord(kind="workflow_run", outcome="succeeded", tool="restart-failed-dag", minutes_saved=30)
    assert metrics_from_audit(run) == [
        ("chatops_workflow_runs_total", {"workflow": "restart-failed-dag", "outcome": "succeeded"}, 1.0),
        ("chatops_minutes_saved_total", {"server": "(workflows)", "tool": "restart-failed-dag"}, 30.0),
    ]
    assert metrics_from_audit(AuditRecord(kind="approval_requested", outcome="pending")) == [
        ("chatops_approvals_total", {"outcome": "requested"}, 1.0)
    ]
    assert metrics_from_audit(AuditRecord(kind="approval_expired", outcome="expired")) == [
        ("chatops_approvals_total", {"outcome": "expired"}, 1.0)
    ]
    click = AuditRecord(
        kind="approval_decision",
        outcome="approved",
        latency_ms=90_000,
        detail="approve (requested by U1): approved",
    )
    assert metrics_from_audit(click) == [
        ("chatops_approvals_total", {"outcome": "approved"}, 1.0),
        ("chatops_approval_decision_seconds", {}, 90.0),
    ]
    vote = AuditRecord(
        kind="approval_decision", outcome="pending", detail="approve (requested by U1): counted"
    )
    assert metrics_from_audit(vote) == []  # one vote of a quorum is not an outcome
    # ApprovalService.reject writes the click record and then a summary record: count the rejection once.
    summary = AuditRecord(kind="approval_decision", outcome="rejected", detail="too risky")
    assert metrics_from_audit(summary) == []
    assert metrics_from_audit(AuditRecord(kind="account_link", outcome="succeeded")) == []


async def test_audit_derived_counters_reach_the_scrape(aredis: aioredis.Redis) -> None:
    # How the integrator wires it: each record Audit appends is also counted.
    metrics, audit = Metrics(aredis), Audit(aredis)
    for outcome, latency in (("succeeded", 120.0), ("failed", 40.0)):
        record = AuditRecord(
            kind="tool_call",
            outcome=outcome,
            server="io.example/presto",
            tool="query_history",  # type: ignore[arg-type]
            latency_ms=latency,
            minutes_saved=5 if outcome == "succeeded" else 0,
        )
        await audit.record(record)
        metrics.emit(metrics_from_audit(record))
    await metrics.flush()
    families = parse(await scrape(aredis))
    labels = {"server": "io.example/presto", "tool": "query_history"}
    calls = families["chatops_tool_calls"]
    assert value(calls, "chatops_tool_calls_total", outcome="succeeded", **labels) == 1
    assert value(calls, "chatops_tool_calls_total", outcome="failed", **labels) == 1
    assert value(families["chatops_minutes_saved"], "chatops_minutes_saved_total", **labels) == 5
    assert value(families["chatops_tool_call_seconds"], "chatops_tool_call_seconds_count", **labels) == 2


async def test_a_bad_sample_is_dropped_not_raised(aredis: aioredis.Redis) -> None:
    metrics = Metrics(aredis)
    metrics.observe("chatops_turn_seconds", {"outcome": "answered"}, None)  # type: ignore[arg-type]
    metrics.inc("chatops_turns_total", {"outcome": "answered"}, "many")  # type: ignore[arg-type]
    metrics.inc("chatops_turns_total", {"outcome": "answered"})
    await metrics.flush()
    turns = parse(await scrape(aredis))["chatops_turns"]
    assert value(turns, "chatops_turns_total", outcome="answered") == 1
