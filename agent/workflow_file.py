"""A workflow file (SPEC §8): the model, and the loader that checks a file whole before anything runs.

Each file is read with a SafeLoader that records lines, and checked against the workflow schema: unknown
keys are errors, calls are "<server short name>.<tool>", step ids are unique identifiers, `approval` may
only add approval, and every template must compile in the sandbox (`agent.workflow_templates`) and read
only `params.<declared param>` and `steps.<earlier step>.result`. A bad file becomes `WorkflowError`s
(file, line, reason) and never stops the other files from loading.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from agent.workflow_templates import MAX_TEMPLATE_CHARS, RenderError, compile_template, is_template

__all__ = ["Param", "ParamType", "Step", "Workflow", "WorkflowError", "fits", "load_file", "load_workflows"]

ParamType = Literal["string", "integer", "number", "boolean"]
MAX_FILE_BYTES = 256_000
MAX_PARAMS = 40  # a Slack modal holds 100 blocks: an input and an error line per param, plus the header
MAX_ARG_NODES = 2000

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_CALL = re.compile(r"(?P<short>[A-Za-z0-9][A-Za-z0-9._-]*?)\.(?P<tool>[A-Za-z0-9_][A-Za-z0-9_.-]*)")
_BRACED = re.compile(r"\{\{-?\s*(?P<expr>.*?)\s*-?\}\}", re.S)
_TYPES: tuple[ParamType, ...] = ("string", "integer", "number", "boolean")
_TOP_KEYS = {"name", "description", "minutes_saved", "identity", "params", "steps"}
_PARAM_KEYS = {"type", "required", "default", "choices", "description"}
_STEP_KEYS = {"id", "call", "args", "approval", "when"}


@dataclass(frozen=True)
class Param:
    name: str
    type: ParamType
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Step:
    id: str
    call: str  # "<server short name>.<tool>", as written
    server_short: str
    tool: str
    args: Mapping[str, Any]  # the raw template tree; never mutated
    approval_required: bool = False
    when: str | None = None  # a Jinja expression
    line: int = 0
    result_args: frozenset[str] = frozenset()  # top-level args that read earlier results


@dataclass(frozen=True)
class Workflow:
    name: str
    description: str
    minutes_saved: float
    identity: Literal["user", "service"]
    params: tuple[Param, ...]
    steps: tuple[Step, ...]
    path: str


@dataclass(frozen=True)
class WorkflowError:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def fits(kind: ParamType, value: Any) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, int | float)
    return isinstance(value, str)


# ----- loading ---------------------------------------------------------------------------------------------


class _Map(dict[str, Any]):
    """A YAML mapping that remembers the (1-based) line of itself and of each key."""

    line: int = 1
    key_lines: dict[str, int]

    def at(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class _Loader(yaml.SafeLoader):
    """SafeLoader that records lines, refuses duplicate and non-text keys, and keeps dates as text."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_map(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Iterator[_Map]:
    data = _Map()
    data.line, data.key_lines = node.start_mark.line + 1, {}
    yield data  # first, so that aliases to this mapping resolve (as SafeLoader does)
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(None, None, "keys must be text", key_node.start_mark)
        if key in data.key_lines:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        data[key] = loader.construct_object(value_node, deep=True)
        data.key_lines[key] = key_node.start_mark.line + 1


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)


def load_workflows(folder: str | Path) -> tuple[dict[str, Workflow], list[WorkflowError]]:
    """Every `*.yaml`/`*.yml` in `folder` that is valid, by name, and what is wrong with the others."""
    root = Path(folder)
    if not root.is_dir():
        return {}, [WorkflowError(str(root), 0, "the workflows folder does not exist")]
    loaded: dict[str, Workflow] = {}
    errors: list[WorkflowError] = []
    for path in sorted(p for p in root.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()):
        workflow, problems = load_file(path)
        errors.extend(problems)
        if workflow is None:
            continue
        if workflow.name in loaded:
            used = f"the name `{workflow.name}` is already used by {Path(loaded[workflow.name].path).name}"
            errors.append(WorkflowError(str(path), 1, used))
        else:
            loaded[workflow.name] = workflow
    return loaded, errors


def load_file(path: str | Path) -> tuple[Workflow | None, list[WorkflowError]]:
    where = str(path)
    try:
        raw = Path(path).read_bytes()
        if len(raw) > MAX_FILE_BYTES:
            return None, [WorkflowError(where, 1, f"the file is larger than {MAX_FILE_BYTES:,} bytes")]
        loader = _Loader(raw.decode("utf-8"))
        try:
            doc = loader.get_single_data()
        finally:
            loader.dispose()
    except (OSError, UnicodeDecodeError) as exc:
        return None, [WorkflowError(where, 1, f"cannot read the file: {exc}")]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        return None, [WorkflowError(where, mark.line + 1 if mark else 1, f"YAML: {reason}")]
    except yaml.YAMLError as exc:
        return None, [WorkflowError(where, 1, f"YAML: {exc}")]
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        return None, [WorkflowError(where, 1, "YAML: the file is nested too deeply")]
    if not isinstance(doc, _Map):
        return None, [WorkflowError(where, 1, "the file must be a mapping with name, description and steps")]
    return _Parser(where).workflow(doc)


class _Parser:
    """Checks one parsed file against the workflow schema, collecting every problem with its line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[WorkflowError] = []
        self.param_names: set[str] = set()
        self.ids: set[str] = set()  # every step id in the file
        self.step = ""  # the step being checked, and the ids before it
        self.earlier: set[str] = set()

    def error(self, line: int, reason: str) -> None:
        self.errors.append(WorkflowError(self.path, line, reason))

    def unknown_keys(self, node: _Map, allowed: set[str], what: str) -> None:
        for key in node:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                self.error(node.at(key), f"unknown key `{key}` in {what} (allowed: {known})")

    def workflow(self, doc: _Map) -> tuple[Workflow | None, list[WorkflowError]]:
        self.unknown_keys(doc, _TOP_KEYS, "the workflow")
        name, description = doc.get("name"), doc.get("description")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            self.error(doc.at("name"), "`name` must be letters, digits, `-`, `_` or `.` (at most 64)")
        if not isinstance(description, str) or not description.strip():
            self.error(doc.at("description"), "`description` must be a non-empty text")
        minutes = doc.get("minutes_saved", 0)
        if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not 0 <= minutes < 10_000:
            self.error(doc.at("minutes_saved"), "`minutes_saved` must be a number of minutes")
        identity = doc.get("identity", "user")
        if identity not in ("user", "service"):
            self.error(doc.at("identity"), "`identity` must be `user` or `service`")
        params = self.params(doc.get("params") or _Map(), doc.at("params"))
        # Every declared name, even one whose settings are wrong: that is reported once, where it is.
        self.param_names = set(doc["params"]) if isinstance(doc.get("params"), _Map) else set()
        steps = self.steps(doc.get("steps"), doc.at("steps"))
        if self.errors:
            return None, sorted(self.errors, key=lambda e: e.line)
        kind: Literal["user", "service"] = "service" if identity == "service" else "user"
        flow = Workflow(str(name), str(description).strip(), float(minutes), kind, params, steps, self.path)
        return flow, []

    def params(self, node: Any, line: int) -> tuple[Param, ...]:
        if not isinstance(node, _Map):
            self.error(line, "`params` must be a mapping of parameter names to their settings")
            return ()
        if len(node) > MAX_PARAMS:
            self.error(line, f"at most {MAX_PARAMS} params (they must fit one Slack form)")
        found: list[Param] = []
        for name, spec in node.items():
            if not _IDENT.fullmatch(name):
                self.error(node.at(name), f"param `{name}` must be an identifier (letters, digits, `_`)")
            if not isinstance(spec, _Map):
                self.error(node.at(name), f"param `{name}` must be a mapping with at least `type`")
            elif (param := self.param(name, spec)) is not None:
                found.append(param)
        return tuple(found)

    def param(self, name: str, spec: _Map) -> Param | None:
        def bad(key: str, why: str) -> None:
            self.error(spec.at(key), f"param `{name}`: {why}")

        self.unknown_keys(spec, _PARAM_KEYS, f"param `{name}`")
        kind, required, text = spec.get("type"), spec.get("required", False), spec.get("description", "")
        choices, default = spec.get("choices", []), spec.get("default")
        if kind not in _TYPES:
            bad("type", f"`type` must be one of {', '.join(_TYPES)}")
            return None
        if not isinstance(required, bool):
            bad("required", "`required` must be true or false")
        if not isinstance(text, str):
            bad("description", "`description` must be text")
        # 100 options of at most 75 characters: what a Slack select can show.
        listed = isinstance(choices, list) and len(choices) <= 100 and not (kind == "boolean" and choices)
        if not listed or not all(fits(kind, c) and len(str(c)) <= 75 for c in choices):
            bad("choices", f"`choices` must be a list of at most 100 short {kind} values")
            choices = []
        if default is not None and (not fits(kind, default) or (choices and default not in choices)):
            bad("default", f"`default` must be a {kind} (among the choices)")
        if default is not None and required is True:
            bad("default", "a required param has no default")
        return Param(name, kind, required is True, default, tuple(choices), str(text))

    def steps(self, node: Any, line: int) -> tuple[Step, ...]:
        if not isinstance(node, list) or not node:
            self.error(line, "`steps` must be a non-empty list")
            return ()
        order = [str(s.get("id")) for s in node if isinstance(s, _Map)]
        self.ids = set(order)
        found: list[Step] = []
        for index, spec in enumerate(s for s in node if isinstance(s, _Map)):
            self.unknown_keys(spec, _STEP_KEYS, "a step")
            sid, call, args = spec.get("id"), spec.get("call"), spec.get("args", _Map())
            if not isinstance(sid, str) or not _IDENT.fullmatch(sid):
                self.error(spec.at("id"), "step `id` must be an identifier (letters, digits, `_`)")
                continue
            if sid in order[:index]:
                self.error(spec.at("id"), f"duplicate step id `{sid}`")
                continue
            self.step, self.earlier = sid, set(order[:index])
            match = _CALL.fullmatch(call) if isinstance(call, str) else None
            if match is None:
                self.error(spec.at("call"), f"step `{sid}`: `call` must be `<server short name>.<tool>`")
            if spec.get("approval", "required") != "required":
                self.error(spec.at("approval"), f"step `{sid}`: `approval` may only be `required`")
            if not isinstance(args, _Map):
                self.error(spec.at("args"), f"step `{sid}`: `args` must be a mapping")
                args = _Map()
            result_args = self.templates(args, spec.at("args"))
            when = self.when(spec.get("when"), spec.at("when"))
            short, tool = (match["short"], match["tool"]) if match else ("", "")
            required = spec.get("approval") == "required"
            found.append(Step(sid, str(call), short, tool, args, required, when, spec.line, result_args))
        if len(order) < len(node):
            self.error(line, "each step must be a mapping with `id` and `call`")
        return tuple(found)

    def when(self, when: Any, line: int) -> str | None:
        if when is None or isinstance(when, bool):
            return None if when is None else str(when).lower()
        if not isinstance(when, str) or not when.strip():
            self.error(line, f"step `{self.step}`: `when` must be an expression")
            return None
        braced = _BRACED.fullmatch(when.strip())
        expr = braced["expr"] if braced and "{{" not in braced["expr"] else when.strip()  # "{{ x }}" means x
        self.check("`when`", expr, line, expression=True)
        return expr

    def templates(self, args: _Map, line: int) -> frozenset[str]:
        """Check every template in `args`; return the top-level args that read earlier results."""
        result_args: set[str] = set()
        stack: list[tuple[str, str, Any, int]] = [(k, k, v, args.at(k)) for k, v in args.items()]
        seen = 0
        while stack:
            seen += 1
            if seen > MAX_ARG_NODES:  # also ends YAML alias bombs and recursive aliases
                self.error(line, f"step `{self.step}`: `args` has more than {MAX_ARG_NODES} values")
                break
            top, path, value, at = stack.pop()
            if isinstance(value, _Map):
                stack.extend((top, f"{path}.{k}", v, value.at(k)) for k, v in value.items())
            elif isinstance(value, list):
                stack.extend((top, f"{path}[{i}]", v, at) for i, v in enumerate(value))
            elif isinstance(value, str) and (len(value) > MAX_TEMPLATE_CHARS or is_template(value)):
                reads_results = self.check(f"argument `{path}`", value, at)
                if reads_results:
                    result_args.add(top)
        return frozenset(result_args)

    def check(self, what: str, source: str, line: int, *, expression: bool = False) -> bool:
        """Report what is wrong with one template; True when it reads an earlier step's result."""
        prefix = f"step `{self.step}`: {what}"
        try:
            compiled = compile_template(source, expression)
        except RenderError as exc:
            self.error(line, f"{prefix}: {exc}")
            return False
        for name in sorted(compiled.params - self.param_names):
            self.error(line, f"{prefix}: there is no param `{name}`")
        for ref in sorted(compiled.steps - self.earlier):
            if ref == self.step:
                why = "its own result"
            else:
                why = "a later step" if ref in self.ids else "no such step"
            self.error(line, f"{prefix} reads `steps.{ref}`, {why}: only earlier steps can be used")
        return bool(compiled.steps)
