"""Ack latency of the Slack endpoint under open-loop load, beside a bare Bolt app in the same run.

- The bot: ONE real `python -m bot.cli serve` process (HTTP mode, real Redis from `RedisProc`, settings from
  the fixture world's environment). Every event is admitted for real (unique event_id and ts): signature
  check, parse, dedupe in Redis, store the turn, RQ enqueue, then the 200. No worker runs; the queue just
  fills and Redis is flushed afterwards.
- The baseline: a minimal Bolt `AsyncApp` (`process_before_response=True`, `authorize=` set so there is no
  auth.test, an `app_mention` listener that does nothing) under uvicorn, in its own process.

The load comes from a separate process (perf-anchors §1/§8 loadgen): request i is scheduled at t0 + i/rate
with `loop.call_at`, each on a new TCP connection with `Connection: close`; latency runs from connect start to
the end of the response. A 1 s warm-up at 50/s per server is discarded. Per repeat, each rate runs on both
servers back to back, the order flipping every repeat; figures are medians over repeats, and the ratio is the
median over repeats of p99(bot)/p99(bolt) at the same rate. Targets: p99 < 25 ms at 100/s, ≤ 1.5× bare Bolt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Noise,
    Result,
    Section,
    free_port,
    median_ratio,
    percentile,
    process_jiffies,
    quiet_logging,
    stop_process,
    summary,
    wait_http_ok,
)

__all__ = ["run"]

ROOT = Path(__file__).resolve().parent.parent
RATES = (50, 100, 200)
USER, CHANNEL = "U0ALICE", "C0DATAENG"
_TICK = os.sysconf("SC_CLK_TCK")
MAX_REDOS = 2  # noisy (rate, repeat) pairs redone at most this often, to keep the suite near 5 minutes

BOLT_SCRIPT = r"""
import os
import uvicorn
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def authorize(**_):
    return AuthorizeResult(enterprise_id=None, team_id="T0CHATOPS", bot_token="xoxb-bench",
                           bot_user_id="U0CHATOPSBOT", bot_id="B0CHATOPS")

app = AsyncApp(signing_secret=os.environ["BENCH_SECRET"], authorize=authorize, process_before_response=True)

@app.event("app_mention")
async def mention():
    return None

handler = AsyncSlackRequestHandler(app)

async def events(request):
    return await handler.handle(request)

async def healthz(_):
    return PlainTextResponse("ok")

web = Starlette(routes=[Route("/slack/events", events, methods=["POST"]), Route("/healthz", healthz)])
uvicorn.run(web, host="127.0.0.1", port=int(os.environ["BENCH_PORT"]), log_level="warning", access_log=False)
"""


# --- the load generator (child process) ------------------------------------------------------------------


def _requests(cfg: dict[str, Any]) -> list[bytes]:
    from fixtures.slack_ingress import SlackIngress

    ingress = SlackIngress(cfg["url"], cfg["secret"])
    host = cfg["url"].split("://", 1)[1]
    out = []
    count = int(cfg["rate"] * cfg["seconds"])
    for i in range(count):
        # Unique per run and request, so the bot really admits each one (no dedupe short-cut).
        ts = f"{cfg['ts_base'] + i // 100_000}.{i % 100_000:06d}"
        event_id = f"Ev{cfg['tag']}{i:06d}"
        req = ingress.app_mention(
            USER, CHANNEL, "which presto queries are running?", ts=ts, event_id=event_id
        )
        head = ["POST /slack/events HTTP/1.1", f"Host: {host}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in req.headers.items()]
        head.append(f"Content-Length: {len(req.body)}")
        out.append(("\r\n".join(head) + "\r\n\r\n").encode() + req.body)
    return out


async def _one(host: str, port: int, payload: bytes, timeout: float) -> tuple[float, int]:
    started = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(payload)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)  # Connection: close, so read to EOF
    finally:
        writer.close()
    elapsed = (time.perf_counter() - started) * 1000
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return elapsed, status


async def _load(cfg: dict[str, Any]) -> dict[str, Any]:
    payloads = _requests(cfg)
    hostport = cfg["url"].split("://", 1)[1]
    host, port = hostport.rsplit(":", 1)[0], int(hostport.rsplit(":", 1)[1])
    loop = asyncio.get_running_loop()
    latencies: list[float | None] = [None] * len(payloads)
    statuses: dict[str, int] = {}
    lags: list[float] = []
    tasks: set[asyncio.Task[None]] = set()
    t0 = loop.time() + 0.1

    async def fire(i: int, due: float) -> None:
        lags.append((loop.time() - due) * 1000)
        try:
            ms, status = await _one(host, int(port), payloads[i], 5.0)
            latencies[i] = ms
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        except (OSError, TimeoutError) as exc:
            statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1

    def schedule(i: int, due: float) -> None:
        task = loop.create_task(fire(i, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    for i in range(len(payloads)):
        due = t0 + i / cfg["rate"]
        loop.call_at(due, schedule, i, due)
    await asyncio.sleep(len(payloads) / cfg["rate"] + 0.2)
    deadline = loop.time() + 10
    while tasks and loop.time() < deadline:
        await asyncio.sleep(0.01)  # bounded: every request has its own 5 s timeouts
    ok = [x for x in latencies if x is not None]
    return {"ms": ok, "statuses": statuses, "lag": summary(lags), "sent": len(payloads)}


def loadgen_main() -> None:  # pragma: no cover - runs in the child
    """One JSON config per stdin line; one JSON result per stdout line."""
    for line in sys.stdin:
        if not line.strip():
            continue
        result = asyncio.run(_load(json.loads(line)))
        print(json.dumps(result), flush=True)


# --- the parent ------------------------------------------------------------------------------------------


class _Loadgen:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.ingress", "--loadgen"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
            start_new_session=True,
        )

    def run(self, cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
        import selectors

        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cfg) + "\n")
        self.proc.stdin.flush()
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout=timeout):
                raise TimeoutError("the load generator did not answer in time")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the load generator exited")
        result: dict[str, Any] = json.loads(line)
        return result

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        stop_process(self.proc)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            args, env=env, cwd=str(ROOT), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _run_once(
    gen: _Loadgen,
    server: str,
    url: str,
    pid: int,
    rate: int,
    seconds: float,
    tag: str,
    ts_base: int,
    noise: Noise,
) -> dict[str, Any]:
    from fixtures.world import SIGNING_SECRET

    cfg = {
        "url": url,
        "secret": SIGNING_SECRET,
        "rate": rate,
        "seconds": seconds,
        "tag": tag,
        "ts_base": ts_base,
    }
    cpu0, t0 = process_jiffies(pid), time.monotonic()
    with noise.run(f"{server} {rate}/s {tag}"):
        result = gen.run(cfg, timeout=seconds + 30)
    cpu = (process_jiffies(pid) - cpu0) / _TICK / (time.monotonic() - t0)
    ms = result["ms"]
    return {
        "server": server,
        "rate": rate,
        "latency": summary(ms),
        "statuses": result["statuses"],
        "sent": result["sent"],
        "lag": result["lag"],
        "server_cpu": cpu,
        "over_3s": sum(1 for x in ms if x > 3000),
    }


def run(*, repeats: int = 3, seconds: float = 5.0, rates: tuple[int, ...] = RATES) -> Section:
    from fixtures.redis_proc import RedisProc
    from fixtures.world import SIGNING_SECRET, start_world

    section = Section("ingress")
    noise = Noise()
    redis_proc = RedisProc().start()
    world = start_world()
    quiet_logging()
    logs = Path(tempfile.mkdtemp(prefix="chatops-bench-ingress-"))
    procs: list[subprocess.Popen[bytes]] = []
    gen: _Loadgen | None = None
    runs: list[dict[str, Any]] = []
    try:
        bot_port, bolt_port = free_port(), free_port()
        bot_url, bolt_url = f"http://127.0.0.1:{bot_port}", f"http://127.0.0.1:{bolt_port}"
        env = {**os.environ, **world.env(public_url=bot_url, redis_url=redis_proc.url)}
        env.update(PORT=str(bot_port), CHATOPS_NETGUARD="1")
        serve_cmd = [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1"]
        if os.environ.get("BENCH_PROFILE_SERVE"):
            out = os.environ["BENCH_PROFILE_SERVE"]
            serve_cmd = [
                sys.executable,
                "-m",
                "pyinstrument",
                "-o",
                out,
                "-r",
                "session",
                "-m",
                *serve_cmd[2:],
            ]
        bot = _spawn(serve_cmd, env, logs / "serve.log")
        procs.append(bot)
        bolt_env = {**os.environ, "BENCH_SECRET": SIGNING_SECRET, "BENCH_PORT": str(bolt_port)}
        bolt = _spawn([sys.executable, "-c", BOLT_SCRIPT], bolt_env, logs / "bolt.log")
        procs.append(bolt)
        wait_http_ok(bot_url + "/healthz", proc=bot)
        wait_http_ok(bolt_url + "/healthz", proc=bolt)
        gen = _Loadgen()
        servers = {"bot": (bot_url, bot.pid), "bolt": (bolt_url, bolt.pid)}
        ts_base = int(time.time())
        serial = 0

        def once(server: str, rate: int, secs: float) -> dict[str, Any]:
            nonlocal serial
            serial += 1
            url, pid = servers[server]
            assert gen is not None
            return _run_once(
                gen, server, url, pid, rate, secs, f"R{serial:03d}", ts_base + serial * 1000, noise
            )

        for name in servers:  # warm-up, discarded
            once(name, 50, 1.0)
        noise.discard(len(servers))
        redos = 0
        for rep in range(repeats):
            for rate in rates:
                order = ["bot", "bolt"] if rep % 2 == 0 else ["bolt", "bot"]
                for attempt in range(2):  # a pair that ran while others were busy is redone once
                    noise.wait_quiet(max_wait=3.0)
                    pair = [once(name, rate, seconds) for name in order]
                    if attempt or not noise.last_noisy(2) or redos >= MAX_REDOS:
                        break
                    noise.discard(2)
                    redos += 1
                for result in pair:
                    result["repeat"] = rep
                    runs.append(result)
        queued = _queue_length(redis_proc.url)
    finally:
        if gen is not None:
            gen.stop()
        for proc in procs:
            if proc is procs[0] and os.environ.get("BENCH_PROFILE_SERVE"):
                import signal

                proc.send_signal(signal.SIGINT)  # let pyinstrument write its report
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=20)
            stop_process(proc)
        _flush(redis_proc.url)
        redis_proc.stop()
        world.stop()
    _rows(section, runs, repeats)
    section.details = {"runs": runs, "queued_turns": queued, "logs": str(logs), "seconds": seconds}
    section.noise = noise.readings
    return section


def _queue_length(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        from approvals.turn_queue import STREAM

        return int(client.xlen(STREAM))  # no worker runs here: every admitted turn's job is still there
    finally:
        client.close()


def _flush(url: str) -> None:
    import redis

    try:
        client = redis.Redis.from_url(url)
        client.flushall()
        client.close()
    except redis.RedisError:
        pass


def _rows(section: Section, runs: list[dict[str, Any]], repeats: int) -> None:
    by: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in runs:
        by.setdefault((r["server"], r["rate"]), []).append(r)
    rates = sorted({r["rate"] for r in runs})
    for rate in rates:
        bot, bolt = by.get(("bot", rate), []), by.get(("bolt", rate), [])
        if not bot or not bolt:
            continue
        p50 = statistics.median(r["latency"]["p50"] for r in bot)
        p99 = statistics.median(r["latency"]["p99"] for r in bot)
        b50 = statistics.median(r["latency"]["p50"] for r in bolt)
        b99 = statistics.median(r["latency"]["p99"] for r in bolt)
        pairs99 = [(a["latency"]["p99"], b["latency"]["p99"]) for a, b in zip(bot, bolt, strict=False)]
        pairs50 = [(a["latency"]["p50"], b["latency"]["p50"]) for a, b in zip(bot, bolt, strict=False)]
        ratio99, ratio50 = median_ratio(pairs99), median_ratio(pairs50)
        bad = sum(sum(v for k, v in r["statuses"].items() if k != "200") for r in bot)
        cpu = statistics.median(r["server_cpu"] for r in bot) * 100
        bcpu = statistics.median(r["server_cpu"] for r in bolt) * 100
        lag = max(r["lag"]["p99"] for r in bot + bolt)
        spread = ", ".join(f"{r['latency']['p99']:.1f}" for r in bot)
        at100 = rate == 100
        section.add(
            Result(
                f"ingress.ack @{rate}/s",
                "p50 ms",
                p50,
                b50,
                ratio50,
                "",
                None,
                f"server CPU {cpu:.0f}% vs bolt {bcpu:.0f}% of a core",
            ),
            Result(
                f"ingress.ack @{rate}/s",
                "p99 ms",
                p99,
                b99,
                ratio99,
                "< 25 ms, ≤ 1.5×" if at100 else "≤ 1.5×",
                (p99 < 25 and ratio99 <= 1.5) if at100 else ratio99 <= 1.5,
                f"bot p99 per repeat {spread}; non-200: {bad}; loadgen lag p99 ≤ {lag:.1f} ms",
            ),
        )
    total = sum(r["sent"] for r in runs)
    worst = max((r["latency"]["max"] for r in runs if r["server"] == "bot"), default=float("nan"))
    section.add(
        Result(
            "ingress.ack (all runs)",
            "max ms (bot)",
            worst,
            max((r["latency"]["max"] for r in runs if r["server"] == "bolt"), default=None),
            None,
            "",
            None,
            f"{total} requests in {len(runs)} runs ({repeats} repeats); worst single-run p99 (bot) "
            f"{percentile([r['latency']['p99'] for r in runs if r['server'] == 'bot'], 100):.1f} ms",
        )
    )


if __name__ == "__main__":
    if "--loadgen" in sys.argv:
        loadgen_main()
