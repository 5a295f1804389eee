"""The workflow runner: steps in order through the `Tools` port, pauses as values, resumes from JSON.

`FakeTools` is an in-test `Tools` with tool infos and recorded calls. `FixtureTools` serves the shipped
workflows from the fixture world's Presto, Spark and Airflow servers, in process through the real MCP
client, with approval decided by the tools' annotations as the registry does by default.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from agent.workflow import Workflow, load_file, load_workflows
from agent.workflow_runner import (
    RunState,
    StepRecord,
    WorkflowDone,
    WorkflowFailed,
    WorkflowPaused,
    preflight,
    run_workflow,
)
from fixtures.mcp_airflow import INCIDENT_DAG, INCIDENT_RUN, AirflowState, build_airflow_server
from fixtures.mcp_presto import RUNAWAY_QUERY_ID, build_presto_server
from fixtures.mcp_spark import FAILED_APP_ID, build_spark_server

pytestmark = pytest.mark.timeout(60)

SHIPPED = Path(__file__).resolve().parents[2] / "workflows"
OBJECT = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Info:
    model_name: str
    server: str
    tool: str
    needs_approval: bool = False
    description: str = "a test tool"
    input_schema: Mapping[str, Any] = field(default_factory=lambda: OBJECT)
    fingerprint: str = "fp-test"


@dataclass(frozen=True)
class Out:
    ok: bool
    text: str
    structured: Any = None
    truncated: bool = False
    error_kind: str | None = None
    latency_ms: float = 1.0


@dataclass(frozen=True)
class TextOnly:
    """A ToolResult exactly as the port declares it: no `structured`."""

    ok: bool
    text: str
    truncated: bool = False
    error_kind: str | None = None
    latency_ms: float = 1.0


Handler = Callable[[Mapping[str, Any]], Any]

RUNS_SCHEMA = {
    "type": "object",
    "properties": {"dag_id": {"type": "string"}, "state": {"type": "string"}, "limit": {"type": "integer"}},
    "required": ["dag_id"],
}
CLEAR_SCHEMA = {
    "type": "object",
    "properties": {"dag_id": {"type": "string"}, "run_id": {"type": "string"}},
    "required": ["dag_id", "run_id"],
    "additionalProperties": False,
}


class FakeTools:
    def __init__(self, *infos: Info, handlers: Mapping[str, Handler] | None = None) -> None:
        self.infos = list(infos)
        self.handlers = dict(handlers or {})
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def tools(self) -> list[Info]:
        return list(self.infos)

    async def call(self, model_name: str, arguments: Mapping[str, Any]) -> Any:
        self.calls.append((model_name, dict(arguments)))
        handler = self.handlers.get(model_name)
        if handler is None:
            return Out(True, "done", {"echo": dict(arguments)})
        return handler(arguments)


class Progress:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    async def step_started(self, step_id: str, call: str) -> None:
        self.events.append(("started", step_id, call))

    async def step_finished(self, step_id: str, ok: bool, summary: str) -> None:
        self.events.append(("finished", step_id, ok, summary))


def airflow_tools(**handlers: Handler) -> FakeTools:
    return FakeTools(
        Info("airflow__list_dag_runs", "io.example/airflow", "list_dag_runs", input_schema=RUNS_SCHEMA),
        Info(
            "airflow__clear_task_instances",
            "io.example/airflow",
            "clear_task_instances",
            True,
            input_schema=CLEAR_SCHEMA,
        ),
        Info("airflow__task_instances", "io.example/airflow", "task_instances"),
        handlers={f"airflow__{k}": v for k, v in handlers.items()},
    )


def flow(tmp_path: Path, text: str) -> Workflow:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    workflow, errors = load_file(path)
    assert errors == [], errors
    assert workflow is not None
    return workflow


RESTART = (SHIPPED / "restart-failed-dag.yaml").read_text()
RUNS = {"dag_id": "d", "runs": [{"run_id": "r-7", "state": "failed"}]}
CHAIN = """\
name: chain
description: results flow into later steps
params:
  dag_id: {type: string, required: true}
steps:
  - id: runs
    call: airflow.list_dag_runs
    args: {dag_id: "{{ params.dag_id }}", state: failed, limit: 1}
  - id: tis
    call: airflow.task_instances
    args: {dag_id: "{{ params.dag_id }}", run_id: "{{ steps.runs.result.runs[0].run_id }}"}
  - id: never
    call: airflow.task_instances
    when: false
    args: {dag_id: x}
  - id: again
    call: airflow.task_instances
    args: {run: "{{ steps.tis.result.echo.run_id }}", skipped: "{{ steps.never.result }}"}
"""


async def test_steps_run_in_order_with_results_flowing_into_later_args(tmp_path: Path) -> None:
    tools = airflow_tools(list_dag_runs=lambda a: Out(True, "1 run", RUNS))
    progress = Progress()
    done = await run_workflow(flow(tmp_path, CHAIN), {"dag_id": "d"}, tools=tools, progress=progress)

    assert isinstance(done, WorkflowDone)
    assert tools.calls == [
        ("airflow__list_dag_runs", {"dag_id": "d", "state": "failed", "limit": 1}),
        ("airflow__task_instances", {"dag_id": "d", "run_id": "r-7"}),
        ("airflow__task_instances", {"run": "r-7"}),  # a skipped step's result is None: the arg is left out
    ]
    assert [(r.step_id, r.status) for r in done.state.log] == [
        ("runs", "ok"),
        ("tis", "ok"),
        ("never", "skipped"),
        ("again", "ok"),
    ]
    assert done.state.results["runs"] == RUNS
    assert done.state.results["never"] is None
    assert progress.events[0] == ("started", "runs", "airflow.list_dag_runs")
    assert ("finished", "never", True, "skipped") in progress.events


async def test_a_step_needing_approval_pauses_and_resumes_from_serialised_state(tmp_path: Path) -> None:
    tools = airflow_tools(list_dag_runs=lambda a: Out(True, "1 run", RUNS))
    workflow = flow(tmp_path, RESTART)
    paused = await run_workflow(workflow, {"dag_id": "d"}, tools=tools, progress=Progress())

    assert isinstance(paused, WorkflowPaused)
    assert paused.step.id == "clear"
    assert paused.rendered_args == {"dag_id": "d", "run_id": "r-7"}
    assert paused.tool.model_name == "airflow__clear_task_instances"
    assert "restart-failed-dag" in paused.reason
    assert [name for name, _ in tools.calls] == ["airflow__list_dag_runs"]  # the clear waits for people

    saved = paused.state.to_json()  # what the bot stores while people decide
    state = RunState.from_json(saved)
    assert state == paused.state
    cleared = {"dag_id": "d", "run_id": "r-7", "cleared": ["aggregate_spend"]}
    done = await run_workflow(
        workflow,
        {"dag_id": "d"},
        tools=tools,
        progress=Progress(),
        state=state,
        approved_outcome=(True, "cleared 1 task", cleared),
    )
    assert isinstance(done, WorkflowDone)
    assert done.state.results["clear"] == cleared
    assert done.state.log[-1] == StepRecord(
        "clear", "airflow.clear_task_instances", "ok", "cleared 1 task", paused.rendered_args, approved=True
    )
    assert len(tools.calls) == 1  # the bot ran the approved call; the runner never calls it itself
    assert state.next_index == 1  # the saved state was not changed by resuming


@pytest.mark.parametrize(("kind", "said"), [("rejected", "was rejected: not now"), ("expired", "expired")])
async def test_a_rejected_or_expired_step_ends_the_run(tmp_path: Path, kind: Any, said: str) -> None:
    tools = airflow_tools(list_dag_runs=lambda a: Out(True, "1 run", RUNS))
    workflow = flow(tmp_path, RESTART)
    paused = await run_workflow(workflow, {"dag_id": "d"}, tools=tools, progress=Progress())
    assert isinstance(paused, WorkflowPaused)
    ended = await run_workflow(
        workflow,
        {"dag_id": "d"},
        tools=tools,
        progress=Progress(),
        state=paused.state,
        declined=(kind, "not now"),
    )
    assert isinstance(ended, WorkflowFailed)
    assert (ended.kind, ended.step_id) == (kind, "clear")
    assert said in ended.message
    assert ended.state.log[-1].status == kind
    assert len(tools.calls) == 1


async def test_a_failed_approved_call_ends_the_run_and_resuming_without_a_pause_is_refused(
    tmp_path: Path,
) -> None:
    tools = airflow_tools(list_dag_runs=lambda a: Out(True, "1 run", RUNS))
    workflow = flow(tmp_path, RESTART)
    paused = await run_workflow(workflow, {"dag_id": "d"}, tools=tools, progress=Progress())
    assert isinstance(paused, WorkflowPaused)
    failed = await run_workflow(
        workflow,
        {"dag_id": "d"},
        tools=tools,
        progress=Progress(),
        state=paused.state,
        approved_outcome=(False, "DAG run not found\ntrace", None),
    )
    assert isinstance(failed, WorkflowFailed)
    assert (failed.kind, failed.message) == (
        "step_failed",
        "Step `clear` (airflow.clear_task_instances) failed: DAG run not found",
    )
    with pytest.raises(ValueError, match="nothing is waiting"):
        await run_workflow(
            workflow,
            {},
            tools=tools,
            progress=Progress(),
            state=RunState(),
            approved_outcome=(True, "", None),
        )


async def test_a_person_lacking_a_steps_tool_is_told_before_anything_runs(tmp_path: Path) -> None:
    tools = airflow_tools()
    tools.infos = [i for i in tools.infos if i.tool != "clear_task_instances"]
    workflow = flow(tmp_path, RESTART)

    assert await preflight(workflow, {"dag_id": "d"}, tools) == [
        "step `clear`: airflow.clear_task_instances is not available to you"
    ]
    failed = await run_workflow(workflow, {"dag_id": "d"}, tools=tools, progress=Progress())
    assert isinstance(failed, WorkflowFailed)
    assert (failed.kind, failed.step_id) == ("preflight", None)
    assert "step `clear`: airflow.clear_task_instances is not available to you" in failed.message
    assert tools.calls == []


async def test_an_argument_invalid_against_the_schema_fails_before_any_call(tmp_path: Path) -> None:
    bad = RESTART.replace("limit: 1", "limit: one").replace("run_id:", "extra: 1, run_id:")
    failed = await run_workflow(
        flow(tmp_path, bad), {"dag_id": "d"}, tools=airflow_tools(), progress=Progress()
    )
    assert isinstance(failed, WorkflowFailed)
    assert failed.kind == "preflight"
    assert "step `runs`: argument `limit`: 'one' is not of type 'integer'" in failed.message
    assert "step `clear`: Additional properties are not allowed ('extra' was unexpected)" in failed.message


async def test_an_argument_from_a_result_is_checked_just_before_its_step(tmp_path: Path) -> None:
    numeric = {"runs": [{"run_id": 7}]}
    tools = airflow_tools(list_dag_runs=lambda a: Out(True, "1 run", numeric))
    failed = await run_workflow(flow(tmp_path, RESTART), {"dag_id": "d"}, tools=tools, progress=Progress())
    assert isinstance(failed, WorkflowFailed)
    assert (failed.kind, failed.step_id) == ("invalid_args", "clear")
    assert "argument `run_id`: 7 is not of type 'string'" in failed.message
    assert [name for name, _ in tools.calls] == ["airflow__list_dag_runs"]


async def test_when_false_skips_the_step(tmp_path: Path) -> None:
    tools = airflow_tools(list_dag_runs=lambda a: Out(True, "no runs", {"runs": []}))
    done = await run_workflow(flow(tmp_path, RESTART), {"dag_id": "d"}, tools=tools, progress=Progress())
    assert isinstance(done, WorkflowDone)
    assert [r.status for r in done.state.log] == ["ok", "skipped"]
    assert len(tools.calls) == 1


async def test_a_failed_step_stops_the_run_and_says_which_and_why(tmp_path: Path) -> None:
    tools = airflow_tools(list_dag_runs=lambda a: Out(False, "DAG 'd' not found", error_kind="tool_error"))
    failed = await run_workflow(flow(tmp_path, CHAIN), {"dag_id": "d"}, tools=tools, progress=Progress())
    assert isinstance(failed, WorkflowFailed)
    assert (failed.kind, failed.step_id) == ("step_failed", "runs")
    assert failed.message == "Step `runs` (airflow.list_dag_runs) failed: DAG 'd' not found"
    assert len(tools.calls) == 1


async def test_a_template_that_cannot_render_fails_its_step(tmp_path: Path) -> None:
    tools = airflow_tools(list_dag_runs=lambda a: Out(True, "odd", {"nothing": 1}))
    failed = await run_workflow(flow(tmp_path, CHAIN), {"dag_id": "d"}, tools=tools, progress=Progress())
    assert isinstance(failed, WorkflowFailed)
    assert (failed.kind, failed.step_id) == ("render", "tis")
    assert "argument `run_id`" in failed.message


async def test_text_results_are_read_as_json_when_there_is_no_structured_content(tmp_path: Path) -> None:
    tools = airflow_tools(list_dag_runs=lambda a: TextOnly(True, json.dumps(RUNS)))
    paused = await run_workflow(flow(tmp_path, RESTART), {"dag_id": "d"}, tools=tools, progress=Progress())
    assert isinstance(paused, WorkflowPaused)
    assert paused.rendered_args["run_id"] == "r-7"


async def test_a_raising_port_fails_the_step_instead_of_the_worker(tmp_path: Path) -> None:
    def boom(arguments: Mapping[str, Any]) -> Any:
        raise RuntimeError("connection reset")

    failed = await run_workflow(
        flow(tmp_path, CHAIN), {"dag_id": "d"}, tools=airflow_tools(list_dag_runs=boom), progress=Progress()
    )
    assert isinstance(failed, WorkflowFailed)
    assert failed.message == "Step `runs` (airflow.list_dag_runs) failed: The tool failed unexpectedly."


# ----- the shipped workflows against the fixture world -----------------------------------------------------


@dataclass(frozen=True)
class FixtureInfo:
    model_name: str
    server: str
    tool: str
    description: str
    input_schema: Mapping[str, Any]
    needs_approval: bool
    fingerprint: str = "fp"


class FixtureTools:
    """The fixture servers in process, through the real MCP client; approval as the annotations say."""

    def __init__(self, clients: dict[str, Client], infos: list[FixtureInfo]) -> None:
        self.clients, self.infos = clients, infos
        self.calls: list[str] = []

    async def tools(self) -> list[FixtureInfo]:
        return list(self.infos)

    async def call(self, model_name: str, arguments: Mapping[str, Any]) -> Out:
        self.calls.append(model_name)
        short, tool = model_name.split("__", 1)
        result = await self.clients[short].call_tool(tool, dict(arguments))
        text = "".join(getattr(c, "text", "") for c in result.content)
        return Out(not result.is_error, text, result.structured_content)


@asynccontextmanager
async def fixture_world() -> AsyncIterator[tuple[FixtureTools, AirflowState]]:
    # A context manager, not a fixture: the MCP client's task group must close in the task that opened it.
    presto, _ = build_presto_server("http://127.0.0.1/presto", issuer=None, jwks_url=None)
    spark, _ = build_spark_server("http://127.0.0.1/spark", issuer=None, jwks_url=None)
    airflow, airflow_state = build_airflow_server("http://127.0.0.1/airflow", issuer=None, jwks_url=None)
    async with AsyncExitStack() as stack:
        clients: dict[str, Client] = {}
        infos: list[FixtureInfo] = []
        for short, server in (("presto", presto), ("spark", spark), ("airflow", airflow)):
            clients[short] = await stack.enter_async_context(Client(server.mcp))
            for t in (await clients[short].list_tools()).tools:
                read_only = bool(t.annotations and t.annotations.read_only_hint)
                name = f"{short}__{t.name}"
                infos.append(
                    FixtureInfo(
                        name,
                        f"io.example/{short}",
                        t.name,
                        t.description or "",
                        t.input_schema,
                        not read_only,
                    )
                )
        yield FixtureTools(clients, infos), airflow_state


async def test_every_shipped_workflow_passes_preflight_against_the_fixture_tools() -> None:
    async with fixture_world() as (tools, _):
        await _preflight_all(tools)


async def _preflight_all(tools: FixtureTools) -> None:
    workflows, errors = load_workflows(SHIPPED)
    assert errors == []
    params = {
        "restart-failed-dag": {"dag_id": INCIDENT_DAG},
        "kill-runaway-query": {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway backfill"},
        "spark-app-triage": {"app_id": FAILED_APP_ID, "executor_id": None, "tail": 100},
        "incident-snapshot": {"dag_id": INCIDENT_DAG, "min_seconds": 600, "limit": 10},
    }
    for name, workflow in workflows.items():
        assert await preflight(workflow, params[name], tools) == [], name
    assert tools.calls == []


async def test_read_only_shipped_workflows_run_to_completion() -> None:
    async with fixture_world() as (tools, _):
        await _read_only(tools)


async def _read_only(tools: FixtureTools) -> None:
    workflows, _ = load_workflows(SHIPPED)
    triage = await run_workflow(
        workflows["spark-app-triage"],
        {"app_id": FAILED_APP_ID, "executor_id": "5", "tail": 3},
        tools=tools,
        progress=Progress(),
    )
    assert isinstance(triage, WorkflowDone)
    assert triage.state.results["status"]["final_status"] == "FAILED"
    assert triage.state.results["stages"]["stages"][0]["stage_id"] == 7
    assert len(triage.state.results["logs"]["lines"]) == 3
    snapshot = await run_workflow(
        workflows["incident-snapshot"],
        {"dag_id": INCIDENT_DAG, "min_seconds": 600, "limit": 5},
        tools=tools,
        progress=Progress(),
    )
    assert isinstance(snapshot, WorkflowDone)
    results = snapshot.state.results
    assert results["dag_runs"]["runs"][0]["run_id"] == INCIDENT_RUN
    assert FAILED_APP_ID in [a["app_id"] for a in results["spark_apps"]["applications"]]
    assert results["slow_queries"]["queries"][0]["query_id"] == RUNAWAY_QUERY_ID


async def test_shipped_workflows_with_side_effects_pause_on_the_right_call() -> None:
    async with fixture_world() as (tools, airflow_state):
        await _side_effects(tools, airflow_state)


async def _side_effects(tools: FixtureTools, airflow_state: AirflowState) -> None:
    workflows, _ = load_workflows(SHIPPED)
    kill = await run_workflow(
        workflows["kill-runaway-query"],
        {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway backfill"},
        tools=tools,
        progress=Progress(),
    )
    assert isinstance(kill, WorkflowPaused)
    assert (kill.step.id, kill.tool.model_name) == ("kill", "presto__kill_query")
    assert kill.rendered_args == {"query_id": RUNAWAY_QUERY_ID, "reason": "runaway backfill"}

    restart = workflows["restart-failed-dag"]
    run_key = f"{INCIDENT_DAG}/{INCIDENT_RUN}"
    assert airflow_state.snapshot()["runs"][run_key]["aggregate_spend"] == "failed"
    paused = await run_workflow(restart, {"dag_id": INCIDENT_DAG}, tools=tools, progress=Progress())
    assert isinstance(paused, WorkflowPaused)
    assert paused.rendered_args == {"dag_id": INCIDENT_DAG, "run_id": INCIDENT_RUN}
    # What the bot does once people approve: run exactly these arguments, then resume from saved state.
    outcome = await tools.call(paused.tool.model_name, paused.rendered_args)
    done = await run_workflow(
        restart,
        {"dag_id": INCIDENT_DAG},
        tools=tools,
        progress=Progress(),
        state=RunState.from_json(paused.state.to_json()),
        approved_outcome=(outcome.ok, outcome.text, outcome.structured),
    )
    assert isinstance(done, WorkflowDone)
    assert done.state.results["clear"]["run_id"] == INCIDENT_RUN
    assert airflow_state.snapshot()["runs"][run_key]["aggregate_spend"] != "failed"
    assert "presto__kill_query" not in tools.calls
