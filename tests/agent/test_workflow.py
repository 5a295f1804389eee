"""Workflow files: loading with lines, the template sandbox, parameter coercion and argument checks."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.workflow import (
    MAX_OUTPUT_CHARS,
    MAX_TEMPLATE_CHARS,
    Param,
    RenderError,
    Step,
    Workflow,
    WorkflowError,
    coerce_params,
    load_file,
    load_workflows,
    render_args,
    render_when,
    validate_args,
)

SHIPPED = Path(__file__).resolve().parents[2] / "workflows"

GOOD = """\
name: good
description: A valid workflow next to the broken ones
params:
  dag_id: {type: string, required: true}
steps:
  - id: runs
    call: airflow.list_dag_runs
    args: {dag_id: "{{ params.dag_id }}", limit: 1}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def step(args: dict[str, Any], when: str | None = None) -> Step:
    """A step built directly, bypassing the loader's checks: what the sandbox alone must stop."""
    return Step("s", "x.y", "x", "y", args, when=when)


def one_error(tmp_path: Path, text: str) -> WorkflowError:
    _, errors = load_file(write(tmp_path, "w.yaml", text))
    assert len(errors) >= 1, errors
    return errors[0]


# ----- loading ---------------------------------------------------------------------------------------------


def test_the_shipped_workflows_all_load_cleanly() -> None:
    workflows, errors = load_workflows(SHIPPED)
    assert errors == []
    expected = {"restart-failed-dag", "kill-runaway-query", "spark-app-triage", "incident-snapshot"}
    assert expected <= set(workflows)
    restart = workflows["restart-failed-dag"]
    assert [s.call for s in restart.steps] == ["airflow.list_dag_runs", "airflow.clear_task_instances"]
    assert restart.steps[1].approval_required
    assert restart.steps[1].result_args == {"run_id"}
    assert restart.params == (Param("dag_id", "string", True, None, (), "Airflow DAG id"),)
    assert (restart.minutes_saved, restart.identity) == (20.0, "user")


def test_each_kind_of_bad_file_is_reported_with_its_line_and_the_good_one_still_loads(tmp_path: Path) -> None:
    write(tmp_path, "a-good.yaml", GOOD)
    write(tmp_path, "syntax.yaml", "name: broken\nsteps:\n  - id: a\n    call: [unclosed\n")
    write(
        tmp_path, "unknown-key.yaml", GOOD.replace("    call: airflow", "    retries: 3\n    call: airflow")
    )
    write(tmp_path, "bad-call.yaml", GOOD.replace("airflow.list_dag_runs", "airflow_list_dag_runs"))
    forward = GOOD.replace("{{ params.dag_id }}", "{{ steps.later.result.x }}") + (
        "  - id: later\n    call: airflow.list_dag_runs\n"
    )
    write(tmp_path, "forward.yaml", forward)
    write(tmp_path, "dup-id.yaml", GOOD + "  - id: runs\n    call: airflow.task_instances\n")
    write(tmp_path, "param-type.yaml", GOOD.replace("type: string", "type: str"))
    long = GOOD.replace("limit: 1}", "limit: 1, note: '" + "x" * (MAX_TEMPLATE_CHARS + 1) + "'}")
    write(tmp_path, "too-long.yaml", long)
    workflows, errors = load_workflows(tmp_path)

    assert list(workflows) == ["good"]
    found = {(Path(e.path).name, e.line) for e in errors}
    assert found == {
        ("syntax.yaml", 5),  # the flow sequence never closes: PyYAML sees it at the end of the file
        ("unknown-key.yaml", 7),
        ("bad-call.yaml", 7),
        ("forward.yaml", 8),
        ("dup-id.yaml", 9),
        ("param-type.yaml", 4),
        ("too-long.yaml", 8),
    }
    reasons = {Path(e.path).name: e.reason for e in errors}
    assert reasons["syntax.yaml"].startswith("YAML:")
    assert "unknown key `retries`" in reasons["unknown-key.yaml"]
    assert "`call` must be `<server short name>.<tool>`" in reasons["bad-call.yaml"]
    assert "reads `steps.later`, a later step" in reasons["forward.yaml"]
    assert "duplicate step id `runs`" in reasons["dup-id.yaml"]
    assert "`type` must be one of string, integer, number, boolean" in reasons["param-type.yaml"]
    assert "longer than 10,000 characters" in reasons["too-long.yaml"]
    assert str(errors[0]) == f"{errors[0].path}:{errors[0].line}: {errors[0].reason}"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (GOOD.replace("{{ params.dag_id }}", "{{ steps.runs.result }}"), 8, "its own result"),
        (GOOD.replace("{{ params.dag_id }}", "{{ steps.nope.result }}"), 8, "no such step"),
        (GOOD.replace("{{ params.dag_id }}", "{{ params.dagid }}"), 8, "there is no param `dagid`"),
        (GOOD.replace("{{ params.dag_id }}", "{{ steps.runs }}"), 8, "as steps.<id>.result"),
        (GOOD.replace("{{ params.dag_id }}", "{% for r in params %}{% endfor %}"), 8, "`for` is not allowed"),
        (GOOD.replace("{{ params.dag_id }}", "{% set x = 1 %}"), 8, "`set` is not allowed"),
        (
            GOOD.replace("{{ params.dag_id }}", "{{ params.dag_id | attr('x') }}"),
            8,
            "`attr` is not an available",
        ),
        (GOOD.replace("{{ params.dag_id }}", "{{ params.dag_id "), 8, "unexpected end of template"),
        (GOOD + "    when: params.nope\n", 9, "there is no param `nope`"),
        (GOOD + "    approval: never\n", 9, "`approval` may only be `required`"),
        (GOOD.replace("limit: 1}", "limit: 1}\n    args: {}"), 9, "duplicate key 'args'"),
        (GOOD.replace("required: true", "required: true, default: x"), 4, "a required param has no default"),
        (
            GOOD.replace("required: true", "choices: [1, 2]"),
            4,
            "`choices` must be a list of at most 100 short string",
        ),
        (GOOD.replace("required: true", "choices: ['" + "x" * 76 + "']"), 4, "`choices` must be a list"),
        (
            GOOD.replace("{type: string, required: true}", "{type: boolean, choices: [true]}"),
            4,
            "`choices` must",
        ),
        (GOOD.replace("name: good", "name: has spaces"), 1, "`name` must be"),
        ("- just\n- a list\n", 1, "must be a mapping"),
        (GOOD.replace("steps:\n", "steps: []\nx:\n"), 5, "`steps` must be a non-empty list"),
    ],
)
def test_a_bad_file_says_where_and_why(tmp_path: Path, text: str, line: int, reason: str) -> None:
    error = one_error(tmp_path, text)
    assert (error.line, reason in error.reason) == (line, True), error


def test_params_of_every_type_load_with_their_settings(tmp_path: Path) -> None:
    params = """\
      dag_id: {type: string, required: true}
      force: {type: boolean, default: false, description: Clear even running tasks}
      tail: {type: integer, default: 50, choices: [50, 100]}
      ratio: {type: number}
    """
    workflow, errors = load_file(
        write(
            tmp_path,
            "w.yaml",
            GOOD.replace(
                "  dag_id: {type: string, required: true}\n", textwrap.indent(textwrap.dedent(params), "  ")
            ),
        )
    )
    assert errors == []
    assert workflow is not None
    assert workflow.params == (
        Param("dag_id", "string", True),
        Param("force", "boolean", False, False, (), "Clear even running tasks"),
        Param("tail", "integer", False, 50, (50, 100)),
        Param("ratio", "number"),
    )


def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path) -> None:
    error = one_error(tmp_path, "name: x\nsteps: " + "[" * 5000 + "]" * 5000 + "\n")
    assert (error.line, error.reason) == (1, "YAML: the file is nested too deeply")
    nested = "{{ " + "(" * 300 + "1" + ")" * 300 + " }}"
    with pytest.raises(RenderError, match="nested too deeply"):
        render_args(step({"a": nested}), {}, {})
    error = one_error(tmp_path, GOOD.replace("{{ params.dag_id }}", nested))
    assert (error.line, error.reason) == (
        8,
        "step `runs`: argument `dag_id`: the template is nested too deeply",
    )


def test_an_alias_bomb_in_args_is_refused_at_load(tmp_path: Path) -> None:
    bomb = (
        "    args:\n"
        "      l1: &a [x, x, x, x, x, x, x, x, x]\n"
        "      l2: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "      l3: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
        "      l4: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    )
    error = one_error(tmp_path, GOOD.replace('    args: {dag_id: "{{ params.dag_id }}", limit: 1}\n', bomb))
    assert (error.line, error.reason) == (8, "step `runs`: `args` has more than 2000 values")


def test_two_files_with_one_name_keep_the_first_and_report_the_second(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yml", GOOD)
    workflows, errors = load_workflows(tmp_path)
    assert Path(workflows["good"].path).name == "a.yaml"
    assert [(Path(e.path).name, e.reason) for e in errors] == [
        ("b.yml", "the name `good` is already used by a.yaml")
    ]


def test_yaml_tags_that_build_objects_are_refused(tmp_path: Path) -> None:
    error = one_error(tmp_path, GOOD.replace("limit: 1", "limit: !!python/object/apply:os.getcwd []"))
    assert error.line == 8
    assert "could not determine a constructor" in error.reason


def test_dates_stay_text_and_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    workflow, _ = load_file(write(tmp_path, "w.yaml", GOOD.replace("limit: 1", "day: 2026-11-25")))
    assert workflow is not None
    assert workflow.steps[0].args["day"] == "2026-11-25"
    assert load_workflows(tmp_path / "nope")[1][0].reason == "the workflows folder does not exist"


# ----- the sandbox -----------------------------------------------------------------------------------------

ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ params.__init__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ params['__class__'] }}",
    "{{ self._TemplateReference__context }}",
    "{{ lipsum.__globals__['os'].environ }}",
    "{{ namespace.__init__.__globals__.os.system('touch ' ~ params.path) }}",
    "{{ range.__self__.open(params.path, 'w') }}",
    "{{ params.path | attr('__class__') }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}{{ os.system('touch ' ~ params.path) }}",
    "{% set x = params.__class__ %}{{ x }}",
    "{{ ''.format.__globals__ }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ 'x' * 10**9 }}",
    "{{ 10 ** 100000 }}",
    "{{ '%0999999999d' % 1 }}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_a_sandbox_escape_fails_safely_at_load_and_at_render(
    tmp_path: Path, template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATOPS_TEST_CANARY", "canary-secret-value")
    canary = tmp_path / "pwned"
    text = GOOD.replace('"{{ params.dag_id }}"', repr(template).replace("\\\\", "\\"))
    _, errors = load_file(write(tmp_path, "w.yaml", text))
    # Calls and sizes are judged while rendering; everything else is already refused at load.
    if not any(s in template for s in ("ljust", "'x' *", "10 **", "% 1")):
        assert [(e.line, e.reason.startswith("step `runs`: argument `dag_id`: ")) for e in errors] == [
            (8, True)
        ]
    with pytest.raises(RenderError) as caught:
        render_args(step({"a": template}), {"path": str(canary)}, {})
    assert "canary-secret-value" not in str(caught.value)
    assert not canary.exists()
    assert os.environ["CHATOPS_TEST_CANARY"] == "canary-secret-value"


def test_refusals_explain_themselves() -> None:
    cases = {
        "{{ params.__init__ }}": "attribute `__init__` is not allowed",
        "{{ cycler }}": "unknown name `cycler`",
        "{{ 'x'.center(9) }}": "calling `center` is not allowed",
        "{{ 'x' * 1000000 }}": "too long",
        "{{ params.missing }}": "has no attribute 'missing'",
    }
    for template, reason in cases.items():
        with pytest.raises(RenderError, match="argument `a`: .*" + reason.replace("(", r"\(")):
            render_args(step({"a": template}), {}, {})


def test_output_and_template_sizes_are_capped() -> None:
    big = "x" * (MAX_OUTPUT_CHARS // 2 + 1)
    with pytest.raises(RenderError, match="longer than 100,000 characters"):
        render_args(step({"a": "{{ steps.r.result }}{{ steps.r.result }}"}), {}, {"r": big})
    with pytest.raises(RenderError, match="longer than 100,000 characters"):
        render_args(step({"a": "{{ steps.r.result ~ steps.r.result }}"}), {}, {"r": big})
    with pytest.raises(RenderError, match="template is longer than 10,000"):
        render_args(step({"a": "{{ 1 }}" + " " * MAX_TEMPLATE_CHARS}), {}, {})


def test_a_lone_expression_keeps_its_native_type_and_text_templates_give_text() -> None:
    results = {"runs": {"runs": [{"run_id": "r1", "try": 2}], "count": 1}}
    args = {
        "n": "{{ params.n }}",
        "flag": "{{ params.flag }}",
        "runs": "{{ steps.runs.result.runs }}",
        "first": "{{ steps.runs.result.runs[0] }}",
        "whole": "{{ steps.runs.result }}",
        "text": "run {{ steps.runs.result.runs[0].run_id }} try {{ steps.runs.result.runs[0].try }}",
        "spaced": " {{ params.n }}",
        "nested": {"ids": ["{{ steps.runs.result.runs[0].run_id }}", "{{ params.n + 1 }}"], "fixed": 3},
        "absent": "{{ params.optional }}",
        "literal": "state: failed",
        "split": "{{ params.csv.split(',') }}",
        "mapped": "{{ steps.runs.result.runs | map(attribute='run_id') | join(', ') }}",
    }
    params = {"n": 5, "flag": False, "optional": None, "csv": "a,b"}
    assert render_args(step(args), params, results) == {
        "n": 5,
        "flag": False,
        "runs": [{"run_id": "r1", "try": 2}],
        "first": {"run_id": "r1", "try": 2},
        "whole": results["runs"],
        "text": "run r1 try 2",
        "spaced": " 5",
        "nested": {"ids": ["r1", 6], "fixed": 3},
        "literal": "state: failed",
        "split": ["a", "b"],
        "mapped": "r1",
    }


def test_a_rendered_value_is_data_and_never_rendered_again() -> None:
    sneaky = "{{ ''.__class__ }}{{ 7 * 7 }}"
    args = render_args(step({"a": "{{ params.x }}", "b": "x={{ params.x }}"}), {"x": sneaky}, {})
    assert args == {"a": sneaky, "b": f"x={sneaky}"}


def test_when_is_an_expression_over_params_and_earlier_results() -> None:
    results = {"runs": {"runs": []}}
    assert render_when(step({}), {}, results) is True
    assert render_when(step({}, "steps.runs.result.runs | length > 0"), {}, results) is False
    assert render_when(step({}, "params.force or steps.runs.result.runs"), {"force": True}, results) is True
    with pytest.raises(RenderError, match="`when`: .*has no attribute 'nope'"):
        render_when(step({}, "steps.runs.result.nope"), {}, results)


def test_when_false_in_yaml_and_a_braced_when_both_load(tmp_path: Path) -> None:
    text = GOOD + "    when: false\n"
    workflow, errors = load_file(write(tmp_path, "a.yaml", text))
    assert errors == []
    assert workflow is not None
    assert workflow.steps[0].when == "false"
    braced = GOOD + "    when: \"{{ -1 < 0 and params.dag_id != 'x' }}\"\n"
    workflow, errors = load_file(write(tmp_path, "b.yaml", braced))
    assert errors == []
    assert workflow is not None
    assert render_when(workflow.steps[0], {"dag_id": "y"}, {}) is True


# ----- parameters and arguments ----------------------------------------------------------------------------

FLOW = Workflow(
    name="w",
    description="d",
    minutes_saved=1,
    identity="user",
    params=(
        Param("query_id", "string", required=True),
        Param("tail", "integer", default=50),
        Param("ratio", "number"),
        Param("force", "boolean", default=False),
        Param("env", "string", choices=("prod", "staging"), default="prod"),
        Param("limit", "integer", choices=(5, 10)),
    ),
    steps=(),
    path="w.yaml",
)


def test_params_are_typed_with_defaults_applied() -> None:
    raw = {"query_id": " q1 ", "ratio": "0.5", "force": "Yes", "limit": "10"}
    values, errors = coerce_params(FLOW, raw)
    assert errors == {}
    assert values == {"query_id": "q1", "tail": 50, "ratio": 0.5, "force": True, "env": "prod", "limit": 10}
    assert coerce_params(FLOW, {"query_id": "q", "ratio": "3"})[0]["ratio"] == 3


def test_param_problems_are_reported_per_param() -> None:
    raw = {"tail": "1.5", "ratio": "nan", "force": "maybe", "env": "dev", "limit": "7", "extra": "1"}
    _values, errors = coerce_params(FLOW, raw)
    assert errors == {
        "query_id": "required",
        "tail": "must be a whole number",
        "ratio": "must be a number",
        "force": "must be true or false",
        "env": "must be one of: prod, staging",
        "limit": "must be one of: 5, 10",
        "extra": "unknown parameter; w takes: query_id, tail, ratio, force, env, limit",
    }
    assert coerce_params(FLOW, {"query_id": "x" * 3001})[1] == {"query_id": "must be at most 3000 characters"}


def test_arguments_are_checked_against_the_schema_naming_the_path() -> None:
    schema = {
        "type": "object",
        "properties": {
            "dag_id": {"type": "string"},
            "limit": {"type": "integer"},
            "task_ids": {"type": "array", "items": {"type": "string"}},
            "when": {"type": "string", "format": "date-time"},
        },
        "required": ["dag_id"],
        "additionalProperties": False,
    }
    assert validate_args({"dag_id": "d", "limit": 1, "when": "not a date"}, schema) == []
    problems = validate_args({"limit": "ten", "task_ids": ["a", 2], "nope": 1}, schema)
    assert problems == [
        "'dag_id' is a required property",
        "Additional properties are not allowed ('nope' was unexpected)",
        "argument `limit`: 'ten' is not of type 'integer'",
        "argument `task_ids[1]`: 2 is not of type 'string'",
    ]
    assert validate_args({"dag_id": "d"}, schema, pending=frozenset()) == []
    assert validate_args({}, schema, pending=frozenset({"dag_id"})) == []
    assert validate_args({"limit": "x"}, schema, pending=frozenset({"task_ids"})) == [
        "'dag_id' is a required property",  # only arguments still to be rendered are excused
        "argument `limit`: 'x' is not of type 'integer'",
    ]
    assert validate_args({}, {"type": "nope"})[0].startswith("the tool's input schema is invalid")
    remote = {"$ref": "https://example.com/schema.json"}
    assert "does not contain" in validate_args({}, remote)[0]
