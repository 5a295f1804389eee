"""Deployment-wide metrics (SPEC §4 /metrics): counters and histograms kept in Redis, rendered by `web`.

Workers are separate processes, often on other machines, so a process-local Prometheus registry would show
only the web process. Every process instead adds to one Redis hash per family, `chatops:metrics:{name}`:

    counter     field = canonical label JSON                     HINCRBYFLOAT value
    histogram   fields  bucket|{le}|{labels}, sum|{labels}, count|{labels}  (bucket = the smallest le that
                holds the value, so one observation is three increments; /metrics makes them cumulative)

Gauges are read live at scrape time (queue depths, pending approvals). Writing never raises. `Metrics`
(async code) never makes a caller wait: it buffers and writes from a background task, coalescing bursts into
one pipeline. `SyncMetrics` writes at once, with short timeouts (`from_url`). Both stop writing for a while
after a failure, so an outage costs at most one failed attempt per `BACKOFF_SECONDS`. Metrics may be lost in
an outage; requests are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis as sync_redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from redis.exceptions import RedisError
from redis.utils import str_if_bytes

from agent.usage import Price, Usage, dollars
from approvals import turn_queue
from approvals.impact import metrics_from_audit
from approvals.store import PENDING_KEY, RUNNING_KEY
from approvals.turns import RUNNING_KEY as TURNS_RUNNING_KEY
from bot.queues import QUEUE_NAMES, RQ_QUEUES, waiting_key
from bot.redis_clients import sync_client

__all__ = ["FAMILIES", "Family", "Metrics", "RedisCollector", "SyncMetrics", "metrics_from_audit", "scrape"]

log = logging.getLogger(__name__)

KEY_PREFIX = "chatops:metrics:"
BACKOFF_SECONDS = 10.0
COALESCE_SECONDS = 0.25
MAX_LABEL_CHARS = 120  # label values come from the registry and our code, but never let one grow a series
Sample = tuple[str, Mapping[str, str], float]
LATENCY = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
DECISION = (15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 86400.0)


Kind = Literal["counter", "histogram", "gauge"]


@dataclass(frozen=True)
class Family:
    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


# The one table of families: name, type, labels ("-" for none), HELP text. Histogram buckets are below.
_TABLE = """
chatops_ingress_events_total       counter   outcome             Slack message events seen by ingress.
chatops_dedupe_hits_total          counter   stage               Deliveries recognised as already handled.
chatops_slack_acks_total           counter   status              HTTP answers to Slack requests.
chatops_slack_ack_seconds          histogram -                   Time to acknowledge a Slack request.
chatops_turns_total                counter   outcome             Agent turns finished, by outcome.
chatops_turn_seconds               histogram outcome             Wall time of an agent turn.
chatops_model_requests_total       counter   outcome             Messages API calls, by outcome.
chatops_model_request_seconds      histogram -                   Messages API call latency.
chatops_model_tokens_total         counter   direction           Model tokens, input or output.
chatops_model_billed_tokens_total  counter   kind                Model tokens as billed (cache writes, reads).
chatops_model_cost_dollars_total   counter   model               Estimated model cost in US dollars.
chatops_tool_calls_total           counter   server,tool,outcome MCP tool calls, by outcome.
chatops_tool_call_seconds          histogram server,tool         MCP tool call latency.
chatops_workflow_runs_total        counter   workflow,outcome    Canned workflow runs, by outcome.
chatops_approvals_total            counter   outcome             Approval requests and their outcomes.
chatops_approval_decision_seconds  histogram -                   From approval request to decision.
chatops_registry_cache_total       counter   event               Registry snapshot reads, by event.
chatops_minutes_saved_total        counter   server,tool         Engineer minutes saved (SPEC 9).
chatops_queue_depth                gauge     queue               Jobs waiting in each queue.
chatops_approvals_pending          gauge     -                   Approval cards waiting for a decision.
chatops_approvals_running          gauge     -                   Approved actions running now.
chatops_turns_running              gauge     -                   Agent turns in progress (their leases).
chatops_turn_slots                 gauge     -                   Turn slots of live turn pools.
chatops_metrics_store_up           gauge     -                   1 if the metrics store was readable.
"""
_BUCKETS = {"chatops_approval_decision_seconds": DECISION}
_KINDS: dict[str, Kind] = {"counter": "counter", "histogram": "histogram", "gauge": "gauge"}


def _parse_table(text: str) -> dict[str, Family]:
    table: dict[str, Family] = {}
    for line in text.strip().splitlines():
        name, kind, labels, help_text = line.split(None, 3)
        names = () if labels == "-" else tuple(labels.split(","))
        buckets = _BUCKETS.get(name, LATENCY) if kind == "histogram" else ()
        table[name] = Family(name, _KINDS[kind], help_text, names, buckets)  # KeyError: a typo in the table
    return table


FAMILIES: dict[str, Family] = _parse_table(_TABLE)


def _labels_json(family: Family, labels: Mapping[str, Any]) -> str:
    values = {name: str(labels.get(name, ""))[:MAX_LABEL_CHARS] for name in family.labels}
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def plan(name: str, labels: Mapping[str, Any], value: float) -> list[tuple[str, str, float]]:
    """The hash increments (key, field, amount) that record one sample; [] for unknown names or gauges."""
    family = FAMILIES.get(name)
    if family is None or family.kind == "gauge":
        log.warning("metric %s is not a writable family; dropped", name)
        return []
    key, lab = KEY_PREFIX + name, _labels_json(family, labels)
    if family.kind == "counter":
        return [(key, lab, float(value))]
    le = next((repr(b) for b in family.buckets if value <= b), "+Inf")
    return [(key, f"bucket|{le}|{lab}", 1.0), (key, f"sum|{lab}", float(value)), (key, f"count|{lab}", 1.0)]


class _Writer:
    """The shared surface: counters, histograms, audit-derived samples, and the two callback shapes."""

    _paused_until = 0.0  # after a failed write, skip writes for a while: no timeout on every call

    def _add(self, writes: list[tuple[str, str, float]]) -> None:
        raise NotImplementedError

    def _open(self) -> bool:
        return time.monotonic() >= self._paused_until

    def _failed(self, exc: BaseException) -> None:
        self._paused_until = time.monotonic() + BACKOFF_SECONDS
        log.debug("metrics write failed (%s); pausing writes for %.0f s", type(exc).__name__, BACKOFF_SECONDS)

    def inc(self, name: str, labels: Mapping[str, Any] | None = None, value: float = 1.0) -> None:
        self.emit([(name, labels or {}, value)])

    def observe(self, name: str, labels: Mapping[str, Any] | None, seconds: float) -> None:
        self.emit([(name, labels or {}, seconds)])

    def emit(self, samples: Iterable[Sample]) -> None:
        """Record samples such as `metrics_from_audit` returns; the family's type decides inc or observe."""
        try:
            writes = [w for name, labels, value in samples for w in plan(name, labels, float(value))]
        except Exception as exc:  # a bad value (None, a str) is a bug to log, never a failed request
            log.debug("metric samples dropped (%s: %s)", type(exc).__name__, exc)
            return
        self._add(writes)

    def registry_event(self, event: str) -> None:
        """Fits `SharedSnapshot(on_event=...)`."""
        self.inc("chatops_registry_cache_total", {"event": event})

    def model_result(self, outcome: str, input_tokens: int, output_tokens: int, seconds: float) -> None:
        self.inc("chatops_model_requests_total", {"outcome": outcome})
        self.observe("chatops_model_request_seconds", {}, seconds)
        if input_tokens:
            self.inc("chatops_model_tokens_total", {"direction": "input"}, input_tokens)
        if output_tokens:
            self.inc("chatops_model_tokens_total", {"direction": "output"}, output_tokens)

    def model_usage(self, model: str, usage: Usage, price: Price | None) -> None:
        """One answered call's bill: tokens by how they are priced, and dollars when the price is known."""
        for kind, count in ((k, n) for k, n in usage.as_dict().items() if n):
            self.inc("chatops_model_billed_tokens_total", {"kind": kind}, count)
        if price is not None:
            self.inc("chatops_model_cost_dollars_total", {"model": model}, dollars(usage, price))


class Metrics(_Writer):
    """For async code. Calls only buffer; a task on the running loop writes the buffer in one pipeline,
    at most every COALESCE_SECONDS (writing right away cost the web one Redis transaction per Slack event,
    a fifth of its CPU per event). Call `await flush()` before closing the Redis client (end of a job,
    shutdown) and before reading what this process counted (a scrape)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._pending: dict[tuple[str, str], float] = {}
        self._task: asyncio.Task[None] | None = None
        self._waiting = False  # the task is still in its coalescing pause: cancelling it loses nothing

    def _add(self, writes: list[tuple[str, str, float]]) -> None:
        if not writes or not self._open():
            return
        for key, field, amount in writes:
            self._pending[(key, field)] = self._pending.get((key, field), 0.0) + amount
        if self._task is None or self._task.done():
            # Without a running loop (a sync code path) the buffer waits for the next call or flush().
            with contextlib.suppress(RuntimeError):
                self._task = asyncio.get_running_loop().create_task(self._drain_soon())

    async def _drain_soon(self) -> None:
        self._waiting = True
        try:
            await asyncio.sleep(COALESCE_SECONDS)
        finally:
            self._waiting = False
        await self._drain()

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    for (key, field), amount in batch.items():
                        pipe.hincrbyfloat(key, field, amount)
                    await pipe.execute()
            except Exception as exc:  # metrics must never break a request, whatever went wrong
                self._failed(exc)
                self._pending.clear()  # dropped, not retried: memory must stay bounded through an outage
                return

    async def flush(self, timeout: float = 2.0) -> None:
        """Write what is buffered; waits at most `timeout` seconds and never raises."""
        try:
            task = self._task
            if task is not None and not task.done():
                if self._waiting:  # no write started yet: write now instead of after the pause
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                else:
                    await asyncio.wait_for(asyncio.shield(task), timeout)
            if self._pending:
                await asyncio.wait_for(self._drain(), timeout)
        except TimeoutError:
            log.debug("metrics flush gave up after %.1f s", timeout)


class SyncMetrics(_Writer):
    """For sync code (RQ hooks, Queues): one pipeline per call. Give it a client with short timeouts and no
    retries (`SyncMetrics.from_url`) so that an outage costs at most one short wait per backoff period."""

    def __init__(self, redis: sync_redis.Redis) -> None:
        self._redis = redis

    @classmethod
    def from_url(cls, url: str, timeout: float = 0.5) -> SyncMetrics:
        client = sync_client(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, retry_on_timeout=False, retry=None
        )
        return cls(client)

    def _add(self, writes: list[tuple[str, str, float]]) -> None:
        if not writes or not self._open():
            return
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                for key, field, amount in writes:
                    pipe.hincrbyfloat(key, field, amount)
                pipe.execute()
        except Exception as exc:  # metrics must never break a request, whatever went wrong
            self._failed(exc)


# --- reading ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    hashes: dict[str, dict[str, float]]  # family name -> field -> value
    queue_depths: dict[str, int]
    pending: int
    running: int
    up: bool
    turns_running: int = 0
    turn_slots: int = 0


def _queue_commands(pipe: Any) -> None:
    # One pipeline for everything, so a scrape is one round trip however many families there are.
    for family in FAMILIES.values():
        if family.kind != "gauge":
            pipe.hgetall(KEY_PREFIX + family.name)
    for queue in RQ_QUEUES:
        pipe.llen(waiting_key(queue))
    pipe.zcard(PENDING_KEY)
    pipe.zcard(RUNNING_KEY)
    pipe.zcard(TURNS_RUNNING_KEY)
    turn_queue.queue_standing(pipe)  # the turn slots listening, the turns waiting


def _snapshot(results: list[Any]) -> Snapshot:
    stored = [f for f in FAMILIES.values() if f.kind != "gauge"]
    hashes = {
        f.name: {str_if_bytes(k): float(v) for k, v in (raw or {}).items()}
        for f, raw in zip(stored, results, strict=False)
    }
    rest = results[len(stored) :]
    pending, running, turns, slots, waiting = (int(n) for n in rest[-5:])
    depths = {q: int(rest[RQ_QUEUES.index(q)]) if q in RQ_QUEUES else waiting for q in QUEUE_NAMES}
    return Snapshot(hashes, depths, pending, running, True, turns, slots)


DOWN = Snapshot({}, {}, 0, 0, False)


async def read_snapshot(redis: aioredis.Redis) -> Snapshot:
    try:
        async with redis.pipeline(transaction=False) as pipe:
            _queue_commands(pipe)
            return _snapshot(await pipe.execute())
    except (RedisError, OSError) as exc:
        log.warning("metrics store unreadable (%s)", type(exc).__name__)
        return DOWN


def families(snap: Snapshot) -> Iterator[Metric]:
    """Prometheus families for a snapshot, in table order, each with its HELP and TYPE."""
    for f in FAMILIES.values():
        values = snap.hashes.get(f.name, {})
        if f.kind == "counter":
            counter = CounterMetricFamily(f.name, f.help, labels=f.labels)
            for field, value in sorted(values.items()):
                if (label_values := _label_values(f, field)) is not None:
                    counter.add_metric(label_values, value)
            yield counter
        elif f.kind == "histogram":
            yield _histogram(f, values)
    depth = GaugeMetricFamily("chatops_queue_depth", FAMILIES["chatops_queue_depth"].help, labels=["queue"])
    for queue, n in snap.queue_depths.items():
        depth.add_metric([queue], n)
    yield depth
    for name, value in (
        ("chatops_approvals_pending", snap.pending),
        ("chatops_approvals_running", snap.running),
        ("chatops_turns_running", snap.turns_running),
        ("chatops_turn_slots", snap.turn_slots),
        ("chatops_metrics_store_up", int(snap.up)),
    ):
        yield GaugeMetricFamily(name, FAMILIES[name].help, value=value)


def _histogram(f: Family, values: Mapping[str, float]) -> HistogramMetricFamily:
    series: dict[str, tuple[dict[str, float], float]] = {}
    for field, value in values.items():
        part, _, rest = field.partition("|")
        le, lab = rest.split("|", 1) if part == "bucket" else ("", rest)
        buckets, total = series.setdefault(lab, ({}, 0.0))
        if part == "bucket":
            buckets[le] = buckets.get(le, 0.0) + value
        elif part == "sum":
            series[lab] = (buckets, total + value)
    histogram = HistogramMetricFamily(f.name, f.help, labels=f.labels)
    for lab, (buckets, total) in sorted(series.items()):
        running, cumulative = 0.0, []
        for le in [*(repr(b) for b in f.buckets), "+Inf"]:
            running += buckets.get(le, 0.0)
            cumulative.append((le, running))
        if (label_values := _label_values(f, lab)) is not None:
            histogram.add_metric(label_values, cumulative, total)
    return histogram


def _label_values(f: Family, field: str) -> list[str] | None:
    try:
        data = json.loads(field)
    except ValueError:
        return None  # not written by us; one stray field must not break the scrape
    return [str(data.get(name, "")) for name in f.labels] if isinstance(data, dict) else None


class RedisCollector:
    """A prometheus_client Collector over the Redis store: built with a sync client it reads on every
    `collect()`; `scrape` (async, for the web route) reads first and hands it the snapshot."""

    def __init__(self, source: sync_redis.Redis | Snapshot) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        if isinstance(self._source, Snapshot):
            return list(families(self._source))
        try:
            with self._source.pipeline(transaction=False) as pipe:
                _queue_commands(pipe)
                snap = _snapshot(pipe.execute())
        except (RedisError, OSError) as exc:
            log.warning("metrics store unreadable (%s)", type(exc).__name__)
            snap = DOWN
        return list(families(snap))


async def scrape(redis: aioredis.Redis) -> bytes:
    """The deployment's metrics in Prometheus text format, read without blocking the event loop."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(await read_snapshot(redis)))
    return generate_latest(registry)
