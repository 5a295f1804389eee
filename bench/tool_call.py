"""Tool-call overhead: the gateway's call against the bare mcp SDK client on the same server (target ≤ 1.2×).

A = `GatewaySession.call("presto__query_history", {"limit": 1})` on an open session, for a person linked
    through the real browser flow, whose token for presto is already cached (sealed) in Redis.
B = the bare `mcp.Client` over `streamable_http_client` with an `httpx2.AsyncClient` on the shared SSL
    context, sending the same person's token as a fixed `Authorization: Bearer` header.
C = `fastmcp.Client(StreamableHttpTransport(url, auth=token))` in its own process and virtualenv (fastmcp
    monkeypatches mcp's types, so it never enters the project venv), when it can be installed.

All three hit the same fixture presto server with the same RS256/JWKS verification and group gate. A and B
alternate call by call inside each repeat; C runs as a block before or after them (order flips per
repeat). The figure is the median over repeats of p50(A)/p50(B) (perf-anchors §7.2).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import redis.asyncio as aioredis
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.common import Noise, Result, Section, WorldProcess, median_ratio, summary
from bot.poster import Poster, make_slack_client
from bot.slack_people import SlackPeople
from fixtures.idp import CLIENT_ID, DEFAULT_CLIENT_SECRET
from fixtures.redis_proc import RedisProc
from flows.linking import Linking
from mcp_clients.connection import shared_ssl_context
from mcp_clients.gateway import Caller, Gateway, GatewaySession
from mcp_clients.provider import Provider
from mcp_clients.sealing import Sealer
from mcp_clients.tokens import Audience, TokenBroker
from registry_cache.client import fetch_all
from registry_cache.snapshot import SharedSnapshot

__all__ = ["run"]

TEAM = "T0CHATOPS"
USER = "U0ALICE"
PUBLIC_URL = "http://127.0.0.1:1"
TOOL = "query_history"
MODEL_NAME = "presto__query_history"
ARGS: dict[str, Any] = {"limit": 1}
FASTMCP_VENV = Path(tempfile.gettempdir()) / "chatops-bench-fastmcp"
FASTMCP_SPEC = "fastmcp>=4.1,<5"

# Runs in the fastmcp virtualenv: N timed calls on one open session; prints {"ms": [...]} as JSON.
FASTMCP_SCRIPT = r"""
import asyncio, json, os, sys, time
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

async def main():
    url, n, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    transport = StreamableHttpTransport(url, auth=os.environ["BENCH_TOKEN"])
    out = []
    async with Client(transport) as client:
        for _ in range(warm):
            await client.call_tool("query_history", {"limit": 1})
        for _ in range(n):
            t = time.perf_counter()
            await client.call_tool("query_history", {"limit": 1})
            out.append((time.perf_counter() - t) * 1000)
    print(json.dumps({"ms": out, "version": __import__("fastmcp").__version__}))

asyncio.run(main())
"""


def fastmcp_python() -> tuple[str | None, str]:
    """A python with fastmcp importable, outside the project venv; (None, why) when there is none."""
    probe = subprocess.run(
        [sys.executable, "-c", "import fastmcp"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode == 0:
        # Importable here, but it must not run in-process: it monkeypatches mcp's types.
        return sys.executable, "fastmcp importable in the project venv; run in a subprocess"
    python = FASTMCP_VENV / "bin" / "python"
    if not python.exists():
        base = shutil.which("python3.11") or shutil.which("python3") or sys.executable
        made = subprocess.run(
            [base, "-m", "venv", str(FASTMCP_VENV)], capture_output=True, text=True, timeout=120
        )
        if made.returncode != 0:
            return None, f"could not create {FASTMCP_VENV}: {made.stderr.strip()[-200:]}"
    check = subprocess.run([str(python), "-c", "import fastmcp"], capture_output=True, timeout=60)
    if check.returncode != 0:
        try:
            pip = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", FASTMCP_SPEC],
                capture_output=True,
                text=True,
                timeout=400,
            )
        except subprocess.TimeoutExpired:
            return None, f"pip install '{FASTMCP_SPEC}' timed out"
        if pip.returncode != 0:
            return None, f"pip install '{FASTMCP_SPEC}' failed: {pip.stderr.strip()[-300:]}"
    version = subprocess.run(
        [str(python), "-c", "import fastmcp; print(fastmcp.__version__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if version.returncode != 0:
        return None, f"fastmcp installed but does not import: {version.stderr.strip()[-200:]}"
    return str(python), f"fastmcp {version.stdout.strip()} in {FASTMCP_VENV}"


async def _link(
    world: dict[str, Any], linking: Linking, broker: TokenBroker, person: str, user: str
) -> Caller:
    """The real flow: offer, start, log in at the IdP, authorize, callback."""
    if await broker.identity(TEAM, user) is None:
        offer = (await linking.offer(TEAM, user)).rsplit("/", 1)[1]
        url = await linking.start(offer, browser="bench-browser")
        async with httpx2.AsyncClient() as browser:
            await browser.get(world["login"][person])
            answer = await browser.get(url)
        params = dict(httpx2.URL(answer.headers["location"]).params)
        await linking.finish(
            state=params["state"],
            code=params["code"],
            iss=params.get("iss"),
            error=None,
            browser="bench-browser",
        )
    identity = await broker.identity(TEAM, user)
    assert identity is not None, "linking failed"
    return Caller(TEAM, user, "C0DATAENG", identity)


@contextlib.asynccontextmanager
async def _gateway_session(
    world: dict[str, Any], redis_url: str
) -> AsyncIterator[tuple[GatewaySession, str]]:
    """A linked alice's open gateway session (tools listed) and her cached token for presto."""
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async with httpx2.AsyncClient(verify=shared_ssl_context()) as http:
            provider = Provider(http, world["issuer"], CLIENT_ID, DEFAULT_CLIENT_SECRET)
            sealer = Sealer([world["secret_key"]])
            broker = TokenBroker(redis, provider, sealer)
            snapshot = SharedSnapshot(
                redis, lambda: fetch_all(http, world["registry_url"]), ttl_seconds=3600, stale_max_seconds=900
            )
            gateway = Gateway(snapshot, broker)
            slack = make_slack_client(world["env"]["SLACK_BOT_TOKEN"], world["env"]["SLACK_API_URL"])
            people = SlackPeople(Poster(slack, redis, TEAM))
            linking = Linking(
                redis, provider, broker, snapshot, people=people, sealer=sealer, public_url=PUBLIC_URL
            )
            caller = await _link(world, linking, broker, "alice", USER)
            presto = world["resources"]["presto"]
            audience = Audience("io.example/presto", presto, presto)
            token = await broker.user_token(TEAM, USER, audience)  # now cached
            async with gateway.session(caller) as session:
                listed = {t.model_name for t in await session.tools()}
                assert MODEL_NAME in listed, sorted(listed)
                yield session, token
    finally:
        await redis.aclose()


async def _timed_call(fn: Any) -> float:
    started = time.perf_counter()
    await fn()
    return (time.perf_counter() - started) * 1000


def _run_fastmcp(python: str, url: str, token: str, n: int, warm: int) -> list[float]:
    with tempfile.NamedTemporaryFile("w", suffix="_fastmcp_bench.py", delete=False) as f:
        f.write(FASTMCP_SCRIPT)
        script = f.name
    try:
        env = {**os.environ, "BENCH_TOKEN": token}
        env.pop("PYTHONPATH", None)
        out = subprocess.run(
            [python, script, url, str(n), str(warm)], capture_output=True, text=True, timeout=120, env=env
        )
    finally:
        os.unlink(script)
    if out.returncode != 0:
        raise RuntimeError(f"fastmcp client failed: {out.stderr.strip()[-400:]}")
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return [float(x) for x in data["ms"]]


def _fast_block(
    fast: tuple[str, str, str] | None, noise: Noise, label: str, calls: int, into: list[float]
) -> None:
    if fast is not None:
        python, url, token = fast
        with noise.run(label):
            into.extend(_run_fastmcp(python, url, token, calls, 20))


async def _repeat(
    gw: Callable[[], Awaitable[None]],
    sdk: Callable[[], Awaitable[None]],
    rep: int,
    calls: int,
    noise: Noise,
    fast: tuple[str, str, str] | None,
) -> dict[str, Any]:
    a: list[float] = []
    b: list[float] = []
    c: list[float] = []
    fast_first = rep % 2 == 1
    if fast_first:
        await asyncio.to_thread(_fast_block, fast, noise, f"fastmcp repeat {rep + 1}", calls, c)
    with noise.run(f"gateway/bare repeat {rep + 1}"):
        for i in range(calls):
            if (i + rep) % 2 == 0:
                a.append(await _timed_call(gw))
                b.append(await _timed_call(sdk))
            else:
                b.append(await _timed_call(sdk))
                a.append(await _timed_call(gw))
    if not fast_first:
        await asyncio.to_thread(_fast_block, fast, noise, f"fastmcp repeat {rep + 1}", calls, c)
    return {"gateway": summary(a), "bare": summary(b), "fastmcp": summary(c) if c else None}


async def _measure(
    session: GatewaySession,
    bare: Client,
    repeats: int,
    calls: int,
    noise: Noise,
    fast: tuple[str, str, str] | None,
) -> dict[str, Any]:
    async def gw() -> None:
        outcome = await session.call(MODEL_NAME, ARGS)
        if not outcome.ok:
            raise RuntimeError(f"gateway call failed: {outcome.text}")

    async def sdk() -> None:
        result = await bare.call_tool(TOOL, ARGS)
        if result.is_error:
            raise RuntimeError("bare call failed")

    for _ in range(20):
        await gw()
        await sdk()
    reps: list[dict[str, Any]] = []
    redos = 0
    for rep in range(repeats):
        for attempt in range(2):  # a repeat that ran while others were busy is redone once
            noise.wait_quiet(max_wait=3.0)
            before = len(noise.readings)
            result = await _repeat(gw, sdk, rep, calls, noise, fast)
            taken = len(noise.readings) - before
            if attempt or not noise.last_noisy(taken) or redos >= 2:
                break
            noise.discard(taken)
            redos += 1
        reps.append(result)
    return {"repeats": reps}


async def _main(repeats: int, calls: int, with_fastmcp: bool) -> Section:
    section = Section("tool_call")
    noise = Noise()
    fast_python, fast_why = (None, "skipped (--no-fastmcp)")
    if with_fastmcp:
        fast_python, fast_why = await asyncio.to_thread(fastmcp_python)
    redis_proc = RedisProc().start()
    try:
        with WorldProcess(PUBLIC_URL) as world_proc:
            world = world_proc.info
            url = world["resources"]["presto"]
            async with _gateway_session(world, redis_proc.url) as (session, token):
                bare_http = httpx2.AsyncClient(
                    verify=shared_ssl_context(),
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=httpx2.Timeout(60, connect=10),
                    follow_redirects=False,
                )
                async with bare_http, Client(streamable_http_client(url, http_client=bare_http)) as bare:
                    noise.wait_quiet()
                    fast = (fast_python, url, token) if fast_python else None
                    data = await _measure(session, bare, repeats, calls, noise, fast)
    finally:
        redis_proc.stop()
    reps = data["repeats"]
    gw50 = statistics.median(r["gateway"]["p50"] for r in reps)
    bare50 = statistics.median(r["bare"]["p50"] for r in reps)
    ratio = median_ratio([(r["gateway"]["p50"], r["bare"]["p50"]) for r in reps])
    per = ", ".join(f"{r['gateway']['p50'] / r['bare']['p50']:.2f}" for r in reps)
    section.add(
        Result(
            "tool_call.gateway",
            "p50 ms",
            gw50,
            bare50,
            ratio,
            "≤ 1.2×",
            ratio <= 1.2,
            f"vs bare mcp.Client, same token/server (world in its own process); {repeats}×{calls} calls; "
            f"per-repeat ratios {per}",
        ),
        Result(
            "tool_call.gateway",
            "p99 ms",
            statistics.median(r["gateway"]["p99"] for r in reps),
            statistics.median(r["bare"]["p99"] for r in reps),
            median_ratio([(r["gateway"]["p99"], r["bare"]["p99"]) for r in reps]),
            "",
            None,
            "",
        ),
        Result(
            "tool_call.gateway",
            "added ms (p50)",
            gw50 - bare50,
            None,
            None,
            "",
            None,
            "what the gateway adds per call: view + access re-check + token from Redis (GET, HKDF, Fernet)",
        ),
    )
    fast_reps = [r for r in reps if r["fastmcp"]]
    if fast_reps:
        fratio = median_ratio([(r["fastmcp"]["p50"], r["bare"]["p50"]) for r in fast_reps])
        fper = ", ".join(f"{r['fastmcp']['p50'] / r['bare']['p50']:.2f}" for r in fast_reps)
        section.add(
            Result(
                "tool_call.fastmcp_client",
                "p50 ms",
                statistics.median(r["fastmcp"]["p50"] for r in fast_reps),
                bare50,
                fratio,
                "",
                None,
                f"{fast_why}; own process; per-repeat ratios {fper}",
            )
        )
    else:
        section.add(
            Result(
                "tool_call.fastmcp_client",
                "p50 ms",
                None,
                bare50,
                None,
                "",
                None,
                f"not measured: {fast_why}",
            )
        )
    section.details = {"repeats": reps, "calls": calls, "fastmcp": fast_why}
    section.noise = noise.readings
    return section


def run(*, repeats: int = 5, calls: int = 200, with_fastmcp: bool = True) -> Section:
    return asyncio.run(_main(repeats, calls, with_fastmcp))


async def profile_target(profile: Any, calls: int = 500) -> None:
    """Gateway calls only, under a profiler (`python -m bench tool_call --profile`)."""
    redis_proc = RedisProc().start()
    try:
        with WorldProcess(PUBLIC_URL) as world_proc:
            async with _gateway_session(world_proc.info, redis_proc.url) as (session, _):
                for _ in range(20):
                    await session.call(MODEL_NAME, ARGS)
                with profile:
                    for _ in range(calls):
                        await session.call(MODEL_NAME, ARGS)
    finally:
        redis_proc.stop()
