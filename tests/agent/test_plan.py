"""The model's plan (agent.plan): a local tool the loop answers itself, beside real calls in the same step."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from agent.loop import Answer, Paused
from agent.plan import MAX_STEPS, PLAN_TOOL_NAME, SHOWN, Plan, PlanStep, last_stated, read_plan
from fixtures.anthropic_fake import FakeAnthropic, text, tool_results, tool_use, tool_uses
from tests.agent.test_loop import (  # the loop tests' Tools port, progress and fixtures
    DAG_RUNS,
    HISTORY,
    KILL,
    FakeTools,
    RecordingProgress,
    client,
    fake,
    go,
    shared,
)

__all__ = ["client", "fake", "shared"]  # fixtures, imported for pytest

pytestmark = pytest.mark.timeout(60)


def plan_input(*statuses: str, title: str = "Why presto is slow") -> dict[str, Any]:
    names = ["Recent queries", "DAG runs", "Conclude"]
    return {
        "title": title,
        "steps": [{"title": n, "status": s} for n, s in zip(names, statuses, strict=False)],
    }


def shown_plans(progress: RecordingProgress) -> list[Plan]:
    return [e[1] for e in progress.events if e[0] == "plan"]


async def test_a_plan_stated_with_the_first_call_is_shown_before_the_call_and_costs_no_step(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(
        tool_uses(
            (PLAN_TOOL_NAME, plan_input("in_progress", "pending", "pending")), (HISTORY, {"user": "etl"})
        ),
        tool_uses(
            (PLAN_TOOL_NAME, plan_input("complete", "in_progress", "pending")), (DAG_RUNS, {"dag": "d"})
        ),
        text("A backfill from etl."),
    )
    progress, tools = RecordingProgress(), FakeTools()
    result = await go(client, tools, progress=progress)

    assert isinstance(result, Answer)
    assert len(fake.requests()) == 3  # the plan rode along with the calls: no extra model round trip
    kinds = [e[0] if e[0] != "started" else e[2] for e in progress.events if e[0] != "thinking"]
    assert kinds[:2] == ["plan", "query_history"]  # shown before the first call ran
    plans = shown_plans(progress)
    assert [[s.status for s in p.steps] for p in plans] == [
        ["in_progress", "pending", "pending"],
        ["complete", "in_progress", "pending"],
        ["complete", "complete", "pending"],  # answered: the step it was on is over, the unbegun one not
    ]
    # never a server call, never audited or counted: only the real calls are records
    assert [c.tool for c in result.calls] == ["query_history", "dag_runs"]
    assert [name for name, _ in tools.invocations] == [HISTORY, DAG_RUNS]
    first_results = tool_results(fake.requests()[1].body)
    plan_result = next(r for r in first_results if SHOWN in r["content"])
    assert plan_result["is_error"] is False


async def test_a_malformed_plan_is_an_error_the_model_reads_and_the_turn_goes_on(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fifty = {"title": "Everything", "steps": [{"title": f"s{i}", "status": "pending"} for i in range(50)]}
    wrong_types = {"title": 7, "steps": "all of them"}
    fake.enqueue(
        tool_uses((PLAN_TOOL_NAME, fifty), (HISTORY, {"user": "etl"})),
        tool_use(PLAN_TOOL_NAME, wrong_types),
        text("Done anyway."),
    )
    progress = RecordingProgress()
    result = await go(client, FakeTools(), progress=progress)

    assert isinstance(result, Answer)
    assert result.text == "Done anyway."
    assert shown_plans(progress) == []
    first = next(r for r in tool_results(fake.requests()[1].body) if "Plan not shown" in r["content"])
    assert first["is_error"] is True
    assert f"1 to {MAX_STEPS} steps (it has 50)" in first["content"]
    (second,) = tool_results(fake.requests()[2].body)
    assert second["is_error"] is True
    assert "`steps` must be a list" in second["content"]


def test_read_plan_names_what_is_wrong() -> None:
    assert read_plan(["not", "an", "object"]) == read_plan("text")
    assert "must be an object" in str(read_plan(None))
    assert "`title` must be a non-empty string" in str(read_plan({"title": " ", "steps": [{}]}))
    assert "step 1 must be an object" in str(read_plan({"title": "t", "steps": ["x"]}))
    assert "step 1's `status` must be one of" in str(read_plan({"title": "t", "steps": [{"title": "a"}]}))
    long = {"title": "t" * 81, "steps": [{"title": "a", "status": "pending"}]}
    assert "at most 80 characters" in str(read_plan(long))
    ok = read_plan({"title": " Why\n slow ", "steps": [{"title": "look", "status": "complete"}]})
    assert ok == Plan("Why slow", (PlanStep("look", "complete"),))


async def test_a_plan_beside_a_call_that_needs_approval_is_answered_in_the_paused_step(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake.enqueue(tool_uses((PLAN_TOOL_NAME, plan_input("in_progress")), (KILL, {"query_id": "q1"})))
    result = await go(client, FakeTools())

    assert isinstance(result, Paused)
    assert [p.model_name for p in result.pending] == [KILL]
    assert [SHOWN in str(r["content"]) for r in result.completed] == [True]


async def test_no_plan_tool_is_offered_to_someone_without_tools(
    fake: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    tools = FakeTools()
    tools.infos.clear()
    fake.enqueue(text("I have no tools here."))
    await go(client, tools)
    assert PLAN_TOOL_NAME not in [t["name"] for t in fake.requests()[0].body.get("tools") or []]


def _use(name: str, args: Any, use_id: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": use_id, "name": name, "input": args}


def _result(use_id: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": use_id, "content": "ok"}


def test_a_resumed_turn_finds_the_plan_it_last_stated_and_a_new_question_starts_without_one() -> None:
    stated: list[dict[str, Any]] = [
        {"role": "user", "content": "why is presto slow?"},
        {
            "role": "assistant",
            "content": [
                _use(PLAN_TOOL_NAME, plan_input("in_progress", "pending"), "p1"),
                _use("presto__kill_query", {"query_id": "q1"}, "k1"),
            ],
        },
        {"role": "user", "content": [_result("p1"), _result("k1")]},  # the approved kill's outcome
    ]
    found = last_stated(stated)
    assert found is not None
    assert found.title == "Why presto is slow"
    assert [s.status for s in found.steps] == ["in_progress", "pending"]

    answered = [*stated, {"role": "assistant", "content": [{"type": "text", "text": "Killed it."}]}]
    assert last_stated([*answered, {"role": "user", "content": "and spark?"}]) is None
    files = [{"type": "text", "text": "and spark?"}, {"type": "text", "text": "<attachment>log</attachment>"}]
    assert last_stated([*answered, {"role": "user", "content": files}]) is None


def test_a_malformed_restatement_leaves_the_last_good_plan() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "why is presto slow?"},
        {"role": "assistant", "content": [_use(PLAN_TOOL_NAME, plan_input("in_progress", "pending"), "p1")]},
        {"role": "user", "content": [_result("p1")]},
        {"role": "assistant", "content": [_use(PLAN_TOOL_NAME, {"title": "x", "steps": "all"}, "p2")]},
        {"role": "user", "content": [_result("p2")]},
    ]
    found = last_stated(messages)
    assert found is not None
    assert [s.status for s in found.steps] == ["in_progress", "pending"]
