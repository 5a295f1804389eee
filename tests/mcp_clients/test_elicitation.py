"""A server's form comes back with its defaults where the person gave nothing; only defaults that fit."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_clients.elicitation import schema_defaults, with_defaults

FORM = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "default": "John Doe"},
        "age": {"type": "integer", "default": 30},
        "score": {"type": "number", "default": 95.5},
        "status": {"type": "string", "enum": ["active", "inactive"], "default": "active"},
        "verified": {"type": "boolean", "default": True},
        "tags": {"type": "array", "items": {"type": "string"}, "default": ["a", "b"]},
        "note": {"type": "string"},
    },
}


def test_every_fitting_default_is_filled_in() -> None:
    assert with_defaults(FORM, {}) == {
        "name": "John Doe",
        "age": 30,
        "score": 95.5,
        "status": "active",
        "verified": True,
        "tags": ["a", "b"],
    }


def test_what_the_person_answered_wins_over_a_default() -> None:
    answer = with_defaults(FORM, {"name": "Sam", "verified": False, "note": "on call"})
    assert answer["name"] == "Sam"
    assert answer["verified"] is False
    assert answer["note"] == "on call"
    assert answer["age"] == 30


@pytest.mark.parametrize(
    "field",
    [
        {"type": "integer", "default": True},  # a bool is not an integer here
        {"type": "integer", "default": 2.5},
        {"type": "number", "default": "3"},
        {"type": "boolean", "default": "yes"},
        {"type": "string", "default": 7},
        {"type": "string", "enum": ["a", "b"], "default": "c"},
        {"type": "array", "default": [1, 2]},
        {"type": "object", "default": {"x": 1}},  # outside the form subset
        {"default": {"x": 1}},
    ],
)
def test_a_default_that_does_not_fit_its_field_is_left_out(field: dict[str, Any]) -> None:
    assert schema_defaults({"type": "object", "properties": {"f": field}}) == {}


@pytest.mark.parametrize(
    "schema", [None, 5, "form", [], {"properties": None}, {"properties": []}, {"properties": {"f": 3}}]
)
def test_a_malformed_schema_gives_no_defaults_and_does_not_raise(schema: Any) -> None:
    assert with_defaults(schema, {"kept": "yes"}) == {"kept": "yes"}


def test_the_default_list_is_a_copy() -> None:
    form = {"properties": {"tags": {"type": "array", "default": ["x"]}}}
    answer = with_defaults(form, None)
    answer["tags"].append("y")  # type: ignore[union-attr]
    assert form["properties"]["tags"]["default"] == ["x"]
