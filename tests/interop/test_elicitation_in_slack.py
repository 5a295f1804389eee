"""server-everything's elicitation tools, answered through Slack (issue 16 items 4 and 5).

The real reference server from the npm registry sits in the scenario world's registry; a person's mention
leads the model to call its `trigger-elicitation-request`; the server's form (every kind of field the spec
names: strings with formats, a boolean, an integer and a number with ranges, plain, titled and legacy-titled
enums, single and multiple) becomes a card in the thread, the person opens the form, fills in the one
required field and leaves the rest as shown (the server's defaults), and the server reports what it got.
Its `trigger-url-elicitation` becomes a card with the link (its host spelled out) and Done, which is the
protocol's accept. The turn runs in a real worker process; clicks and submissions land on the real web
process.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.question_card import ANSWER_ACTION, DONE_ACTION, FORM_CALLBACK_ID, LINK_ACTION
from fixtures.anthropic_fake import Body, Reply, text, tool_names, tool_results, tool_use
from fixtures.registry import GOVERNANCE, OFFICIAL
from fixtures.waiting import wait_until
from tests.interop.conftest import Peers
from tests.scenarios.conftest import (  # noqa: F401 (the scenario fixtures, used by name)
    Scenario,
    scenario,
    scenario_redis,
    scenario_web,
    scenario_world,
)
from tests.scenarios.test_questions import ALICE, Turn

pytestmark = pytest.mark.timeout(300)


def as_slack_sends(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The state Slack sends for a form submitted as it was shown: each input at its initial value."""
    values: dict[str, dict[str, Any]] = {}
    for block in view["blocks"]:
        if block["type"] != "input":
            continue
        element = block["element"]
        state: dict[str, Any] = {"type": element["type"]}
        if "initial_value" in element:
            state["value"] = element["initial_value"]
        if "initial_option" in element:
            state["selected_option"] = element["initial_option"]
        if element["type"] in ("checkboxes", "multi_static_select"):
            state["selected_options"] = element.get("initial_options", [])
        values[block["block_id"]] = {element["action_id"]: state}
    return values


def elicit(body: Body) -> Reply:
    results = tool_results(body)
    if not results:
        (name,) = [n for n in tool_names(body) if n.startswith("everything__") and "trigger-elicitation" in n]
        return tool_use(name, {}, text_before="Asking you through the server.")
    said = json.dumps(results)
    accepted = "accepted" if '\\"action\\": \\"accept\\"' in said else "not accepted"
    named = "Ada Lovelace" in said
    return text(f"The server's form was {accepted}; your name reached it: {named}.")


def register_everything(s: Scenario, peers: Peers, *tools: str) -> None:
    url = peers.everything.url
    gov: dict[str, Any] = {"status": "active", "owner_team": "ref", "auth": "none", "resource": url}
    gov["allowed_groups"] = ["*"]
    # not annotated read-only, so SPEC §6 would ask for an approval first; its owners say they need none
    gov["tools"] = {tool: {"approval": "never"} for tool in tools}
    s.world.registry.add(
        {
            "server": {
                "name": "io.github.modelcontextprotocol/everything",
                "version": "1.0.0",
                "remotes": [{"type": "streamable-http", "url": url}],
            },
            "_meta": {OFFICIAL: {"status": "active", "isLatest": True}, GOVERNANCE: gov},
        }
    )


LINK = "https://billing.example.com/authorize?session=42"


def open_link(body: Body) -> Reply:
    results = tool_results(body)
    if not results:
        (name,) = [n for n in tool_names(body) if n.startswith("everything__") and "url-elicitation" in n]
        return tool_use(name, {"url": LINK, "message": "Authorize billing access"}, text_before="One step.")
    done = (
        "completed" if "User completed the URL elicitation flow" in json.dumps(results) else "not completed"
    )
    return text(f"The browser step was {done}.")


def test_server_everythings_link_question_is_a_link_and_done_is_accept(
    scenario: Scenario,  # noqa: F811 (the fixture imported above)
    peers: Peers,
) -> None:
    s = scenario
    register_everything(s, peers, "trigger-url-elicitation")
    s.link("alice")
    s.world.anthropic.set_default(open_link)
    turn = Turn(s, "authorize billing")
    card = turn.card(DONE_ACTION)
    link = next(
        e
        for b in card.blocks
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == LINK_ACTION
    )
    assert link["url"] == LINK
    assert "billing.example.com" in link["text"]["text"]  # where it goes, before anyone opens it
    turn.click(ALICE, DONE_ACTION, card)
    said = turn.finished()
    assert "The browser step was completed." in said
    assert "<@U0ALICE> answered." in turn.card_now(card)


def test_server_everythings_form_is_answered_through_the_slack_form(
    scenario: Scenario,  # noqa: F811 (the fixture imported above)
    peers: Peers,
) -> None:
    s = scenario
    register_everything(s, peers, "trigger-elicitation-request")
    s.link("alice")
    s.world.anthropic.set_default(elicit)
    turn = Turn(s, "try the everything server's form")
    card = turn.card()
    assert "*everything* asks <@U0ALICE>" in json.dumps(card.blocks)
    turn.click(ALICE, ANSWER_ACTION, card, trigger_id="trigger-alice")
    view = wait_until("the form", lambda: next(iter(s.world.slack.views()), None))
    labels = [b["label"]["text"] for b in view["blocks"] if b["type"] == "input"]
    assert len(labels) == 13  # every field the server asks for is on the form
    values = as_slack_sends(view)
    name_block = next(b for b in view["blocks"] if b.get("label", {}).get("text") == "String")
    assert name_block["optional"] is False  # the one required field
    values[name_block["block_id"]]["answer"]["value"] = "Ada Lovelace"
    submit = s.ingress.view_submission(ALICE, view_id=view["id"], callback_id=FORM_CALLBACK_ID, values=values)
    assert s.ingress.post(submit).status == 200
    said = turn.finished()
    assert "The server's form was accepted; your name reached it: True." in said
    assert "<@U0ALICE> answered." in turn.card_now(card)
