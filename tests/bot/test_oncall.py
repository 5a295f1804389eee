"""`/oncall`: parsing the command's text, and the list message and parameters form as valid Slack payloads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from agent.workflow import Param, Workflow, coerce_params, load_workflows
from bot.blocks import Message
from bot.oncall import (
    MODAL_CALLBACK_ID,
    OncallCommand,
    help_text,
    list_message,
    params_modal,
    parse_command,
    read_modal_values,
    submission_errors,
)
from fixtures.slack import BLOCKS_TEXT_LIMIT, check_message

SHIPPED = Path(__file__).resolve().parents[2] / "workflows"

FORM = Workflow(
    name="kill-runaway-query",
    description="Kill a <runaway> query & tell people",
    minutes_saved=15,
    identity="user",
    params=(
        Param("query_id", "string", required=True, description="Presto query id"),
        Param("reason", "string", required=True),
        Param("tail", "integer", default=50),
        Param("ratio", "number"),
        Param("force", "boolean", default=False, description="Kill even if it is finishing"),
        Param("env", "string", choices=("prod", "staging"), default="prod"),
    ),
    steps=(),
    path="w.yaml",
)


def assert_valid_message(message: Message) -> None:
    for block in message.blocks:
        parsed = Block.parse(block)
        assert parsed is not None, block
        parsed.validate_json()
    check_message(message.text, message.blocks, None, BLOCKS_TEXT_LIMIT)


def valid_view(payload: dict[str, Any]) -> dict[str, Any]:
    View(**payload).validate_json()  # slack_sdk's own checks, on the payload as it would be sent
    assert payload["callback_id"] == MODAL_CALLBACK_ID
    return payload


def by_block(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in view["blocks"] if "block_id" in b}


# ----- parsing ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", OncallCommand("help")),
        ("  HELP ", OncallCommand("help")),
        ("list", OncallCommand("list")),
        ("status", OncallCommand("status")),
        ("status wf-20261125-0042", OncallCommand("status", run_id="wf-20261125-0042")),
        ("run spark-app-triage", OncallCommand("run", workflow="spark-app-triage")),
        (
            'run kill-runaway-query query_id=20261125_021502_00017_abcde reason="runaway backfill"',
            OncallCommand(
                "run",
                workflow="kill-runaway-query",
                params={"query_id": "20261125_021502_00017_abcde", "reason": "runaway backfill"},
            ),
        ),
        (
            "run w reason='it is stuck' note=a=b empty=",
            OncallCommand("run", "w", {"reason": "it is stuck", "note": "a=b", "empty": ""}),
        ),
        ("run w reason=“smart quotes work”", OncallCommand("run", "w", {"reason": "smart quotes work"})),
        ("run w reason=a&amp;b&lt;c&gt;", OncallCommand("run", "w", {"reason": "a&b<c>"})),
    ],
)
def test_commands_are_parsed_with_shell_quoting(text: str, expected: OncallCommand) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('run w reason="runaway backfill', "No closing quotation"),
        ("run w reason runaway", "`reason` is not `key=value`"),
        ("run w 9x=1", "`9x=1` is not `key=value`"),
        ("run w a=1 a=2", "`a` is given twice"),
        ("run", "Which workflow?"),
        ("run <!channel>", "is not a workflow name"),
        ("lsit", "Did you mean `list`?"),
        ("list everything", "takes nothing after it"),
        ("status a b", "`/oncall status <run-id>`"),
    ],
)
def test_mistakes_become_an_error_that_says_how_to_write_it(text: str, says: str) -> None:
    command = parse_command(text)
    assert command.kind == "error"
    assert says in command.message
    assert "<!channel>" not in command.message


def test_help_names_every_subcommand() -> None:
    text = help_text()
    for usage in (
        "/oncall list",
        "/oncall run <workflow> [key=value ...]",
        "/oncall status [run-id]",
        "/oncall help",
    ):
        assert usage in text


# ----- the list --------------------------------------------------------------------------------------------


def test_the_list_shows_each_workflow_with_how_to_run_it() -> None:
    workflows, _ = load_workflows(SHIPPED)
    message = list_message([FORM, *workflows.values()])
    assert_valid_message(message)
    text = "\n".join(b["text"]["text"] for b in message.blocks)
    assert "&lt;runaway&gt; query &amp; tell people" in text  # descriptions are escaped
    assert "`/oncall run kill-runaway-query query_id=… reason=… [tail=…] [ratio=…] [force=…] [env=…]`" in text
    assert "`/oncall run restart-failed-dag dag_id=…`" in text
    assert "saves ~20 min" in text


def test_a_long_list_says_what_it_does_not_show_and_an_empty_one_says_so() -> None:
    many = [Workflow(f"w{i:02d}", "d", 0, "user", (), (), "p") for i in range(60)]
    message = list_message(many)
    assert_valid_message(message)
    assert len(message.blocks) == 47
    assert message.blocks[-1]["elements"][0]["text"].startswith("…and 15 more: `w45`")
    empty = list_message([])
    assert_valid_message(empty)
    assert "No workflows" in empty.text


# ----- the parameters form ---------------------------------------------------------------------------------


def test_the_form_has_one_typed_input_per_param_prefilled() -> None:
    view = valid_view(
        params_modal(FORM, given={"query_id": "q1", "force": "yes"}, errors={}, private_metadata="run:abc")
    )
    assert (view["submit"]["text"], view["private_metadata"]) == ("Run", "run:abc")
    blocks = by_block(view)
    assert [b["element"]["type"] for k, b in blocks.items() if k.startswith("param_")] == [
        "plain_text_input",
        "plain_text_input",
        "number_input",
        "number_input",
        "checkboxes",
        "static_select",
    ]
    assert blocks["param_query_id"]["element"]["initial_value"] == "q1"
    assert blocks["param_query_id"]["hint"]["text"] == "Presto query id"
    assert blocks["param_query_id"]["optional"] is False
    assert blocks["param_query_id"]["dispatch_action"] is False
    assert "initial_value" not in blocks["param_reason"]["element"]
    assert blocks["param_tail"]["element"] == {
        "type": "number_input",
        "action_id": "value",
        "is_decimal_allowed": False,
        "initial_value": "50",
    }
    assert blocks["param_ratio"]["element"]["is_decimal_allowed"] is True
    assert blocks["param_force"]["element"]["initial_options"][0]["value"] == "true"
    assert blocks["param_force"]["optional"] is True
    assert blocks["param_env"]["element"]["initial_option"]["value"] == "prod"
    assert [o["value"] for o in blocks["param_env"]["element"]["options"]] == ["prod", "staging"]


def test_the_form_shows_each_problem_under_its_field() -> None:
    errors = {"reason": "required", "tail": "must be a whole number", "nope": "unknown parameter"}
    view = valid_view(params_modal(FORM, given={"tail": "ten"}, errors=errors, private_metadata=""))
    ids = [b.get("block_id") for b in view["blocks"]]
    assert ids.index("error_reason") == ids.index("param_reason") + 1
    assert ids.index("error_tail") == ids.index("param_tail") + 1
    assert "error_query_id" not in ids
    assert by_block(view)["error_tail"]["elements"][0]["text"] == ":warning: must be a whole number"
    assert "initial_value" not in by_block(view)["param_tail"]["element"]  # Slack refuses a non-number there
    assert ":warning: `nope`: unknown parameter" in view["blocks"][1]["elements"][0]["text"]
    assert submission_errors(FORM, errors) == {
        "response_action": "errors",
        "errors": {"param_reason": "required", "param_tail": "must be a whole number"},
    }


def test_the_form_for_every_shipped_workflow_is_valid() -> None:
    workflows, _ = load_workflows(SHIPPED)
    for workflow in workflows.values():
        valid_view(params_modal(workflow, given={}, errors={}, private_metadata="x"))


def test_too_much_private_metadata_is_refused_by_slack_sdk() -> None:
    with pytest.raises(SlackObjectFormationError, match="private_metadata"):
        params_modal(FORM, given={}, errors={}, private_metadata="x" * 3001)


def test_submitted_values_read_back_into_typed_params() -> None:
    state = {
        "param_query_id": {"value": {"type": "plain_text_input", "value": "q1"}},
        "param_reason": {"value": {"type": "plain_text_input", "value": "runaway backfill"}},
        "param_tail": {"value": {"type": "number_input", "value": "20"}},
        "param_ratio": {"value": {"type": "number_input", "value": None}},
        "param_force": {"value": {"type": "checkboxes", "selected_options": [{"value": "true"}]}},
        "param_env": {"value": {"type": "static_select", "selected_option": {"value": "staging"}}},
        "unrelated": {"other": {"type": "plain_text_input", "value": "x"}},
    }
    raw = read_modal_values(state)
    assert raw == {
        "query_id": "q1",
        "reason": "runaway backfill",
        "tail": "20",
        "ratio": "",
        "force": "true",
        "env": "staging",
    }
    values, errors = coerce_params(FORM, raw)
    assert errors == {}
    assert values == {
        "query_id": "q1",
        "reason": "runaway backfill",
        "tail": 20,
        "ratio": None,
        "force": True,
        "env": "staging",
    }
    state["param_force"]["value"]["selected_options"] = []
    state["param_env"]["value"]["selected_option"] = None
    assert read_modal_values(state)["force"] == "false"
    assert coerce_params(FORM, read_modal_values(state))[0]["env"] == "prod"
