"""Tool names the model accepts, unique across servers, and fingerprints of tool definitions.

The Messages API takes tool names matching ^[a-zA-Z0-9_-]{1,64}$. People reading a transcript should see
where a call goes, so a tool is named `<short>__<tool>` (presto__kill_query) whenever that form can be read
back unambiguously: both parts use only those characters, the short name holds no `__` and does not end in
`_`, and the whole fits in 64. Then the first `__` in the name is always the separator, so two different
(short name, tool) pairs can never share a plain name: `a__b` + `c` is folded, `a` + `b__c` stays plain.

Every other pair is folded: a readable slug (runs of `_` squeezed, so it never contains `__` and can never
equal a plain name) and 16 hex digits of sha256 over (server, tool). A pair's name depends on that pair
alone, so the same tool keeps its name from one listing to the next (the listing memo and approvals store
it). The hash is not injective, so `unique_names` checks each session's whole set: a name claimed by two
pairs is given to neither (both are withheld, with the reason). A collision is therefore impossible in what
the model is shown, not merely unlikely, and no pair can take over a name another pair would have had.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.transcript import canonical_json

__all__ = [
    "NAME_PATTERN",
    "ToolKey",
    "canonical_json",
    "fingerprint",
    "model_tool_name",
    "unique_names",
]

MAX_NAME = 64
HASH_HEX = 16  # 64 bits: finding a second tool for a given name is out of reach, not just unlikely
NAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_SAFE = re.compile(r"[a-zA-Z0-9_-]+")
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")
_RUNS = re.compile(r"_{2,}")


@dataclass(frozen=True, order=True)
class ToolKey:
    """One tool of one server, as a session offers it."""

    server: str  # the registry name (io.example/presto)
    short_name: str  # what the model and people read (presto)
    tool: str


def _plain(short_name: str, tool: str) -> str | None:
    name = f"{short_name}__{tool}"
    readable_back = "__" not in short_name and not short_name.endswith("_")
    if readable_back and _SAFE.fullmatch(short_name) and _SAFE.fullmatch(tool) and len(name) <= MAX_NAME:
        return name
    return None


def _slug(text: str) -> str:
    return _RUNS.sub("_", _UNSAFE.sub("-", text)).strip("-") or "x"


def model_tool_name(server: str, short_name: str, tool: str) -> str:
    """The name of one (server, tool) pair, decided by that pair alone. `unique_names` decides a session."""
    plain = _plain(short_name, tool)
    if plain is not None:
        return plain
    digest = hashlib.sha256(json.dumps([server, tool]).encode()).hexdigest()[:HASH_HEX]
    readable = _slug(f"{_slug(short_name)}-{_slug(tool)}")[: MAX_NAME - HASH_HEX - 1].rstrip("_")
    return f"{readable}-{digest}"


def unique_names(keys: Iterable[ToolKey]) -> tuple[dict[ToolKey, str], dict[ToolKey, str]]:
    """(the name of every pair that has one to itself, why each other pair is withheld). Deterministic and
    independent of order; a pair's name is `model_tool_name`'s, or none at all."""
    claims: dict[str, list[ToolKey]] = {}
    for key in set(keys):
        claims.setdefault(model_tool_name(key.server, key.short_name, key.tool), []).append(key)
    named: dict[ToolKey, str] = {}
    clashing: dict[ToolKey, str] = {}
    for name, group in claims.items():
        if len(group) == 1:
            named[group[0]] = name
            continue
        others = sorted(group)
        for key in others:
            rivals = ", ".join(f"{k.tool} on {k.server}" for k in others if k != key)
            clashing[key] = f"its model name {name} would also name {rivals}; neither is offered"
    return named, clashing


def fingerprint(
    name: str, description: str, input_schema: Mapping[str, Any], annotations: Mapping[str, Any]
) -> str:
    """sha256 over everything the model and the approvers rely on; any change means a different tool."""
    body = {
        "name": name,
        "description": description,
        "input_schema": input_schema,
        "annotations": annotations,
    }
    return hashlib.sha256(canonical_json(body, lenient=True).encode()).hexdigest()
