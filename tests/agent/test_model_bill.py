"""The model's bill (issue 20): prompt caching that holds across steps and people, tool search past a
threshold, and the usage a run reports. Against the real SDK and the fake Messages API, whose `usage`
follows the documented caching rules (fixtures/anthropic_usage.py)."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import pytest

from agent.loop import NOTE_COMPACTED, Answer, Limits, Paused, run
from agent.plan import PLAN_TOOL_NAME
from agent.tool_search import LOCAL_SEARCH_NAME
from agent.transcript import estimate_tokens
from fixtures.anthropic_fake import FakeAnthropic, text, tool_results, tool_search, tool_use
from llm.anthropic import AnthropicModel
from tests.agent.test_loop import (  # the loop tests' Tools port, progress and fixtures
    DAG_RUNS,
    HISTORY,
    KILL,
    MODEL,
    FakeTools,
    Info,
    Out,
    RecordingProgress,
    ask,
    client,
    fake,
    shared,
)

__all__ = ["client", "fake", "shared"]  # fixtures, re-used

pytestmark = pytest.mark.timeout(60)

LONG = "Returns rows of the coordinator's history with their state, user and SQL text. " * 40


def described(tools: FakeTools, order: list[str]) -> FakeTools:
    """`tools` with long descriptions (past the model's minimum cacheable length), listed in `order`."""
    tools.infos = {
        n: Info(i.model_name, i.server, i.tool, i.needs_approval, description=f"{n}: {LONG}")
        for n, i in ((n, tools.infos[n]) for n in order)
    }
    return tools


async def turn(
    client: anthropic.AsyncAnthropic, tools: FakeTools, messages: list[dict[str, Any]], limits: Limits
) -> Any:
    return await run(
        messages,
        tools=tools,
        model=AnthropicModel(client, MODEL),
        limits=limits,
        progress=RecordingProgress(),
    )


async def test_the_prefix_is_read_from_the_cache_across_steps_turns_and_people(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    """Alice's turn takes two steps; Bob asks next in the thread, his tools listed in another order. Every
    request after the first reads the tools and system prompt (and the thread so far) from the cache."""
    limits = Limits(max_seconds=20.0)
    fake.enqueue(
        tool_use(HISTORY, {"user": "etl"}), text("A backfill from etl."), text("Yes, still running.")
    )
    alice = await turn(client, described(FakeTools(), [HISTORY, KILL, DAG_RUNS]), ask(), limits)
    assert isinstance(alice, Answer)
    thread = [*alice.messages, {"role": "user", "content": "<@U0BOB> asks:\nis it still running?"}]
    bob = await turn(client, described(FakeTools(), [DAG_RUNS, HISTORY, KILL]), thread, limits)
    assert isinstance(bob, Answer)

    first, _second, third = (r.body for r in fake.requests())
    assert first["tools"] == third["tools"]  # identical bytes for everyone shown the same set
    assert [t["name"] for t in first["tools"]] == sorted([HISTORY, KILL, DAG_RUNS, PLAN_TOOL_NAME])
    usages = [r.response["usage"] for r in fake.requests()]
    assert usages[0]["cache_read_input_tokens"] == 0
    assert usages[0]["cache_creation_input_tokens"] > 0
    assert all(u["cache_read_input_tokens"] > u["input_tokens"] for u in usages[1:])
    # the run's usage is the sum of its calls, split as billed
    assert alice.usage.cache_read == usages[1]["cache_read_input_tokens"]
    assert bob.usage.cache_read == usages[2]["cache_read_input_tokens"]
    assert alice.usage.output == sum(u["output_tokens"] for u in usages[:2])


def many(tools: FakeTools, n: int) -> FakeTools:
    """`tools` plus `n` unrelated read-only tools, past the search threshold."""
    for i in range(n):
        name = f"kafka{i}__topic_lag"
        tools.infos[name] = Info(name, f"io.example/kafka{i}", "topic_lag", description=f"Kafka lag {i}")
    return tools


async def test_past_the_threshold_tools_are_deferred_and_a_found_tool_still_needs_its_approval(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    tools = many(FakeTools(), 40)
    fake.enqueue(
        tool_search("presto kill query", bm25=True, then=tool_use(KILL, {"query_id": "q1"})),
    )
    result = await turn(client, tools, ask("kill q1"), Limits(max_seconds=20.0, tool_search_threshold=30))

    sent = fake.requests()[0].body["tools"]
    assert (sent[0]["type"], sent[0]["name"]) == ("tool_search_tool_bm25_20251119", "tool_search_tool_bm25")
    deferred = [t.get("defer_loading") is True for t in sent[1:] if t["name"] != PLAN_TOOL_NAME]
    assert all(deferred)  # nothing used yet: every server's tool deferred (the local plan tool is tiny)
    assert fake.requests()[0].response["usage"]["input_tokens"] < 1000  # 43 definitions stay out
    # the model found kill_query by searching; it still waits for people, and nothing ran
    assert isinstance(result, Paused)
    assert [p.model_name for p in result.pending] == [KILL]
    assert tools.invocations == []


async def test_a_tool_the_person_may_not_use_is_refused_even_when_the_model_names_it(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    tools = many(FakeTools(), 40)
    fake.enqueue(tool_use("secret__drop_everything", {}), text("I can't."))
    result = await turn(client, tools, ask(), Limits(max_seconds=20.0, tool_search_threshold=30))
    assert isinstance(result, Answer)
    assert tools.invocations == []
    assert "is not available to you here" in str(fake.requests()[1].body["messages"][-1])


async def test_the_local_search_loads_what_it_finds_for_the_next_step(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    """Where the API lacks tool search: only `find_tools` up front; what it finds is sent from the next
    step on, and calling it goes through the Tools port like any call."""
    tools = many(FakeTools(), 40)
    fake.enqueue(
        tool_use(LOCAL_SEARCH_NAME, {"query": "presto query history"}),
        tool_use(HISTORY, {"user": "etl"}),
        text("done"),
    )
    limits = Limits(max_seconds=20.0, tool_search="local", tool_search_threshold=30)
    result = await turn(client, tools, ask(), limits)

    assert isinstance(result, Answer)
    first, second, _ = (r.body for r in fake.requests())
    assert [t["name"] for t in first["tools"]] == [LOCAL_SEARCH_NAME, PLAN_TOOL_NAME]
    assert HISTORY in [t["name"] for t in second["tools"]]
    assert len(second["tools"]) <= 7  # the search and plan tools and at most five found
    assert tools.invocations == [(HISTORY, {"user": "etl"})]
    # the search itself never reached a server
    assert all(name != LOCAL_SEARCH_NAME for name, _ in tools.invocations)


async def test_a_thread_keeps_working_after_fifty_turns_within_its_budget(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    """Fifty questions, each read with a large tool output: every request stays under the budget, the
    question and the previous answer always reach the model whole, and what was cut says so and states
    the cap."""

    def responder(body: dict[str, Any]) -> Any:
        if tool_results(body):
            return text(f"Answer to {last_user_question(body)[:11]}: fine.")
        return tool_use(HISTORY, {"user": "etl"})

    async def big(_: Any) -> Out:
        return Out(True, "row " * 1_000)

    fake.set_default(responder)
    tools = FakeTools({HISTORY: big})
    limits = Limits(max_seconds=20.0, budget_tokens=8_000)
    thread: list[dict[str, Any]] = []
    for n in range(50):
        question = f"question {n:02d} " + "about the cluster " * 60
        result = await turn(client, tools, [*thread, {"role": "user", "content": question}], limits)
        assert isinstance(result, Answer), n
        thread = result.messages

    last_two = [r.body for r in fake.requests()[-2:]]
    assert all(estimate_tokens(b["messages"]) <= 8_000 for b in (r.body for r in fake.requests()))
    for body in last_two:
        said = json.dumps(body["messages"])
        assert "question 49 " + "about the cluster " * 60 in said  # the question, whole
        assert "Answer to question 48: fine." in said  # the answer before it
    assert "kept under 8,000 tokens per request" in json.dumps(last_two[0]["messages"])
    assert NOTE_COMPACTED in result.notes


def last_user_question(body: dict[str, Any]) -> str:
    questions = [
        m["content"] for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], str)
    ]
    return questions[-1] if questions else ""


async def test_a_one_hour_toolset_is_written_for_an_hour_and_the_turn_for_five_minutes(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    """CHATOPS_CACHE_TOOLS_TTL=1h: tools and system prompt carry the 1-hour breakpoints before the
    conversation's 5-minute one (the API refuses the other order), and are billed as 1-hour writes."""
    fake.enqueue(text("hello"))
    result = await run(
        ask(),
        tools=described(FakeTools(), [HISTORY, KILL, DAG_RUNS]),
        model=AnthropicModel(client, MODEL, tools_ttl="1h"),
        limits=Limits(max_seconds=20.0),
        progress=RecordingProgress(),
    )
    assert isinstance(result, Answer)
    body = fake.requests()[0].body
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert body["cache_control"] == {"type": "ephemeral"}
    assert result.usage.cache_write_1h > 0
    assert result.usage.cache_write_5m > 0  # the question, after the system prompt
