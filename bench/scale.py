"""Scale: concurrent conversations against a slow model as the turn pool gets more slots.

Setup (`bench.turn._stack`): a real web process (`python -m bot.cli serve`), real Redis, the fixture world in
this process, alice linked through the real browser flow. The model fake answers every request after
`MODEL_LATENCY` s (a `presto__query_history` call first, then the answer); the tool sleeps `TOOL_LATENCY` s.
So one turn cannot take less than the floor, 2 × model + tool, and N slots (one turn each at a time) cannot
answer more than N / floor conversations a second: that ideal, computed in the run, is each step's baseline.

Per step one `chatops worker --turns N` is started (bot.worker: the forking worker for actions and workflows,
and one turn pool, a child process, whose N slots run turns on one event loop), one warm-up turn runs, then
C conversations
(C distinct threads, signed `app_mention`s) are posted at once. Measured:
- throughput: answers / (last answer - first post), as a ratio of N / floor;
- turn wall: post -> the answer's `chat.update` at FakeSlack; it includes the wait in the queue when C > N;
- PSS: the sum of `Pss` in /proc/PID/smaps_rollup over the web process and the whole worker tree (the
  forking worker, the turn pool, RQ's scheduler process), sampled through the step, the peak kept.
  Not counted: redis-server, and this process, which runs the fixture world and the load.

alice is one user in C threads; the per-user sliding limit (CHATOPS_USER_TURNS_PER_MINUTE, default 10 a
minute) is raised to `RATE_LIMIT` in the worker processes' environment for this benchmark only.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from bench.common import Noise, Result, Section, _tree_jiffies, percentile, stop_process
from bench.turn import _spawn, _Stack, _stack

__all__ = ["STEPS", "run"]

MODEL_LATENCY = 1.0
TOOL_LATENCY = 0.1
FLOOR = 2 * MODEL_LATENCY + TOOL_LATENCY
# (turn slots, conversations, turn pools): the slots are shared out over the pools (`--processes`)
STEPS: tuple[tuple[int, int, int], ...] = ((1, 4, 1), (4, 16, 1), (16, 64, 1), (32, 64, 1), (32, 64, 2))
QUICK_STEPS: tuple[tuple[int, int, int], ...] = ((1, 2, 1), (4, 8, 1), (16, 32, 1), (32, 64, 1), (32, 64, 2))
RATE_LIMIT = 10_000
PSS_TARGET_MB = 4096.0
LINEAR = 0.90  # throughput at or above this share of N / floor counts as linear
SATURATED = 1.8  # the machine busier than this many cores (of 2): the cores are saturated
USER, CHANNEL = "U0ALICE", "C0DATAENG"


def _worker_cmd(slots: int, pools: int) -> list[str]:
    """`chatops worker --processes P --turns N/P` (the per-user limit is raised in its environment)."""
    return [
        sys.executable,
        "-m",
        "bot.cli",
        "worker",
        "--processes",
        str(pools),
        "--turns",
        str(slots // pools),
    ]


# --- memory --------------------------------------------------------------------------------------------


def _descendants(roots: list[int]) -> dict[int, int]:
    """The live processes of these trees and their depth below their root, from
    /proc/PID/task/TID/children (reads only our own tree)."""
    found: dict[int, int] = {}
    stack = [(root, 0) for root in roots]
    while stack:
        pid, depth = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # exited
        found[pid] = depth
        for tid in tasks:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as f:
                stack.extend((int(c), depth + 1) for c in f.read().split())
    return found


def _pss_kb(pid: int) -> int | None:
    """Proportional set size of one process: its private pages plus its share of pages shared with others
    (the forked workers share their parent's imported code and data until they write to it)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None  # exited between the listing and the read
    return None


def _cpu(pids: Iterable[int]) -> tuple[int, int]:
    """(own, reaped children) CPU jiffies summed over these processes: for a worker tree, what the pool
    parent and RQ workers spent themselves (plus any live horse), and what their reaped horses spent."""
    own = reaped = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            raw = f.read()
            rest = raw[raw.rfind(")") + 2 :].split()
            own += int(rest[11]) + int(rest[12])
            reaped += int(rest[13]) + int(rest[14])
    return own, reaped


@dataclass
class _Sample:
    at: float
    total_kb: int
    by_pid: dict[int, int]
    depth: dict[int, int]


@dataclass
class _PssSampler:
    """Keeps the largest PSS sum of our process trees seen during a step, in a thread.

    Reading smaps_rollup walks a process's page tables under its memory lock, ~1 ms per process here, so
    reading all of them every few hundred ms would cost as much CPU as the workers and slow their page
    faults. Instead a cheap census of the trees runs every `interval` s and PSS is read when the tree has
    more processes than at the last reading (work-horses are what grows it), and at least every `every` s."""

    roots: list[int]
    interval: float = 0.2
    every: float = 3.0
    samples: list[_Sample] = field(default_factory=list)
    cpu_seconds: float = 0.0  # what the sampling itself cost this process
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self, depth: dict[int, int]) -> _Sample:
        by_pid = {pid: kb for pid in depth if (kb := _pss_kb(pid)) is not None}
        return _Sample(time.monotonic(), sum(by_pid.values()), by_pid, depth)

    def _loop(self) -> None:
        last_count, last_at = 0, -math.inf
        while not self._stop.is_set():
            started = time.thread_time()
            pids = _descendants(self.roots)
            if len(pids) > last_count or time.monotonic() - last_at >= self.every:
                self.samples.append(self.sample(pids))
                last_count, last_at = len(pids), time.monotonic()
            self.cpu_seconds += time.thread_time() - started
            self._stop.wait(self.interval)

    def __enter__(self) -> _PssSampler:
        self._thread = threading.Thread(target=self._loop, name="pss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @property
    def peak(self) -> _Sample:
        return max(self.samples, key=lambda s: s.total_kb)


def _roles(sample: _Sample, web: int, pool: bool) -> dict[str, Any]:
    """The peak sample split by role, in MB, with process counts. Worker tree, by depth below its root:
    the forking worker (0); the turn pool and RQ's scheduler (1); work-horses of actions (2)."""
    out: dict[str, Any] = {"web_mb": 0.0, "parent_mb": 0.0, "workers_mb": 0.0, "horses_mb": 0.0}
    counts = {"workers": 0, "horses": 0}
    for pid, kb in sample.by_pid.items():
        mb, depth = kb / 1024, sample.depth[pid] + (0 if pool else 1)
        if pid == web:
            out["web_mb"] += mb
        elif depth == 0:
            out["parent_mb"] += mb
        elif depth == 1:
            out["workers_mb"] += mb
            counts["workers"] += 1
        else:
            out["horses_mb"] += mb
            counts["horses"] += 1
    out.update({k: round(v, 1) for k, v in out.items()}, **counts, processes=len(sample.by_pid))
    return out


# --- one step --------------------------------------------------------------------------------------------


def _wait_workers(rconn: redis.Redis, slots: int, forking: int, proc: Any, timeout: float = 60.0) -> None:
    """Until `forking` RQ workers are registered and `slots` turn slots listen (bounded)."""
    from rq import Worker

    from approvals.turn_queue import live_slots

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker pool exited with {proc.returncode}")
        if Worker.count(connection=rconn) >= forking and live_slots(rconn) >= slots:
            return
        time.sleep(0.05)  # bounded by the deadline above
    raise TimeoutError(f"{slots} turn slots and {forking} workers did not register within {timeout} s")


def _wait_gone(rconn: redis.Redis, timeout: float = 20.0) -> None:
    """Until no RQ worker is registered and no turn slot listens: the next pool's count must not include
    the last one's."""
    from rq import Worker

    from approvals.turn_queue import SLOTS_KEY, live_slots

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (Worker.count(connection=rconn) or live_slots(rconn)):
        if not any(
            os.path.exists(f"/proc/{m.decode().rsplit('.', 3)[1]}") for m in rconn.zrange(SLOTS_KEY, 0, -1)
        ):
            rconn.delete(SLOTS_KEY)  # pools killed before they could say they left
        for worker in Worker.all(connection=rconn):
            if worker.pid and not os.path.exists(f"/proc/{worker.pid}"):
                worker.register_death()  # type: ignore[no-untyped-call]  # killed before it could deregister
        time.sleep(0.05)  # bounded by the deadline above


def _conversations(st: _Stack, label: str, count: int, timeout: float) -> dict[str, Any]:
    """Post `count` mentions at once (each a new thread); wait until every one is answered and its turn
    has ended (the eyes come off). Times are the fakes' arrival stamps, on this process's clock."""
    from fixtures.slack_ingress import SlackIngress
    from fixtures.world import SIGNING_SECRET

    slack = st.world.slack
    tags = [f"bench-scale-{label}-{i:03d}" for i in range(count)]
    with contextlib.closing(SlackIngress(st.web_url, SIGNING_SECRET, slack=slack)) as ingress:
        mentions = [
            ingress.app_mention(USER, CHANNEL, f"which presto queries are running? [{t}]") for t in tags
        ]
        ts_of = {m.event["ts"]: t for m, t in zip(mentions, tags, strict=True)}
        started = time.monotonic()
        deliveries = asyncio.run(ingress.apost_many(mentions))
    posted = time.monotonic()
    answers: dict[str, float] = {}
    ended: set[str] = set()

    def done() -> bool:
        for call in slack.calls("chat.update"):
            text = str(call.args.get("text", ""))
            if "Answer for bench-scale-" in text and call.monotonic >= started:
                tag = text.split("Answer for ", 1)[1].split(":", 1)[0]
                if tag in ts_of.values():
                    answers.setdefault(tag, call.monotonic)
        for call in slack.calls("reactions.remove"):
            if call.args.get("timestamp") in ts_of and call.args.get("name") == "eyes":
                ended.add(ts_of[call.args["timestamp"]])
        return len(answers) == count and len(ended) == count

    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)  # bounded by the deadline; the times used are the fake's stamps, not this poll's
    eyes: dict[str, float] = {}
    for call in slack.calls("reactions.add"):
        tag = ts_of.get(call.args.get("timestamp", ""))
        if tag is not None and call.args.get("name") == "eyes":
            eyes.setdefault(tag, call.monotonic)
    return {
        "started": started,
        "posted": posted,
        "statuses": sorted({d.status for d in deliveries}),
        "answers": {t: answers[t] - started for t in tags if t in answers},
        "eyes": {t: eyes[t] - started for t in tags if t in eyes},
        "missing": [t for t in tags if t not in answers],
    }


def _step(
    st: _Stack, noise: Noise, processes: int, count: int, timeout: float, pools: int = 1
) -> dict[str, Any]:
    web = st.procs[0]
    env = {**st.env, "CHATOPS_USER_TURNS_PER_MINUTE": str(RATE_LIMIT)}
    worker = _spawn(_worker_cmd(processes, pools), env, st.logs / f"worker-{processes}-{pools}.log")
    try:
        _wait_workers(st.rconn, processes, pools, worker)  # the turn slots and the forking workers
        warm = _conversations(st, f"w{processes}-warm", 1, timeout=30)
        if warm["missing"]:
            raise RuntimeError(f"{processes} slots: the warm-up turn was not answered (see {st.logs})")
        quiet = noise.wait_quiet(max_wait=3.0)
        bench_cpu = time.process_time()
        web0 = _tree_jiffies(web.pid)
        own0, reaped0 = _cpu(_descendants([worker.pid]))
        with _PssSampler([web.pid, worker.pid]) as sampler, noise.run(f"{processes} slots × {count}"):
            record = _conversations(st, f"w{processes}", count, timeout)
        tick = os.sysconf("SC_CLK_TCK")
        web_cpu = (_tree_jiffies(web.pid) - web0) / tick
        own1, reaped1 = _cpu(_descendants([worker.pid]))
        own, horses = (own1 - own0) / tick, (reaped1 - reaped0) / tick
        bench_cpu = time.process_time() - bench_cpu
        peak = sampler.peak
        record.update(
            timeout=timeout,
            processes=processes,
            pools=pools,
            count=count,
            quiet_before=quiet,
            noise=noise.readings[-1],
            bot_cpu_s=web_cpu + own + horses,
            web_cpu_s=web_cpu,
            workers_cpu_s=own,
            horses_cpu_s=horses,
            bench_cpu_s=bench_cpu,
            sampler_cpu_s=sampler.cpu_seconds,
            pss_peak_mb=peak.total_kb / 1024,
            pss_samples=len(sampler.samples),
            pss_peak_roles=_roles(peak, web.pid, pool=True),
            pss_series_mb=[round(s.total_kb / 1024, 1) for s in sampler.samples],
        )
        return record
    finally:
        stop_process(worker)
        _wait_gone(st.rconn)


# --- rows ------------------------------------------------------------------------------------------------


def _rows(section: Section, records: list[dict[str, Any]]) -> None:
    linear_until: int | None = None
    still_linear = True
    per_worker: float | None = None  # the smallest pool's throughput per worker: what linear extends
    for r in records:
        n, c = r["processes"], r["count"]
        slots = f"{n} slots" if r.get("pools", 1) == 1 else f"{n} slots in {r['pools']} pools"
        answers = sorted(r["answers"].values())
        # Unanswered conversations: the step ran for its whole bound, and the rate says so.
        wall = r["timeout"] if r["missing"] or not answers else answers[-1]
        rate = len(answers) / wall
        ideal = n / FLOOR
        ratio = rate / ideal
        per_worker = per_worker or rate / n
        scaling = rate / (n * per_worker)
        reading = r["noise"]
        busy = reading.others + reading.ours
        saturated = busy >= SATURATED
        if r.get("pools", 1) > 1:
            pass  # beside the progression: the same slots spread over more processes
        elif scaling >= LINEAR and still_linear:
            linear_until = n
        else:
            still_linear = False
        service = [r["answers"][t] - r["eyes"][t] for t in r["answers"] if t in r["eyes"]]
        missing = f"; {len(r['missing'])} NOT ANSWERED" if r["missing"] else ""
        section.add(
            Result(
                f"scale.throughput ({slots}, {c} conv)",
                "conv/s",
                rate,
                ideal,
                ratio,
                "linear until saturated",
                None if saturated else scaling >= LINEAR,
                f"ideal = {n}/{FLOOR:.1f} s; {scaling:.2f}× of {n} × the {records[0]['processes']}-slot "
                f"rate per slot; {len(answers)} answers in {wall:.2f} s; machine busy "
                f"{busy:.2f} of 2 cores{' (SATURATED)' if saturated else ''}: "
                f"bot {r['bot_cpu_s'] / wall:.2f}, bench+world {r['bench_cpu_s'] / wall:.2f}, "
                f"others {reading.others:.2f}{missing}",
            ),
            Result(
                f"scale.turn_wall ({slots}, {c} conv)",
                "p50 s",
                percentile(answers, 50),
                FLOOR,
                percentile(answers, 50) / FLOOR,
                "",
                None,
                f"p99 {percentile(answers, 99):.2f} s (includes queueing: {c} conv on {n} slots); "
                f"job start -> answer p50 {percentile(service, 50):.2f} s, "
                f"p99 {percentile(service, 99):.2f} s",
            ),
        )
        bot_ms = r["bot_cpu_s"] / c * 1000
        world_ms = r["bench_cpu_s"] / c * 1000
        section.add(
            Result(
                f"scale.cpu_per_conv ({slots}, {c} conv)",
                "ms",
                bot_ms,
                None,
                None,
                "",
                None,
                f"bot CPU per conversation: web {r['web_cpu_s'] / c * 1000:.0f} + worker tree "
                f"{r['workers_cpu_s'] / c * 1000:.0f} + reaped {r['horses_cpu_s'] / c * 1000:.0f} ms; "
                f"this process (world, load, PSS sampling "
                f"{r['sampler_cpu_s'] / c * 1000:.0f}) {world_ms:.0f} ms; 2 cores / bot CPU = "
                f"{2000 / bot_ms:.1f} conv/s, / (bot + world) = {2000 / (bot_ms + world_ms):.1f} conv/s",
            )
        )
        roles = r["pss_peak_roles"]
        pss = r["pss_peak_mb"]
        section.add(
            Result(
                f"scale.pss ({slots}, {c} conv)",
                "peak MB",
                pss,
                None,
                None,
                f"{c} conv ≤ {PSS_TARGET_MB / 1024:.0f} GB" if c >= 64 else "",
                pss <= PSS_TARGET_MB if c >= 64 else None,
                f"web {roles['web_mb']:.0f} + worker root {roles['parent_mb']:.0f} + its children "
                f"{roles['workers_mb']:.0f} + {roles['horses']} deeper (horses, scheduler) "
                f"{roles['horses_mb']:.0f} MB "
                f"({r['pss_samples']} samples; redis and the world not counted)",
            ),
            Result(
                f"scale.pss_per_conv ({slots}, {c} conv)",
                "MB",
                pss / c,
                None,
                None,
                "",
                None,
                f"peak PSS / {c} concurrent conversations",
            ),
        )
    section.add(
        Result(
            "scale.linear_until",
            "slots",
            float(linear_until) if linear_until is not None else None,
            None,
            None,
            "",
            None,
            f"largest pool (from the smallest up) whose throughput is ≥ {LINEAR:.2f}× of N × the smallest "
            "pool's per slot",
        )
    )


def run(
    *,
    steps: tuple[tuple[int, int, int], ...] = STEPS,
    step_timeout: float = 45.0,
    budget_seconds: float = 170.0,
) -> Section:
    """Each step's conversations are bounded by `step_timeout`; steps not started within `budget_seconds`
    are skipped (and listed), so the whole suite keeps its time."""
    section = Section("scale")
    noise = Noise()
    records: list[dict[str, Any]] = []
    skipped: list[str] = []
    started = time.monotonic()
    with _stack() as st:
        st.world.anthropic.set_latency(MODEL_LATENCY)
        st.world.servers["presto"].knobs.slow("query_history", TOOL_LATENCY)
        for processes, count, pools in steps:
            if time.monotonic() - started > budget_seconds:
                skipped.append(f"{processes} slots ({pools} pools) × {count}")
                continue
            print(
                f"  scale: {processes} slots in {pools} pool(s) × {count} conversations",
                file=sys.stderr,
                flush=True,
            )
            t0 = time.monotonic()
            records.append(_step(st, noise, processes, count, step_timeout, pools))
            records[-1]["step_seconds"] = round(time.monotonic() - t0, 1)
        logs = st.logs
    _rows(section, records)
    if skipped:
        section.add(
            Result("scale.skipped", "steps", float(len(skipped)), notes=f"over budget: {', '.join(skipped)}")
        )
    section.noise = noise.readings
    section.details.update(
        model_latency=MODEL_LATENCY,
        tool_latency=TOOL_LATENCY,
        floor=FLOOR,
        rate_limit_override=RATE_LIMIT,
        steps=[{k: v for k, v in r.items() if k != "noise"} for r in records],
        logs=str(logs),
    )
    return section
