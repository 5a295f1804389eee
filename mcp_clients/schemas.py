"""A tool's input schema as the Messages API accepts it, or why the tool cannot be offered (SPEC §6).

The API takes `input_schema` as a JSON Schema object whose top level is `"type": "object"` with an object
of `properties` and a list of `required` names, and refuses `anyOf`/`oneOf`/`allOf` at that top level (one
such tool fails every model request of everyone shown it). MCP servers write all of these. So:

- a top-level combinator is folded into one object: every alternative's properties side by side (a
  property two alternatives type differently becomes `anyOf` of both, which is allowed below the top),
  required what every alternative requires (`allOf`: what any requires), and the alternatives named in a
  note the description carries. The model writes exactly the arguments the server receives: nothing is
  wrapped, so nothing is unwrapped, and the approval card shows and its digest binds what is sent. The
  server still checks its own schema, and says so when a call picks no alternative.
- a schema that is not an object, has a top-level type other than object, malformed `properties` or
  `required`, is no valid JSON Schema, or is larger than `MAX_SCHEMA_BYTES` is a reason to withhold the
  tool (with that reason), never something sent to the model.
- a description longer than `MAX_DESCRIPTION_CHARS` is cut, saying so. The API documents no limit; this
  one bounds what each listed tool costs every request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator, SchemaError  # type: ignore[import-untyped]
from jsonschema.validators import validator_for  # type: ignore[import-untyped]

__all__ = ["MAX_DESCRIPTION_CHARS", "MAX_SCHEMA_BYTES", "capped_description", "model_schema"]

MAX_SCHEMA_BYTES = 32 * 1024
MAX_DESCRIPTION_CHARS = 4096
_COMBINATORS = ("allOf", "anyOf", "oneOf")
_LOCAL_DEFS = ("#/$defs/", "#/definitions/")


def capped_description(text: str) -> str:
    if len(text) <= MAX_DESCRIPTION_CHARS:
        return text
    note = f" [description cut at {MAX_DESCRIPTION_CHARS} of {len(text)} characters]"
    return text[: MAX_DESCRIPTION_CHARS - len(note)] + note


def model_schema(schema: Any) -> tuple[dict[str, Any], str] | str:
    """(the schema to show the model, a note for the description or "") or why it cannot be shown."""
    if schema is None:
        return {"type": "object", "properties": {}}, ""
    if not isinstance(schema, Mapping):
        return f"its input schema is {type(schema).__name__}, not an object"
    try:
        size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return "its input schema is not JSON"
    if size > MAX_SCHEMA_BYTES:
        most = MAX_SCHEMA_BYTES // 1024
        return f"its input schema is {size // 1024} KiB, more than the {most} KiB sent to the model"
    kind = schema.get("type", "object")
    if kind != "object":
        return f"its input schema's top-level type is {json.dumps(kind)[:40]}, not object"
    folded = _folded(schema)
    if isinstance(folded, str):
        return folded
    shown, note = folded
    if not isinstance(shown.get("properties", {}), Mapping):
        return "its input schema's properties is not an object"
    required = shown.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        return "its input schema's required is not a list of names"
    try:
        validator_for(shown, default=Draft202012Validator).check_schema(shown)
    except SchemaError as exc:
        return f"its input schema is not valid JSON Schema ({exc.message[:200]})"
    except RecursionError:
        return "its input schema nests too deeply"
    return shown, note


def _folded(schema: Mapping[str, Any]) -> tuple[dict[str, Any], str] | str:
    """`schema` without top-level combinators (see the module docstring), and a note saying what they were."""
    shown = {k: v for k, v in schema.items() if k not in _COMBINATORS}
    shown["type"] = "object"
    if not any(k in schema for k in _COMBINATORS):
        return shown, ""
    own = shown.get("properties", {})
    if not isinstance(own, Mapping):
        return "its input schema's properties is not an object"
    properties = dict(own)
    if not isinstance(shown.get("required", []), list):
        return "its input schema's required is not a list of names"
    required = sorted(_names(shown.get("required")))
    notes = []
    for kind in _COMBINATORS:
        if kind not in schema:
            continue
        branches = schema[kind]
        if not isinstance(branches, list) or not all(isinstance(b, Mapping) for b in branches):
            return f"its input schema's {kind} is not a list of schemas"
        objects = [b for b in (_resolved(b, schema) for b in branches) if b.get("type", "object") == "object"]
        for branch in objects:
            theirs = branch.get("properties")
            for name, sub in theirs.items() if isinstance(theirs, Mapping) else ():
                properties[name] = sub if name not in properties else _either(properties[name], sub)
        needs = [_names(b.get("required")) for b in objects]
        together = set().union(*needs) if kind == "allOf" else set.intersection(*needs) if needs else set()
        required += sorted(together - set(required))
        if kind != "allOf" and len(needs) > 1:
            options = " | ".join("(" + (", ".join(sorted(n)) or "nothing required") + ")" for n in needs)
            notes.append(
                f"pass the arguments of {'exactly one' if kind == 'oneOf' else 'at least one'} of: {options}"
            )
    shown["properties"] = properties
    if required:
        shown["required"] = required
    note = "; ".join(notes)
    return shown, f"[Arguments: {note}.]" if note else ""


def _resolved(branch: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """A branch that is a local `$ref` into `$defs`/`definitions`, looked up (one level)."""
    ref = branch.get("$ref")
    if not isinstance(ref, str) or not ref.startswith(_LOCAL_DEFS):
        return branch
    section, _, name = ref[2:].partition("/")
    defs = root.get(section)
    target = defs.get(name) if isinstance(defs, Mapping) else None
    if not isinstance(target, Mapping):
        return branch
    return {**target, **{k: v for k, v in branch.items() if k != "$ref"}}


def _names(required: Any) -> set[str]:
    return {r for r in required if isinstance(r, str)} if isinstance(required, list) else set()


def _either(first: Any, second: Any) -> Any:
    return first if first == second else {"anyOf": [first, second]}
