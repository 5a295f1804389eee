"""Canned on-call workflows (SPEC §8): the public model, parameters, rendering and argument checks.

Loading and the model live in `agent.workflow_file`, the template sandbox in `agent.workflow_templates`;
this module is what the runner and the bot use.

Errors: `WorkflowError` (a value, from loading) and `RenderError` (raised while rendering a step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the lock (types-jsonschema)
import referencing.exceptions

from agent.workflow_file import (
    Param,
    ParamType,
    Step,
    Workflow,
    WorkflowError,
    fits,
    load_file,
    load_workflows,
)
from agent.workflow_templates import (
    MAX_OUTPUT_CHARS,
    MAX_TEMPLATE_CHARS,
    RenderError,
    evaluate,
    render_tree,
    scope,
)

__all__ = [
    "MAX_OUTPUT_CHARS",
    "MAX_STRING_PARAM",
    "MAX_TEMPLATE_CHARS",
    "Param",
    "ParamType",
    "RenderError",
    "Step",
    "Workflow",
    "WorkflowError",
    "coerce_params",
    "fits",
    "load_file",
    "load_workflows",
    "render_args",
    "render_when",
    "validate_args",
]

MAX_STRING_PARAM = 3000  # Slack's plain_text_input limit: what the modal can hold can be typed here too


# ----- rendering -------------------------------------------------------------------------------------------


def render_args(step: Step, params: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    """The step's arguments with every template rendered once; a lone `{{ x }}` keeps x's type."""
    rendered = render_tree(step.args, scope(params, results))
    return rendered if isinstance(rendered, dict) else {}


def render_when(step: Step, params: Mapping[str, Any], results: Mapping[str, Any]) -> bool:
    if step.when is None:
        return True
    try:
        return bool(evaluate(step.when, scope(params, results)))
    except RenderError as exc:
        raise RenderError(f"`when`: {exc}") from None


# ----- arguments against the tool's schema -----------------------------------------------------------------


def validate_args(
    args: Mapping[str, Any], input_schema: Mapping[str, Any], *, pending: frozenset[str] = frozenset()
) -> list[str]:
    """Problems of `args` against the tool's input schema (Draft 2020-12, formats not checked).

    `pending` names arguments not rendered yet (they wait on earlier results): only the others are judged.
    """
    try:
        jsonschema.Draft202012Validator.check_schema(input_schema)
        schema = dict(input_schema)
        if pending and isinstance(schema.get("required"), list):
            schema["required"] = [r for r in schema["required"] if r not in pending]
        validator = jsonschema.Draft202012Validator(schema)  # no format_checker: formats are not checked
        errors = sorted(validator.iter_errors(dict(args)), key=lambda e: [str(p) for p in e.absolute_path])
    except jsonschema.SchemaError as exc:
        return [f"the tool's input schema is invalid: {exc.message[:200]}"]
    except referencing.exceptions.Unresolvable as exc:  # remote $refs are never fetched
        return [f"the tool's input schema refers to something it does not contain: {exc}"[:300]]
    messages: list[str] = []
    for error in errors:
        path = list(error.absolute_path)
        if pending and not path and error.validator not in ("required", "additionalProperties", "type"):
            continue  # e.g. an anyOf over the whole object: cannot be judged before every arg exists
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        text = error.message if len(error.message) <= 300 else error.message[:299] + "…"
        messages.append(f"argument `{where}`: {text}" if where else text)
    return messages[:10]


# ----- parameters ------------------------------------------------------------------------------------------

_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0"}


def coerce_params(workflow: Workflow, raw: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Typed values (defaults applied) and an error message per parameter; an empty value counts as absent."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}
    declared = {p.name: p for p in workflow.params}
    for key in raw:
        if key not in declared:
            takes = ", ".join(declared) or "no parameters"
            errors[key] = f"unknown parameter; {workflow.name} takes: {takes}"
    for param in workflow.params:
        text = raw.get(param.name, "").strip()
        if not text:
            if param.required:
                errors[param.name] = "required"
            values[param.name] = param.default
            continue
        value, problem = _typed(param.type, text)
        if problem is None and param.choices and value not in param.choices:
            problem = "must be one of: " + ", ".join(str(c) for c in param.choices)
        if problem is None:
            values[param.name] = value
        else:
            errors[param.name] = problem
    return values, errors


def _typed(kind: ParamType, text: str) -> tuple[Any, str | None]:
    if kind == "boolean":
        lowered = text.lower()
        if lowered in _TRUE or lowered in _FALSE:
            return lowered in _TRUE, None
        return None, "must be true or false"
    if kind == "integer":
        try:
            return int(text), None
        except ValueError:
            return None, "must be a whole number"
    if kind == "number":
        try:
            return int(text), None  # 5 stays an int: JSON Schema's "integer" accepts it then
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        return (number, None) if math.isfinite(number) else (None, "must be a number")
    if len(text) > MAX_STRING_PARAM:
        return None, f"must be at most {MAX_STRING_PARAM} characters"
    return text, None
