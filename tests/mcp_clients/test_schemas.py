"""Every tool's `input_schema` is one the Messages API accepts, or the tool is withheld with the reason.

The fake Messages API (fixtures/anthropic_tools.py) refuses what the real one documents it refuses; every
schema the bot would send must pass it. A table of hostile schemas pins the folds and the reasons, and a
property test draws schema-shaped documents of any kind.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.anthropic_tools import tools_problem
from mcp_clients.schemas import MAX_DESCRIPTION_CHARS, capped_description, model_schema


def accepted(schema: dict[str, Any], description: str = "d") -> str | None:
    return tools_problem([{"name": "t", "description": description, "input_schema": schema}])


A = {"type": "object", "properties": {"query_id": {"type": "string"}}, "required": ["query_id"]}
B = {
    "type": "object",
    "properties": {"user": {"type": "string"}, "all": {"type": "boolean"}},
    "required": ["user"],
}


def fitted(schema: Any) -> tuple[dict[str, Any], str]:
    result = model_schema(schema)
    assert not isinstance(result, str), result
    assert accepted(result[0]) is None, (accepted(result[0]), result[0])
    return result


def test_a_top_level_any_of_is_folded_into_one_object_the_api_takes() -> None:
    shown, note = fitted({"type": "object", "anyOf": [A, B]})
    assert shown["properties"] == {**A["properties"], **B["properties"]}
    assert "required" not in shown  # neither alternative's requirement binds every call
    assert note == "[Arguments: pass the arguments of at least one of: (query_id) | (user).]"


def test_one_of_with_local_refs_and_a_shared_property_typed_two_ways() -> None:
    schema = {
        "type": "object",
        "properties": {"reason": {"type": "string"}},
        "required": ["reason"],
        "oneOf": [{"$ref": "#/$defs/byId"}, {"$ref": "#/definitions/byName"}],
        "$defs": {"byId": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}},
        "definitions": {"byName": {"properties": {"id": {"type": "string"}, "name": {"type": "string"}}}},
    }
    shown, note = fitted(schema)
    assert shown["properties"]["id"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert shown["required"] == ["reason"]
    assert "exactly one of: (id) | (nothing required)" in note


def test_all_of_requires_what_any_part_requires_and_needs_no_note() -> None:
    shown, note = fitted({"type": "object", "allOf": [A, B]})
    assert shown["required"] == ["query_id", "user"]
    assert note == ""


def test_alternatives_that_only_require_properties_keep_the_properties_and_name_the_choice() -> None:
    schema = {
        "type": "object",
        "properties": {"path": {"type": "string"}, "url": {"type": "string"}},
        "anyOf": [
            {"required": ["path"]},
            {"required": ["url"]},
            {"type": "string"},
        ],  # a string can never match
    }
    shown, note = fitted(schema)
    assert set(shown["properties"]) == {"path", "url"}
    assert "(path) | (url)" in note


def test_a_plain_object_schema_is_sent_as_the_server_wrote_it() -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", **A, "additionalProperties": False}
    assert fitted(schema) == (schema, "")
    assert fitted(None) == ({"type": "object", "properties": {}}, "")


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ("string", "its input schema is str, not an object"),
        ({"type": "string"}, 'top-level type is "string", not object'),
        ({"type": ["object", "null"]}, "not object"),
        ({"type": "object", "properties": 5}, "properties is not an object"),
        ({"type": "object", "required": "id"}, "required is not a list of names"),
        ({"type": "object", "properties": {"a": {"type": 5}}}, "not valid JSON Schema"),
        ({"type": "object", "anyOf": "x"}, "anyOf is not a list of schemas"),
        ({"type": "object", "oneOf": [1, 2]}, "oneOf is not a list of schemas"),
        ({"type": "object", "properties": {f"p{i}": {"description": "x" * 100} for i in range(400)}}, "KiB"),
    ],
)
def test_a_schema_the_api_cannot_take_is_a_reason_never_sent(schema: Any, why: str) -> None:
    result = model_schema(schema)
    assert isinstance(result, str)
    assert why in result


def test_a_long_description_is_cut_saying_so() -> None:
    text = capped_description("y" * 10_000)
    assert len(text) == MAX_DESCRIPTION_CHARS
    assert text.endswith("[description cut at 4096 of 10000 characters]")
    assert capped_description("short") == "short"


leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
any_json = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)
subschemas = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["string", "integer", "object", "array", 5]),
        "properties": st.dictionaries(st.sampled_from(["a", "b", "c"]), any_json, max_size=2),
        "required": st.lists(st.sampled_from(["a", "b", "c", 1]), max_size=2),
        "$ref": st.sampled_from(["#/$defs/x", "#/definitions/y", "#/nowhere", 5]),
    },
)
schemas = st.fixed_dictionaries(
    {"type": st.sampled_from(["object", "object", "object", "string"])},
    optional={
        "properties": st.dictionaries(st.sampled_from(["a", "b"]), subschemas | any_json, max_size=2)
        | any_json,
        "required": st.lists(st.sampled_from(["a", "b"]), max_size=2) | any_json,
        "anyOf": st.lists(subschemas, max_size=3) | any_json,
        "oneOf": st.lists(subschemas, max_size=3),
        "allOf": st.lists(subschemas, max_size=3),
        "$defs": st.fixed_dictionaries({}, optional={"x": subschemas}),
    },
)


@settings(max_examples=500)
@given(schemas | any_json)
def test_any_schema_becomes_one_the_api_takes_or_a_reason(schema: Any) -> None:
    result = model_schema(schema)
    if isinstance(result, str):
        assert result
    else:
        assert accepted(result[0]) is None, (schema, result)
