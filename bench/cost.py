"""The model's bill: what prompt caching and tool search save, billed the way the Messages API bills.

`cost.investigation`: the demo's incident (its scripted model `fixtures.incident_script`, the presto, spark
and airflow fixture servers' real tools and answers) played as one Slack thread in which three people ask
two questions each, one of them "kill it please" (paused for approval, then resumed with the approved
outcome). Each request goes through the real `agent.loop` and `llm.anthropic.AnthropicModel` over HTTP to
`FakeAnthropic`, whose `usage` follows the documented caching rules (fixtures/anthropic_usage.py). The same
conversation is played twice in the same run: A as requests are built now (caching on), B as main sent them
before issue 20 (no breakpoints; `caching=False`). The people ask a minute apart (a manual clock). The bill
is in base-input-token equivalents (`agent.usage.input_equivalents`: cache reads 0.1×, 5-minute writes
1.25×, 1-hour writes 2×, output 5×). Target A/B ≤ 0.35.

`cost.tool_context (500 tools)`: 50 servers × 10 tools (bench/tool_catalog.py) and a labelled set of
questions, each naming the tool that answers it. Per request, the tokens of tool definitions in the context
(the fake's count): with the local search, `find_tools` plus the definitions it found; with the API's tool
search, the search tool plus the definitions its results reference (the fake's BM25); against all 500 sent
in full. Target ≤ 0.20, and the local search's hit rate (the labelled tool among the definitions found) ≥
95 %.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bench.common import Result, Section

__all__ = ["run"]

MODEL = "claude-sonnet-4-6"
THREAD = (  # (who, question): three people in one thread, two questions each
    ("U0ALICE", "why did daily_ad_metrics fail last night?"),
    ("U0BOB", "kill it please"),
    ("U0CAROL", "why did daily_ad_metrics fail? I just joined"),
    ("U0ALICE", "is the failed run of daily_ad_metrics explained by the spark app?"),
    ("U0BOB", "what did the failed task log say about daily_ad_metrics?"),
    ("U0CAROL", "summarise why daily_ad_metrics failed for the incident channel"),
)
SECONDS_BETWEEN_QUESTIONS = 60.0
KILLED = '{"state": "KILLED", "killed_by": "u-alice"}'


@dataclass
class _Tool:
    model_name: str
    server: str
    tool: str
    description: str
    input_schema: Mapping[str, Any]
    needs_approval: bool
    fingerprint: str = "bench"


@dataclass
class _Out:
    ok: bool
    text: str
    truncated: bool = False
    error_kind: str | None = None
    latency_ms: float = 1.0


class _FixtureTools:
    """The `Tools` port over the fixture servers' own tool functions, called in-process (no auth)."""

    def __init__(self) -> None:
        from fixtures.mcp_airflow import build_airflow_server
        from fixtures.mcp_presto import build_presto_server
        from fixtures.mcp_spark import build_spark_server

        self.servers = {
            "presto": build_presto_server("http://presto", issuer=None, jwks_url=None, groups=None)[0],
            "spark": build_spark_server("http://spark", issuer=None, jwks_url=None, groups=None)[0],
            "airflow": build_airflow_server("http://airflow", issuer=None, jwks_url=None, groups=None)[0],
        }
        self.infos: dict[str, _Tool] = {}

    async def tools(self) -> list[_Tool]:
        if not self.infos:
            for short, server in self.servers.items():
                for t in await server.mcp.list_tools():
                    hint = t.annotations.destructive_hint if t.annotations else None
                    self.infos[f"{short}__{t.name}"] = _Tool(
                        f"{short}__{t.name}",
                        f"io.example/{short}",
                        t.name,
                        f"[{short} MCP server, owned by {short}-team] {t.description or t.name}",
                        t.input_schema,
                        needs_approval=bool(hint),
                    )
        return list(self.infos.values())

    async def call(self, model_name: str, arguments: Mapping[str, Any]) -> _Out:
        short, name = model_name.split("__", 1)
        result = await self.servers[short].mcp.call_tool(name, dict(arguments))
        content = getattr(result, "content", []) or []
        return _Out(True, "\n".join(str(getattr(c, "text", "")) for c in content))


class _Quiet:
    async def thinking(self) -> None:
        return None

    async def tool_started(self, server: str, tool: str) -> None:
        return None

    async def tool_finished(self, server: str, tool: str, ok: bool, latency_ms: float) -> None:
        return None

    async def plan(self, plan: Any) -> None:
        return None

    async def text(self, delta: str) -> None:
        return None


async def _thread(url: str, clock: Any, caching: bool) -> Any:
    """Play THREAD once; the summed `Usage` of every model call."""
    from agent.deferred import Decided, park, resume
    from agent.loop import Limits, Paused, run
    from agent.usage import Usage
    from llm.anthropic import AnthropicModel, make_client

    tools, total, messages = _FixtureTools(), Usage(), []
    limits = Limits(max_seconds=60.0)
    async with make_client("bench-key", url, max_retries=0) as client:
        model = AnthropicModel(client, MODEL, caching=caching)
        for user, question in THREAD:
            messages.append({"role": "user", "content": f"<@{user}> asks:\n{question}"})
            result = await run(messages, tools=tools, model=model, limits=limits, progress=_Quiet())
            total += result.usage
            messages = result.messages
            if isinstance(result, Paused):  # approved by two people; the action's output goes back
                outcomes = [
                    Decided(p.tool_use_id, p.server, p.tool, "succeeded", KILLED, ("U0DAN", "U0ERIN"))
                    for p in result.pending
                ]
                messages = resume(park(messages, result.completed, result.pending), outcomes)
                resumed = await run(messages, tools=tools, model=model, limits=limits, progress=_Quiet())
                total += resumed.usage
                messages = resumed.messages
            clock.advance(SECONDS_BETWEEN_QUESTIONS)
    return total


def _investigation() -> Result:
    from agent.usage import input_equivalents
    from fixtures.anthropic_fake import FakeAnthropic
    from fixtures.anthropic_usage import ManualClock
    from fixtures.incident_script import incident_responder
    from fixtures.server import serve

    clock = ManualClock()
    fake = FakeAnthropic(api_key="bench-key", clock=clock)
    fake.set_default(incident_responder)
    bills: dict[str, float] = {}
    with serve(fake.app) as running:
        for label, caching in (("main", False), ("cached", True)):
            fake.cache.clear()
            usage = asyncio.run(_thread(running.url, clock, caching))
            bills[label] = input_equivalents(usage)
            bills[f"{label}_hit"] = usage.cache_hit_ratio
        fake.release()
    ratio = bills["cached"] / bills["main"]
    return Result(
        "cost.investigation",
        "input-token equivalents (6 questions, 3 people)",
        value=round(bills["cached"]),
        baseline=round(bills["main"]),
        ratio=round(ratio, 3),
        target="≤ 0.35×",
        met=ratio <= 0.35,
        notes=f"cache hit ratio {bills['cached_hit']:.0%}; {len(fake.requests())} model requests in all",
    )


def run() -> Section:
    section = Section("cost")
    section.add(_investigation(), *_tool_context())
    return section


def _tool_context() -> list[Result]:
    from agent.tool_search import API_SEARCH_TOOL, LOCAL_SEARCH_TOOL, ToolIndex
    from bench.tool_catalog import QUESTIONS, catalog
    from fixtures.anthropic_tool_search import run_searches
    from fixtures.anthropic_usage import tokens_of

    tools, servers = catalog()
    by_name = {t["name"]: t for t in tools}
    every = sum(tokens_of(t) for t in tools)
    index = ToolIndex.build(tools, servers)
    deferred = [{**t, "defer_loading": True} for t in tools]
    local_tokens, api_tokens, hits, api_hits = [], [], 0, 0
    for question, expected in QUESTIONS:
        found = index.search(question)
        hits += expected in found
        local_tokens.append(tokens_of(LOCAL_SEARCH_TOOL) + sum(tokens_of(by_name[n]) for n in found))
        use = {"type": "server_tool_use", "id": "srvtoolu_1", "name": API_SEARCH_TOOL["name"]}
        content = run_searches([{**use, "input": {"query": question}}], [API_SEARCH_TOOL, *deferred])
        refs = [r["tool_name"] for r in content[-1]["content"].get("tool_references", [])]
        api_hits += expected in refs
        api_tokens.append(tokens_of(API_SEARCH_TOOL) + sum(tokens_of(by_name[n]) for n in refs))
    n = len(QUESTIONS)
    local = statistics.mean(local_tokens) / every
    api = statistics.mean(api_tokens) / every
    return [
        Result(
            "cost.tool_context (500 tools, local search)",
            "tokens of tool definitions per request",
            value=round(statistics.mean(local_tokens)),
            baseline=every,
            ratio=round(local, 3),
            target="≤ 0.20×, hit rate ≥ 95 %",
            met=local <= 0.20 and hits / n >= 0.95,
            notes=f"local search hit rate {hits}/{n} = {hits / n:.0%} (labelled tool among the 5 found)",
        ),
        Result(
            "cost.tool_context (500 tools, API tool search)",
            "tokens of tool definitions per request",
            value=round(statistics.mean(api_tokens)),
            baseline=every,
            ratio=round(api, 3),
            target="≤ 0.20×",
            met=api <= 0.20,
            notes=f"the fake API's BM25 found the labelled tool for {api_hits}/{n}",
        ),
    ]
