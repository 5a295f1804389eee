"""The sandbox for workflow templates: checking, compiling and rendering them (pure, no I/O).

Templates run in Jinja2's ImmutableSandboxedEnvironment with StrictUndefined, and more is taken away:
no globals (no range, lipsum, cycler, namespace), an allowlist of filters and of read-only methods on data,
only `{{ }}` and `{% if %}` (no set, for, macro, include or import: loops and assignments are how a short
template builds a huge value), no `_`-prefixed attributes, and only the names `params` and
`steps.<id>.result`. Sizes are capped: 10 kB of template, 100 kB of output, and the `*`, `**`, `%`, `+`
operators and `join` are checked before they build anything big. A rendered value is data and is never
rendered again.

Errors: `RenderError` (a ValueError) for anything a template may not do or could not do.
"""

from __future__ import annotations

import functools
import json
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined, nodes, pass_eval_context
from jinja2.environment import Template, TemplateExpression
from jinja2.exceptions import SecurityError
from jinja2.filters import do_join
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "MAX_OUTPUT_CHARS",
    "MAX_TEMPLATE_CHARS",
    "Compiled",
    "RenderError",
    "compile_template",
    "evaluate",
    "is_template",
    "render_tree",
    "scope",
]

MAX_TEMPLATE_CHARS = 10_000
MAX_OUTPUT_CHARS = 100_000
MAX_REFS = 50  # names per template: bounds what `~` (which cannot be intercepted) builds from large values


class RenderError(ValueError):
    """A template may not do this, or could not: an undefined value, a refusal of the sandbox, a cap."""


# Read-only methods on data; the rest (format, ljust, center, zfill, ...) can build huge values or worse.
# fmt: off
# One line per group reads better than the formatter's one name per line.
_METHODS: dict[type, frozenset[str]] = {
    str: frozenset({"lower", "upper", "strip", "lstrip", "rstrip", "split", "rsplit", "splitlines",
                    "startswith", "endswith", "title", "capitalize", "isdigit", "isalpha", "isalnum",
                    "count", "find", "removeprefix", "removesuffix"}),
    dict: frozenset({"get", "keys", "values", "items"}),
    list: frozenset({"index", "count"}),
    tuple: frozenset({"index", "count"}),
}
_FILTERS = frozenset({
    "abs", "capitalize", "default", "d", "dictsort", "first", "float", "int", "last", "length", "count",
    "list", "lower", "upper", "map", "max", "min", "reject", "rejectattr", "select", "selectattr", "sort",
    "string", "sum", "title", "tojson", "trim", "truncate", "unique", "round", "items", "reverse",
    "wordcount",
})
# fmt: on
_ALLOWED_NODES = (
    *(nodes.Template, nodes.Output, nodes.TemplateData, nodes.If, nodes.Name, nodes.Const),
    *(nodes.Getattr, nodes.Getitem, nodes.Slice, nodes.Call, nodes.Filter, nodes.Test, nodes.CondExpr),
    *(nodes.BinExpr, nodes.UnaryExpr, nodes.Compare, nodes.Operand, nodes.Concat, nodes.Tuple),
    *(nodes.List, nodes.Dict, nodes.Pair, nodes.Keyword),
)


_KEYWORDS = {"Assign": "set", "AssignBlock": "set", "CallBlock": "call", "FilterBlock": "filter",
             "FromImport": "from import", "ExprStmt": "do"}  # fmt: skip


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        # Checked before computing: one `'x' * 10**9` or `10 ** 100000` would exhaust the worker.
        if operator == "*" and (isinstance(left, int) or isinstance(right, int)):
            seq, n = (left, right) if isinstance(right, int) else (right, left)
            if isinstance(seq, str | list | tuple) and len(seq) * n > MAX_OUTPUT_CHARS:
                raise SecurityError("the product would be too long")
            if isinstance(seq, int) and seq.bit_length() + n.bit_length() > 4096:
                raise SecurityError("the number would be too large")
        big_power = (
            isinstance(left, int) and isinstance(right, int) and max(left.bit_length(), 2) * right > 4096
        )
        if operator == "**" and big_power:
            raise SecurityError("the power would be too large")
        if operator == "%" and isinstance(left, str):
            raise SecurityError("printf-style formatting is not available; use ~ to join text")
        value = self.binop_table[operator](left, right)
        if isinstance(value, str | list | tuple) and len(value) > MAX_OUTPUT_CHARS:
            raise SecurityError("the result would be too long")
        return value

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        if not self.is_safe_callable(obj):  # the default message shows a repr with a memory address
            raise SecurityError(f"calling `{getattr(obj, '__name__', type(obj).__name__)}` is not allowed")
        return context.call(obj, *args, **kwargs)

    def is_safe_callable(self, obj: Any) -> bool:
        allowed = _METHODS.get(type(getattr(obj, "__self__", None)), frozenset())
        return (
            isinstance(obj, types.BuiltinMethodType)
            and obj.__name__ in allowed
            and super().is_safe_callable(obj)
        )


@pass_eval_context
def _join(ctx: EvalContext, value: Any, d: str = "", attribute: str | int | None = None) -> str:
    items = list(value)
    if len(str(d)) * len(items) > MAX_OUTPUT_CHARS:
        raise SecurityError("the joined text would be too long")
    joined = str(do_join(ctx, items, d, attribute))
    if len(joined) > MAX_OUTPUT_CHARS:
        raise SecurityError("the joined text would be too long")
    return joined


def _environment() -> _Sandbox:
    # Structures inside text read as JSON, not as Python reprs.
    finalize = lambda v: json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v  # noqa: E731
    env = _Sandbox(undefined=StrictUndefined, autoescape=False, finalize=finalize)
    env.globals.clear()
    env.filters = {k: v for k, v in env.filters.items() if k in _FILTERS}
    env.filters["join"] = _join
    return env


_ENV = _environment()


@dataclass(frozen=True)
class Compiled:
    """A checked template and what it reads (`params` names, `steps` ids: for the load-time checks)."""

    expression: TemplateExpression | None  # a lone `{{ x }}` (or an expression): evaluates to a native value
    template: Template | None  # otherwise: renders to text
    params: frozenset[str]
    steps: frozenset[str]


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


@functools.lru_cache(maxsize=1024)
def compile_template(source: str, expression: bool = False) -> Compiled:
    """Check and compile a template (or, with `expression`, one bare Jinja expression such as a `when`)."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise RenderError(f"the template is longer than {MAX_TEMPLATE_CHARS:,} characters")
    try:
        if expression:
            _ENV.compile_expression(source)  # refuses "x }}{{ y" and any other chunk after the expression
            root = _ENV.parse("{{ (" + source + ") }}")
        else:
            root = _ENV.parse(source)
        params, steps = _scan(root)
        first = root.body[0] if len(root.body) == 1 else None
        if isinstance(first, nodes.Output) and len(first.nodes) == 1:
            expr = first.nodes[0]
            if not isinstance(expr, nodes.TemplateData):
                body = nodes.Template([nodes.Assign(nodes.Name("result", "store"), expr)], lineno=1)
                body.set_environment(_ENV)
                return Compiled(TemplateExpression(_ENV.from_string(body), False), None, params, steps)
        return Compiled(None, _ENV.from_string(root), params, steps)
    except TemplateError as exc:
        raise RenderError(exc.message or type(exc).__name__) from None
    except (RecursionError, SyntaxError):  # parser, checker and Python's compiler all recurse on nesting
        raise RenderError("the template is nested too deeply") from None


def _scan(root: nodes.Template) -> tuple[frozenset[str], frozenset[str]]:
    """Refuse all but expressions and `if`; return the params and the steps the template reads."""
    every: list[nodes.Node] = [root, *root.find_all(nodes.Node)]
    parents = {id(child): node for node in every for child in node.iter_child_nodes()}
    params: set[str] = set()
    steps: set[str] = set()
    names = 0
    for node in every:
        if not isinstance(node, _ALLOWED_NODES):
            kind = _KEYWORDS.get(type(node).__name__, type(node).__name__.lower())
            raise RenderError(f"`{kind}` is not allowed: only `{{{{ expression }}}}` and `{{% if %}}`")
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise RenderError(f"attribute `{node.attr}` is not allowed")
        known = _ENV.filters if isinstance(node, nodes.Filter) else _ENV.tests
        if isinstance(node, nodes.Filter | nodes.Test) and node.name not in known:
            raise RenderError(f"`{node.name}` is not an available filter or test")
        if not isinstance(node, nodes.Name):
            continue
        names += 1
        parent = parents.get(id(node))
        key = _key(parent, node)
        if node.name == "params":
            if key is None and parent is not None and _accesses(parent, node):
                raise RenderError("write params.<name> with a fixed name")
            params.update([key] if key else [])
        elif node.name == "steps":
            if key is None or parent is None or _key(parents.get(id(parent)), parent) != "result":
                raise RenderError("refer to an earlier step's result as steps.<id>.result")
            steps.add(key)
        else:
            raise RenderError(f"unknown name `{node.name}`: templates see only `params` and `steps`")
    if names > MAX_REFS:
        raise RenderError(f"the template names params or steps more than {MAX_REFS} times")
    return frozenset(params), frozenset(steps)


def _accesses(parent: nodes.Node, child: nodes.Node) -> bool:
    return isinstance(parent, nodes.Getattr | nodes.Getitem) and parent.node is child


def _key(parent: nodes.Node | None, child: nodes.Node) -> str | None:
    """The fixed key of `child.key` or `child["key"]` when `parent` is that access."""
    if parent is None or not _accesses(parent, child):
        return None
    if isinstance(parent, nodes.Getattr):
        return parent.attr
    arg = parent.arg if isinstance(parent, nodes.Getitem) else None
    return arg.value if isinstance(arg, nodes.Const) and isinstance(arg.value, str) else None


# ----- rendering -------------------------------------------------------------------------------------------

_OMIT = object()  # a lone `{{ x }}` that evaluated to None in a mapping: the key is left out


def scope(params: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    """What templates see: the typed params and each earlier step's result."""
    return {"params": dict(params), "steps": {k: {"result": v} for k, v in results.items()}}


def render_tree(value: Any, names: dict[str, Any], path: str = "") -> Any:
    """Every template leaf of `value` rendered once; a key whose lone `{{ x }}` is None is dropped."""
    if isinstance(value, Mapping):
        out = {str(k): render_tree(v, names, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _OMIT}
    if isinstance(value, list):
        items = [render_tree(v, names, f"{path}[{i}]") for i, v in enumerate(value)]
        return [None if v is _OMIT else v for v in items]
    if isinstance(value, str) and is_template(value):
        try:
            rendered = _render(compile_template(value), names)
        except RenderError as exc:
            raise RenderError(f"argument `{path}`: {exc}") from None
        return _OMIT if rendered is None else rendered
    return value


def evaluate(expression: str, names: dict[str, Any]) -> Any:
    """The native value of one bare expression."""
    return _render(compile_template(expression, True), names)


def _render(compiled: Compiled, names: dict[str, Any]) -> Any:
    try:
        if compiled.expression is not None:
            value = _plain(compiled.expression(**names))
            if len(json.dumps(value, ensure_ascii=False)) > MAX_OUTPUT_CHARS:
                raise RenderError(f"the value is longer than {MAX_OUTPUT_CHARS:,} characters")
            return value
        assert compiled.template is not None
        out: list[str] = []
        size = 0
        for chunk in compiled.template.generate(**names):  # streamed, so the cap stops it early
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise RenderError(f"the text is longer than {MAX_OUTPUT_CHARS:,} characters")
            out.append(chunk)
        return "".join(out)
    except RenderError:
        raise
    # Evaluation raises these for bad data (1/0, 'a' + 1, a missing key); each ends the step, not the worker.
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as exc:
        message = exc.message if isinstance(exc, TemplateError) else str(exc)
        raise RenderError(message or type(exc).__name__) from None


def _plain(value: Any) -> Any:
    """The value as JSON data; an undefined or non-data value (a bound method, say) is an error."""
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined raises its own explanation (or the sandbox's SecurityError) here
        raise RenderError("the value is undefined")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RenderError("the number is not finite")
        return value
    if isinstance(value, str):
        return str(value)  # drops a Markup subclass
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    raise RenderError(f"a {type(value).__name__} is not data")
