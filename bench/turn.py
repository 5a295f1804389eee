"""Turn overhead: what the bot adds around a model and a tool that each answer in a fixed time.

Setup: a real web process (`python -m bot.cli serve`), a real `python -m bot.cli worker` (its turn pool runs
the turns),
real Redis, the fixture world in this process, and alice linked through the real browser flow. The model fake
answers every request after `MODEL_LATENCY` s: with one read-only tool call (`presto__query_history`) when the
conversation has no tool result yet, else with the answer. The presto tool sleeps `TOOL_LATENCY` s.

Measured per turn, on this process's clock (the fakes record arrival times; FakeSlack's `Call.monotonic`):
- wall: posting the signed mention -> the answer arriving at FakeSlack (the `chat.update` that carries it);
- first sign: posting -> the `reactions.add` "eyes" call (target < 300 ms);
- the path in between: -> first model request -> tool call -> second model request -> answer.
The floor is the fakes' own latencies added up: each called directly in the same run (bare AsyncAnthropic,
bare mcp.Client), so it holds the latency they were told to add (2 × model + tool) and their own HTTP
handling. Target wall/floor ≤ 1.05×. The nominal floor (the added latencies alone) is shown beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx2
import redis

from bench.common import (
    Noise,
    Result,
    Section,
    free_port,
    quiet_logging,
    stop_process,
    summary,
    wait_http_ok,
)

__all__ = ["run"]

ROOT = Path(__file__).resolve().parent.parent
MODEL_LATENCY = 0.2
TOOL_LATENCY = 0.1
USER, PERSON, CHANNEL = "U0ALICE", "alice", "C0DATAENG"
SERVERS = ("presto", "spark", "airflow")  # what alice (data-eng) may use in this channel
TAG = re.compile(r"\[(bench-[\w-]+)\]")


def _responder(body: dict[str, Any]) -> Any:
    from fixtures.anthropic_fake import first_user_text, text, tool_results, tool_use

    if not tool_results(body):
        # Words before the tool call: with streaming on they reach Slack before the tool runs.
        return tool_use("presto__query_history", {"limit": 1}, text_before="Checking Presto.")
    match = TAG.search(first_user_text(body))
    return text(f"Answer for {match.group(1) if match else 'unknown'}: one query is running.")


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            args, env=env, cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


async def _link_and_tokens(env: dict[str, str], world: Any, team: str) -> dict[str, str]:
    """Link alice through the web process (offer -> IdP login -> authorize -> callback) and return her
    tokens for the servers she uses here, which are then cached in Redis as the worker will find them."""
    from bot.identity import BotIdentity
    from bot.settings import Role, load_settings
    from bot.wiring import open_wiring
    from mcp_clients.tokens import Audience

    settings = load_settings(Role.WEB_HTTP, env=env)
    async with open_wiring(settings, BotIdentity(team, "", "")) as svc:
        url = await svc.linking.offer(team, USER)
        async with httpx2.AsyncClient(follow_redirects=True, timeout=10) as browser:
            await browser.get(world.idp.login_url(PERSON))
            page = await browser.get(url)
        if page.status_code != 200 or "connected" not in page.text:
            raise RuntimeError(f"linking failed: HTTP {page.status_code}")
        return {
            name: await svc.broker.user_token(
                team, USER, Audience(f"io.example/{name}", world.resource(name), world.resource(name))
            )
            for name in SERVERS
        }


async def _fake_costs(world: Any, tokens: dict[str, str], n: int) -> dict[str, list[float]]:
    """The fakes' own round trips, called directly with bare SDK clients: the model at MODEL_LATENCY, the
    tool at TOOL_LATENCY, and what a fresh session's tool listing costs (3 servers at once, each a new
    `mcp.Client`: server/discover + every tools/list page), which the bot does once per turn."""
    import anthropic
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from fixtures.world import ANTHROPIC_KEY
    from mcp_clients.connection import shared_ssl_context

    model_ms: list[float] = []
    tool_ms: list[float] = []
    list_ms: list[float] = []
    tools: Any = [{"name": "presto__query_history", "description": "x", "input_schema": {"type": "object"}}]
    async with anthropic.AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=world.anthropic_url) as client:
        for i in range(n + 1):
            started = time.perf_counter()
            await client.messages.create(
                model="claude-fake",
                max_tokens=1024,
                messages=[{"role": "user", "content": f"[bench-fake-{i}] which presto queries are running?"}],
                tools=tools,
            )
            if i:
                model_ms.append((time.perf_counter() - started) * 1000)

    def http(name: str) -> httpx2.AsyncClient:
        auth = {"Authorization": f"Bearer {tokens[name]}"}
        return httpx2.AsyncClient(verify=shared_ssl_context(), headers=auth)

    async with (
        http("presto") as h,
        Client(streamable_http_client(world.resource("presto"), http_client=h)) as mcp,
    ):
        for i in range(n + 1):
            started = time.perf_counter()
            await mcp.call_tool("query_history", {"limit": 1})
            if i:
                tool_ms.append((time.perf_counter() - started) * 1000)

    async def list_all(name: str) -> None:
        async with http(name) as h, Client(streamable_http_client(world.resource(name), http_client=h)) as c:
            cursor: str | None = None
            for _ in range(20):
                page = await c.list_tools(cursor=cursor, cache_mode="bypass")
                cursor = page.next_cursor
                if not cursor:
                    break

    for i in range(n + 1):
        started = time.perf_counter()
        await asyncio.gather(*(list_all(name) for name in SERVERS))
        if i:
            list_ms.append((time.perf_counter() - started) * 1000)
    return {"model_ms": model_ms, "tool_ms": tool_ms, "list3_ms": list_ms}


async def _same_bodies(world: Any, n: int) -> dict[str, list[float]]:
    """The model fake's round trip for the very requests the bot sent in the last turn (its 17 tools, its
    system prompt, streamed), replayed bare: the fake's own cost of reading a bigger request is the model's
    time, not the bot's. The one-tool floor of `_fake_costs` stays as a diagnostic row."""
    from fixtures.world import ANTHROPIC_KEY

    sent = [
        r.body for r in world.anthropic.requests() if "bench-turn-pool" in str(r.body.get("messages", [])[:1])
    ]
    last_tag = TAG.search(str(sent[-1].get("messages", [])[:1])) if sent else None
    if last_tag is None:
        return {}
    bodies = [b for b in sent if last_tag.group(1) in str(b.get("messages", [])[:1])][:2]  # ask, then answer
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    times: dict[str, list[float]] = {"model_first_ms": [], "model_second_ms": []}
    async with httpx2.AsyncClient(base_url=world.anthropic_url, headers=headers, timeout=30) as client:
        for i in range(n + 1):
            for name, body in zip(times, bodies, strict=False):
                # Another tag, so the replay is never counted as one of the turns' requests.
                replay = json.loads(json.dumps(body).replace(last_tag.group(1), f"bench-fake-{i}"))
                started = time.perf_counter()
                async with client.stream("POST", "/v1/messages", json=replay) as response:
                    await response.aread()
                    response.raise_for_status()
                if i:
                    times[name].append((time.perf_counter() - started) * 1000)
    return times if all(times.values()) else {}


def _one_turn(world: Any, ingress: Any, rconn: redis.Redis, label: str, timeout: float) -> dict[str, Any]:
    tag = f"bench-turn-{label}"
    for key in rconn.scan_iter(match="chatops:rate:*"):
        rconn.delete(key)  # the per-user limit (10 a minute) is not what is measured here
    mention = ingress.app_mention(USER, CHANNEL, f"which presto queries are running? [{tag}]")
    ts = mention.event["ts"]
    offset = time.time() - time.monotonic()
    started = time.monotonic()
    delivery = ingress.post(mention)
    slack = world.slack

    def answered() -> Any:
        for call in slack.calls("chat.update"):
            if f"Answer for {tag}" in str(call.args.get("text", "")):
                return call
        return None

    answer = slack.wait_for(answered, timeout=timeout)
    eyes = next(
        c
        for c in slack.calls("reactions.add")
        if c.args.get("timestamp") == ts and c.args.get("name") == "eyes"
    )
    slack.wait_for(  # the turn ends when the eyes come off; the next one must not overlap it
        lambda: [c for c in slack.calls("reactions.remove") if c.args.get("timestamp") == ts], timeout=timeout
    )
    model = [r.at for r in world.anthropic.requests() if tag in str(r.body.get("messages", [])[:1])]
    tool = [
        r.at - offset
        for r in world.servers["presto"].record.tool_calls("query_history")
        if r.at - offset >= started
    ]
    # The working message is a stream (chat.startStream) where Slack streams, else a posted message.
    placeholder = next(
        (
            c
            for c in slack.calls("chat.startStream") + slack.calls("chat.postMessage")
            if c.args.get("thread_ts") == ts and c.monotonic >= started and c.response.get("ok")
        ),
        None,
    )
    working_ts = placeholder.response.get("ts") if placeholder is not None else None
    updates = [
        c.monotonic - started
        for c in slack.calls("chat.update") + slack.calls("chat.appendStream")
        if working_ts is not None and c.args.get("ts") == working_ts and c is not answer
    ]
    texts = [
        c.monotonic - started
        for c in slack.calls("chat.appendStream")
        if c.args.get("ts") == working_ts
        and any(k.get("type") == "markdown_text" for k in c.args.get("chunks") or [])
    ]
    lists = [
        r.at - offset - started
        for server in world.servers.values()
        for r in server.record.all()
        if r.rpc_method == "tools/list" and r.at - offset >= started
    ]
    return {
        "tag": tag,
        "ack_ms": delivery.latency * 1000,
        "status": delivery.status,
        "eyes": eyes.monotonic - started,
        "placeholder": placeholder.monotonic - started if placeholder is not None else None,
        "streamed": placeholder is not None and placeholder.method == "chat.startStream",
        "first_text": min(texts) if texts else None,
        "lists": sorted(lists),
        "progress_updates": sorted(set(updates)),
        "model": [t - started for t in model],
        "tool": [t - started for t in tool],
        "answer": answer.monotonic - started,
    }


@dataclass
class _Stack:
    world: Any
    web_url: str
    env: dict[str, str]  # the full environment for bot processes
    world_env: dict[str, str]  # the world's settings only
    rconn: redis.Redis
    tokens: dict[str, str]
    logs: Path
    procs: list[subprocess.Popen[bytes]]


@contextlib.contextmanager
def _stack() -> Iterator[_Stack]:
    """Redis, the world (model and tool at their fixed latencies), a web process and a linked alice."""
    from fixtures.anthropic_fake import FakeAnthropic
    from fixtures.redis_proc import RedisProc
    from fixtures.slack import TEAM_ID
    from fixtures.world import ANTHROPIC_KEY, start_world

    redis_proc = RedisProc().start()
    world = start_world(anthropic=FakeAnthropic(api_key=ANTHROPIC_KEY))
    quiet_logging()
    logs = Path(tempfile.mkdtemp(prefix="chatops-bench-turn-"))
    rconn = redis.Redis.from_url(redis_proc.url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = free_port()
        web_url = f"http://127.0.0.1:{port}"
        world.allow_redirect(web_url)
        world_env = world.env(public_url=web_url, redis_url=redis_proc.url)
        env = {**os.environ, **world_env, "PORT": str(port), "CHATOPS_NETGUARD": "1"}
        web = _spawn([sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1"], env, logs / "web.log")
        procs.append(web)
        wait_http_ok(web_url + "/healthz", proc=web)
        tokens = asyncio.run(_link_and_tokens(world_env, world, TEAM_ID))
        world.anthropic.set_latency(MODEL_LATENCY)
        world.anthropic.set_default(_responder)
        world.servers["presto"].knobs.slow("query_history", TOOL_LATENCY)
        yield _Stack(world, web_url, env, world_env, rconn, tokens, logs, procs)
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        rconn.close()
        redis_proc.stop()
        world.stop()


def _turns(
    st: _Stack, noise: Noise, worker_cmd: list[str], label: str, turns: int, max_turns: int, budget: float
) -> list[dict[str, Any]]:
    """Start a worker, run one warm-up turn and then turns until `turns` quiet ones (or the budget ends);
    stop the worker. Record 0 is the warm-up."""
    from fixtures.slack_ingress import SlackIngress
    from fixtures.world import SIGNING_SECRET

    worker = _spawn(worker_cmd, st.env, st.logs / f"worker-{label}.log")
    records: list[dict[str, Any]] = []
    try:
        with contextlib.closing(SlackIngress(st.web_url, SIGNING_SECRET, slack=st.world.slack)) as ingress:
            records.append(_one_turn(st.world, ingress, st.rconn, f"{label}-000", timeout=60))  # warm-up
            records[0]["noisy"] = None
            deadline = time.monotonic() + budget
            index = 1
            while index <= max_turns and time.monotonic() < deadline:
                if sum(1 for r in records[1:] if not r["noisy"]) >= turns:
                    break
                noise.wait_quiet(max_wait=3.0)
                with noise.run(f"{label} turn {index}"):
                    record = _one_turn(st.world, ingress, st.rconn, f"{label}-{index:03d}", timeout=30)
                record["noisy"] = noise.readings[-1].noisy
                records.append(record)
                index += 1
    finally:
        stop_process(worker)
    return records


def run(
    *,
    turns: int = 10,
    max_turns: int = 20,
    budget_seconds: float = 45.0,
    simple_turns: int = 5,
) -> Section:
    """`chatops worker` (its turn pool) for the figures; then, as a diagnostic, the same turns with
    `--simple` (one job at a time, a fresh event loop and clients per job): what the resident pool saves."""
    section = Section("turn")
    noise = Noise()
    with _stack() as st:
        fakes = asyncio.run(_fake_costs(st.world, st.tokens, 5))
        worker = [sys.executable, "-m", "bot.cli", "worker"]
        forked = _turns(st, noise, worker, "pool", turns, max_turns, budget_seconds)
        fakes.update(asyncio.run(_same_bodies(st.world, 5)))
        simple: list[dict[str, Any]] = []
        if simple_turns:
            simple = _turns(st, noise, [*worker, "--simple"], "simple", simple_turns, 2 * simple_turns, 20.0)
        logs = st.logs
    quiet = [r for r in forked[1:] + simple[1:] if not r["noisy"]]
    if len(quiet) >= min(turns, 5):
        # Enough quiet turns: the noisy ones are left out of the figures (and marked so).
        for i, reading in enumerate(list(noise.readings)):
            if reading.noisy:
                noise.readings[i] = replace(reading, kept=False)
    _rows(section, forked, simple, fakes, turns)
    section.details.update(turns=forked, simple_turns=simple, fakes=fakes, logs=str(logs))
    section.noise = noise.readings
    return section


def profile_target(profile: Any, turns: int = 10) -> None:
    """The turn itself (the turn flow over one long-lived wiring, as the turn pool runs it), run in this
    process under an async-aware profiler, so the report shows where each turn waits. The web process
    admits the mentions as usual; no worker runs, the job is called directly with the turn id the web
    process derived."""
    from approvals.turns import turn_id_for
    from bot.preflight import whoami
    from bot.settings import Role, load_settings
    from bot.wiring import Wiring, open_wiring
    from fixtures.slack import TEAM_ID
    from fixtures.slack_ingress import SlackIngress
    from fixtures.world import SIGNING_SECRET

    with _stack() as st:
        settings = load_settings(Role.WORKER, env=st.world_env)

        async def turns_in_process() -> None:
            # One wiring for every turn, as the turn pool keeps: connections shared across turns.
            async with open_wiring(settings, whoami(settings)) as wiring:
                _ = wiring.model
                await _profiled_turns(wiring)

        async def _profiled_turns(wiring: Wiring) -> None:
            with contextlib.closing(
                SlackIngress(st.web_url, SIGNING_SECRET, slack=st.world.slack)
            ) as ingress:
                for i in range(turns + 1):
                    for key in st.rconn.scan_iter(match="chatops:rate:*"):
                        st.rconn.delete(key)
                    mention = ingress.app_mention(USER, CHANNEL, f"which presto queries? [bench-prof-{i}]")
                    await asyncio.to_thread(ingress.post, mention)
                    turn_id = turn_id_for(TEAM_ID, CHANNEL, mention.event["ts"])
                    if i == 0:  # warm-up: first imports and connections
                        await wiring.turn_flow().run(turn_id, "first")
                        continue
                    with profile:
                        outcome = await wiring.turn_flow().run(turn_id, "first")
                    if outcome != "answered":
                        raise RuntimeError(f"turn {i}: {outcome}")

        asyncio.run(turns_in_process())


def _median(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def _usable(records: list[dict[str, Any]], turns: int) -> tuple[list[dict[str, Any]], str]:
    measured = [r for r in records[1:] if len(r["model"]) >= 2 and r["tool"]]
    quiet = [r for r in measured if not r["noisy"]]
    if len(quiet) >= min(turns, 5):
        return quiet, f"{len(quiet)} quiet turns"
    return measured, f"{len(measured)} turns, {len(measured) - len(quiet)} of them NOISY"


def _legs(use: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each leg of a turn in seconds, minus the fixed latency the fakes were told to add."""

    def first_after(values: list[float], after: float) -> float:
        return next((v for v in values if v >= after), math.nan)

    def progress(r: dict[str, Any]) -> float:
        return first_after(r["progress_updates"], r["model"][0])

    return {
        "post -> 1st model request (ack, dequeue, claim, identity, tool listing)": [
            r["model"][0] for r in use
        ],
        "post -> eyes (sent once the model is asked)": [r["eyes"] for r in use],
        "post -> working message posted": [r["placeholder"] or math.nan for r in use],
        "1st model request -> progress chat.update, minus model latency": [
            progress(r) - r["model"][0] - MODEL_LATENCY for r in use
        ],
        "progress chat.update -> tool call": [r["tool"][0] - progress(r) for r in use],
        "tool call -> 2nd model request, minus tool latency": [
            r["model"][1] - r["tool"][0] - TOOL_LATENCY for r in use
        ],
        "2nd model request -> answer in Slack, minus model latency": [
            r["answer"] - r["model"][1] - MODEL_LATENCY for r in use
        ],
    }


def _streaming_rows(section: Section, use: list[dict[str, Any]], model_rt: float, fake_floor: float) -> None:
    """Streaming's own figures: how soon the first words show, and the wall time with streaming on."""
    streamed = [r for r in use if r["streamed"] and r["first_text"] is not None]
    if not streamed:
        return
    first = statistics.median(r["first_text"] for r in streamed)
    target = 1.2 * model_rt + 0.1
    wall = statistics.median(r["answer"] for r in streamed)
    section.add(
        Result(
            "turn.first_streamed_text",
            "p50 s",
            first,
            model_rt,
            first / model_rt,
            f"< 1.2× TTFT + 100 ms ({target:.3f} s)",
            first < target,
            f"mention -> the first chat.appendStream carrying the model's words; floor = the model fake's "
            f"own time to first token (it sends the whole reply at once, so its bare round trip); "
            f"{len(streamed)} streamed turns",
        ),
        Result(
            "turn.wall with streaming",
            "p50 s",
            wall,
            fake_floor,
            wall / fake_floor,
            "≤ 1.05×",
            wall / fake_floor <= 1.05,
            "the same turns' wall time, the answer streamed (words, a task per tool call) then placed",
        ),
    )


def _rows(
    section: Section,
    forked: list[dict[str, Any]],
    simple: list[dict[str, Any]],
    fakes: dict[str, list[float]],
    turns: int,
) -> None:
    use, note = _usable(forked, turns)
    floor = 2 * MODEL_LATENCY + TOOL_LATENCY
    model_rt = statistics.median(fakes["model_ms"]) / 1000
    tool_rt = statistics.median(fakes["tool_ms"]) / 1000
    list_rt = statistics.median(fakes["list3_ms"]) / 1000
    one_tool_floor = 2 * model_rt + tool_rt
    fake_floor, how = one_tool_floor, f"model {model_rt * 1000:.0f} ms ×2 (one-tool requests)"
    if fakes.get("model_first_ms") and fakes.get("model_second_ms"):
        first, second = (statistics.median(fakes[k]) / 1000 for k in ("model_first_ms", "model_second_ms"))
        fake_floor = first + second + tool_rt
        how = f"model {first * 1000:.0f} + {second * 1000:.0f} ms (the bot's own two requests, replayed bare)"
    w = summary([r["answer"] for r in use])
    e = summary([r["eyes"] * 1000 for r in use])
    section.add(
        Result(
            "turn.wall vs fakes",
            "p50 s",
            w["p50"],
            fake_floor,
            w["p50"] / fake_floor,
            "≤ 1.05×",
            w["p50"] / fake_floor <= 1.05,
            f"mention -> answer in FakeSlack, `chatops worker` (turn pool); floor = the fakes' own round "
            f"trips, called bare in this run: {how} + tool {tool_rt * 1000:.0f} ms; {note}; "
            f"max {w['max']:.3f} s",
        ),
        Result(
            "turn.wall vs one-tool floor",
            "p50 s",
            w["p50"],
            one_tool_floor,
            w["p50"] / one_tool_floor,
            "",
            None,
            f"diagnostic: the floor with the model fake asked a one-tool question (model "
            f"{model_rt * 1000:.0f} ms ×2): the fake's reading of the bot's tools and prompt counted as "
            "the bot's",
        ),
        Result(
            "turn.wall vs nominal",
            "p50 s",
            w["p50"],
            floor,
            w["p50"] / floor,
            "",
            None,
            f"the same turns against the latencies the fakes were told to add, 2×{MODEL_LATENCY}+"
            f"{TOOL_LATENCY} s (each fake's own HTTP handling is on top: "
            f"{(fake_floor - floor) * 1000:.0f} ms of the gap)",
        ),
        Result(
            "turn.added",
            "p50 ms",
            (w["p50"] - fake_floor) * 1000,
            None,
            None,
            "",
            None,
            "what the bot adds per turn beyond the fakes' bare round trips",
        ),
        Result(
            "turn.first_sign (eyes)",
            "p50 ms",
            e["p50"],
            None,
            None,
            "< 300 ms",
            e["p50"] < 300,
            f"p90 {e['p90']:.0f} ms, max {e['max']:.0f} ms; mention -> reactions.add",
        ),
        Result(
            "turn.ack",
            "p50 ms",
            statistics.median(r["ack_ms"] for r in use),
            None,
            None,
            "",
            None,
            "the mention's HTTP ack (sync httpx2 client, keep-alive)",
        ),
    )
    simple_use, simple_note = _usable(simple, 5) if simple else ([], "")
    if simple_use:
        sw = statistics.median(r["answer"] for r in simple_use)
        section.add(
            Result(
                "turn.wall [--simple worker]",
                "p50 s",
                sw,
                floor,
                sw / floor,
                "",
                None,
                f"diagnostic: same turns, one job at a time with a fresh loop and clients per job; "
                f"{simple_note}; "
                f"eyes p50 {statistics.median(r['eyes'] for r in simple_use) * 1000:.0f} ms",
            )
        )
    fork_legs, simple_legs = _legs(use), _legs(simple_use) if simple_use else {}
    for name, values in fork_legs.items():
        base = _median(simple_legs[name]) * 1000 if simple_legs else None
        value = _median(values) * 1000
        notes = "baseline: the same leg with --simple" if base is not None else ""
        if name.startswith("post -> 1st model"):
            notes += f"; bare SDK listing of the 3 servers (fresh clients): {list_rt * 1000:.0f} ms"
        section.add(
            Result(
                f"turn.leg: {name}",
                "p50 ms",
                value,
                base,
                value / base if base else None,
                "",
                None,
                notes.lstrip("; "),
            )
        )
    _streaming_rows(section, use, model_rt, fake_floor)
    section.details["legs_ms"] = {k: [v * 1000 for v in vs] for k, vs in fork_legs.items()}
    section.details["legs_ms_simple"] = {k: [v * 1000 for v in vs] for k, vs in simple_legs.items()}
