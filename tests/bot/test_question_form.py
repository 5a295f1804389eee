"""A server's requested schema as a Slack form, and the submitted form read back (bot/question_form.py).

The form shows what the schema asks (types, defaults, required marks, choices with their titles) within
Slack's limits; a schema outside the form subset, or too big for a modal, is refused with a reason a person
can read; the answer comes back typed as the schema says, keyed by the schema's names.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.question_form import FIELD_ACTION, MAX_OPTIONS, Field, form_blocks, form_fields, read_answer

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {
            "type": "string",
            "title": "Reason",
            "description": "For the change log",
            "maxLength": 200,
        },
        "minutes": {"type": "integer", "default": 30, "minimum": 5, "maximum": 240},
        "ratio": {"type": "number"},
        "notify": {"type": "boolean", "default": True},
        "severity": {
            "type": "string",
            "enum": ["low", "high"],
            "enumNames": ["Low", "High"],
            "default": "high",
        },
        "region": {
            "type": "string",
            "oneOf": [{"const": "eu", "title": "Europe"}, {"const": "us", "title": "US"}],
        },
        "teams": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}, "default": ["b"]},
    },
    "required": ["reason", "minutes"],
}


def fields_of(schema: Any) -> list[Field]:
    fields = form_fields(schema)
    assert not isinstance(fields, str), fields
    return fields


def blocks_by_label(schema: Any) -> dict[str, dict[str, Any]]:
    return {b["label"]["text"]: b for b in form_blocks(fields_of(schema))}


def test_each_supported_type_becomes_its_input_with_default_and_required_mark() -> None:
    blocks = blocks_by_label(SCHEMA)
    reason = blocks["Reason"]
    assert (reason["optional"], reason["element"]["type"]) == (False, "plain_text_input")
    assert reason["element"]["max_length"] == 200
    assert reason["hint"]["text"] == "For the change log"
    minutes = blocks["minutes"]["element"]
    assert (minutes["type"], minutes["is_decimal_allowed"], minutes["initial_value"]) == (
        "number_input",
        False,
        "30",
    )
    assert (minutes["min_value"], minutes["max_value"]) == ("5", "240")
    assert blocks["minutes"]["optional"] is False
    assert blocks["ratio"]["element"]["is_decimal_allowed"] is True
    assert blocks["ratio"]["optional"] is True
    notify = blocks["notify"]["element"]
    assert notify["type"] == "checkboxes"
    assert notify["initial_options"] == notify["options"]  # ticked: its default is true
    severity = blocks["severity"]["element"]
    assert [o["text"]["text"] for o in severity["options"]] == ["Low", "High"]
    assert severity["initial_option"]["text"]["text"] == "High"
    assert [o["text"]["text"] for o in blocks["region"]["element"]["options"]] == ["Europe", "US"]
    teams = blocks["teams"]["element"]
    assert teams["type"] == "multi_static_select"
    assert [o["text"]["text"] for o in teams["initial_options"]] == ["b"]


def test_the_submitted_form_comes_back_typed_and_keyed_by_the_schemas_names() -> None:
    fields = fields_of(SCHEMA)
    ids = {f.name: f.block_id for f in fields}

    def state(**by_name: dict[str, Any]) -> dict[str, Any]:
        return {ids[name]: {FIELD_ACTION: value} for name, value in by_name.items()}

    answer = read_answer(
        fields,
        state(
            reason={"type": "plain_text_input", "value": "kernel patch"},
            minutes={"type": "number_input", "value": "45"},
            ratio={"type": "number_input", "value": "0.5"},
            notify={"type": "checkboxes", "selected_options": []},
            severity={"type": "static_select", "selected_option": {"value": "0"}},
            region={"type": "static_select", "selected_option": None},
            teams={"type": "multi_static_select", "selected_options": [{"value": "0"}, {"value": "2"}]},
        ),
    )
    assert answer == {
        "reason": "kernel patch",
        "minutes": 45,
        "ratio": 0.5,
        "notify": False,
        "severity": "low",
        "teams": ["a", "c"],
    }  # region left empty: left out, so the server's default (if any) applies


@pytest.mark.parametrize(
    ("minutes", "why"),
    [("", "minutes: an answer is required"), ("4", "minutes: out of range"), ("4.5", "whole number")],
)
def test_a_submission_that_does_not_fit_the_schema_says_what_is_wrong(minutes: str, why: str) -> None:
    fields = fields_of(SCHEMA)
    ids = {f.name: f.block_id for f in fields}
    values = {
        ids["reason"]: {FIELD_ACTION: {"value": "x"}},
        ids["minutes"]: {FIELD_ACTION: {"value": minutes}},
    }
    answer = read_answer(fields, values)
    assert isinstance(answer, str)
    assert why in answer


def test_a_choice_index_that_the_form_never_offered_is_refused() -> None:
    fields = fields_of({"type": "object", "properties": {"s": {"type": "string", "enum": ["a"]}}})
    answer = read_answer(fields, {fields[0].block_id: {FIELD_ACTION: {"selected_option": {"value": "7"}}}})
    assert answer == "s: not one of the choices"


HUGE_ENUM = {"type": "string", "enum": [f"v{i}" for i in range(MAX_OPTIONS + 1)]}


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ({"type": "object", "properties": {"where": {"type": "object", "properties": {}}}}, "nested object"),
        (
            {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}},
            "free values",
        ),
        ({"type": "object", "properties": {"x": {"description": "no type"}}}, "has type None"),
        ({"type": "object", "properties": {"x": {"type": ["string", "null"]}}}, "cannot ask for"),
        ({"type": "object", "properties": {"big": HUGE_ENUM}}, f"{MAX_OPTIONS + 1} choices"),
        ({"type": "object", "properties": {"n": {"type": "string", "enum": [1, 2]}}}, "not text"),
        ({"type": "object", "properties": {"n": {"type": "string", "enum": []}}}, "no choices"),
        ({"type": "object", "properties": {"n": {"type": "string", "oneOf": "x"}}}, "malformed choices"),
        ({"type": "object", "properties": {f"f{i}": {"type": "string"} for i in range(60)}}, "60 fields"),
        ({"type": "object", "properties": {"x": 5}}, "malformed"),
        ({"type": "object", "properties": [1]}, "malformed"),
        ({"type": "string"}, "not an object"),
        ("a form", "not an object"),
        (None, "not an object"),
    ],
)
def test_a_schema_a_slack_form_cannot_ask_is_refused_with_the_reason(schema: Any, why: str) -> None:
    refused = form_fields(schema)
    assert isinstance(refused, str)
    assert why in refused


def test_long_titles_and_hostile_names_stay_inside_slacks_limits_and_never_become_ids() -> None:
    name = "<!channel> " + "x" * 5000
    schema = {
        "type": "object",
        "properties": {
            name: {"type": "string", "title": "T" * 5000, "description": "D" * 5000, "default": "v" * 9000},
            "pick": {"type": "string", "enum": ["a" * 500], "enumNames": ["N" * 500]},
        },
    }
    fields = fields_of(schema)
    blocks = form_blocks(fields)
    assert [b["block_id"] for b in blocks] == ["field-0", "field-1"]
    assert len(blocks[0]["label"]["text"]) <= 150
    assert len(blocks[0]["hint"]["text"]) <= 300
    assert len(blocks[0]["element"]["initial_value"]) <= 3000
    option = blocks[1]["element"]["options"][0]
    assert (len(option["text"]["text"]), option["value"]) == (75, "0")
    assert "<!channel>" not in json.dumps([b["block_id"] for b in blocks])
    answer = read_answer(fields, {"field-1": {FIELD_ACTION: {"selected_option": {"value": "0"}}}})
    assert answer == {"pick": "a" * 500}  # the real value, however long, from the schema kept on our side


def test_a_default_that_does_not_fit_its_field_is_not_shown() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "default": "many"},
            "s": {"type": "string", "enum": ["a", "b"], "default": "z"},
        },
    }
    blocks = form_blocks(fields_of(schema))
    assert "initial_value" not in blocks[0]["element"]
    assert "initial_option" not in blocks[1]["element"]


def test_a_multiple_choice_keeps_to_its_counts() -> None:
    schema = {
        "type": "object",
        "properties": {
            "fish": {
                "type": "array",
                "minItems": 1,
                "maxItems": 2,
                "items": {"type": "string", "enum": ["a", "b", "c"]},
            }
        },
    }
    fields = fields_of(schema)
    (block,) = form_blocks(fields)
    assert block["element"]["max_selected_items"] == 2
    three = {"selected_options": [{"value": "0"}, {"value": "1"}, {"value": "2"}]}
    answer = read_answer(fields, {fields[0].block_id: {FIELD_ACTION: three}})
    assert answer == "fish: choose between 1 and 2"
    two = {"selected_options": [{"value": "0"}, {"value": "2"}]}
    assert read_answer(fields, {fields[0].block_id: {FIELD_ACTION: two}}) == {"fish": ["a", "c"]}
