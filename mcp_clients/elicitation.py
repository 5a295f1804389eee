"""Answers to a server's form elicitation: the schema's own defaults for what the person left empty.

MCP 2025-11-25 (SEP-1034) lets a form's `requestedSchema` carry a `default` per field, and a client that
declares `elicitation` applies them to fields the answer omits. The requested schema comes from the server,
so it is untrusted: whatever its shape, this never raises, and a default that does not fit its own field
(wrong type, outside its `enum`) is left out rather than sent back as if the person had chosen it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["FormValue", "schema_defaults", "with_defaults"]

FormValue = str | int | float | bool | list[str] | None


def _fits(field: Mapping[str, Any], value: Any) -> bool:
    kind = field.get("type")
    if kind == "string":
        ok = isinstance(value, str)
    elif kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind == "array":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif kind is None:
        ok = isinstance(value, str | int | float | bool)
    else:
        ok = False  # nested objects and unknown types are outside the form subset
    enum = field.get("enum")
    if ok and isinstance(enum, list) and not isinstance(value, list):
        ok = value in enum
    return ok


def schema_defaults(schema: Any) -> dict[str, FormValue]:
    """Each top-level property's `default`, where it fits that property."""
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping):
        return {}
    defaults: dict[str, FormValue] = {}
    for name, field in properties.items():
        if isinstance(name, str) and isinstance(field, Mapping) and "default" in field:
            value = field["default"]
            if _fits(field, value):
                defaults[name] = list(value) if isinstance(value, list) else value
    return defaults


def with_defaults(schema: Any, content: Mapping[str, FormValue] | None) -> dict[str, FormValue]:
    """The person's answer with the schema's defaults filled in where they gave nothing."""
    answer = schema_defaults(schema)
    answer.update(content or {})
    return answer
