"""A server's form question as a Slack modal: its requested JSON schema as Block Kit inputs, and the submitted
state read back as the answer (MCP elicitation, form mode; SPEC §7 "Server questions").

What a form can ask is the spec's own subset: strings, numbers, integers, booleans and enums (single and
multiple choice, plain or titled), each with its default and required mark. Anything else (a nested object,
an array of free values, a field without a type, more fields or choices than a modal can show) is not
asked at all: `form_fields` returns why, and the question is declined with that reason. The schema is the
server's, so untrusted: names and titles never become ids (fields are numbered; choices are indices, mapped
back through the schema kept on our side), long texts are cut to Slack's limits, and nothing here raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from mcp_clients.elicitation import FormValue, schema_defaults  # one rule for which defaults fit

__all__ = ["FIELD_ACTION", "MAX_FIELDS", "MAX_OPTIONS", "Field", "form_blocks", "form_fields", "read_answer"]

JSON = dict[str, Any]
Kind = Literal["text", "number", "integer", "boolean", "select", "multiselect"]

MAX_FIELDS = 25  # input blocks in one modal: Slack allows 100 blocks; a longer form is not a chat question
MAX_OPTIONS = 100  # static_select's limit
LABEL_MAX = 150  # Slack allows 2000; a label is one line
HINT_MAX = 300
OPTION_MAX = 75  # an option's text (Slack)
TEXT_MAX = 3000  # plain_text_input's max_length (Slack)
FIELD_ACTION = "answer"
YES = "yes"


@dataclass(frozen=True)
class Field:
    index: int  # its place in the form: its block id (a server's property name never becomes an id)
    name: str  # the schema's property name: what the answer is keyed by
    kind: Kind
    label: str
    required: bool
    hint: str | None = None
    default: Any = None
    choices: tuple[tuple[str, str], ...] = ()  # (value, what the person sees)
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None  # a string's length, or a multiple choice's count (minItems/maxItems)
    max_length: int | None = None

    @property
    def block_id(self) -> str:
        return f"field-{self.index}"


def _cut(text: str, most: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= most else flat[: most - 1] + "…"


def form_fields(schema: Any) -> list[Field] | str:
    """The fields of `schema` in its order, or why it cannot be asked as a Slack form."""
    if not isinstance(schema, Mapping) or schema.get("type", "object") != "object":
        return "the form is not an object of fields"
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    if not isinstance(properties, Mapping) or not isinstance(required, list):
        return "the form's fields are malformed"
    if len(properties) > MAX_FIELDS:
        return f"the form has {len(properties)} fields; a Slack form here shows at most {MAX_FIELDS}"
    fields: list[Field] = []
    for index, (name, spec) in enumerate(properties.items()):
        field = _field(index, name, spec, name in required)
        if isinstance(field, str):
            return f"field {_cut(str(name), 40)!r} {field}"
        fields.append(field)
    return fields


def _field(index: int, name: Any, spec: Any, required: bool) -> Field | str:
    if not isinstance(name, str) or not isinstance(spec, Mapping):
        return "is malformed"
    kind = spec.get("type")
    title = spec.get("title")
    label = _cut(title if isinstance(title, str) and title.strip() else name, LABEL_MAX) or "(unnamed)"
    description = spec.get("description")
    hint = _cut(description, HINT_MAX) if isinstance(description, str) and description.strip() else None
    base: dict[str, Any] = {"index": index, "name": name, "label": label, "required": required, "hint": hint}
    if kind == "string":
        choices = _choices(spec)
        if isinstance(choices, str):
            return choices
        if choices:
            return _with_default(Field(kind="select", choices=choices, **base), spec)
        lengths = _bounds(spec, "minLength", "maxLength")
        return _with_default(Field(kind="text", min_length=lengths[0], max_length=lengths[1], **base), spec)
    if kind in ("number", "integer"):
        low, high = _bounds(spec, "minimum", "maximum")
        return _with_default(Field(kind=kind, minimum=low, maximum=high, **base), spec)
    if kind == "boolean":
        return _with_default(Field(kind="boolean", **base), spec)
    if kind == "array":
        items = spec.get("items")
        choices = _choices(items) if isinstance(items, Mapping) else "is a list without choices"
        if isinstance(choices, str):
            return choices
        if not choices:
            return "is a list of free values, which a Slack form cannot ask for"
        count = _bounds(spec, "minItems", "maxItems")
        field = Field(kind="multiselect", choices=choices, min_length=count[0], max_length=count[1], **base)
        return _with_default(field, spec)
    if kind == "object":
        return "is a nested object, which a Slack form cannot ask for"
    return f"has type {_cut(repr(kind), 30)}, which a Slack form cannot ask for"


def _choices(spec: Mapping[str, Any]) -> tuple[tuple[str, str], ...] | str:
    """A string field's choices: `enum` (with `enumNames`), or `oneOf`/`anyOf` of `{const, title}`."""
    enum, titled = spec.get("enum"), spec.get("oneOf", spec.get("anyOf"))
    if enum is None and titled is None:
        return ()
    pairs: list[tuple[Any, Any]]
    if enum is not None:
        names = spec.get("enumNames")
        if not isinstance(enum, list):
            return "has malformed choices"
        titles = names if isinstance(names, list) and len(names) == len(enum) else enum
        pairs = list(zip(enum, titles, strict=True))
    elif isinstance(titled, list) and all(isinstance(o, Mapping) for o in titled):
        pairs = [(o.get("const"), o.get("title", o.get("const"))) for o in titled]
    else:
        return "has malformed choices"
    if not pairs:
        return "has no choices"
    if len(pairs) > MAX_OPTIONS:
        return f"has {len(pairs)} choices; a Slack form shows at most {MAX_OPTIONS}"
    if not all(isinstance(v, str) and isinstance(t, str) for v, t in pairs):
        return "has choices that are not text"
    return tuple((v, _cut(t, OPTION_MAX) or "(empty)") for v, t in pairs)


def _bounds(spec: Mapping[str, Any], low: str, high: str) -> tuple[Any, Any]:
    def number(key: str) -> float | None:
        value = spec.get(key)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return value if ok else None

    return number(low), number(high)


def _with_default(field: Field, spec: Mapping[str, Any]) -> Field:
    """`field` with the schema's default, where it fits (a default that does not is left out)."""
    default = schema_defaults({"properties": {field.name: spec}}).get(field.name)
    if field.kind in ("select", "multiselect"):
        values = {v for v, _ in field.choices}
        picked = default if isinstance(default, list) else [default]
        default = [d for d in picked if d in values] or None
    return replace(field, default=default)


# ----- Block Kit --------------------------------------------------------------------------------------------


def _plain(text: str) -> JSON:
    return {"type": "plain_text", "text": text, "emoji": False}


def _option(index: int, field: Field) -> JSON:
    return {"text": _plain(field.choices[index][1]), "value": str(index)}


def _element(field: Field) -> JSON:
    element: JSON = {"action_id": FIELD_ACTION}
    default = field.default
    if field.kind == "text":
        element["type"] = "plain_text_input"
        element["max_length"] = min(int(field.max_length or TEXT_MAX), TEXT_MAX)
        if field.min_length is not None and 0 < field.min_length <= element["max_length"]:
            element["min_length"] = int(field.min_length)
        if isinstance(default, str) and default:
            element["initial_value"] = default[: element["max_length"]]
    elif field.kind in ("number", "integer"):
        element.update(type="number_input", is_decimal_allowed=field.kind == "number")
        for key, bound in (("min_value", field.minimum), ("max_value", field.maximum)):
            if bound is not None:
                element[key] = str(bound)
        if default is not None:
            element["initial_value"] = str(default)
    elif field.kind == "boolean":
        yes = {"text": _plain("Yes"), "value": YES}
        element.update(type="checkboxes", options=[yes])
        if default is True:
            element["initial_options"] = [yes]
    else:
        element["type"] = "static_select" if field.kind == "select" else "multi_static_select"
        element["options"] = [_option(i, field) for i in range(len(field.choices))]
        picked = [i for i, (v, _) in enumerate(field.choices) if default and v in default]
        if picked and field.kind == "select":
            element["initial_option"] = _option(picked[0], field)
        elif picked:
            element["initial_options"] = [_option(i, field) for i in picked]
        if field.kind == "multiselect" and field.max_length is not None and field.max_length >= 1:
            element["max_selected_items"] = int(field.max_length)
    return element


def form_blocks(fields: Sequence[Field]) -> list[JSON]:
    """One input block per field; a boolean is never "required" (unticked is an answer: no)."""
    blocks: list[JSON] = []
    for field in fields:
        block: JSON = {
            "type": "input",
            "block_id": field.block_id,
            "label": _plain(field.label),
            "optional": field.kind == "boolean" or not field.required,
            "element": _element(field),
        }
        if field.hint:
            block["hint"] = _plain(field.hint)
        blocks.append(block)
    return blocks


def read_answer(fields: Sequence[Field], values: Mapping[str, Any]) -> dict[str, FormValue] | str:
    """The submitted modal's state (`view.state.values`) as the answer's content, or what is wrong with it.
    A field left empty is left out (the server's default then applies)."""
    answer: dict[str, FormValue] = {}
    for field in fields:
        state = (values.get(field.block_id) or {}).get(FIELD_ACTION) or {}
        value = _read(field, state)
        if isinstance(value, _Problem):
            return f"{field.label}: {value.why}"
        if value is None and field.required and field.kind != "boolean":
            return f"{field.label}: an answer is required"
        if value is not None:
            answer[field.name] = value
    return answer


@dataclass(frozen=True)
class _Problem:
    why: str


def _read(field: Field, state: Mapping[str, Any]) -> FormValue | _Problem:
    if field.kind == "boolean":  # unticked is "no"; a block missing from the state is no answer at all
        return bool(state.get("selected_options")) if state else None
    if field.kind in ("select", "multiselect"):
        picked = state.get("selected_options") or []
        if field.kind == "select":
            picked = [state["selected_option"]] if state.get("selected_option") else []
        indices = [str((o or {}).get("value", "")) for o in picked]
        if not all(i.isdigit() and int(i) < len(field.choices) for i in indices):
            return _Problem("not one of the choices")
        chosen = [field.choices[int(i)][0] for i in indices]
        if chosen and field.kind == "multiselect" and not _count_fits(field, len(chosen)):
            return _Problem(
                f"choose between {field.min_length or 0} and {field.max_length or 'any number of'}"
            )
        return (chosen[0] if chosen else None) if field.kind == "select" else (chosen or None)
    raw = state.get("value")
    if not isinstance(raw, str) or not raw.strip():
        return None
    if field.kind == "text":
        return raw
    return _number(field, raw.strip())


def _number(field: Field, raw: str) -> FormValue | _Problem:
    try:
        number: int | float = int(raw) if field.kind == "integer" else float(raw)
    except ValueError:
        return _Problem("a whole number is needed" if field.kind == "integer" else "a number is needed")
    if not math.isfinite(number):
        return _Problem("a number is needed")
    if (field.minimum is not None and number < field.minimum) or (
        field.maximum is not None and number > field.maximum
    ):
        return _Problem("out of range")
    return number


def _count_fits(field: Field, count: int) -> bool:
    return (field.min_length is None or count >= field.min_length) and (
        field.max_length is None or count <= field.max_length
    )
